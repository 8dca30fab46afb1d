// Backward of cross_entropy: g / n * (softmax(logits) - onehot(label)) on counted rows, 0 on
// ignored ones (NaN on an ignored row whose log-sum-exp is not finite, as torch) (n = number of
// counted rows).
import { shapeToString } from '../ir/dims.js';
import { VJP_TORCH } from './util/torch.js';
import type { TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { alloc, logSumExp } from './util/ref.js';
import { CROSS_ENTROPY_TORCH, crossEntropyInfer, forEachLabel } from './cross_entropy.js';
import { attrInt, expectArity, fail } from './util/shape.js';
import { lossReduction } from './util/loss.js';
import { lowerCrossEntropyGrad } from './wgsl/loss.js';

export const crossEntropyGradOp: OpDef = {
  name: 'cross_entropy_grad',
  fusion: 'custom',
  infer(inputs, attrs) {
    expectArity('cross_entropy_grad', inputs, 3);
    const [logits, labels, g] = inputs as [TensorType, TensorType, TensorType];
    crossEntropyInfer('cross_entropy_grad', logits, labels, attrs);
    if (g.shape.length !== 0 || g.dtype !== logits.dtype) fail(`cross_entropy_grad: g must be a ${logits.dtype} scalar, got ${shapeToString(g.shape)}`, 2);
    return logits;
  },
  reference([logits, labels, g], attrs, out, ctx) {
    const V = logits!.shape[logits!.shape.length - 1]!;
    const y = alloc(ctx, out.dtype, out.shape);
    const rows: [number, number, number][] = [];
    const n = forEachLabel('cross_entropy_grad', logits!, labels!, attrInt('cross_entropy_grad', attrs, 'ignore_index', -100), (r, label, lse) =>
      rows.push([r, label, lse]),
    );
    const scale = lossReduction('cross_entropy_grad', attrs) === 'sum' ? g!.data[0]! : g!.data[0]! / n;
    const xs = logits!.data;
    // An ignored row gets 0, but NaN where its log-sum-exp is not finite: torch's log_softmax
    // covers every row, and its backward is g - softmax * sum(g) = 0 - NaN * 0 there.
    const ignore = attrInt('cross_entropy_grad', attrs, 'ignore_index', -100);
    for (let r = 0; r < labels!.data.length; r++) {
      if (labels!.data[r] !== ignore) continue;
      const lse = logSumExp(xs, r * V, V, 1);
      if (!Number.isFinite(lse)) y.data.fill(NaN, r * V, (r + 1) * V);
    }
    for (const [r, label, lse] of rows) {
      const o = r * V;
      for (let v = 0; v < V; v++) y.data[o + v] = scale * (Math.exp(xs[o + v]! - lse) - (v === label ? 1 : 0));
    }
    return y;
  },
  torch: {
    expr: (c) =>
      `_vjp(lambda z: _cross_entropy(z, ${c.inputs[1]!}, ${attrInt('cross_entropy_grad', c.attrs, 'ignore_index', -100)}, "${lossReduction('cross_entropy_grad', c.attrs)}"), [${c.inputs[0]!}], ${c.inputs[2]!}, 0)`,
    helpers: { _vjp: VJP_TORCH, _cross_entropy: CROSS_ENTROPY_TORCH },
  },
  kernel: { kind: 'custom', lower: (ctx) => lowerCrossEntropyGrad(ctx, attrInt('cross_entropy_grad', ctx.attrs, 'ignore_index', -100), lossReduction('cross_entropy_grad', ctx.attrs)) },
};
