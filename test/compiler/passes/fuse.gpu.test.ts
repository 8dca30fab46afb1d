// Fused kernels equal the reference executor on random graphs (fast-check; few runs, since every
// run compiles its kernels): elementwise chains with broadcasting and views, matmul and linear
// with epilogues (both the buffer fast path and the accessor path), reductions with prologues
// and epilogues. f32 kernels against the f64 reference: 1e-4 relative plus 1e-5 absolute.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { build, recipe, type Recipe, type StepKind } from './random-graphs.js';
import { f32, runBoth, uniform, worst } from '../../runtime/webgpu/compare.js';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { input } from '../ops/harness.js';

async function agrees(r: Recipe, atol = 1e-5, rtol = 1e-4): Promise<void> {
  const { graph, feeds, wanted } = build(r);
  const { gpu, ref, executor } = await runBoth(graph, feeds, wanted);
  try {
    for (const id of wanted) {
      const w = worst(gpu.get(id)!.data, ref.get(id)!.data, atol, rtol);
      expect(w.ratio, `node ${id} (${graph.nodes[id]!.op}) element ${w.at}: ${gpu.get(id)!.data[w.at]} vs ${ref.get(id)!.data[w.at]}`).toBeLessThanOrEqual(1);
    }
  } finally {
    executor.destroy();
  }
}

const property = (kinds: StepKind[], maxSteps: number, numRuns: number, seed: number) =>
  fc.assert(
    fc.asyncProperty(recipe(kinds, maxSteps), (r) => agrees(r)),
    { numRuns, seed },
  );

describe('fused kernels equal the reference on random graphs', () => {
  it('elementwise chains with broadcasting and views', () => property(['unary', 'binary', 'where', 'transpose', 'slice', 'reshape', 'broadcast'], 12, 12, 7));

  it('matmul and linear with epilogues and view operands', () => property(['matmul', 'linear', 'reduce', 'unary', 'binary', 'transpose', 'reshape', 'broadcast'], 8, 10, 11));

  it('reductions with prologues and epilogues', () => property(['reduce', 'unary', 'binary', 'transpose', 'slice'], 8, 10, 13));

  it('a linear with bias, GELU and a residual is one kernel, publishing the pre-activation', async () => {
    const r: Recipe = {
      shape: [3, 5, 8],
      yMask: [true, true, true],
      steps: [
        { kind: 'linear', a: 0, b: 0, pick: 7, flag: true }, // [3,5,8] -> linear 8 -> 8 with bias
        { kind: 'unary', a: 2, b: 0, pick: 6, flag: false }, // gelu
        { kind: 'binary', a: 3, b: 1, pick: 0, flag: false }, // + y (residual)
        { kind: 'binary', a: 2, b: 4, pick: 2, flag: false }, // pre-activation * result
      ],
      extra: [0],
    };
    await agrees(r);
  });

  it('a custom op writes its result transposed for the matmul that reads it (attention heads into o_proj)', async () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [2, 3, 5, 4]); // [B, H, T, D]
    const w = input(b, 'w', 'f32', [6, 12]);
    const s = b.add('softmax', [x], { axis: -1 });
    const merged = b.add('reshape', [b.add('transpose', [s], { perm: [0, 2, 1, 3] })], { shape: [2, 5, 12] });
    const y = b.add('linear', [merged, w]);
    const also = b.add('exp', [s]); // a reader of the untransposed value: both layouts are written
    const graph = b.build();
    const feeds = new Map([['x', f32([2, 3, 5, 4], uniform(120, 1))], ['w', f32([6, 12], uniform(72, 2))]]);
    const { gpu, ref, executor } = await runBoth(graph, feeds, [y, also]);
    for (const id of [y, also]) expect(worst(gpu.get(id)!.data, ref.get(id)!.data, 1e-5, 1e-4).ratio).toBeLessThanOrEqual(1);
    const c = await executor.compiled(feeds, [y, also]);
    const soft = c.program.groups.find((g) => g.anchor === s)!;
    expect(soft.members.map((m) => m.rule)).toContain('transposed-store');
    expect(c.kernels[c.program.groups.findIndex((g) => g.anchor === y)]!.io).toBe('buffers');
    executor.destroy();
  });
});
