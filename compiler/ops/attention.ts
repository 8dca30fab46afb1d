// Scaled dot-product attention as HF's eager LLaMA/CLIP attention computes it:
// softmax(q k^T * scale + mask) v, q [B, Hq, T, D], k [B, Hkv, S, D], v [B, Hkv, S, Dv]. Grouped
// KV heads as repeat_kv: query head h reads kv head floor(h / (Hq / Hkv)). The causal mask is
// aligned to the end: query t sees keys j <= t + (S - T). A sliding window W (Mistral's
// sliding_window, as transformers' masking_utils defines it: kv_idx > q_idx - W) keeps only the
// last W of those: j > t + (S - T) - W, so each row sees at most W keys, itself included. The VJP is attention_grad (one op per
// cotangent, each recomputing the softmax) so a fused kernel can later replace it whole.
import { divDims, dimsEqual, dimToString, isConst, shapeToString } from '../ir/dims.js';
import type { Attrs, TensorType } from '../ir/graph.js';
import type { HostTensor } from '../../runtime/tensor.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { attrBool, expectArity, fail, isFloatDType, typeToString } from './util/shape.js';
import { lowerAttention } from './wgsl/attention.js';

export function attentionInfer(op: string, q: TensorType, k: TensorType, v: TensorType, attrs: Attrs): void {
  const names = ['q', 'k', 'v'];
  [q, k, v].forEach((t, i) => {
    if (t.shape.length !== 4) fail(`${op}: ${names[i]} must be [B, heads, seq, head_dim], got ${typeToString(t)}`, i);
    if (!isFloatDType(t.dtype) || t.dtype !== q.dtype) fail(`${op}: q, k and v must share one float dtype, got ${q.dtype}, ${k.dtype}, ${v.dtype}`, i);
  });
  const s = (t: TensorType): string => shapeToString(t.shape);
  const [B, Hq, , D] = q.shape as [never, never, never, never];
  if (!dimsEqual(k.shape[0]!, B) || !dimsEqual(v.shape[0]!, B))
    fail(`${op}: batch dims differ: q ${s(q)}, k ${s(k)}, v ${s(v)} (dim 0)`, 1);
  if (!dimsEqual(k.shape[3]!, D)) fail(`${op}: q ${s(q)} has head dim ${dimToString(D)} but k ${s(k)} has ${dimToString(k.shape[3]!)} (dim 3)`, 1);
  if (!dimsEqual(k.shape[1]!, v.shape[1]!)) fail(`${op}: k ${s(k)} and v ${s(v)} differ in kv heads (dim 1)`, 2);
  if (!dimsEqual(k.shape[2]!, v.shape[2]!)) fail(`${op}: k ${s(k)} and v ${s(v)} differ in key length (dim 2)`, 2);
  const group = divDims(Hq, k.shape[1]!);
  if (group === null || (isConst(group) && group < 1))
    fail(`${op}: q has ${dimToString(Hq)} heads, not a multiple of the ${dimToString(k.shape[1]!)} kv heads of k`, 1);
  const causal = attrBool(op, attrs, 'causal', false);
  const window = attrs['window'] ?? 0;
  if (typeof window !== 'number' || !Number.isSafeInteger(window) || window < 0)
    fail(`${op}: window must be a whole number of keys >= 0 (0: no window), got ${JSON.stringify(window)}`);
  if (window > 0 && !causal) fail(`${op}: a sliding window (window = ${window}) needs causal = true`);
  const scale = attrs['scale'];
  if (scale !== undefined && scale !== null && typeof scale !== 'number') fail(`${op}: scale must be a number or null`);
}

export interface AttentionDims {
  B: number;
  Hq: number;
  Hkv: number;
  T: number;
  S: number;
  D: number;
  Dv: number;
  scale: number;
  causal: boolean;
  /** sliding window in keys (causal only); 0: none. */
  window: number;
}

export function attentionDims(q: HostTensor, k: HostTensor, v: HostTensor, attrs: Attrs): AttentionDims {
  const [B, Hq, T, D] = q.shape as [number, number, number, number];
  const [, Hkv, S] = k.shape as [number, number, number];
  const scale = typeof attrs['scale'] === 'number' ? attrs['scale'] : 1 / Math.sqrt(D);
  return { B, Hq, Hkv, T, S, D, Dv: v.shape[3]!, scale, causal: attrs['causal'] === true, window: windowOf(attrs) };
}

/** The attention's sliding window (0: none); only meaningful with causal = true. */
export function windowOf(attrs: Attrs): number {
  return attrs['causal'] === true && typeof attrs['window'] === 'number' ? attrs['window'] : 0;
}

/**
 * Visits every query row with its softmax probabilities (f64, length S; masked keys get 0).
 * qo: offset of the query row, ko/vo: offsets of the kv head's first key/value row; the row
 * sees keys first..end-1 (causal mask and sliding window). Masked keys take no part at all (as in the fused kernels and torch's
 * flash attention): a NaN in a key or value the row cannot see does not reach it. Every key it
 * sees does, even with probability 0 (0 * NaN is NaN, as in torch's P @ V).
 */
export function forEachRow(
  q: HostTensor,
  k: HostTensor,
  d: AttentionDims,
  visit: (p: Float64Array, qo: number, ko: number, vo: number, b: number, h: number, t: number, first: number, end: number) => void,
): void {
  const p = new Float64Array(d.S);
  const group = d.Hq / d.Hkv;
  const qs = q.data;
  const ks = k.data;
  for (let b = 0; b < d.B; b++)
    for (let h = 0; h < d.Hq; h++) {
      const kh = Math.floor(h / group);
      const ko = (b * d.Hkv + kh) * d.S * d.D;
      const vo = (b * d.Hkv + kh) * d.S * d.Dv;
      for (let t = 0; t < d.T; t++) {
        const qo = ((b * d.Hq + h) * d.T + t) * d.D;
        const last = d.causal ? Math.min(d.S - 1, t + d.S - d.T) : d.S - 1;
        const first = d.window > 0 ? Math.max(0, t + d.S - d.T - d.window + 1) : 0;
        let m = -Infinity;
        for (let j = first; j <= last; j++) {
          let s = 0;
          for (let i = 0; i < d.D; i++) s += qs[qo + i]! * ks[ko + j * d.D + i]!;
          p[j] = s * d.scale;
          m = Math.max(m, p[j]!);
        }
        let z = 0;
        for (let j = first; j <= last; j++) {
          p[j] = Math.exp(p[j]! - m);
          z += p[j]!;
        }
        // A row that sees no key at all (T > S, causal) attends to nothing: zeros, not NaN.
        for (let j = 0; j < d.S; j++) p[j] = j >= first && j <= last ? p[j]! / z : 0;
        visit(p, qo, ko, vo, b, h, t, first, last + 1);
      }
    }
}

/**
 * The op in PyTorch: the mask is the op's (causal aligned to the end, the sliding window as
 * transformers' masking_utils); grouped heads as repeat_kv (enable_gqa repeats each kv head in place).
 */
export const ATTENTION_TORCH = `def _attention(q, k, v, causal=False, window=0, scale=None):
    T, S = q.shape[-2], k.shape[-2]
    mask = None
    if causal:
        i = torch.arange(T, device=q.device)[:, None] + (S - T)
        j = torch.arange(S, device=q.device)[None, :]
        mask = j <= i
        if window > 0:
            mask = mask & (j > i - window)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])`;

export const attentionOp: OpDef = {
  name: 'attention',
  fusion: 'custom',
  surface: {
    inputs: ['q', 'k', 'v'],
    attrs: { causal: { type: 'bool', default: false }, scale: { type: 'number', default: null }, window: { type: 'int', default: 0 } },
    doc: 'attention(q, k, v, causal = false, scale = null, window = 0): softmax(q k^T * scale) v, q [B, Hq, T, D], k/v [B, Hkv, S, D]; scale null: 1/sqrt(D); window W > 0 (causal): each query sees its last W keys',
  },
  infer(inputs, attrs) {
    expectArity('attention', inputs, 3);
    const [q, k, v] = inputs as [TensorType, TensorType, TensorType];
    attentionInfer('attention', q, k, v, attrs);
    return { dtype: q.dtype, shape: [q.shape[0]!, q.shape[1]!, q.shape[2]!, v.shape[3]!] };
  },
  vjp(b, node, g) {
    const ins = [...node.inputs, g];
    const attrs = { causal: attrBool('attention', node.attrs, 'causal', false), scale: node.attrs['scale'] ?? null, window: node.attrs['window'] ?? 0 };
    return (['q', 'k', 'v'] as const).map((wrt) => b.add('attention_grad', ins, { ...attrs, wrt }));
  },
  reference([q, k, v], attrs, out, ctx) {
    const d = attentionDims(q!, k!, v!, attrs);
    const y = alloc(ctx, out.dtype, out.shape);
    const vs = v!.data;
    const acc = new Float64Array(d.Dv);
    forEachRow(q!, k!, d, (p, qo, _ko, vo, _b, _h, _t, first, end) => {
      acc.fill(0);
      for (let j = first; j < end; j++) {
        const pj = p[j]!;
        for (let i = 0; i < d.Dv; i++) acc[i]! += pj * vs[vo + j * d.Dv + i]!;
      }
      const oo = (qo / d.D) * d.Dv;
      for (let i = 0; i < d.Dv; i++) y.data[oo + i] = acc[i]!;
    });
    return y;
  },
  torch: {
    expr: (c) => {
      const scale = c.attrs['scale'];
      const s = typeof scale === 'number' ? c.num(scale) : 'None';
      return `_attention(${c.inputs.join(', ')}, causal=${c.attrs['causal'] === true ? 'True' : 'False'}, window=${windowOf(c.attrs)}, scale=${s})`;
    },
    helpers: {
      _attention: ATTENTION_TORCH,
    },
  },
  kernel: { kind: 'custom', lower: lowerAttention },
};
