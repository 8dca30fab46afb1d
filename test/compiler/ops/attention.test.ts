import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { B, RUNS, T, cotangent, gradCheck, host, infer, input, run, t, values } from './harness.js';

describe('rope and attention shape rules', () => {
  it('rope keeps [B, H, T, D] and needs an even head dim', () => {
    expect(infer('rope', [t('f32', [B, 4, T, 16])], { theta: 10000 })).toEqual(t('f32', [B, 4, T, 16]));
    expect(() => infer('rope', [t('f32', [B, 4, T, 15])], {})).toThrow('rope: the head dim (last dim of x [B, 4, T, 15]) must be an even number, got 15');
    expect(() => infer('rope', [t('i32', [B, 4, T, 16])], {})).toThrow('rope: x must be a float tensor');
  });

  it('attention checks heads, lengths and head dims', () => {
    expect(infer('attention', [t('f32', [B, 4, T, 16]), t('f32', [B, 2, T, 16]), t('f32', [B, 2, T, 16])], { causal: true })).toEqual(
      t('f32', [B, 4, T, 16]),
    );
    expect(() => infer('attention', [t('f32', [B, 3, T, 16]), t('f32', [B, 2, T, 16]), t('f32', [B, 2, T, 16])], {})).toThrow(
      'attention: q has 3 heads, not a multiple of the 2 kv heads of k',
    );
    expect(() => infer('attention', [t('f32', [B, 4, T, 16]), t('f32', [B, 4, T, 8]), t('f32', [B, 4, T, 16])], {})).toThrow(
      'attention: q [B, 4, T, 16] has head dim 16 but k [B, 4, T, 8] has 8 (dim 3)',
    );
    expect(() => infer('attention', [t('f32', [B, 4, T, 16]), t('f32', [B, 4, T, 16]), t('f32', [B, 4, 5, 16])], {})).toThrow(
      'attention: k [B, 4, T, 16] and v [B, 4, 5, 16] differ in key length (dim 2)',
    );
    expect(() => infer('attention', [t('f32', [B, 4, 16]), t('f32', [B, 4, T, 16]), t('f32', [B, 4, T, 16])], {})).toThrow(
      'attention: q must be [B, heads, seq, head_dim], got f32[B, 4, 16]',
    );
  });

  it('a sliding window is a whole number of keys and needs causal attention', () => {
    const qkv = [t('f32', [B, 2, T, 8]), t('f32', [B, 2, T, 8]), t('f32', [B, 2, T, 8])];
    expect(infer('attention', qkv, { causal: true, window: 4 })).toEqual(t('f32', [B, 2, T, 8]));
    expect(() => infer('attention', qkv, { causal: false, window: 4 })).toThrow('attention: a sliding window (window = 4) needs causal = true');
    expect(() => infer('attention', qkv, { causal: true, window: -1 })).toThrow('attention: window must be a whole number of keys >= 0 (0: no window), got -1');
    expect(() => infer('attention', qkv, { causal: true, window: 2.5 })).toThrow('window must be a whole number');
  });
});

describe('rope and attention reference values', () => {
  it('rope rotates in the rotate_half layout from the offset on', () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [1, 1, 2, 4]);
    const r0 = b.add('rope', [x], { theta: 10000 });
    const r1 = b.add('rope', [x], { theta: 10000, offset: 1 });
    const feeds = { x: host('f32', [1, 1, 2, 4], [1, 2, 3, 4, 1, 2, 3, 4]) };
    const c1 = Math.cos(1);
    const s1 = Math.sin(1);
    const c2 = Math.cos(0.01);
    const s2 = Math.sin(0.01);
    const atOne = [c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + s1, 4 * c2 + 2 * s2];
    const got0 = run(b.build(), feeds, r0);
    [1, 2, 3, 4, ...atOne].forEach((v, i) => expect(got0[i]).toBeCloseTo(v, 14));
    const got1 = run(b.build(), feeds, r1);
    atOne.forEach((v, i) => expect(got1[i]).toBeCloseTo(v, 14));
    // f32 mode rounds the tables as HF does and stays within f32 precision of the exact value.
    const f32 = run(b.build(), feeds, r0, 'f32');
    atOne.forEach((v, i) => expect(Math.abs(f32[4 + i]! - v)).toBeLessThan(1e-6));
  });

  it('causal attention aligns the mask to the end; grouped heads share kv heads', () => {
    const b = new GraphBuilder();
    const q = input(b, 'q', 'f32', [1, 2, 2, 1]);
    const k = input(b, 'k', 'f32', [1, 1, 2, 1]);
    const v = input(b, 'v', 'f32', [1, 1, 2, 1]);
    const causal = b.add('attention', [q, k, v], { causal: true });
    const full = b.add('attention', [q, k, v], { causal: false, scale: 0.5 });
    const feeds = { q: host('f32', [1, 2, 2, 1], [1, 2, 0, -1]), k: host('f32', [1, 1, 2, 1], [1, 3]), v: host('f32', [1, 1, 2, 1], [10, 20]) };
    const mix = (s0: number, s1: number): number => (10 * Math.exp(s0) + 20 * Math.exp(s1)) / (Math.exp(s0) + Math.exp(s1));
    const got = run(b.build(), feeds, causal);
    [10, mix(2, 6), 10, mix(-1, -3)].forEach((e, i) => expect(got[i]).toBeCloseTo(e, 12));
    const gotFull = run(b.build(), feeds, full);
    [mix(0.5, 1.5), mix(1, 3), mix(0, 0), mix(-0.5, -1.5)].forEach((e, i) => expect(gotFull[i]).toBeCloseTo(e, 12));

    const g = new GraphBuilder();
    const q4 = input(g, 'q', 'f32', [1, 4, 1, 1]);
    const k2 = input(g, 'k', 'f32', [1, 2, 3, 1]);
    const v2 = input(g, 'v', 'f32', [1, 2, 3, 1]);
    // One query against three keys, causal: it is the last position, so it sees all three.
    const o = g.add('attention', [q4, k2, v2], { causal: true });
    const out = run(g.build(), { q: host('f32', [1, 4, 1, 1], [0, 0, 0, 0]), k: host('f32', [1, 2, 3, 1], [1, 2, 3, 4, 5, 6]), v: host('f32', [1, 2, 3, 1], [1, 2, 3, 7, 8, 9]) }, o);
    [2, 2, 8, 8].forEach((e, i) => expect(out[i]).toBeCloseTo(e, 14));
  });
});

describe('sliding-window attention keeps what transformers keeps', () => {
  // masking_utils.sliding_window_causal_mask_function(W): kv_idx <= q_idx and kv_idx > q_idx - W.
  // With scores all 0 the output is the mean of the values a row sees, which names the keys kept.
  it('window 2 over 4 positions: each row sees itself and the one before', () => {
    const b = new GraphBuilder();
    const q = input(b, 'q', 'f32', [1, 1, 4, 1]);
    const k = input(b, 'k', 'f32', [1, 1, 4, 1]);
    const v = input(b, 'v', 'f32', [1, 1, 4, 1]);
    const w2 = b.add('attention', [q, k, v], { causal: true, window: 2 });
    const w9 = b.add('attention', [q, k, v], { causal: true, window: 9 });
    const plain = b.add('attention', [q, k, v], { causal: true });
    const zeros = host('f32', [1, 1, 4, 1], [0, 0, 0, 0]);
    const feeds = { q: zeros, k: zeros, v: host('f32', [1, 1, 4, 1], [1, 10, 100, 1000]) };
    const g = b.build();
    const near = (got: ArrayLike<number>, want: number[]) => want.forEach((e, i) => expect(got[i]).toBeCloseTo(e, 12));
    near(run(g, feeds, w2), [1, 5.5, 55, 550]);
    // A window at least the sequence is plain causal attention.
    near(run(g, feeds, w9), [1, 5.5, 37, 277.75]);
    near(run(g, feeds, plain), [1, 5.5, 37, 277.75]);
  });

  it('T < S (a cached prefix): the window is aligned to the end like the causal mask', () => {
    const b = new GraphBuilder();
    const q = input(b, 'q', 'f32', [1, 1, 2, 1]);
    const k = input(b, 'k', 'f32', [1, 1, 5, 1]);
    const v = input(b, 'v', 'f32', [1, 1, 5, 1]);
    const o = b.add('attention', [q, k, v], { causal: true, window: 3 });
    const feeds = { q: host('f32', [1, 1, 2, 1], [0, 0]), k: host('f32', [1, 1, 5, 1], [0, 0, 0, 0, 0]), v: host('f32', [1, 1, 5, 1], [1, 2, 4, 8, 16]) };
    // Query 0 is position 3: keys 1..3; query 1 is position 4: keys 2..4.
    const got = run(b.build(), feeds, o);
    [14 / 3, 28 / 3].forEach((e, i) => expect(got[i]).toBeCloseTo(e, 12));
  });
});

describe('rope and attention gradients (finite differences, f64)', () => {
  it('rope', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3 }), fc.constantFrom(2, 4, 6), fc.nat(5), values(36), cotangent, (tt, d, offset, xs, c) =>
        gradCheck({ params: { x: [[1, 2, tt, d], xs.slice(0, 2 * tt * d)] }, build: (b, v) => b.add('rope', [v['x']!], { theta: 100, offset }) }, c),
      ),
      RUNS,
    );
  });

  it('attention: causal or not, sliding window or not, grouped heads, S != T, explicit scale', () => {
    fc.assert(
      fc.property(
        fc.constantFrom([2, 1], [2, 2], [1, 1]),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 0, max: 2 }),
        fc.integer({ min: 1, max: 3 }),
        fc.boolean(),
        fc.constantFrom(null, 0.7),
        fc.integer({ min: 0, max: 3 }),
        fc.tuple(values(36), values(36), values(36)),
        cotangent,
        ([hq, hkv], tt, extra, d, causal, scale, window, [qs, ks, vs], c) => {
          const s = tt + extra;
          gradCheck(
            {
              params: {
                q: [[1, hq!, tt, d], qs.slice(0, hq! * tt * d)],
                k: [[1, hkv!, s, d], ks.slice(0, hkv! * s * d)],
                v: [[1, hkv!, s, d], vs.slice(0, hkv! * s * d)],
              },
              build: (b, v) => b.add('attention', [v['q']!, v['k']!, v['v']!], { causal, scale, window: causal ? window : 0 }),
            },
            c,
          );
        },
      ),
      RUNS,
    );
  });
});
