// Shape rule shared by the losses: logits [..., V] and per-row tensors shaped like logits
// without the class axis.
import { dimsEqual, shapeToString } from '../../ir/dims.js';
import type { Attrs, TensorType } from '../../ir/graph.js';
import { expectFloat, fail } from './shape.js';

export function checkRows(op: string, logits: TensorType, rows: TensorType, name: string, index: number): void {
  expectFloat(op, logits, 'logits', 0);
  if (logits.shape.length < 1) fail(`${op}: logits must be [..., V], got ${shapeToString(logits.shape)}`, 0);
  const lead = logits.shape.slice(0, -1);
  if (rows.shape.length !== lead.length || !lead.every((d, i) => dimsEqual(d, rows.shape[i]!)))
    fail(`${op}: ${name} ${shapeToString(rows.shape)} must be logits ${shapeToString(logits.shape)} without the class axis, ${shapeToString(lead)}`, index);
}

/**
 * The losses' `reduction` attribute. 'mean' (the default, torch's) divides by the number of
 * counted rows; 'sum' does not, and the gradients then take g as the per-row scale. Only the
 * chunked loss heads (compiler/passes/loss-heads.ts) build 'sum', dividing once by the count of
 * every chunk together; specs cannot set it.
 */
export function lossReduction(op: string, attrs: Attrs): 'mean' | 'sum' {
  const r = attrs['reduction'] ?? 'mean';
  if (r !== 'mean' && r !== 'sum') fail(`${op}: reduction must be 'mean' or 'sum', got ${JSON.stringify(r)}`);
  return r;
}
