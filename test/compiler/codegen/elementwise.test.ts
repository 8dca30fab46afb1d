// Every elementwise op's WGSL against its reference implementation, on the real device: each
// requested value is its own loop kernel. f32 results against the f64 reference: transcendentals
// within 1e-5 relative (+1e-6 absolute; twice that for gradients), exact for integer ops, comparisons and selects.
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { UNARY } from '../../../compiler/ops/unary.js';
import { BINARY } from '../../../compiler/ops/binary.js';
import { erf } from '../../../compiler/ops/unary.js';
import type { DType } from '../../../compiler/ir/graph.js';
import { input } from '../ops/harness.js';
import { f32, i32, runBoth, uniform, worst } from '../../runtime/webgpu/compare.js';

const N = 257; // not a multiple of the workgroup size

describe('elementwise kernels on WebGPU', () => {
  it('every unary op and its gradient (f32), and neg/relu/abs on i32', async () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [N]);
    const pos = input(b, 'pos', 'f32', [N]);
    const g = input(b, 'g', 'f32', [N]);
    const k = input(b, 'k', 'i32', [N]);
    const wanted: [string, number][] = [];
    for (const [name, row] of Object.entries(UNARY)) {
      const arg = ['log', 'sqrt', 'rsqrt'].includes(name) ? pos : x;
      wanted.push([name, b.add(name, [arg])]);
      if (name !== 'neg') wanted.push([`d${name}`, b.add('unary_grad', [arg, g], { fn: name })]);
      if (row.ints) wanted.push([`${name} i32`, b.add(name, [k])]);
    }
    const feeds = new Map([
      ['x', f32([N], uniform(N, 1, -6, 6))],
      ['pos', f32([N], uniform(N, 2, 0.05, 5))],
      ['g', f32([N], uniform(N, 3))],
      ['k', i32([N], Array.from({ length: N }, (_, i) => i - 128))],
    ]);
    const { gpu, ref } = await runBoth(b.build(), feeds, wanted.map(([, id]) => id));
    for (const [name, id] of wanted) {
      // Gradients of the GELUs cancel (1 + tanh(x) in f32 is 0 past x = -4.5): 2e-5 relative, 2e-6 absolute.
      const grad = name.startsWith('d');
      const w = worst(gpu.get(id)!.data, ref.get(id)!.data, grad ? 2e-6 : 1e-6, grad ? 2e-5 : 1e-5);
      expect(w.ratio, `${name} at ${w.at}: ${gpu.get(id)!.data[w.at]} vs ${ref.get(id)!.data[w.at]}`).toBeLessThanOrEqual(1);
    }
  });

  it('gelu: erf within 1.5e-7 of the exact value, times |x|', async () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [4001]);
    const y = b.add('gelu', [x]);
    const xs = Float32Array.from({ length: 4001 }, (_, i) => -10 + i * 0.005);
    const { gpu } = await runBoth(b.build(), new Map([['x', f32([4001], xs)]]), [y]);
    let worstErr = 0;
    gpu.get(y)!.data.forEach((v, i) => {
      const xi = xs[i]!;
      const exact = 0.5 * xi * (1 + erf(xi / Math.SQRT2));
      worstErr = Math.max(worstErr, Math.abs(v - exact) / Math.max(1, Math.abs(xi)));
    });
    expect(worstErr).toBeLessThan(1.5e-7);
  });

  it('binary ops with broadcasting, f32 and i32 (floor division, wrapping)', async () => {
    const b = new GraphBuilder();
    const a = input(b, 'a', 'f32', [3, 1, 5]);
    const c = input(b, 'c', 'f32', [4, 1]);
    const p = input(b, 'p', 'f32', [3, 4, 5]);
    const e = input(b, 'e', 'f32', [5]);
    const ia = input(b, 'ia', 'i32', [3, 4, 5]);
    const ib = input(b, 'ib', 'i32', [5]);
    const wanted: [string, number][] = [];
    for (const name of Object.keys(BINARY)) {
      wanted.push([name, name === 'pow' ? b.add('pow', [p, e]) : b.add(name, [a, c])]);
      wanted.push([`${name} i32`, b.add(name, [ia, ib])]);
    }
    const feeds = new Map([
      ['a', f32([3, 1, 5], uniform(15, 4, -3, 3))],
      ['c', f32([4, 1], Float32Array.from([0.5, -1.25, 2, 3]))],
      ['p', f32([3, 4, 5], Float32Array.from(uniform(60, 5, -2, 2), (v, i) => (i % 7 === 0 ? 0 : v)))],
      ['e', f32([5], Float32Array.from([2, 3, 0.5, 0, -1]))],
      ['ia', i32([3, 4, 5], Array.from({ length: 60 }, (_, i) => (i * 37) % 23 - 11))],
      ['ib', i32([5], [3, -4, 1, 7, 2])],
    ]);
    const { gpu, ref } = await runBoth(b.build(), feeds, wanted.map(([, id]) => id));
    for (const [name, id] of wanted) {
      const exact = name.endsWith('i32') && name !== 'pow i32';
      const w = worst(gpu.get(id)!.data, ref.get(id)!.data, exact ? 0 : 1e-6, exact ? 0 : 1e-5);
      expect(w.ratio, `${name} at ${w.at}: ${gpu.get(id)!.data[w.at]} vs ${ref.get(id)!.data[w.at]}`).toBeLessThanOrEqual(1);
    }
  });

  it('comparisons, where, cast and fill (bool as i32 0/1, inf and NaN literals)', async () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [2, 6]);
    const y = input(b, 'y', 'f32', [6]);
    const k = input(b, 'k', 'i32', [2, 6]);
    const wanted: number[] = [];
    for (const op of ['eq', 'ne', 'lt', 'le', 'gt', 'ge']) wanted.push(b.add(op, [x, y]), b.add(op, [k, b.add('fill', [], { value: 1, shape: [], dtype: 'i32' })]));
    const mask = b.add('gt', [x, y]);
    wanted.push(b.add('where', [mask, x, b.add('fill', [], { value: -Infinity, shape: [], dtype: 'f32' })]));
    const casts: [number, DType][] = [[x, 'i32'], [x, 'bool'], [k, 'f32'], [k, 'bool'], [mask, 'f32'], [mask, 'i32']];
    for (const [v, dtype] of casts) wanted.push(b.add('cast', [v], { dtype }));
    wanted.push(b.add('fill', [], { value: Infinity, shape: [3], dtype: 'f32' }), b.add('fill', [], { value: 7, shape: [2, 2], dtype: 'bool' }));
    wanted.push(b.add('add', [x, b.add('fill', [], { value: NaN, shape: [], dtype: 'f32' })]));
    const feeds = new Map([
      ['x', f32([2, 6], Float32Array.from([-2.5, -1, 0, 0.5, 1, 3.7, 2, 2, -0.0, 9, -9, 1e-3]))],
      ['y', f32([6], Float32Array.from([-2.5, 0, 0, 1, 1, -3]))],
      ['k', i32([2, 6], [0, 1, 2, -1, 5, 1, 1, 1, 0, 3, -7, 2])],
    ]);
    const { gpu, ref } = await runBoth(b.build(), feeds, wanted);
    for (const id of wanted) expect([...gpu.get(id)!.data], `node ${id}`).toEqual([...ref.get(id)!.data]);
  });
});
