// Rotary position embedding in Hugging Face's rotate_half layout (LlamaRotaryEmbedding +
// apply_rotary_pos_emb): inv_freq = 1 / theta^(arange(0, D, 2) / D), emb = cat(freqs, freqs),
// out = x * cos + rotate_half(x) * sin, positions offset .. offset + T - 1 along axis -2.
// The map is a rotation, so its VJP is the same op with the angle negated (`inverse`).
import { dimToString, isConst, shapeToString } from '../ir/dims.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { attrBool, attrDim, attrNumber, expectArity, expectFloat, fail } from './util/shape.js';

/**
 * cos/sin tables [T, D/2]. In f32 mode every step is rounded as HF computes it in f32 (inv_freq,
 * position * inv_freq, cos, sin), so long positions agree with PyTorch to the last bits.
 */
function tables(T: number, D: number, theta: number, offset: number, f32: boolean): { cos: Float64Array; sin: Float64Array } {
  const r = f32 ? Math.fround : (v: number) => v;
  const half = D / 2;
  const cos = new Float64Array(T * half);
  const sin = new Float64Array(T * half);
  for (let i = 0; i < half; i++) {
    const inv = r(1 / r(theta ** r((2 * i) / D)));
    for (let t = 0; t < T; t++) {
      const f = r(inv * (t + offset));
      cos[t * half + i] = r(Math.cos(f));
      sin[t * half + i] = r(Math.sin(f));
    }
  }
  return { cos, sin };
}

export const ropeOp: OpDef = {
  name: 'rope',
  surface: {
    inputs: ['x'],
    attrs: { theta: { type: 'number', default: 10000 }, offset: { type: 'int', default: 0 } },
    doc: 'rope(x, theta = 10000, offset = 0): rotary embedding of x [B, H, T, D] (HF rotate_half layout)',
  },
  infer(inputs, attrs) {
    expectArity('rope', inputs, 1);
    const x = inputs[0]!;
    expectFloat('rope', x, 'x', 0);
    if (x.shape.length < 2) fail(`rope: x must be [..., T, D], got ${shapeToString(x.shape)}`, 0);
    const d = x.shape[x.shape.length - 1]!;
    if (!isConst(d) || d % 2 !== 0) fail(`rope: the head dim (last dim of x ${shapeToString(x.shape)}) must be an even number, got ${dimToString(d)}`, 0);
    attrNumber('rope', attrs, 'theta', 10000);
    attrDim('rope', attrs, 'offset', 0);
    attrBool('rope', attrs, 'inverse', false);
    return x;
  },
  vjp: (b, node, g) => [b.add('rope', [g], { ...node.attrs, inverse: !attrBool('rope', node.attrs, 'inverse', false) })],
  reference([x], attrs, out, ctx) {
    const theta = attrNumber('rope', attrs, 'theta', 10000);
    const offset = attrNumber('rope', attrs, 'offset', 0);
    const sign = attrBool('rope', attrs, 'inverse', false) ? -1 : 1;
    const r = out.shape.length;
    const T = out.shape[r - 2]!;
    const D = out.shape[r - 1]!;
    const half = D / 2;
    const f32 = ctx.precision === 'f32';
    const round = f32 ? Math.fround : (v: number) => v;
    const { cos, sin } = tables(T, D, theta, offset, f32);
    const y = alloc(ctx, out.dtype, out.shape);
    const xs = x!.data;
    for (let off = 0; off < xs.length; off += D) {
      const t = (off / D) % T;
      for (let i = 0; i < half; i++) {
        const c = cos[t * half + i]!;
        const s = sign * sin[t * half + i]!;
        const a = xs[off + i]!;
        const bb = xs[off + half + i]!;
        // rotate_half(x) = cat(-x2, x1): out1 = x1 c - x2 s, out2 = x2 c + x1 s.
        y.data[off + i] = round(a * c) - round(bb * s);
        y.data[off + half + i] = round(bb * c) + round(a * s);
      }
    }
    return y;
  },
};
