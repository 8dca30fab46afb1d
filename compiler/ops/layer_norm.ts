// torch.nn.LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * weight + bias, with the
// biased variance. Statistics in f64 per row.
import type { TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { checkNormVectors, rowStats } from './util/norm.js';
import { attrNumber, expectArity } from './util/shape.js';
import { lowerNorm } from './wgsl/norm.js';

export const layerNormOp: OpDef = {
  name: 'layer_norm',
  fusion: 'custom',
  surface: {
    inputs: ['x', 'weight', 'bias'],
    attrs: { eps: { type: 'number', default: 1e-5 } },
    doc: 'layer_norm(x, weight, bias, eps = 1e-5): normalise the last axis (biased variance), scale and shift',
  },
  infer(inputs, attrs) {
    expectArity('layer_norm', inputs, 3);
    const [x, w, b] = inputs as [TensorType, TensorType, TensorType];
    checkNormVectors('layer_norm', x, [
      ['weight', w, 1],
      ['bias', b, 2],
    ]);
    attrNumber('layer_norm', attrs, 'eps', 1e-5);
    return x;
  },
  vjp(b, node, g) {
    const [x, w] = node.inputs as [number, number, number];
    const eps = attrNumber('layer_norm', node.attrs, 'eps', 1e-5);
    const D = b.type(w).shape[0]!;
    return [
      b.add('layer_norm_grad', [x, w, g], { eps, wrt: 'x' }),
      b.add('layer_norm_grad', [x, w, g], { eps, wrt: 'weight' }),
      b.add('sum_to', [g], { shape: [D] }),
    ];
  },
  reference([x, w, bias], attrs, out, ctx) {
    const eps = attrNumber('layer_norm', attrs, 'eps', 1e-5);
    const D = w!.shape[0]!;
    const y = alloc(ctx, out.dtype, out.shape);
    const xs = x!.data;
    const ws = w!.data;
    const bs = bias!.data;
    for (let off = 0; off < xs.length; off += D) {
      const { mu, r } = rowStats(xs, off, D, eps, true);
      for (let i = 0; i < D; i++) y.data[off + i] = (xs[off + i]! - mu) * r * ws[i]! + bs[i]!;
    }
    return y;
  },
  torch: {
    expr: (c) => `F.layer_norm(${c.inputs[0]!}, (${c.dim(c.inputTypes[0]!.shape.at(-1)!)},), ${c.inputs[1]!}, ${c.inputs[2]!}, eps=${c.num(attrNumber('layer_norm', c.attrs, 'eps', 1e-5))})`,
  },
  kernel: { kind: 'custom', lower: (ctx) => lowerNorm(ctx, 'layer', attrNumber('layer_norm', ctx.attrs, 'eps', 1e-5)) },
};
