// Backward of rms_norm, recomputing r = rsqrt(mean(x^2) + eps). wrt 'x':
// r * gw - x * r^3 * mean(gw * x) with gw = g * weight; wrt 'weight': sum over rows of g * x * r.
import type { OpDef } from './types.js';
import { RMS_NORM_TORCH } from './rms_norm.js';
import { VJP_TORCH, wrtIndex } from './util/torch.js';
import { alloc } from './util/ref.js';
import { inferNormGrad, normWrt, rowStats } from './util/norm.js';
import { attrNumber } from './util/shape.js';
import { lowerNormGradWeight, lowerNormGradX } from './wgsl/norm.js';

export const rmsNormGradOp: OpDef = {
  name: 'rms_norm_grad',
  fusion: 'custom',
  infer: (inputs, attrs) => inferNormGrad('rms_norm_grad', inputs, attrs),
  reference([x, w, g], attrs, out, ctx) {
    const eps = attrNumber('rms_norm_grad', attrs, 'eps');
    const wrt = normWrt('rms_norm_grad', attrs);
    const D = w!.shape[0]!;
    const xs = x!.data;
    const ws = w!.data;
    const gs = g!.data;
    const y = alloc(ctx, out.dtype, out.shape);
    const acc = new Float64Array(D);
    for (let off = 0; off < xs.length; off += D) {
      const { r } = rowStats(xs, off, D, eps, false);
      if (wrt === 'weight') {
        for (let i = 0; i < D; i++) acc[i]! += gs[off + i]! * xs[off + i]! * r;
        continue;
      }
      let m = 0;
      for (let i = 0; i < D; i++) m += gs[off + i]! * ws[i]! * xs[off + i]!;
      m /= D;
      for (let i = 0; i < D; i++) y.data[off + i] = r * gs[off + i]! * ws[i]! - xs[off + i]! * r * r * r * m;
    }
    if (wrt === 'weight') y.data.set(acc);
    return y;
  },
  // bias takes no part in the x and weight cotangents.
  torch: {
    expr: (c) => {
      const eps = c.num(attrNumber('rms_norm_grad', c.attrs, 'eps'));
      return `_vjp(lambda x, w: _rms_norm(x, w, ${eps}), [${c.inputs[0]!}, ${c.inputs[1]!}], ${c.inputs[2]!}, ${wrtIndex('rms_norm_grad', c.attrs['wrt'], ['x', 'weight'])})`;
    },
    helpers: { _vjp: VJP_TORCH, _rms_norm: RMS_NORM_TORCH },
  },
  kernel: {
    kind: 'custom',
    lower(ctx) {
      const eps = attrNumber('rms_norm_grad', ctx.attrs, 'eps');
      return normWrt('rms_norm_grad', ctx.attrs) === 'x' ? lowerNormGradX(ctx, 'rms', eps) : lowerNormGradWeight(ctx, 'rms', eps);
    },
  },
};
