// Backward of layer_norm, recomputing the row statistics. wrt 'x': the input cotangent
// r * (gw - mean(gw) - xhat * mean(gw * xhat)) with gw = g * weight; wrt 'weight': sum over rows
// of g * xhat. The bias cotangent is a plain sum_to.
import { shapesEqual } from '../ir/dims.js';
import type { Attrs, TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { checkNormVectors, rowStats } from './util/norm.js';
import { attrNumber, attrString, expectArity, fail, typeToString } from './util/shape.js';
import { lowerNormGradWeight, lowerNormGradX } from './wgsl/norm.js';

export function normWrt(op: string, attrs: Attrs): 'x' | 'weight' {
  const wrt = attrString(op, attrs, 'wrt');
  if (wrt !== 'x' && wrt !== 'weight') fail(`${op}: wrt must be 'x' or 'weight', got ${wrt}`);
  return wrt;
}

export const layerNormGradOp: OpDef = {
  name: 'layer_norm_grad',
  infer(inputs, attrs) {
    expectArity('layer_norm_grad', inputs, 3);
    const [x, w, g] = inputs as [TensorType, TensorType, TensorType];
    checkNormVectors('layer_norm_grad', x, [['weight', w, 1]]);
    if (g.dtype !== x.dtype || !shapesEqual(g.shape, x.shape))
      fail(`layer_norm_grad: g ${typeToString(g)} must have the type of x ${typeToString(x)}`, 2);
    attrNumber('layer_norm_grad', attrs, 'eps');
    return normWrt('layer_norm_grad', attrs) === 'x' ? x : w;
  },
  reference([x, w, g], attrs, out, ctx) {
    const eps = attrNumber('layer_norm_grad', attrs, 'eps');
    const wrt = normWrt('layer_norm_grad', attrs);
    const D = w!.shape[0]!;
    const xs = x!.data;
    const ws = w!.data;
    const gs = g!.data;
    const y = alloc(ctx, out.dtype, out.shape);
    const acc = new Float64Array(D);
    for (let off = 0; off < xs.length; off += D) {
      const { mu, r } = rowStats(xs, off, D, eps, true);
      if (wrt === 'weight') {
        for (let i = 0; i < D; i++) acc[i]! += gs[off + i]! * (xs[off + i]! - mu) * r;
        continue;
      }
      let m1 = 0;
      let m2 = 0;
      for (let i = 0; i < D; i++) {
        const gw = gs[off + i]! * ws[i]!;
        m1 += gw;
        m2 += gw * (xs[off + i]! - mu) * r;
      }
      m1 /= D;
      m2 /= D;
      for (let i = 0; i < D; i++) {
        const xh = (xs[off + i]! - mu) * r;
        y.data[off + i] = r * (gs[off + i]! * ws[i]! - m1 - xh * m2);
      }
    }
    if (wrt === 'weight') y.data.set(acc);
    return y;
  },
  kernel: {
    kind: 'custom',
    lower(ctx) {
      const eps = attrNumber('layer_norm_grad', ctx.attrs, 'eps');
      return normWrt('layer_norm_grad', ctx.attrs) === 'x' ? lowerNormGradX(ctx, 'layer', eps) : lowerNormGradWeight(ctx, 'layer', eps);
    },
  },
};
