// Shape rule shared by the losses: logits [..., V] and per-row tensors shaped like logits
// without the class axis.
import { dimsEqual, shapeToString } from '../../ir/dims.js';
import type { TensorType } from '../../ir/graph.js';
import { expectFloat, fail } from './shape.js';

export function checkRows(op: string, logits: TensorType, rows: TensorType, name: string, index: number): void {
  expectFloat(op, logits, 'logits', 0);
  if (logits.shape.length < 1) fail(`${op}: logits must be [..., V], got ${shapeToString(logits.shape)}`, 0);
  const lead = logits.shape.slice(0, -1);
  if (rows.shape.length !== lead.length || !lead.every((d, i) => dimsEqual(d, rows.shape[i]!)))
    fail(`${op}: ${name} ${shapeToString(rows.shape)} must be logits ${shapeToString(logits.shape)} without the class axis, ${shapeToString(lead)}`, index);
}
