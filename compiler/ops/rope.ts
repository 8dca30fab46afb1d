// Rotary position embedding in Hugging Face's rotate_half layout (LlamaRotaryEmbedding +
// apply_rotary_pos_emb): inv_freq = 1 / theta^(arange(0, D, 2) / D), emb = cat(freqs, freqs),
// out = x * cos + rotate_half(x) * sin, positions offset .. offset + T - 1 along axis -2.
// An optional second input `pos` (i32, fed at run time) adds to the offset: a scalar for every
// row (the decode step of a KV cache rotates its one token at the cache position with one
// compiled kernel), or one value per batch row [B] (left-padded prompts: each row's positions
// start at its first real token, as transformers' position_ids = cumsum(attention_mask) - 1).
// The map is a rotation, so its VJP is the same op with the angle negated (`inverse`).
import { dimToString, isConst, shapeToString } from '../ir/dims.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { attrBool, attrDim, attrNumber, expectArity, expectFloat, fail } from './util/shape.js';
import type { KernelBody, LowerContext } from '../codegen/kernel.js';
import { body, entry, f32, product, singleLanes } from './wgsl/lanes.js';

/**
 * transformers' rotary inv_freq in float32 (f32 tables below use the same values): element i of
 * [ceil(D / 2)] is 1 / theta^(2i / D). Older checkpoints store it as rotary_emb.inv_freq.
 */
export function ropeInvFreq(D: number, theta: number): number[] {
  const r = Math.fround;
  return Array.from({ length: Math.ceil(D / 2) }, (_, i) => r(1 / r(theta ** r((2 * i) / D))));
}

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
  fusion: 'custom',
  surface: {
    inputs: ['x', 'pos?'],
    attrs: { theta: { type: 'number', default: 10000 }, offset: { type: 'int', default: 0 } },
    doc: 'rope(x, pos?, theta = 10000, offset = 0): rotary embedding of x [B, H, T, D] (HF rotate_half layout) at positions offset + pos + t (pos: a scalar, or [B] per row)',
  },
  infer(inputs, attrs) {
    expectArity('rope', inputs, 1, 2);
    const x = inputs[0]!;
    const p = inputs[1];
    if (p && (p.dtype !== 'i32' || p.shape.length > 1 || (p.shape.length === 1 && (x.shape.length < 3 || dimToString(p.shape[0]!) !== dimToString(x.shape[0]!)))))
      fail(`rope: pos must be an i32 scalar or one i32 per batch row [${x.shape.length >= 3 ? dimToString(x.shape[0]!) : 'B'}] (the run-time position offset), got ${p.dtype}[${shapeToString(p.shape)}]`, 1);
    expectFloat('rope', x, 'x', 0);
    if (x.shape.length < 2) fail(`rope: x must be [..., T, D], got ${shapeToString(x.shape)}`, 0);
    const d = x.shape[x.shape.length - 1]!;
    if (!isConst(d) || d % 2 !== 0) fail(`rope: the head dim (last dim of x ${shapeToString(x.shape)}) must be an even number, got ${dimToString(d)}`, 0);
    attrNumber('rope', attrs, 'theta', 10000);
    attrDim('rope', attrs, 'offset', 0);
    attrBool('rope', attrs, 'inverse', false);
    return x;
  },
  vjp: (b, node, g) => [b.add('rope', [g, ...node.inputs.slice(1)], { ...node.attrs, inverse: !attrBool('rope', node.attrs, 'inverse', false) }), ...node.inputs.slice(1).map(() => null)],
  reference([x, p], attrs, out, ctx) {
    const theta = attrNumber('rope', attrs, 'theta', 10000);
    const base = attrNumber('rope', attrs, 'offset', 0);
    const sign = attrBool('rope', attrs, 'inverse', false) ? -1 : 1;
    const r = out.shape.length;
    const T = out.shape[r - 2]!;
    const D = out.shape[r - 1]!;
    const half = D / 2;
    const f32 = ctx.precision === 'f32';
    const round = f32 ? Math.fround : (v: number) => v;
    // One table per distinct offset: a scalar pos gives one, a per-row pos one per batch row.
    const perRow = p !== undefined && p.shape.length === 1;
    const rowsPerBatch = perRow ? x!.data.length / D / p.shape[0]! : 1;
    const cache = new Map<number, { cos: Float64Array; sin: Float64Array }>();
    const table = (offset: number) => {
      let t = cache.get(offset);
      if (!t) cache.set(offset, (t = tables(T, D, theta, offset, f32)));
      return t;
    };
    const y = alloc(ctx, out.dtype, out.shape);
    const xs = x!.data;
    for (let off = 0; off < xs.length; off += D) {
      const t = (off / D) % T;
      const { cos, sin } = table(base + (p === undefined ? 0 : perRow ? p.data[Math.floor(off / D / rowsPerBatch)]! : p.data[0]!));
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
  torch: {
    expr: (c) => {
      const theta = c.num(attrNumber('rope', c.attrs, 'theta', 10000));
      const offset = c.dim(attrDim('rope', c.attrs, 'offset', 0));
      const inverse = attrBool('rope', c.attrs, 'inverse', false) ? 'True' : 'False';
      return `_rope(${c.inputs[0]!}, ${theta}, ${offset}, ${inverse}${c.inputs[1] ? `, ${c.inputs[1]}` : ''})`;
    },
    // transformers' LlamaRotaryEmbedding (default rope type) + apply_rotary_pos_emb: inv_freq,
    // the angles, cos and sin in float32, then cast to x's dtype.
    helpers: {
      _rope: `def _rope(x, theta, offset, inverse=False, pos=None):
    T, D = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64, device=x.device).to(torch.float32) / D))
    t = torch.arange(T, device=x.device) + offset
    if pos is None or pos.dim() == 0:
        positions = (t if pos is None else t + pos.to(torch.int64)).to(torch.float32)
    else:
        # One offset per batch row (pos [B]): positions [B, 1, ..., T] against x [B, ..., T, D].
        positions = (t[None, :] + pos.to(torch.int64)[:, None]).to(torch.float32).reshape(pos.shape[0], *([1] * (x.dim() - 3)), T)
    freqs = positions[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = emb.cos().to(x.dtype)
    sin = emb.sin().to(x.dtype)
    if inverse:
        sin = -sin
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin`,
    },
  },
  kernel: { kind: 'custom', lower: lowerRope },
};

/**
 * sin and cos of an f32 angle, to ~1 ULP like the f32 libm HF's tables come from: WGSL's own
 * sin/cos only promise 2^-11 absolute error inside [-pi, pi] and nothing beyond, and angles here
 * reach the position count. Cody-Waite reduction by pi/2 in three parts (exact for |x| < ~12800,
 * i.e. positions up to that at the highest frequency), then the Cephes sinf/cosf polynomials.
 */
const SINCOS = `fn k_sincos(x: f32) -> vec2<f32> {
  let j = round(x * 0.636619772f);
  var r = x - j * 1.5703125f;
  r = r - j * 4.837512969970703125e-4f;
  r = r - j * 7.54978995489188216e-8f;
  let z = r * r;
  let s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * r + r;
  let c = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z - 0.5f * z + 1.0f;
  switch (i32(j) & 3) {
    case 0: { return vec2<f32>(c, s); }
    case 1: { return vec2<f32>(-s, c); }
    case 2: { return vec2<f32>(-c, -s); }
    default: { return vec2<f32>(s, -c); }
  }
}`;

/**
 * One invocation per rotated pair (i, i + D/2). inv_freq is baked in as HF computes it in f32;
 * the angle inv_freq * position is one correctly rounded f32 product, as in HF.
 */
function lowerRope(ctx: LowerContext): KernelBody {
  const shape = ctx.output.shape;
  const T = shape[shape.length - 2]!;
  const D = shape[shape.length - 1]!;
  // Max(1): a constant division by zero would not compile, even with no pairs to rotate.
  const half = Math.max(D / 2, 1);
  const theta = attrNumber('rope', ctx.attrs, 'theta', 10000);
  const offset = attrNumber('rope', ctx.attrs, 'offset', 0);
  const sign = attrBool('rope', ctx.attrs, 'inverse', false) ? '-' : '';
  const r = Math.fround;
  const inv = Array.from({ length: half }, (_, i) => f32(r(1 / r(theta ** r((2 * i) / Math.max(D, 2))))));
  const pairs = product(shape) / 2;
  // pos [B]: rows (of D) of x per batch row, so row / rowsPerBatch is the batch index.
  const posShape = ctx.inputs[1]?.shape ?? [];
  const perRowPos = posShape.length === 1;
  const rowsPerBatch = perRowPos ? Math.max(1, product(shape) / D / posShape[0]!) : 1;
  const lanes = singleLanes(ctx.device);
  const code = `${SINCOS}
const K_INV_FREQ = array<f32, ${half}>(${inv.join(', ')});
${entry(
  lanes,
  pairs,
  `  let row = grp / ${half}u;
  let i = grp % ${half}u;
  let at = row * ${D}u + i;
  let pos = f32(i32(row % ${T}u + ${offset}u)${ctx.inputs.length > 1 ? ` + i32(load1(${perRowPos ? `row / ${rowsPerBatch}u` : '0u'}))` : ''});
  let cs = k_sincos(K_INV_FREQ[i] * pos);
  let c = cs.x;
  let s = ${sign}cs.y;
  let a = load0(at);
  let b = load0(at + ${half}u);
  store(at, a * c - b * s);
  store(at + ${half}u, b * c + a * s);`,
)}`;
  return body(ctx, `${pairs} pairs`, lanes, pairs, code);
}
