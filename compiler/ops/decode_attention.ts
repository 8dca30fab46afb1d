// Decode attention in two passes (flash-decoding): one query per row against a KV cache of
// fixed capacity C, of which only the positions <= `position` hold keys. The decode step
// (compiler/passes/kv-cache.ts) writes it as
//
//   split = decode_attention_split(q, k, v, position[, start]; block, window, scale)
//   out   = decode_attention_merge(split, position; block)
//
// q [R, Hq, 1, D], k [R, Hkv, C, D], v [R, Hkv, C, Dv]; query head h reads kv head
// floor(h / (Hq / Hkv)) (repeat_kv). Key c is visible when c <= position, c > position - window
// (window > 0: Mistral's sliding window with a cache, kv_idx > q_idx - sliding_window) and
// c >= start[r] (left-padded rows: start is each row's first real position).
//
// The split cuts the keys into blocks of `block` and gives, per (row, head, block), the block's
// softmax statistics [m, l, acc_0 .. acc_{Dv-1}]: m the largest visible score (NO_KEY when the
// block has no visible key), l = sum exp(s - m), acc = sum exp(s - m) v. The merge combines the
// blocks 0 .. floor(position / block) by the usual rescaling (m = max m_j, out = sum acc_j
// e^(m_j - m) / sum l_j e^(m_j - m)); it never reads a block past the position, so the split
// need only run those: its workgroup count along x is floor(position / block) + 1, a formula of
// the per-call symbol `position` (runtime/artefact.ts, WorkgroupExtent). One compiled decode
// step then costs attention work in proportion to the position, not the capacity, at every
// position, without new WGSL. A row that sees no key at all (position < 0, or every visible
// position padding) gets zeros, as `attention` gives such a row.
//
// Masked keys take no part at all (a NaN in a key or value no query sees does not reach the
// output); a NaN in a visible score, key or value propagates, as in PyTorch's softmax and P @ V.
// No gradient: generation graphs are never differentiated.
import { dimsEqual, dimToString, isConst } from '../ir/dims.js';
import type { Attrs, TensorType } from '../ir/graph.js';
import { grid1d, type KernelBody, type LowerContext } from '../codegen/kernel.js';
import type { OpDef } from './types.js';
import { attentionInfer } from './attention.js';
import { alloc } from './util/ref.js';
import { attrInt, attrNumber, expectArity, expectInt, fail, typeToString } from './util/shape.js';

/** Keys per block of the split: one workgroup of this many invocations per block. */
export const DECODE_BLOCK = 64;

/** The m of a block with no visible key: f32's lowest finite value (exp(NO_KEY - m) is 0 for any real m). */
export const NO_KEY = -3.4028234663852886e38;
const NO_KEY_WGSL = '-3.4028234663852886e38f';

interface SplitDims {
  R: number;
  Hq: number;
  Hkv: number;
  C: number;
  D: number;
  Dv: number;
  NB: number;
  block: number;
  window: number;
  scale: number;
}

function splitDims(shapes: readonly (readonly number[])[], attrs: Attrs): SplitDims {
  const [R, Hq, , D] = shapes[0] as [number, number, number, number];
  const [, Hkv, C] = shapes[1] as [number, number, number];
  const Dv = shapes[2]![3]!;
  const block = attrInt('decode_attention_split', attrs, 'block');
  return { R, Hq, Hkv, C, D, Dv, NB: Math.ceil(C / block), block, window: attrInt('decode_attention_split', attrs, 'window', 0), scale: attrNumber('decode_attention_split', attrs, 'scale') };
}

/** Blocks of `C` positions (the split's third output dim). */
export const decodeBlocks = (C: number, block = DECODE_BLOCK): number => Math.ceil(C / block);

function checkBlock(op: string, attrs: Attrs): number {
  const block = attrInt(op, attrs, 'block');
  if (block < 1 || block > 256 || (block & (block - 1)) !== 0) fail(`${op}: block must be a power of two from 1 to 256, got ${block}`);
  return block;
}

function checkPosition(op: string, t: TensorType, index: number): void {
  expectInt(op, t, 'position', index);
  if (t.shape.length !== 0) fail(`${op}: position must be an i32 scalar, got ${typeToString(t)}`, index);
}

/** The visible-key test of the split, as WGSL over `ci` (i32 key), `pos`, and load4 (start) for row `r`. */
function visibleWGSL(window: number, padded: boolean): string {
  const terms = ['ci <= pos'];
  if (window > 0) terms.push(`ci > pos - ${window}i`);
  if (padded) terms.push('ci >= load4(r)');
  return terms.join(' && ');
}

function lowerSplit(ctx: LowerContext): KernelBody {
  const d = splitDims(ctx.inputs.map((t) => t.shape), ctx.attrs);
  const padded = ctx.inputs.length === 5;
  const G = d.Hq / d.Hkv;
  const RH = d.R * d.Hq;
  const BL = d.block;
  const max = ctx.device.maxWorkgroupsPerDimension;
  if (d.NB > max) fail(`decode_attention_split: ${d.NB} blocks of ${BL} keys is more than the device's ${max} workgroups per dimension`);
  if (2 * BL * 4 > ctx.device.workgroupMemoryBytes) fail(`decode_attention_split: blocks of ${BL} keys need ${2 * BL * 4} bytes of workgroup memory; the device has ${ctx.device.workgroupMemoryBytes}`);
  const y = Math.min(RH, max);
  const z = Math.ceil(RH / y);
  if (z > max) fail(`decode_attention_split: ${RH} rows x heads is more than the device can dispatch`);
  const W = d.Dv + 2;
  // Tree reductions over the block in workgroup memory; `wp` keeps each key's weight (-1: not
  // visible, so a masked key's value is never read) for the weighted sum of values.
  const code = `const NO_KEY: f32 = ${NO_KEY_WGSL};
var<workgroup> red: array<f32, ${BL}>;
var<workgroup> wp: array<f32, ${BL}>;
@compute @workgroup_size(${BL})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let j = wid.x;
  let rh = wid.y + wid.z * nwg.y;
  let live = rh < ${RH}u;
  let r = rh / ${d.Hq}u;
  let kv = r * ${d.Hkv}u + (rh % ${d.Hq}u) / ${G}u;
  let pos = load3(0u);
  let c = j * ${BL}u + t;
  var s = NO_KEY;
  var ok = false;
  if (live && c < ${d.C}u) {
    let ci = i32(c);
    ok = ${visibleWGSL(d.window, padded)};
    if (ok) {
      var dot = 0.0;
      for (var i = 0u; i < ${d.D}u; i++) {
        dot += load0(rh * ${d.D}u + i) * load1((kv * ${d.C}u + c) * ${d.D}u + i);
      }
      s = dot * ${d.scale.toPrecision(17)}f;
    }
  }
  red[t] = s;
  workgroupBarrier();
  for (var w = ${BL / 2}u; w > 0u; w = w / 2u) {
    if (t < w) { red[t] = max(red[t], red[t + w]); }
    workgroupBarrier();
  }
  let m = red[0];
  workgroupBarrier();
  let p = select(0.0, exp(s - m), ok);
  red[t] = p;
  wp[t] = select(-1.0, p, ok);
  workgroupBarrier();
  for (var w = ${BL / 2}u; w > 0u; w = w / 2u) {
    if (t < w) { red[t] = red[t] + red[t + w]; }
    workgroupBarrier();
  }
  if (!live) { return; }
  let o = (rh * ${d.NB}u + j) * ${W}u;
  if (t == 0u) {
    store(o, m);
    store(o + 1u, red[0]);
  }
  for (var e = t; e < ${d.Dv}u; e += ${BL}u) {
    var acc = 0.0;
    for (var u = 0u; u < ${BL}u; u++) {
      let pu = wp[u];
      if (pu != -1.0) {
        acc += pu * load2((kv * ${d.C}u + j * ${BL}u + u) * ${d.Dv}u + e);
      }
    }
    store(o + 2u + e, acc);
  }
}`;
  // With the position a per-call symbol, only the blocks 0 .. floor(position / block) run: the
  // merge reads no other.
  const symbol = ctx.symbols?.[3];
  return {
    label: `decode_attention_split ${d.NB}x${BL}/${d.C}`,
    code,
    workgroups: [d.NB, y, z],
    ...(symbol === undefined ? {} : { perCall: [{ symbol, scale: 1, offset: BL, divisor: BL }, null, null] as const }),
  };
}

function lowerMerge(ctx: LowerContext): KernelBody {
  const [R, Hq, NB, W] = ctx.inputs[0]!.shape as [number, number, number, number];
  const Dv = W - 2;
  const BL = attrInt('decode_attention_merge', ctx.attrs, 'block');
  const n = R * Hq * Dv;
  const code = `const NO_KEY: f32 = ${NO_KEY_WGSL};
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg, 64u);
  if (i >= ${n}u) { return; }
  let pos = load1(0u);
  if (pos < 0i) {
    store(i, 0.0);
    return;
  }
  let rh = i / ${Dv}u;
  let e = i % ${Dv}u;
  let last = min(u32(pos) / ${BL}u, ${NB - 1}u);
  var m = NO_KEY;
  for (var j = 0u; j <= last; j++) {
    m = max(m, load0((rh * ${NB}u + j) * ${W}u));
  }
  var l = 0.0;
  var acc = 0.0;
  for (var j = 0u; j <= last; j++) {
    let o = (rh * ${NB}u + j) * ${W}u;
    let w = exp(load0(o) - m);
    l += load0(o + 1u) * w;
    acc += load0(o + 2u + e) * w;
  }
  store(i, select(acc / l, 0.0, l == 0.0));
}`;
  return { label: `decode_attention_merge ${NB}x${BL}`, code, workgroups: grid1d(n, 64, ctx.device) };
}

/** The split in PyTorch: per block, the max visible score, the sum of weights and the weighted values. */
export const DECODE_ATTENTION_SPLIT_TORCH = `def _decode_attention_split(q, k, v, position, start=None, block=64, window=0, scale=1.0):
    R, Hq, _, D = q.shape
    Hkv, C, Dv = k.shape[1], k.shape[2], v.shape[3]
    NB = (C + block - 1) // block
    pad = NB * block - C
    keys = torch.arange(C, device=q.device)
    pos = position.to(torch.long)
    ok = keys <= pos
    if window > 0:
        ok = ok & (keys > pos - window)
    ok = ok[None, :].expand(R, C)
    if start is not None:
        ok = ok & (keys[None, :] >= start.to(torch.long)[:, None])
    kk = k.repeat_interleave(Hq // Hkv, dim=1)
    vv = v.repeat_interleave(Hq // Hkv, dim=1)
    ok = F.pad(ok[:, None, :].expand(R, Hq, C), (0, pad), value=False).reshape(R, Hq, NB, block)
    s = F.pad((q[:, :, 0, None, :] * kk).sum(-1) * scale, (0, pad)).reshape(R, Hq, NB, block)
    m = torch.where(ok, s, torch.finfo(torch.float32).min).amax(-1)
    p = torch.where(ok, torch.exp(s - m[..., None]), 0.0)
    vv = F.pad(vv, (0, 0, 0, pad)).reshape(R, Hq, NB, block, Dv)
    acc = (torch.where(ok[..., None], vv, 0.0) * p[..., None]).sum(-2)
    return torch.cat([m[..., None], p.sum(-1)[..., None], acc], -1)`;

/** The merge in PyTorch: the blocks up to the position, rescaled to one softmax. */
export const DECODE_ATTENTION_MERGE_TORCH = `def _decode_attention_merge(split, position, block=64):
    R, Hq, NB, W = split.shape
    p = int(position)
    if p < 0:
        return split.new_zeros(R, Hq, 1, W - 2)
    s = split[:, :, : min(p // block, NB - 1) + 1]
    m = s[..., 0].amax(-1, keepdim=True)
    w = torch.exp(s[..., 0] - m)
    l = (s[..., 1] * w).sum(-1, keepdim=True)
    acc = (s[..., 2:] * w[..., None]).sum(-2)
    return torch.where(l == 0, 0.0, acc / l)[:, :, None, :]`;

export const decodeAttentionSplitOp: OpDef = {
  name: 'decode_attention_split',
  fusion: 'custom',
  infer(inputs, attrs) {
    const op = 'decode_attention_split';
    expectArity(op, inputs, 4, 5);
    const [q, k, v, position, start] = inputs as [TensorType, TensorType, TensorType, TensorType, TensorType | undefined];
    attentionInfer(op, q, k, v, { causal: true });
    if (!dimsEqual(q.shape[2]!, 1)) fail(`${op}: q must hold one query per row, [R, Hq, 1, D], got ${typeToString(q)}`, 0);
    checkPosition(op, position, 3);
    if (start !== undefined) {
      expectInt(op, start, 'start', 4);
      if (start.shape.length !== 1 || !dimsEqual(start.shape[0]!, q.shape[0]!)) fail(`${op}: start must be i32 [${dimToString(q.shape[0]!)}] (one per row), got ${typeToString(start)}`, 4);
    }
    const block = checkBlock(op, attrs);
    const window = attrInt(op, attrs, 'window', 0);
    if (window < 0) fail(`${op}: window must be >= 0 (0: no window), got ${window}`);
    attrNumber(op, attrs, 'scale');
    const C = k.shape[2]!;
    if (!isConst(C)) fail(`${op}: the cache capacity must be a number, got ${dimToString(C)}`, 1);
    const Dv = v.shape[3]!;
    if (!isConst(Dv)) fail(`${op}: the value head dim must be a number, got ${dimToString(Dv)}`, 2);
    return { dtype: 'f32', shape: [q.shape[0]!, q.shape[1]!, decodeBlocks(C, block), Dv + 2] };
  },
  reference([q, k, v, position, start], attrs, out, ctx) {
    const d = splitDims([q!.shape, k!.shape, v!.shape], attrs);
    const y = alloc(ctx, out.dtype, out.shape);
    const pos = position!.data[0]!;
    const G = d.Hq / d.Hkv;
    const W = d.Dv + 2;
    const s = new Float64Array(d.block);
    const acc = new Float64Array(d.Dv);
    for (let r = 0; r < d.R; r++)
      for (let h = 0; h < d.Hq; h++) {
        const kv = r * d.Hkv + Math.floor(h / G);
        const qo = (r * d.Hq + h) * d.D;
        for (let j = 0; j < d.NB; j++) {
          let m = NO_KEY;
          const seen: number[] = [];
          for (let t = 0; t < d.block; t++) {
            const c = j * d.block + t;
            if (c >= d.C || c > pos || (d.window > 0 && c <= pos - d.window) || (start !== undefined && c < start.data[r]!)) continue;
            let dot = 0;
            for (let i = 0; i < d.D; i++) dot += q!.data[qo + i]! * k!.data[(kv * d.C + c) * d.D + i]!;
            s[t] = dot * d.scale;
            m = Number.isNaN(s[t]!) ? NaN : Math.max(m, s[t]!);
            seen.push(t);
          }
          let l = 0;
          acc.fill(0);
          for (const t of seen) {
            const p = Math.exp(s[t]! - m);
            l += p;
            const vo = (kv * d.C + j * d.block + t) * d.Dv;
            for (let e = 0; e < d.Dv; e++) acc[e]! += p * v!.data[vo + e]!;
          }
          const o = ((r * d.Hq + h) * d.NB + j) * W;
          y.data[o] = m;
          y.data[o + 1] = l;
          for (let e = 0; e < d.Dv; e++) y.data[o + 2 + e] = acc[e]!;
        }
      }
    return y;
  },
  torch: {
    expr: (c) =>
      `_decode_attention_split(${c.inputs.slice(0, 4).join(', ')}, start=${c.inputs[4] ?? 'None'}, block=${attrInt('decode_attention_split', c.attrs, 'block')}, window=${attrInt('decode_attention_split', c.attrs, 'window', 0)}, scale=${c.num(attrNumber('decode_attention_split', c.attrs, 'scale'))})`,
    helpers: { _decode_attention_split: DECODE_ATTENTION_SPLIT_TORCH },
  },
  kernel: { kind: 'custom', lower: lowerSplit },
};

export const decodeAttentionMergeOp: OpDef = {
  name: 'decode_attention_merge',
  fusion: 'custom',
  infer(inputs, attrs) {
    const op = 'decode_attention_merge';
    expectArity(op, inputs, 2);
    const [split, position] = inputs as [TensorType, TensorType];
    if (split.dtype !== 'f32' || split.shape.length !== 4) fail(`${op}: split must be f32 [R, Hq, blocks, Dv + 2] from decode_attention_split, got ${typeToString(split)}`, 0);
    checkPosition(op, position, 1);
    checkBlock(op, attrs);
    const W = split.shape[3]!;
    if (isConst(W) && W < 3) fail(`${op}: split's last dim holds m, l and at least one value, got ${typeToString(split)}`, 0);
    return { dtype: 'f32', shape: [split.shape[0]!, split.shape[1]!, 1, isConst(W) ? W - 2 : fail(`${op}: split's last dim must be a number`, 0)] };
  },
  reference([split, position], attrs, out, ctx) {
    const [R, Hq, NB, W] = split!.shape as [number, number, number, number];
    const block = attrInt('decode_attention_merge', attrs, 'block');
    const Dv = W - 2;
    const y = alloc(ctx, out.dtype, out.shape);
    const pos = position!.data[0]!;
    if (pos < 0) return y;
    const last = Math.min(Math.floor(pos / block), NB - 1);
    const x = split!.data;
    for (let rh = 0; rh < R * Hq; rh++) {
      let m = NO_KEY;
      for (let j = 0; j <= last; j++) m = Math.max(m, x[(rh * NB + j) * W]!);
      let l = 0;
      const acc = new Float64Array(Dv);
      for (let j = 0; j <= last; j++) {
        const o = (rh * NB + j) * W;
        const w = Math.exp(x[o]! - m);
        l += x[o + 1]! * w;
        for (let e = 0; e < Dv; e++) acc[e]! += x[o + 2 + e]! * w;
      }
      for (let e = 0; e < Dv; e++) y.data[rh * Dv + e] = l === 0 ? 0 : acc[e]! / l;
    }
    return y;
  },
  torch: {
    expr: (c) => `_decode_attention_merge(${c.inputs.join(', ')}, block=${attrInt('decode_attention_merge', c.attrs, 'block')})`,
    helpers: { _decode_attention_merge: DECODE_ATTENTION_MERGE_TORCH },
  },
  kernel: { kind: 'custom', lower: lowerMerge },
};
