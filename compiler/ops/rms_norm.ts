// Hugging Face LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * weight, computed in f32 (here f64 and
// rounded once per output).
import type { TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { checkNormVectors, rowStats } from './util/norm.js';
import { attrNumber, expectArity } from './util/shape.js';
import { lowerNorm } from './wgsl/norm.js';

/** transformers' LlamaRMSNorm.forward, line for line: statistics in float32. */
export const RMS_NORM_TORCH = `def _rms_norm(x, weight, eps):
    dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(dtype)`;

export const rmsNormOp: OpDef = {
  name: 'rms_norm',
  fusion: 'custom',
  surface: {
    inputs: ['x', 'weight'],
    attrs: { eps: { type: 'number', default: 1e-6 } },
    doc: 'rms_norm(x, weight, eps = 1e-6): x * rsqrt(mean(x^2) + eps) * weight over the last axis (LlamaRMSNorm)',
  },
  infer(inputs, attrs) {
    expectArity('rms_norm', inputs, 2);
    const [x, w] = inputs as [TensorType, TensorType];
    checkNormVectors('rms_norm', x, [['weight', w, 1]]);
    attrNumber('rms_norm', attrs, 'eps', 1e-6);
    return x;
  },
  vjp(b, node, g) {
    const [x, w] = node.inputs as [number, number];
    const eps = attrNumber('rms_norm', node.attrs, 'eps', 1e-6);
    return [b.add('rms_norm_grad', [x, w, g], { eps, wrt: 'x' }), b.add('rms_norm_grad', [x, w, g], { eps, wrt: 'weight' })];
  },
  reference([x, w], attrs, out, ctx) {
    const eps = attrNumber('rms_norm', attrs, 'eps', 1e-6);
    const D = w!.shape[0]!;
    const y = alloc(ctx, out.dtype, out.shape);
    const xs = x!.data;
    const ws = w!.data;
    for (let off = 0; off < xs.length; off += D) {
      const { r } = rowStats(xs, off, D, eps, false);
      for (let i = 0; i < D; i++) y.data[off + i] = xs[off + i]! * r * ws[i]!;
    }
    return y;
  },
  torch: {
    expr: (c) => `_rms_norm(${c.inputs[0]!}, ${c.inputs[1]!}, ${c.num(attrNumber('rms_norm', c.attrs, 'eps', 1e-6))})`,
    helpers: {
      _rms_norm: RMS_NORM_TORCH,
    },
  },
  kernel: { kind: 'custom', lower: (ctx) => lowerNorm(ctx, 'rms', attrNumber('rms_norm', ctx.attrs, 'eps', 1e-6)) },
};
