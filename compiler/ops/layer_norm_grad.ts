// Backward of layer_norm, recomputing the row statistics. wrt 'x': the input cotangent
// r * (gw - mean(gw) - xhat * mean(gw * xhat)) with gw = g * weight; wrt 'weight': sum over rows
// of g * xhat. The bias cotangent is a plain sum_to.
import type { OpDef } from './types.js';
import { VJP_TORCH, wrtIndex } from './util/torch.js';
import { alloc } from './util/ref.js';
import { inferNormGrad, normWrt, rowStats } from './util/norm.js';
import { attrNumber } from './util/shape.js';
import { lowerNormGradWeight, lowerNormGradX } from './wgsl/norm.js';

export const layerNormGradOp: OpDef = {
  name: 'layer_norm_grad',
  fusion: 'custom',
  infer: (inputs, attrs) => inferNormGrad('layer_norm_grad', inputs, attrs),
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
  // bias takes no part in the x and weight cotangents.
  torch: {
    expr: (c) => {
      const eps = c.num(attrNumber('layer_norm_grad', c.attrs, 'eps'));
      return `_vjp(lambda x, w: F.layer_norm(x, (w.shape[0],), w, None, eps=${eps}), [${c.inputs[0]!}, ${c.inputs[1]!}], ${c.inputs[2]!}, ${wrtIndex('layer_norm_grad', c.attrs['wrt'], ['x', 'weight'])})`;
    },
    helpers: { _vjp: VJP_TORCH },
  },
  kernel: {
    kind: 'custom',
    lower(ctx) {
      const eps = attrNumber('layer_norm_grad', ctx.attrs, 'eps');
      return normWrt('layer_norm_grad', ctx.attrs) === 'x' ? lowerNormGradX(ctx, 'layer', eps) : lowerNormGradWeight(ctx, 'layer', eps);
    },
  },
};
