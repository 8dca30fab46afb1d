// torch.nn.CrossEntropyLoss() defaults: mean over non-ignored positions of
// -log_softmax(logits)[label]. When every position is ignored the loss is defined as 0 (torch
// gives NaN from 0/0), so text-only or fully masked batches do not poison training.
import type { Attrs, TensorType } from '../ir/graph.js';
import type { HostTensor } from '../../runtime/tensor.js';
import type { OpDef } from './types.js';
import { describePosition } from '../../runtime/validate.js';
import { alloc, logSumExp } from './util/ref.js';
import { checkRows, lossReduction } from './util/loss.js';
import { attrInt, expectArity, expectInt } from './util/shape.js';
import { lowerCrossEntropy } from './wgsl/loss.js';

export function crossEntropyInfer(op: string, logits: TensorType, labels: TensorType, attrs: Attrs): void {
  checkRows(op, logits, labels, 'labels', 1);
  expectInt(op, labels, 'labels', 1);
  attrInt(op, attrs, 'ignore_index', -100);
  lossReduction(op, attrs);
}

/** Visits each counted row with its log-sum-exp; returns the number of counted rows. */
export function forEachLabel(op: string, logits: HostTensor, labels: HostTensor, ignore: number, visit: (row: number, label: number, lse: number) => void): number {
  const V = logits.shape[logits.shape.length - 1]!;
  let n = 0;
  for (let r = 0; r < labels.data.length; r++) {
    const label = labels.data[r]!;
    if (label === ignore) continue;
    if (label < 0 || label >= V) throw new Error(`${op}: label ${label} at ${describePosition(labels.shape, r)} is out of range for ${V} classes (ignore_index ${ignore})`);
    n++;
    visit(r, label, logSumExp(logits.data, r * V, V, 1));
  }
  return n;
}

/**
 * torch's CrossEntropyLoss summed over the labels that are not ignore_index, then divided by
 * their count (its mean), 0 when there are none; in float32 as transformers' LM losses upcast.
 */
export const CROSS_ENTROPY_TORCH = `def _cross_entropy(logits, labels, ignore_index, reduction="mean"):
    z = logits.reshape(-1, logits.shape[-1]).to(torch.float32)
    y = labels.reshape(-1).to(torch.int64)
    total = F.cross_entropy(z, y, ignore_index=ignore_index, reduction="sum")
    if reduction == "sum":
        return total
    return total / (y != ignore_index).sum().clamp(min=1)`;

export const crossEntropyOp: OpDef = {
  name: 'cross_entropy',
  fusion: 'custom',
  surface: {
    inputs: ['logits', 'labels'],
    attrs: { ignore_index: { type: 'int', default: -100 } },
    doc: 'cross_entropy(logits, labels, ignore_index = -100): mean -log_softmax(logits)[label] over non-ignored labels; 0 when all are ignored',
  },
  infer(inputs, attrs) {
    expectArity('cross_entropy', inputs, 2);
    crossEntropyInfer('cross_entropy', inputs[0]!, inputs[1]!, attrs);
    return { dtype: inputs[0]!.dtype, shape: [] };
  },
  vjp(b, node, g) {
    const ignore_index = attrInt('cross_entropy', node.attrs, 'ignore_index', -100);
    const reduction = lossReduction('cross_entropy', node.attrs);
    return [b.add('cross_entropy_grad', [...node.inputs, g], reduction === 'mean' ? { ignore_index } : { ignore_index, reduction }), null];
  },
  reference([logits, labels], attrs, out, ctx) {
    const V = logits!.shape[logits!.shape.length - 1]!;
    let total = 0;
    const n = forEachLabel('cross_entropy', logits!, labels!, attrInt('cross_entropy', attrs, 'ignore_index', -100), (r, label, lse) => {
      total += lse - logits!.data[r * V + label]!;
    });
    const y = alloc(ctx, out.dtype, []);
    y.data[0] = lossReduction('cross_entropy', attrs) === 'sum' ? total : n === 0 ? 0 : total / n;
    return y;
  },
  torch: {
    expr: (c) => `_cross_entropy(${c.inputs[0]!}, ${c.inputs[1]!}, ${attrInt('cross_entropy', c.attrs, 'ignore_index', -100)}, "${lossReduction('cross_entropy', c.attrs)}")`,
    helpers: { _cross_entropy: CROSS_ENTROPY_TORCH },
  },
  kernel: { kind: 'custom', lower: (ctx) => lowerCrossEntropy(ctx, attrInt('cross_entropy', ctx.attrs, 'ignore_index', -100), lossReduction('cross_entropy', ctx.attrs)) },
  // The mean's denominator: labels that are not ignore_index.
  count(b, node) {
    const ignore = b.add('fill', [], { value: attrInt('cross_entropy', node.attrs, 'ignore_index', -100), shape: [], dtype: 'i32' });
    return b.add('sum', [b.add('cast', [b.add('ne', [node.inputs[1]!, ignore])], { dtype: 'f32' })], { axes: null, keepdims: false });
  },
};
