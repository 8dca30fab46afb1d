import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { mulDims } from '../../../compiler/ir/dims.js';
import { B, RUNS, T, cotangent, dim, gradCheck, host, infer, input, run, t, values } from './harness.js';

describe('matmul and linear shape rules', () => {
  it('matmul broadcasts batch dims and checks the contraction', () => {
    expect(infer('matmul', [t('f32', [B, 4, T, 16]), t('f32', [B, 4, 16, T])])).toEqual(t('f32', [B, 4, T, T]));
    expect(infer('matmul', [t('f32', [B, T, 16]), t('f32', [16, 8])])).toEqual(t('f32', [B, T, 8]));
    expect(() => infer('matmul', [t('f32', [B, 4, 32]), t('f32', [B, 16, 8])])).toThrow(
      'matmul: a [B, 4, 32] has 32 columns (last dim) but b [B, 16, 8] has 16 rows (dim -2)',
    );
    expect(() => infer('matmul', [t('f32', [2, 4, 8]), t('f32', [3, 8, 8])])).toThrow(
      'matmul: cannot broadcast a batch [2] with b batch [3]: axis -1 has 2 vs 3',
    );
    expect(() => infer('matmul', [t('f32', [8]), t('f32', [8, 8])])).toThrow('matmul: a must have rank >= 2, got [8]');
    expect(() => infer('matmul', [t('i32', [2, 2]), t('i32', [2, 2])])).toThrow('matmul: operands must be float tensors');
  });

  it('linear takes weight [out, in] and an optional bias', () => {
    expect(infer('linear', [t('f32', [B, T, 32]), t('f32', [64, 32])])).toEqual(t('f32', [B, T, 64]));
    expect(infer('linear', [t('f32', [mulDims(B, T), 32]), t('f32', [64, 32]), t('f32', [64])]).shape).toEqual([mulDims(B, T), 64]);
    expect(() => infer('linear', [t('f32', [B, T, 64]), t('f32', [64, 32])])).toThrow(
      'linear: x has 64 features (last dim) but weight expects 32 (weight dim 1)',
    );
    expect(() => infer('linear', [t('f32', [B, 32]), t('f32', [64, 32]), t('f32', [32])])).toThrow('linear: bias [32] must be [64] (weight dim 0)');
    expect(() => infer('linear', [t('f32', [B, 32]), t('f32', [32])])).toThrow('linear: weight must have rank 2, got f32[32]');
  });
});

describe('softmax and norm shape rules', () => {
  it('softmax keeps the type and checks the axis', () => {
    expect(infer('softmax', [t('f32', [B, T, 512])], { axis: -1 })).toEqual(t('f32', [B, T, 512]));
    expect(infer('log_softmax', [t('f32', [B, T])], {})).toEqual(t('f32', [B, T]));
    expect(() => infer('softmax', [t('f32', [B, T])], { axis: 2 })).toThrow('softmax: axis 2 is out of range for rank 2');
    expect(() => infer('log_softmax', [t('i32', [B])], {})).toThrow('log_softmax: x must be a float tensor, got i32[B]');
  });

  it('layer_norm and rms_norm check the feature vectors', () => {
    expect(infer('layer_norm', [t('f32', [B, T, 32]), t('f32', [32]), t('f32', [32])], { eps: 1e-5 })).toEqual(t('f32', [B, T, 32]));
    expect(() => infer('layer_norm', [t('f32', [B, T, 32]), t('f32', [64]), t('f32', [32])], { eps: 1e-5 })).toThrow(
      'layer_norm: x has 32 features (last dim) but weight is [64]',
    );
    expect(() => infer('layer_norm', [t('f32', [B, T, 32]), t('f32', [32]), t('f32', [2, 16])], {})).toThrow('layer_norm: x has 32 features (last dim) but bias is [2, 16]');
    expect(infer('rms_norm', [t('f32', [B, T, 64]), t('f32', [64])], { eps: 1e-5 })).toEqual(t('f32', [B, T, 64]));
    expect(() => infer('rms_norm', [t('f32', [B, T, 64]), t('f32', [32])], {})).toThrow('rms_norm: x has 64 features (last dim) but weight is [32]');
  });
});

describe('matmul, linear, softmax and norms: reference values', () => {
  const b = new GraphBuilder();
  const x = input(b, 'x', 'f32', [2, 3]);
  const w = input(b, 'w', 'f32', [2, 3]);
  const bias = input(b, 'bias', 'f32', [2]);
  const g = () => b.build();
  const feeds = { x: host('f32', [2, 3], [1, 2, 3, 4, 5, 6]), w: host('f32', [2, 3], [1, 0, -1, 0.5, 0.5, 0.5]), bias: host('f32', [2], [10, 20]) };

  it('matmul and linear', () => {
    const mm = b.add('matmul', [x, b.add('transpose', [w], { perm: [1, 0] })]);
    const lin = b.add('linear', [x, w, bias]);
    expect(run(g(), feeds, mm)).toEqual([-2, 3, -2, 7.5]);
    expect(run(g(), feeds, lin)).toEqual([8, 23, 8, 27.5]);
  });

  it('softmax, log_softmax', () => {
    const sm = run(g(), feeds, b.add('softmax', [x], { axis: -1 }));
    const z = 1 + Math.E + Math.E ** 2;
    expect(sm[0]).toBeCloseTo(1 / z, 15);
    expect(sm[5]).toBeCloseTo(Math.E ** 2 / z, 15);
    const ls = run(g(), feeds, b.add('log_softmax', [x], { axis: 0 }));
    expect(ls[0]).toBeCloseTo(1 - Math.log(Math.E + Math.E ** 4), 14);
  });

  it('layer_norm uses the biased variance; rms_norm is LlamaRMSNorm', () => {
    const ln = run(g(), feeds, b.add('layer_norm', [x, b.add('fill', [], { value: 2, shape: [3], dtype: 'f32' }), b.add('fill', [], { value: 1, shape: [3], dtype: 'f32' })], { eps: 0 }));
    const s = 1 / Math.sqrt(2 / 3);
    [1 - 2 * s, 1, 1 + 2 * s].forEach((v, i) => expect(ln[i]).toBeCloseTo(v, 14));
    const rms = run(g(), feeds, b.add('rms_norm', [x, b.add('fill', [], { value: 1, shape: [3], dtype: 'f32' })], { eps: 1e-6 }));
    const r = 1 / Math.sqrt(14 / 3 + 1e-6);
    [1, 2, 3].forEach((v, i) => expect(rms[i]).toBeCloseTo(v * r, 14));
  });
});

describe('matmul, linear, softmax and norms: gradients (finite differences, f64)', () => {
  it('matmul with broadcast batch', () => {
    fc.assert(
      fc.property(dim(), dim(), dim(), values(18), values(18), cotangent, (m, k, n, a, bb, c) =>
        gradCheck(
          { params: { a: [[2, m, k], a.slice(0, 2 * m * k)], b: [[k, n], bb.slice(0, k * n)] }, build: (b, v) => b.add('matmul', [v['a']!, v['b']!]) },
          c,
        ),
      ),
      RUNS,
    );
  });

  it('linear with and without bias', () => {
    fc.assert(
      fc.property(dim(), dim(), dim(), fc.boolean(), values(18), values(9), values(3), cotangent, (r, i, o, withBias, xs, ws, bs, c) =>
        gradCheck(
          {
            params: { x: [[2, r, i], xs.slice(0, 2 * r * i)], w: [[o, i], ws.slice(0, o * i)], ...(withBias ? { b: [[o], bs.slice(0, o)] as [number[], number[]] } : {}) },
            build: (b, v) => b.add('linear', withBias ? [v['x']!, v['w']!, v['b']!] : [v['x']!, v['w']!]),
          },
          c,
        ),
      ),
      RUNS,
    );
  });

  for (const op of ['softmax', 'log_softmax'])
    it(op, () => {
      fc.assert(
        fc.property(dim(), dim(4), fc.constantFrom(0, -1), values(12, -3, 3), cotangent, (m, n, axis, xs, c) =>
          gradCheck({ params: { x: [[m, n], xs.slice(0, m * n)] }, build: (b, v) => b.add(op, [v['x']!], { axis }) }, c),
        ),
        RUNS,
      );
    });

  it('layer_norm', () => {
    fc.assert(
      fc.property(dim(), fc.integer({ min: 2, max: 5 }), values(15), values(5), values(5), cotangent, (m, d, xs, ws, bs, c) =>
        gradCheck(
          {
            params: { x: [[m, d], xs.slice(0, m * d)], w: [[d], ws.slice(0, d)], b: [[d], bs.slice(0, d)] },
            build: (b, v) => b.add('layer_norm', [v['x']!, v['w']!, v['b']!], { eps: 1e-5 }),
          },
          c,
        ),
      ),
      RUNS,
    );
  });

  it('rms_norm', () => {
    fc.assert(
      fc.property(dim(), dim(5), values(15), values(5), cotangent, (m, d, xs, ws, c) =>
        gradCheck(
          { params: { x: [[m, d], xs.slice(0, m * d)], w: [[d], ws.slice(0, d)] }, build: (b, v) => b.add('rms_norm', [v['x']!, v['w']!], { eps: 1e-5 }) },
          c,
        ),
      ),
      RUNS,
    );
  });
});

