// Fused kernels equal the reference executor on random graphs (fast-check; few runs, since every
// run compiles its kernels): elementwise chains with broadcasting and views, matmul and linear
// with epilogues (both the buffer fast path and the accessor path), reductions with prologues
// and epilogues. f32 kernels against the f64 reference: 1e-4 relative plus 1e-5 absolute.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { build, recipe, type Recipe, type StepKind } from './random-graphs.js';
import { runBoth, worst } from '../../runtime/webgpu/compare.js';

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

  it('matmul and linear with epilogues and view operands', () => property(['matmul', 'linear', 'unary', 'binary', 'transpose', 'reshape', 'broadcast'], 8, 10, 11));

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
});
