// Backward of patch_embed (inputs x, weight, g): wrt 'weight' correlates g with the patches of x;
// wrt 'x' spreads g back through the weight (x is read for its shape only). The frozen CLIP tower
// never asks for either, but a trainable tower would.
import { shapesEqual, shapeToString } from '../ir/dims.js';
import { VJP_TORCH, wrtIndex } from './util/torch.js';
import type { TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { patchDims, patchInfer, patchRow } from './patch_embed.js';
import { attrInt, expectArity, fail } from './util/shape.js';
import { lowerPatchEmbedGrad } from './wgsl/patch.js';
import { numel } from '../../runtime/tensor.js';

export const patchEmbedGradOp: OpDef = {
  name: 'patch_embed_grad',
  fusion: 'custom',
  infer(inputs, attrs) {
    expectArity('patch_embed_grad', inputs, 3);
    const [x, w, g] = inputs as [TensorType, TensorType, TensorType];
    const out = patchInfer('patch_embed_grad', x, w, attrs);
    if (g.dtype !== out.dtype || !shapesEqual(g.shape, out.shape))
      fail(`patch_embed_grad: g ${shapeToString(g.shape)} must have patch_embed's output shape ${shapeToString(out.shape)}`, 2);
    const wrt = attrs['wrt'];
    if (wrt !== 'x' && wrt !== 'weight') fail(`patch_embed_grad: wrt must be 'x' or 'weight', got ${JSON.stringify(wrt)}`);
    return wrt === 'x' ? x : w;
  },
  reference([x, w, g], attrs, out, ctx) {
    const d = patchDims(x!.shape, w!.shape);
    const [, , GH, GW] = g!.shape as [number, number, number, number];
    const toX = attrs['wrt'] === 'x';
    const acc = new Float64Array(numel(out.shape));
    const xs = x!.data;
    const ws = w!.data;
    const gs = g!.data;
    const kk = d.k * d.k;
    for (let b = 0; b < d.B; b++)
      for (let o = 0; o < d.O; o++)
        for (let gy = 0; gy < GH; gy++)
          for (let gx = 0; gx < GW; gx++) {
            // No skip of a zero gv: 0 * NaN is NaN in torch's conv backward too.
            const gv = gs[((b * d.O + o) * GH + gy) * GW + gx]!;
            for (let c = 0; c < d.C; c++)
              for (let r = 0; r < d.k; r++) {
                const xo = patchRow(d, b, c, gy, gx, r);
                const wo = (o * d.C + c) * kk + r * d.k;
                if (toX) for (let q = 0; q < d.k; q++) acc[xo + q]! += gv * ws[wo + q]!;
                else for (let q = 0; q < d.k; q++) acc[wo + q]! += gv * xs[xo + q]!;
              }
          }
    const y = alloc(ctx, out.dtype, out.shape);
    y.data.set(acc);
    return y;
  },
  torch: {
    expr: (c) =>
      `_vjp(lambda x, w: F.conv2d(x, w, stride=${attrInt('patch_embed_grad', c.attrs, 'stride')}), [${c.inputs[0]!}, ${c.inputs[1]!}], ${c.inputs[2]!}, ${wrtIndex('patch_embed_grad', c.attrs['wrt'], ['x', 'weight'])})`,
    helpers: { _vjp: VJP_TORCH },
  },
  kernel: { kind: 'custom', lower: (ctx) => lowerPatchEmbedGrad(ctx, ctx.attrs['wrt'] === 'x' ? 'x' : 'weight') },
};
