import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { addDims } from '../../../compiler/ir/dims.js';
import { UNARY, erf } from '../../../compiler/ops/unary.js';
import { BINARY } from '../../../compiler/ops/binary.js';
import { compileJS } from '../../../compiler/ops/expr/js.js';
import { B, RUNS, T, cotangent, dim, gradCheck, host, infer, input, run, t, values } from './harness.js';

describe('elementwise shape rules', () => {
  it('broadcasts numpy-style over symbolic dims', () => {
    expect(infer('add', [t('f32', [B, T, 64]), t('f32', [64])])).toEqual(t('f32', [B, T, 64]));
    expect(infer('mul', [t('f32', [B, 1, 8]), t('f32', [1, T, 1])])).toEqual(t('f32', [B, T, 8]));
    expect(infer('add', [t('i32', [B, T]), t('i32', [])])).toEqual(t('i32', [B, T]));
    expect(infer('sub', [t('f32', [addDims(T, 575)]), t('f32', [addDims(T, 575)])]).shape).toEqual([addDims(T, 575)]);
  });

  it('names both shapes and the axis that disagrees', () => {
    expect(() => infer('add', [t('f32', [B, T, 64]), t('f32', [T, 32])])).toThrow(
      'add: cannot broadcast a [B, T, 64] with b [T, 32]: axis -1 has 64 vs 32',
    );
    expect(() => infer('add', [t('f32', [B, T, 64]), t('f32', [B, 64])])).toThrow(
      'add: cannot broadcast a [B, T, 64] with b [B, 64]: axis -2 has T vs B',
    );
    expect(() => infer('mul', [t('f32', [B, 4]), t('f32', [T, 4])])).toThrow('mul: cannot broadcast a [B, 4] with b [T, 4]: axis -2 has B vs T');
  });

  it('rejects mixed dtypes and non-float transcendental inputs', () => {
    expect(() => infer('add', [t('f32', [2]), t('i32', [2])])).toThrow('add: dtypes differ: a is f32[2], b is i32[2]');
    expect(() => infer('mul', [t('bool', [2]), t('bool', [2])])).toThrow('mul: arithmetic on bool tensors is not defined');
    expect(() => infer('exp', [t('i32', [2])])).toThrow('exp: x must be a float tensor, got i32[2]');
    expect(infer('neg', [t('i32', [2])])).toEqual(t('i32', [2]));
    for (const op of Object.keys(UNARY)) expect(infer(op, [t('f32', [B, 3])])).toEqual(t('f32', [B, 3]));
  });

  it('types comparisons, where, cast, fill and stop_gradient', () => {
    expect(infer('lt', [t('f32', [B, T]), t('f32', [])])).toEqual(t('bool', [B, T]));
    expect(() => infer('eq', [t('i32', [B]), t('f32', [B])])).toThrow('eq: dtypes differ');
    expect(infer('where', [t('bool', [B, 1]), t('f32', [T]), t('f32', [])])).toEqual(t('f32', [B, T]));
    expect(() => infer('where', [t('f32', [2]), t('f32', [2]), t('f32', [2])])).toThrow('where: cond must be i32 or bool, got f32[2]');
    expect(() => infer('where', [t('bool', [2]), t('f32', [2]), t('i32', [2])])).toThrow('where: dtypes differ');
    expect(() => infer('where', [t('bool', [3]), t('f32', [2]), t('f32', [2])])).toThrow('where: cannot broadcast cond [3] with a [2]: axis -1 has 3 vs 2');
    expect(infer('cast', [t('i32', [B])], { dtype: 'f32' })).toEqual(t('f32', [B]));
    expect(() => infer('cast', [t('i32', [B])], { dtype: 'f64' })).toThrow('cast: attribute dtype must be one of f32, f16, bf16, i32, bool');
    expect(infer('fill', [], { value: -100, shape: [B, 576], dtype: 'i32' })).toEqual(t('i32', [B, 576]));
    expect(() => infer('fill', [], { value: 0.5, shape: [2], dtype: 'i32' })).toThrow('fill: value 0.5 is not an integer but dtype is i32');
    expect(infer('stop_gradient', [t('f32', [B, T])])).toEqual(t('f32', [B, T]));
    expect(() => infer('stop_gradient', [])).toThrow('stop_gradient: expects 1 input, got 0');
  });
});

describe('elementwise reference values', () => {
  it('computes gelu with the exact erf and the other activations as torch does', () => {
    expect(erf(0.5)).toBeCloseTo(0.5204998778130465, 14);
    expect(erf(-2.5)).toBeCloseTo(-0.999593047982555, 14);
    const f = (op: string, v: number): number => compileJS(UNARY[op]!.f, ['f32'])(v, 0, 0);
    expect(f('gelu', 1)).toBeCloseTo(0.8413447460685429, 14);
    expect(f('gelu_tanh', 1)).toBeCloseTo(0.8411919906082768, 14);
    expect(f('quick_gelu', 1)).toBeCloseTo(1 / (1 + Math.exp(-1.702)), 14);
    expect(f('silu', -2)).toBeCloseTo(-2 / (1 + Math.exp(2)), 14);
    expect(f('sigmoid', -800)).toBe(0);
  });

  it('broadcasts, divides integers with floor, rounds to f32 in f32 mode', () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [2, 1]);
    const y = input(b, 'y', 'f32', [3]);
    const s = b.add('add', [x, y]);
    const i = input(b, 'i', 'i32', [2]);
    const d = b.add('div', [i, b.add('fill', [], { value: 2, shape: [], dtype: 'i32' })]);
    const w = b.add('where', [b.add('gt', [x, y]), x, y]);
    const g = b.build();
    const feeds = { x: host('f32', [2, 1], [1, 2]), y: host('f32', [3], [0.1, 1.5, 3]), i: host('i32', [2], [-3, 7]) };
    expect(run(g, feeds, s, 'f32')).toEqual([1, 2.5, 4, 2, 3.5, 5].map((v, k) => Math.fround(k === 0 ? 1.1 : k === 3 ? 2.1 : v)));
    expect(run(g, feeds, d)).toEqual([-2, 3]);
    expect(run(g, feeds, w)).toEqual([1, 1.5, 3, 2, 2, 3]);
  });

  it('remainder is torch.remainder (the sign of the divisor), f32 and i32; by 0: NaN, and an error for i32', () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [8]);
    const y = input(b, 'y', 'f32', [8]);
    const i = input(b, 'i', 'i32', [6]);
    const j = input(b, 'j', 'i32', [6]);
    const r = b.add('remainder', [x, y]);
    const ri = b.add('remainder', [i, j]);
    const g = b.build();
    const feeds = {
      x: host('f32', [8], [-3, 3, -3, 5.5, -5.5, 7.25, 0, 1]),
      y: host('f32', [8], [2, -2, -2, 2, 2, 0.5, 3, 0]),
      i: host('i32', [6], [-3, 3, -3, 7, -7, 0]),
      j: host('i32', [6], [2, -2, -2, 3, 3, 5]),
    };
    // torch.remainder(torch.tensor([-3., 3., -3., 5.5, -5.5, 7.25, 0., 1.]), torch.tensor([2., -2., -2., 2., 2., 0.5, 3., 0.]))
    const got = run(g, feeds, r);
    expect(got.slice(0, 7).map((v) => v + 0)).toEqual([1, -1, -1, 1.5, 0.5, 0.25, 0]);
    expect(got[7]).toBeNaN();
    expect(run(g, feeds, ri)).toEqual([1, -1, -1, 1, 2, 0]);
    expect(() => run(g, { ...feeds, j: host('i32', [6], [2, 2, 2, 2, 2, 0]) }, ri)).toThrow('remainder: integer division by zero');
  });
});

/** b moved off every value of a: comparisons and max/min have kinks at ties. */
function apart(a: number[], b: number[]): number[] {
  return b.map((y) => {
    let z = y;
    while (a.some((x) => Math.abs(x - z) < 1e-3)) z += 0.0137;
    return z;
  });
}

describe('elementwise gradients (finite differences, f64)', () => {
  const domains: Record<string, [number, number, number]> = {
    log: [0.2, 3, 0],
    sqrt: [0.2, 3, 0],
    rsqrt: [0.2, 3, 0],
    relu: [-2, 2, 1e-3],
    abs: [-2, 2, 1e-3],
  };
  for (const op of Object.keys(UNARY))
    it(op, () => {
      const [lo, hi, gap] = domains[op] ?? [-3, 3, 0];
      fc.assert(
        fc.property(dim(), dim(), cotangent, (m, n, c) =>
          fc.assert(
            fc.property(values(m * n, lo, hi, gap), (xs) =>
              gradCheck({ params: { x: [[m, n], xs] }, build: (b, v) => b.add(op, [v['x']!]) }, c),
            ),
            { numRuns: 1 },
          ),
        ),
        RUNS,
      );
    });

  for (const op of Object.keys(BINARY).filter((o) => o !== 'remainder'))
    it(`${op} with broadcasting`, () => {
      const [lo, hi] = op === 'pow' ? [0.3, 2] : op === 'div' ? [0.5, 2] : [-2, 2];
      fc.assert(
        fc.property(dim(), dim(), values(9, lo, hi), values(3, lo, hi), cotangent, (m, n, a, bb, c) =>
          gradCheck(
            {
              params: { a: [[m, n], a.slice(0, m * n)], b: [[n], apart(a.slice(0, m * n), bb.slice(0, n))] },
              build: (b, v) => b.add(op, [v['a']!, v['b']!]),
            },
            c,
          ),
        ),
        RUNS,
      );
    });

  // remainder jumps where a / b is an integer: a in (2.2, 2.8) (or its negative) over b in
  // (1, 1.05) keeps a / b strictly between integers, so d/db = -floor(a / b) is 2 or -3, not 0.
  it('remainder with broadcasting, both signs of a', () => {
    for (const sign of [1, -1])
      fc.assert(
        fc.property(dim(), dim(), values(9, 2.2, 2.8), values(3, 1, 1.05), cotangent, (m, n, a, bb, c) =>
          gradCheck(
            {
              params: { a: [[m, n], a.slice(0, m * n).map((x) => sign * x)], b: [[n], bb.slice(0, n)] },
              build: (b, v) => b.add('remainder', [v['a']!, v['b']!]),
            },
            c,
          ),
        ),
        RUNS,
      );
  });

  it('where routes the gradient by the condition; cast passes it through', () => {
    fc.assert(
      fc.property(values(6), values(3), cotangent, (a, bb, c) =>
        gradCheck(
          {
            params: { a: [[2, 3], a], b: [[3], apart(a, bb)] },
            build: (b, v) => b.add('cast', [b.add('where', [b.add('gt', [v['a']!, v['b']!]), v['a']!, v['b']!])], { dtype: 'f32' }),
          },
          c,
        ),
      ),
      RUNS,
    );
  });
});
