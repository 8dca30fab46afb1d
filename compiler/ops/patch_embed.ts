// CLIP's patch embedding: conv2d without bias, kernel = stride = k, x [B, C, H, W],
// weight [O, C, k, k] -> [B, O, H/k, W/k]. Patches do not overlap, so the conv is a matmul of
// each flattened patch with the flattened weight.
import { divDims, dimsEqual, dimToString, shapeToString } from '../ir/dims.js';
import type { Attrs, TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { attrInt, expectArity, expectFloat, expectRank, fail } from './util/shape.js';
import { lowerPatchEmbed } from './wgsl/patch.js';

export function patchInfer(op: string, x: TensorType, w: TensorType, attrs: Attrs): TensorType {
  expectRank(op, x, 'x', 0, 4);
  expectRank(op, w, 'weight', 1, 4);
  expectFloat(op, x, 'x', 0);
  if (w.dtype !== x.dtype) fail(`${op}: dtypes differ: x is ${x.dtype}, weight is ${w.dtype}`, 1);
  const k = attrInt(op, attrs, 'stride');
  if (k < 1) fail(`${op}: stride must be positive, got ${k}`);
  if (!dimsEqual(w.shape[1]!, x.shape[1]!))
    fail(`${op}: x ${shapeToString(x.shape)} has ${dimToString(x.shape[1]!)} channels (dim 1) but weight ${shapeToString(w.shape)} expects ${dimToString(w.shape[1]!)} (weight dim 1)`, 1);
  if (!dimsEqual(w.shape[2]!, k) || !dimsEqual(w.shape[3]!, k))
    fail(`${op}: weight ${shapeToString(w.shape)} must have a ${k}x${k} kernel (dims 2, 3) to match stride ${k}`, 1);
  const gh = divDims(x.shape[2]!, k);
  const gw = divDims(x.shape[3]!, k);
  if (gh === null) fail(`${op}: image height ${dimToString(x.shape[2]!)} (x dim 2) is not a multiple of the stride ${k}`, 0);
  if (gw === null) fail(`${op}: image width ${dimToString(x.shape[3]!)} (x dim 3) is not a multiple of the stride ${k}`, 0);
  return { dtype: x.dtype, shape: [x.shape[0]!, w.shape[0]!, gh, gw] };
}

export interface PatchDims {
  B: number;
  C: number;
  H: number;
  W: number;
  O: number;
  k: number;
}

/** Concrete sizes from the x and weight shapes. */
export function patchDims(x: readonly number[], w: readonly number[]): PatchDims {
  return { B: x[0]!, C: x[1]!, H: x[2]!, W: x[3]!, O: w[0]!, k: w[2]! };
}

/** Flat x offset of patch (gy, gx) channel c row r, for image b. */
export function patchRow(d: PatchDims, b: number, c: number, gy: number, gx: number, r: number): number {
  return ((b * d.C + c) * d.H + gy * d.k + r) * d.W + gx * d.k;
}

export const patchEmbedOp: OpDef = {
  name: 'patch_embed',
  fusion: 'custom',
  surface: {
    inputs: ['x', 'weight'],
    attrs: { stride: { type: 'int' } },
    doc: 'patch_embed(x, weight, stride): conv2d without bias, kernel = stride; x [B, C, H, W], weight [O, C, k, k]',
  },
  infer(inputs, attrs) {
    expectArity('patch_embed', inputs, 2);
    return patchInfer('patch_embed', inputs[0]!, inputs[1]!, attrs);
  },
  vjp(b, node, g) {
    const [x, w] = node.inputs as [number, number];
    const stride = node.attrs['stride']!;
    return [b.add('patch_embed_grad', [x, w, g], { stride, wrt: 'x' }), b.add('patch_embed_grad', [x, w, g], { stride, wrt: 'weight' })];
  },
  reference([x, w], _attrs, out, ctx) {
    const d = patchDims(x!.shape, w!.shape);
    const [, , GH, GW] = out.shape as [number, number, number, number];
    const y = alloc(ctx, out.dtype, out.shape);
    const xs = x!.data;
    const ws = w!.data;
    const kk = d.k * d.k;
    for (let b = 0; b < d.B; b++)
      for (let o = 0; o < d.O; o++)
        for (let gy = 0; gy < GH; gy++)
          for (let gx = 0; gx < GW; gx++) {
            let s = 0;
            for (let c = 0; c < d.C; c++)
              for (let r = 0; r < d.k; r++) {
                const xo = patchRow(d, b, c, gy, gx, r);
                const wo = (o * d.C + c) * kk + r * d.k;
                for (let q = 0; q < d.k; q++) s += xs[xo + q]! * ws[wo + q]!;
              }
            y.data[((b * d.O + o) * GH + gy) * GW + gx] = s;
          }
    return y;
  },
  // CLIPVisionEmbeddings' Conv2d(bias=False, kernel_size=stride=patch).
  torch: { expr: (c) => `F.conv2d(${c.inputs[0]!}, ${c.inputs[1]!}, stride=${attrInt('patch_embed', c.attrs, 'stride')})` },
  kernel: { kind: 'custom', lower: lowerPatchEmbed },
};
