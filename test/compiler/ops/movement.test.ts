import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { addDims, mulDims, subDims } from '../../../compiler/ir/dims.js';
import { B, RUNS, T, cotangent, dim, gradCheck, host, infer, input, run, t, values } from './harness.js';

describe('reduction shape rules', () => {
  it('reduces over int or list axes, negative allowed, keepdims or not', () => {
    expect(infer('sum', [t('f32', [B, T, 8])], { axis: -1 })).toEqual(t('f32', [B, T]));
    expect(infer('mean', [t('f32', [B, T, 8])], { axis: [0, 2], keepdims: true })).toEqual(t('f32', [1, T, 1]));
    expect(infer('max', [t('f32', [B, T])], { axes: [1] })).toEqual(t('f32', [B]));
    expect(infer('sum', [t('f32', [B, T])], {})).toEqual(t('f32', []));
    expect(infer('sum', [t('i32', [B, T])], { axis: 1 })).toEqual(t('i32', [B]));
  });

  it('rejects bad axes and dtypes', () => {
    expect(() => infer('sum', [t('f32', [B, T])], { axis: 2 })).toThrow('sum: axis 2 is out of range for rank 2');
    expect(() => infer('sum', [t('f32', [B, T])], { axis: [1, -1] })).toThrow('sum: axis [1,-1] names an axis twice');
    expect(() => infer('mean', [t('i32', [B])], { axis: 0 })).toThrow('mean: x must be a float tensor, got i32[B]');
    expect(() => infer('max', [t('bool', [B])], { axis: 0 })).toThrow('max: x must be a float or i32 tensor, got bool[B]');
  });

  it('sum_to sums back to a broadcastable shape', () => {
    expect(infer('sum_to', [t('f32', [B, T, 8])], { shape: [8] })).toEqual(t('f32', [8]));
    expect(infer('sum_to', [t('f32', [B, T, 8])], { shape: [B, 1, 8] })).toEqual(t('f32', [B, 1, 8]));
    expect(() => infer('sum_to', [t('f32', [B, 8])], { shape: [T, 8] })).toThrow('sum_to: cannot broadcast shape [T, 8] with x [B, 8]: axis -2 has T vs B');
  });
});

describe('movement shape rules', () => {
  it('reshape keeps the element count, symbolically', () => {
    expect(infer('reshape', [t('f32', [B, T, 64])], { shape: [B, T, 4, 16] })).toEqual(t('f32', [B, T, 4, 16]));
    expect(infer('reshape', [t('f32', [B, T, 64])], { shape: [mulDims(B, T), 64] }).shape).toEqual([mulDims(B, T), 64]);
    expect(() => infer('reshape', [t('f32', [B, T, 64])], { shape: [B, T, 32] })).toThrow(
      'reshape: x [B, T, 64] has 64*B*T elements but [B, T, 32] has 32*B*T',
    );
  });

  it('transpose needs a permutation', () => {
    expect(infer('transpose', [t('f32', [B, T, 4, 16])], { perm: [0, 2, 1, 3] })).toEqual(t('f32', [B, 4, T, 16]));
    expect(() => infer('transpose', [t('f32', [B, T])], { perm: [0, 0] })).toThrow('transpose: perm [0, 0] is not a permutation of the 2 axes of x');
  });

  it('broadcast only grows size-1 and missing dims', () => {
    expect(infer('broadcast', [t('f32', [1, 1, 32])], { shape: [B, 1, 32] })).toEqual(t('f32', [B, 1, 32]));
    expect(() => infer('broadcast', [t('f32', [2, 32])], { shape: [B, 3, 32] })).toThrow(
      'broadcast: cannot broadcast x [2, 32] with shape [B, 3, 32]: axis -2 has 2 vs 3',
    );
    expect(() => infer('broadcast', [t('f32', [B, 32])], { shape: [32] })).toThrow('broadcast: cannot broadcast x [B, 32] to the lower-rank shape [32]');
  });

  it('slice takes explicit, possibly symbolic bounds', () => {
    expect(infer('slice', [t('f32', [B, T, 8])], { axis: 1, start: 0, stop: subDims(T, 1) }).shape).toEqual([B, subDims(T, 1), 8]);
    expect(infer('slice', [t('f32', [B, 577, 8])], { axis: -2, start: 1, stop: 577 }).shape).toEqual([B, 576, 8]);
    expect(() => infer('slice', [t('f32', [B, 5])], { axis: 1, start: 2, stop: 7 })).toThrow(
      'slice: [2:7] is out of range for axis 1 of x [B, 5] (size 5)',
    );
    expect(() => infer('slice', [t('f32', [B, T])], { axis: 1, start: 3, stop: 1 })).toThrow('slice: [3:1] is out of range');
    expect(() => infer('slice', [t('f32', [B, T])], { axis: 2, start: 0, stop: 1 })).toThrow('slice: axis 2 is out of range for rank 2');
  });

  it('concat adds up the axis and checks the rest', () => {
    expect(infer('concat', [t('f32', [B, 1, 32]), t('f32', [B, 576, 32])], { axis: 1 }).shape).toEqual([B, 577, 32]);
    expect(infer('concat', [t('f32', [B, T]), t('f32', [B, 575])], { axis: -1 }).shape).toEqual([B, addDims(T, 575)]);
    expect(() => infer('concat', [t('f32', [B, 1, 32]), t('f32', [B, 4, 16])], { axis: 1 })).toThrow(
      'concat: input 0 [B, 1, 32] and input 1 [B, 4, 16] differ at axis 2 (32 vs 16); only axis 1 may differ',
    );
    expect(() => infer('concat', [t('f32', [B]), t('i32', [B])], { axis: 0 })).toThrow('concat: dtypes differ: input 0 is f32, input 1 is i32');
    expect(() => infer('concat', [], { axis: 0 })).toThrow('concat: expects at least 1 input, got 0');
  });
});

describe('reduction and movement reference values', () => {
  it('computes sums, means, max, slices and concats', () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [B, 3]);
    const s = b.add('sum', [x], { axis: 0 });
    const m = b.add('mean', [x], { axis: -1, keepdims: true });
    const mx = b.add('max', [x], {});
    const sl = b.add('slice', [x], { axis: 1, start: 1, stop: 3 });
    const c = b.add('concat', [sl, x], { axis: 1 });
    const tr = b.add('transpose', [x], { perm: [1, 0] });
    const g = b.build();
    const feeds = { x: host('f32', [2, 3], [1, 2, 3, 4, 5, 9]) };
    expect(run(g, feeds, s)).toEqual([5, 7, 12]);
    expect(run(g, feeds, m)).toEqual([2, 6]);
    expect(run(g, feeds, mx)).toEqual([9]);
    expect(run(g, feeds, sl)).toEqual([2, 3, 5, 9]);
    expect(run(g, feeds, c)).toEqual([2, 3, 1, 2, 3, 5, 9, 4, 5, 9]);
    expect(run(g, feeds, tr)).toEqual([1, 4, 2, 5, 3, 9]);
  });
});

/** Well-separated values: max has a kink wherever two entries tie. */
const distinct = (n: number): fc.Arbitrary<number[]> =>
  fc.uniqueArray(fc.integer({ min: -40, max: 40 }), { minLength: n, maxLength: n }).map((a) => a.map((x) => x / 10));

describe('reduction and movement gradients (finite differences, f64)', () => {
  for (const op of ['sum', 'mean', 'max'])
    it(op, () => {
      fc.assert(
        fc.property(dim(), dim(), fc.constantFrom<number[] | number | null>(0, -1, [0, 1], null), fc.boolean(), distinct(9), cotangent, (m, n, axis, keepdims, xs, c) =>
          gradCheck({ params: { x: [[m, n], xs.slice(0, m * n)] }, build: (b, v) => b.add(op, [v['x']!], { axis, keepdims }) }, c),
        ),
        RUNS,
      );
    });

  it('reshape, transpose, broadcast', () => {
    fc.assert(
      fc.property(dim(), dim(), values(9), cotangent, (m, n, xs, c) =>
        gradCheck(
          {
            params: { x: [[m, n], xs.slice(0, m * n)] },
            build: (b, v) => {
              const r = b.add('reshape', [v['x']!], { shape: [n, 1, m] });
              const tr = b.add('transpose', [r], { perm: [2, 1, 0] });
              return b.add('broadcast', [tr], { shape: [2, m, 3, n] });
            },
          },
          c,
        ),
      ),
      RUNS,
    );
  });

  it('slice and concat', () => {
    fc.assert(
      fc.property(dim(4), dim(), fc.nat(3), fc.nat(3), values(16), values(3), cotangent, (m, n, a, len, xs, ys, c) => {
        const start = Math.min(a, m - 1);
        const stop = Math.min(m, start + len + 1);
        gradCheck(
          {
            params: { x: [[n, m], xs.slice(0, n * m)], y: [[n, 1], ys.slice(0, n)] },
            build: (b, v) => b.add('concat', [b.add('slice', [v['x']!], { axis: 1, start, stop }), v['y']!, v['x']!], { axis: -1 }),
          },
          c,
        );
      }),
      RUNS,
    );
  });
});
