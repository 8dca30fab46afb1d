// Fused attention and attention_grad (wrt q, k, v) against the f64 reference.
//
// Tolerance per element: 1e-5 · scale_i + 1e-7, where scale_i is the element's formula with
// every term's absolute value (computed below from the reference's probabilities), e.g.
// sum_j P_j |v_j| for the output. f32 errs in the scores by ~u·D·|q||k| (u = 6e-8), which moves
// each P_j by that relative amount; exp adds <= 3 + 2|x| ULP; sums over <= 300 keys add
// ~u·sqrt(S). All stay well under 1e-5 relative to the scale for the sizes here, while a wrong
// head, mask or key is O(scale).
import { describe, it } from 'vitest';
import fc from 'fast-check';
import type { HostTensor } from '../../../../runtime/tensor.js';
import { attentionDims, forEachRow } from '../../../../compiler/ops/attention.js';
import { expectClose, f32t, gpu, outType, randn, reference, VARIANTS } from './helpers.js';

interface Case {
  B: number;
  Hkv: number;
  G: number;
  T: number;
  S: number;
  D: number;
  Dv: number;
  causal: boolean;
  /** sliding window (causal only); 0: none. */
  window?: number;
  scale: number | null;
  seed: number;
  amp?: number;
}

/** Absolute-value scales of dq, dk (wrt q and k), from the f64 probabilities. */
function gradScales(q: HostTensor, k: HostTensor, v: HostTensor, g: HostTensor, attrs: Record<string, unknown>): { dq: Float64Array; dk: Float64Array } {
  const d = attentionDims(q, k, v, attrs as never);
  const dq = new Float64Array(q.data.length);
  const dk = new Float64Array(k.data.length);
  forEachRow(q, k, d, (p, qo, ko, vo) => {
    const go = (qo / d.D) * d.Dv;
    const dp = new Float64Array(d.S);
    let delta = 0;
    for (let j = 0; j < d.S; j++) {
      for (let i = 0; i < d.Dv; i++) dp[j]! += g.data[go + i]! * v.data[vo + j * d.Dv + i]!;
      delta += p[j]! * dp[j]!;
    }
    for (let j = 0; j < d.S; j++) {
      const w = p[j]! * (Math.abs(dp[j]!) + Math.abs(delta)) * Math.abs(d.scale);
      for (let i = 0; i < d.D; i++) {
        dq[qo + i]! += w * Math.abs(k.data[ko + j * d.D + i]!);
        dk[ko + j * d.D + i]! += w * Math.abs(q.data[qo + i]!);
      }
    }
  });
  return { dq, dk };
}

const absT = (t: HostTensor): HostTensor => f32t(t.shape, Array.from(t.data, Math.abs));

async function check(c: Case, variants = VARIANTS): Promise<void> {
  const { B, Hkv, G, T, S, D, Dv } = c;
  const Hq = Hkv * G;
  const amp = c.amp ?? 1;
  const q = f32t([B, Hq, T, D], randn(B * Hq * T * D, c.seed, -amp, amp));
  const k = f32t([B, Hkv, S, D], randn(B * Hkv * S * D, c.seed + 1, -amp, amp));
  const v = f32t([B, Hkv, S, Dv], randn(B * Hkv * S * Dv, c.seed + 2));
  const g = f32t([B, Hq, T, Dv], randn(B * Hq * T * Dv, c.seed + 3));
  const attrs = { causal: c.causal, scale: c.scale, window: c.causal ? (c.window ?? 0) : 0 };
  const what = `B${B} Hkv${Hkv} G${G} T${T} S${S} D${D} Dv${Dv}${c.causal ? ' causal' : ''}${attrs.window ? ` window ${attrs.window}` : ''} scale ${c.scale}`;
  const out = outType('attention', [q, k, v], attrs);
  const want = reference('attention', [q, k, v], attrs, out);
  const outScale = reference('attention', [q, k, absT(v)], attrs, out);
  const { dq, dk } = gradScales(q, k, v, g, attrs);
  const grads = (['q', 'k', 'v'] as const).map((wrt) => {
    const a = { ...attrs, wrt };
    const o = outType('attention_grad', [q, k, v, g], a);
    const w = reference('attention_grad', [q, k, v, g], a, o);
    const s = wrt === 'v' ? reference('attention_grad', [q, k, v, absT(g)], a, o).data : wrt === 'q' ? dq : dk;
    return { a, o, w, s };
  });
  for (const variant of variants) {
    expectClose(await gpu('attention', [q, k, v], attrs, out, variant), want, (i) => 1e-5 * outScale.data[i]! + 1e-7, `attention ${what} ${variant}`);
    for (const { a, o, w, s } of grads) {
      expectClose(await gpu('attention_grad', [q, k, v, g], a, o, variant), w, (i) => 1e-5 * s[i]! + 1e-7, `attention_grad ${a.wrt} ${what} ${variant}`);
    }
  }
}

describe('attention kernels', () => {
  // Random shapes on the device and portable paths; the T > S case below also runs 'folded'
  // (private-memory fallback, chunked statistics), whose kernels are slower to compile.
  it('random shapes: GQA, causal and not, odd head dims, T > S and T < S', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          B: fc.integer({ min: 1, max: 2 }),
          Hkv: fc.integer({ min: 1, max: 2 }),
          G: fc.integer({ min: 1, max: 3 }),
          T: fc.integer({ min: 1, max: 19 }),
          S: fc.integer({ min: 1, max: 19 }),
          D: fc.integer({ min: 1, max: 9 }),
          Dv: fc.integer({ min: 1, max: 9 }),
          causal: fc.boolean(),
          scale: fc.constantFrom(null, 0.3),
          seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        }),
        (c) => check(c, ['device', 'portable']),
      ),
      { numRuns: 4 },
    );
    // Eight shader compiles per run: past the default 120 s on a loaded two-core lavapipe host.
  }, 600_000);

  it('decode step (T = 1) with GQA; causal rows that see no key (T > S)', async () => {
    await check({ B: 1, Hkv: 2, G: 4, T: 1, S: 21, D: 8, Dv: 8, causal: true, scale: null, seed: 1 }, ['device', 'portable']);
    await check({ B: 2, Hkv: 1, G: 2, T: 13, S: 5, D: 4, Dv: 3, causal: true, scale: null, seed: 2 }, ['device', 'folded']);
  });

  // Mistral's sliding window (attention.ts): windows smaller than the sequence, equal to it and
  // larger, T = S and T != S, on every variant (the folded one chunks the statistics).
  it('random shapes with a sliding window smaller or larger than the sequence', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          B: fc.integer({ min: 1, max: 2 }),
          Hkv: fc.integer({ min: 1, max: 2 }),
          G: fc.integer({ min: 1, max: 3 }),
          T: fc.integer({ min: 1, max: 40 }),
          S: fc.integer({ min: 1, max: 40 }),
          D: fc.integer({ min: 1, max: 9 }),
          Dv: fc.integer({ min: 1, max: 9 }),
          causal: fc.constant(true),
          window: fc.integer({ min: 1, max: 45 }),
          scale: fc.constantFrom(null, 0.3),
          seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        }),
        (c) => check(c, ['device', 'portable']),
      ),
      { numRuns: 3 },
    );
    await check({ B: 1, Hkv: 2, G: 2, T: 37, S: 37, D: 5, Dv: 6, causal: true, window: 4, scale: null, seed: 11 }, VARIANTS);
    await check({ B: 2, Hkv: 1, G: 3, T: 6, S: 29, D: 4, Dv: 4, causal: true, window: 3, scale: null, seed: 12 }, ['device', 'folded']);
  }, 600_000);

  it('a 128-wide head over 300 keys with large scores (online rescaling)', async () => {
    await check({ B: 1, Hkv: 1, G: 2, T: 10, S: 300, D: 128, Dv: 128, causal: true, scale: null, seed: 3, amp: 2.5 }, ['device']);
  });
});
