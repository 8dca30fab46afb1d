// write_at: the reference's semantics (the window [p, p + n) replaced, positions outside
// [0, capacity) not written), its copy kernel against it on every device variant, the PyTorch
// rendering against it, and the error autodiff gives when it reaches the op. Copies are exact, so
// every comparison has tolerance 0. The in-place kernel runs in test/runtime/webgpu/write-at.test.ts.
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../../compiler/ir/builder.js';
import { getOp } from '../../../../compiler/ops/registry.js';
import { differentiate } from '../../../../compiler/passes/autodiff.js';
import { runPython } from '../../../helpers/torch-python.js';
import { expectClose, f32t, gpu, i32t, outType, randn, reference, VARIANTS } from './helpers.js';

const numel = (s: readonly number[]): number => s.reduce((p, d) => p * d, 1);

/** [outer=2, C=5, inner=3] cache 0..29 and x of n rows valued 100 + k. */
function small(n: number): { cache: ReturnType<typeof f32t>; x: ReturnType<typeof f32t> } {
  return { cache: f32t([2, 5, 3], Array.from({ length: 30 }, (_, i) => i)), x: f32t([2, n, 3], Array.from({ length: 6 * n }, (_, k) => 100 + k)) };
}

/** The rows (along axis 1) of the reference's output for position p, as cache rows (c) or x rows (x<j>). */
function rowsAfter(n: number, p: number): string[] {
  const { cache, x } = small(n);
  const attrs = { axis: 1 };
  const y = reference('write_at', [cache, x, i32t([], [p])], attrs, outType('write_at', [cache, x, i32t([], [p])], attrs));
  const rows: string[] = [];
  for (let c = 0; c < 5; c++) {
    const v = y.data[c * 3]!;
    rows.push(v >= 100 ? `x${(v - 100) / 3}` : v === c * 3 ? 'c' : '?');
  }
  return rows;
}

describe('write_at reference', () => {
  it('replaces [p, p + n) along the axis and keeps every other position', () => {
    expect(rowsAfter(2, 1)).toEqual(['c', 'x0', 'x1', 'c', 'c']);
    expect(rowsAfter(5, 0)).toEqual(['x0', 'x1', 'x2', 'x3', 'x4']);
    // The second outer block reads x's second block: x1 there is x's row 1 of block 1 (k = 9).
    const { cache, x } = small(2);
    const y = reference('write_at', [cache, x, i32t([], [3])], { axis: 1 }, { dtype: 'f32', shape: [2, 5, 3] });
    expect([...y.data.slice(15 + 9, 15 + 15)]).toEqual([106, 107, 108, 109, 110, 111]);
  });

  it('writes nothing outside [0, capacity): a window running off either end is cut, one past the end writes nothing', () => {
    expect(rowsAfter(2, 4)).toEqual(['c', 'c', 'c', 'c', 'x0']);
    expect(rowsAfter(2, 5)).toEqual(['c', 'c', 'c', 'c', 'c']);
    expect(rowsAfter(2, 1000)).toEqual(['c', 'c', 'c', 'c', 'c']);
    expect(rowsAfter(2, -1)).toEqual(['x1', 'c', 'c', 'c', 'c']);
    expect(rowsAfter(2, -2)).toEqual(['c', 'c', 'c', 'c', 'c']);
  });

  it('checks its inputs', () => {
    const infer = (shapes: number[][], pos: { dtype: 'i32' | 'f32'; shape: number[] }, axis = 2) =>
      getOp('write_at').infer([{ dtype: 'f32', shape: shapes[0]! }, { dtype: 'f32', shape: shapes[1]! }, pos], { axis });
    const p = { dtype: 'i32' as const, shape: [] };
    expect(infer([[1, 2, 8, 4], [1, 2, 1, 4]], p)).toEqual({ dtype: 'f32', shape: [1, 2, 8, 4] });
    expect(() => infer([[1, 2, 8, 4], [1, 2, 1, 4]], { dtype: 'i32', shape: [1] })).toThrow('write_at: position must be an i32 scalar, got i32[1]');
    expect(() => infer([[1, 2, 8, 4], [1, 2, 1, 4]], { dtype: 'f32', shape: [] })).toThrow('write_at: position must be i32');
    expect(() => infer([[1, 2, 8, 4], [1, 2, 9, 4]], p)).toThrow("write_at: x [1, 2, 9, 4] has 9 positions along axis 2, more than the cache's 8");
    expect(() => infer([[1, 2, 8, 4], [1, 3, 1, 4]], p)).toThrow('write_at: x [1, 3, 1, 4] and cache [1, 2, 8, 4] differ at dim 1 (3 vs 2)');
    expect(() => infer([[1, 2, 8, 4], [1, 2, 1, 4]], p, 4)).toThrow('write_at: axis 4 is out of range for rank 4');
  });

  it('has no gradient: autodiff reaching it says so', () => {
    const b = new GraphBuilder();
    const cache = b.add('param', [], { name: 'c', dtype: 'f32', shape: [1, 4] });
    b.params.push({ name: 'c', node: cache, type: { dtype: 'f32', shape: [1, 4] }, init: { kind: 'zeros' }, trainable: true, component: 'c', path: 'c' });
    const x = b.add('fill', [], { value: 1, shape: [1, 1], dtype: 'f32' });
    const w = b.add('write_at', [cache, x, b.add('fill', [], { value: 2, shape: [], dtype: 'i32' })], { axis: 1 });
    b.totalLoss = b.add('sum', [w], { axes: null, keepdims: false });
    expect(() => differentiate(b.build())).toThrow(/differentiate: write_at .* has no gradient rule/);
  });
});

describe('write_at copy kernel', () => {
  it('equals the reference at every position, inside, across and past both ends, on every variant', async () => {
    for (const [cacheShape, n, axis] of [
      [[1, 2, 7, 4], 1, 2],
      [[1, 2, 7, 4], 3, 2],
      [[3, 5], 2, 1],
      [[6, 2, 3], 2, 0],
    ] as [number[], number, number][]) {
      const xShape = [...cacheShape];
      xShape[axis] = n;
      const C = cacheShape[axis]!;
      const cache = f32t(cacheShape, randn(numel(cacheShape), 11));
      const x = f32t(xShape, randn(numel(xShape), 12, 5, 6));
      for (const p of [0, 1, C - n, C - 1, C, C + 9, -1, -n - 1]) {
        const inputs = [cache, x, i32t([], [p])];
        const out = outType('write_at', inputs, { axis });
        const want = reference('write_at', inputs, { axis }, out);
        for (const v of VARIANTS) expectClose(await gpu('write_at', inputs, { axis }, out, v), want, 0, `write_at [${cacheShape}] n ${n} axis ${axis} at ${p} (${v})`);
      }
    }
  });
});

describe('write_at in PyTorch', () => {
  it('the rendering equals the reference, positions off the ends included', () => {
    const def = getOp('write_at');
    const type = { dtype: 'f32' as const, shape: [2, 5, 3] };
    const expr = def.torch!.expr({
      inputs: ['cache', 'x', 'p'],
      attrs: { axis: -2 },
      inputTypes: [type, { dtype: 'f32', shape: [2, 2, 3] }, { dtype: 'i32', shape: [] }],
      output: type,
      dim: String,
      shape: (ds) => `(${ds.join(', ')},)`,
      num: String,
      dtype: () => 'torch.float32',
      source: (_k, n) => n,
    });
    expect(expr).toBe('_write_at(cache, x, p, 1)');
    const positions = [0, 1, 3, 4, 5, 40, -1, -2];
    const script = `import json, torch
${def.torch!.helpers!['_write_at']}
cache = torch.arange(30, dtype=torch.float32).reshape(2, 5, 3)
x = 100 + torch.arange(12, dtype=torch.float32).reshape(2, 2, 3)
out = []
for q in ${JSON.stringify(positions)}:
    p = torch.tensor(q, dtype=torch.int32)
    out.append(${expr}.flatten().tolist())
print(json.dumps(out))`;
    const got = JSON.parse(runPython(['-c', script])) as number[][];
    const { cache, x } = small(2);
    positions.forEach((p, k) => {
      const want = reference('write_at', [cache, x, i32t([], [p])], { axis: 1 }, { dtype: 'f32', shape: [2, 5, 3] });
      expect(got[k], `position ${p}`).toEqual([...want.data]);
    });
  });
});
