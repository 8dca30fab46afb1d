// decode_attention_split + decode_attention_merge (flash-decoding over a KV cache): the pair of
// references against attention written out directly (a masked softmax over the cache, f64:
// the same sums in another order, so 1e-12), each kernel against its reference on every device
// variant, keys and values no query may see poisoned with NaN (they must not reach the output),
// and the PyTorch renderings against the references.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { getOp } from '../../../../compiler/ops/registry.js';
import { DECODE_BLOCK, NO_KEY } from '../../../../compiler/ops/decode_attention.js';
import type { HostTensor } from '../../../../runtime/tensor.js';
import { runPython } from '../../../helpers/torch-python.js';
import { expectClose, f32t, gpu, i32t, outType, randn, reference, relTol, VARIANTS } from './helpers.js';

interface Case {
  R: number;
  Hq: number;
  Hkv: number;
  C: number;
  D: number;
  Dv: number;
  window: number;
  start?: number[];
}

const block = DECODE_BLOCK;

function tensors(c: Case, seed: number): { q: HostTensor; k: HostTensor; v: HostTensor } {
  return {
    q: f32t([c.R, c.Hq, 1, c.D], randn(c.R * c.Hq * c.D, seed, -2, 2)),
    k: f32t([c.R, c.Hkv, c.C, c.D], randn(c.R * c.Hkv * c.C * c.D, seed + 1, -2, 2)),
    v: f32t([c.R, c.Hkv, c.C, c.Dv], randn(c.R * c.Hkv * c.C * c.Dv, seed + 2)),
  };
}

const splitAttrs = (c: Case) => ({ block, window: c.window, scale: 1 / Math.sqrt(c.D) });
const splitInputs = (c: Case, t: ReturnType<typeof tensors>, pos: number): HostTensor[] => [t.q, t.k, t.v, i32t([], [pos]), ...(c.start ? [i32t([c.R], c.start)] : [])];

/** Attention of the one query over the visible cache positions, written out (f64). */
function direct(c: Case, t: ReturnType<typeof tensors>, pos: number): Float64Array {
  const out = new Float64Array(c.R * c.Hq * c.Dv);
  const G = c.Hq / c.Hkv;
  for (let r = 0; r < c.R; r++)
    for (let h = 0; h < c.Hq; h++) {
      const kv = r * c.Hkv + Math.floor(h / G);
      const keys: number[] = [];
      for (let j = 0; j < c.C; j++) if (j <= pos && (c.window === 0 || j > pos - c.window) && (!c.start || j >= c.start[r]!)) keys.push(j);
      const s = keys.map((j) => {
        let dot = 0;
        for (let i = 0; i < c.D; i++) dot += t.q.data[(r * c.Hq + h) * c.D + i]! * t.k.data[(kv * c.C + j) * c.D + i]!;
        return dot / Math.sqrt(c.D);
      });
      const m = Math.max(...s);
      const p = s.map((x) => Math.exp(x - m));
      const z = p.reduce((a, b) => a + b, 0);
      for (let e = 0; e < c.Dv; e++) {
        let a = 0;
        keys.forEach((j, n) => (a += p[n]! * t.v.data[(kv * c.C + j) * c.Dv + e]!));
        out[(r * c.Hq + h) * c.Dv + e] = keys.length === 0 ? 0 : a / z;
      }
    }
  return out;
}

const CASES: Case[] = [
  { R: 1, Hq: 4, Hkv: 2, C: 150, D: 8, Dv: 8, window: 0 },
  { R: 2, Hq: 4, Hkv: 4, C: 128, D: 16, Dv: 4, window: 37 },
  { R: 2, Hq: 4, Hkv: 1, C: 100, D: 8, Dv: 72, window: 0, start: [3, 0] },
];
const POSITIONS = (C: number): number[] => [0, 1, 5, 63, 64, 65, C - 1];

function runRef(c: Case, t: ReturnType<typeof tensors>, pos: number): { split: HostTensor; out: HostTensor } {
  const ins = splitInputs(c, t, pos);
  const split = reference('decode_attention_split', ins, splitAttrs(c), outType('decode_attention_split', ins, splitAttrs(c)));
  const mIns = [split, i32t([], [pos])];
  return { split, out: reference('decode_attention_merge', mIns, { block }, outType('decode_attention_merge', mIns, { block })) };
}

describe('decode attention references', () => {
  it('split then merge equals attention over the visible cache positions (window, GQA, padded rows, a partial last block)', () => {
    for (const c of CASES)
      for (const pos of POSITIONS(c.C)) {
        const t = tensors(c, 7);
        const { out } = runRef(c, t, pos);
        const want = direct(c, t, pos);
        expectClose(out, { dtype: 'f32', shape: out.shape, data: want }, 1e-12, `C ${c.C} window ${c.window} at ${pos}`);
      }
  });

  it('an empty block holds m = NO_KEY, l = 0, acc = 0; a row that sees nothing gets zeros', () => {
    const c = CASES[2]!;
    const t = tensors(c, 3);
    const { split, out } = runRef(c, t, 1);
    // Row 0 starts at 3: at position 1 it sees nothing; row 1 sees keys 0 and 1.
    const W = c.Dv + 2;
    expect(split.data[0]).toBe(NO_KEY);
    expect(split.data[1]).toBe(0);
    expect([...split.data.slice(2, W)].every((x) => x === 0)).toBe(true);
    expect([...out.data.slice(0, c.Hq * c.Dv)].every((x) => x === 0)).toBe(true);
    const r1 = c.Hq * 2 * W; // row 1, head 0, block 1 is empty
    expect(split.data[r1 + W]).toBe(NO_KEY);
    expect([...runRef(c, t, -1).out.data].every((x) => x === 0)).toBe(true);
  });

  it('checks its inputs', () => {
    const f = (shape: number[]) => ({ dtype: 'f32' as const, shape });
    const i = (shape: number[]) => ({ dtype: 'i32' as const, shape });
    const infer = (ins: { dtype: 'f32' | 'i32'; shape: number[] }[], attrs = { block: 64, window: 0, scale: 0.5 }) => getOp('decode_attention_split').infer(ins, attrs);
    expect(infer([f([2, 4, 1, 8]), f([2, 2, 130, 8]), f([2, 2, 130, 6]), i([])])).toEqual({ dtype: 'f32', shape: [2, 4, 3, 8] });
    expect(() => infer([f([2, 4, 2, 8]), f([2, 2, 130, 8]), f([2, 2, 130, 6]), i([])])).toThrow('decode_attention_split: q must hold one query per row');
    expect(() => infer([f([2, 4, 1, 8]), f([2, 2, 130, 8]), f([2, 2, 130, 6]), i([1])])).toThrow('decode_attention_split: position must be an i32 scalar, got i32[1]');
    expect(() => infer([f([2, 4, 1, 8]), f([2, 2, 130, 8]), f([2, 2, 130, 6]), i([]), i([3])])).toThrow('decode_attention_split: start must be i32 [2] (one per row), got i32[3]');
    expect(() => infer([f([2, 4, 1, 8]), f([2, 2, 130, 8]), f([2, 2, 130, 6]), i([])], { block: 48, window: 0, scale: 1 })).toThrow('block must be a power of two');
    expect(getOp('decode_attention_merge').infer([f([2, 4, 3, 8]), i([])], { block: 64 })).toEqual({ dtype: 'f32', shape: [2, 4, 1, 6] });
    expect(() => getOp('decode_attention_merge').infer([f([2, 4, 3, 8]), f([])], { block: 64 })).toThrow('decode_attention_merge: position must be i32');
  });
});

describe('decode attention kernels', () => {
  it('the split and the merge equal their references at every position, on every variant', async () => {
    for (const c of CASES)
      for (const pos of POSITIONS(c.C)) {
        const t = tensors(c, 11);
        const ins = splitInputs(c, t, pos);
        const attrs = splitAttrs(c);
        const out = outType('decode_attention_split', ins, attrs);
        const want = runRef(c, t, pos);
        for (const v of VARIANTS) {
          if (v === 'folded' && Math.ceil(c.C / block) > 3) continue; // the folded device dispatches at most 3 blocks
          const split = await gpu('decode_attention_split', ins, attrs, out, v);
          // f32 dot products of 8-16 terms and sums of up to 64 weights, against f64: 1e-5 of the scale.
          expectClose(split, want.split, relTol(want.split, 1e-5, 1), `split C ${c.C} window ${c.window} at ${pos} (${v})`);
          const mIns = [want.split, i32t([], [pos])];
          const merged = await gpu('decode_attention_merge', mIns, { block }, outType('decode_attention_merge', mIns, { block }), v);
          expectClose(merged, want.out, relTol(want.out, 1e-5, 1), `merge C ${c.C} at ${pos} (${v})`);
        }
      }
  });

  it('keys and values no query sees do not reach the output, even NaN', async () => {
    const c = CASES[0]!;
    const pos = 70;
    const t = tensors(c, 5);
    const clean = runRef(c, t, pos);
    for (const x of [t.k, t.v]) {
      const inner = x.shape[3]!;
      for (let kv = 0; kv < c.R * c.Hkv; kv++) for (let j = pos + 1; j < c.C; j++) for (let e = 0; e < inner; e++) x.data[(kv * c.C + j) * inner + e] = NaN;
    }
    const ins = splitInputs(c, t, pos);
    const split = await gpu('decode_attention_split', ins, splitAttrs(c), outType('decode_attention_split', ins, splitAttrs(c)));
    const mIns = [split, i32t([], [pos])];
    const merged = await gpu('decode_attention_merge', mIns, { block }, outType('decode_attention_merge', mIns, { block }));
    expect([...merged.data].some(Number.isNaN)).toBe(false);
    expectClose(merged, clean.out, relTol(clean.out, 1e-5, 1), 'poisoned past the position');
    // A NaN in a key the query sees propagates.
    t.k.data[(0 * c.C + 3) * c.D] = NaN;
    const split2 = await gpu('decode_attention_split', ins, splitAttrs(c), outType('decode_attention_split', ins, splitAttrs(c)));
    const merged2 = await gpu('decode_attention_merge', [split2, i32t([], [pos])], { block }, outType('decode_attention_merge', mIns, { block }));
    expect(Number.isNaN(merged2.data[0]!)).toBe(true);
  });
});

describe('decode attention in PyTorch', () => {
  it('the renderings equal the references, padded rows, windows and positions before the first key included', () => {
    const split = getOp('decode_attention_split').torch!;
    const merge = getOp('decode_attention_merge').torch!;
    const ctx = (inputs: string[], attrs: Record<string, number>) => ({
      inputs,
      attrs,
      inputTypes: [],
      output: { dtype: 'f32' as const, shape: [] },
      dim: String,
      shape: (ds: readonly unknown[]) => `(${ds.join(', ')},)`,
      num: String,
      dtype: () => 'torch.float32',
      source: (_k: string, n: string) => n,
    });
    const runs: { c: Case; pos: number; t: ReturnType<typeof tensors> }[] = [];
    for (const c of [CASES[1]!, CASES[2]!]) for (const pos of [-1, 0, 2, 64, c.C - 1]) runs.push({ c, pos, t: tensors(c, 13) });
    const script = `import json, os, torch
import torch.nn.functional as F
${split.helpers!['_decode_attention_split']}
${merge.helpers!['_decode_attention_merge']}
out = []
for r in json.load(open(os.environ['KILN_CASES'])):
    T = lambda x, s: torch.tensor(x, dtype=torch.float32).reshape(s)
    q, k, v = T(r['q'], r['qs']), T(r['k'], r['ks']), T(r['v'], r['vs'])
    position = torch.tensor(r['pos'], dtype=torch.int32)
    start = torch.tensor(r['start'], dtype=torch.int32) if r['start'] is not None else None
    s = ${split.expr(ctx(['q', 'k', 'v', 'position', 'start'], { block, window: 0, scale: 0 }) as never).replace('window=0', "window=r['window']").replace('scale=0', "scale=r['scale']")}
    out.append(${merge.expr(ctx(['s', 'position'], { block }) as never)}.flatten().tolist())
print(json.dumps(out))`;
    const file = join(mkdtempSync(join(tmpdir(), 'kiln-decode-')), 'cases.json');
    writeFileSync(file, JSON.stringify(runs.map(({ c, pos, t }) => ({ q: [...t.q.data], qs: t.q.shape, k: [...t.k.data], ks: t.k.shape, v: [...t.v.data], vs: t.v.shape, pos, start: c.start ?? null, window: c.window, scale: 1 / Math.sqrt(c.D) }))));
    const got = JSON.parse(runPython(['-c', script], { KILN_CASES: file })) as number[][];
    runs.forEach(({ c, pos, t }, n) => {
      const want = runRef(c, t, pos).out;
      // torch's f32 sums against the f64 reference.
      expectClose(f32t(want.shape, got[n]!), want, relTol(want, 1e-5, 1), `torch C ${c.C} window ${c.window} at ${pos}`);
    });
  });
});
