// patch_embed and patch_embed_grad (wrt x and weight) against the f64 reference.
//
// Each output is a dot product, so its f32 error is bounded by ~n·u·Σ|terms|; the ops are
// bilinear, so Σ|terms| is the reference run on |inputs|. We allow 1e-6·Σ|terms| + 1e-7 (n <= 600
// terms here, realistic error ~u·sqrt(n)·Σ|terms| < 2e-6); a wrong index is O(Σ|terms|).
import { describe, it } from 'vitest';
import fc from 'fast-check';
import type { HostTensor } from '../../../../runtime/tensor.js';
import { expectClose, f32t, gpu, outType, randn, reference, VARIANTS } from './helpers.js';

const absT = (t: HostTensor): HostTensor => f32t(t.shape, Array.from(t.data, Math.abs));
const numel = (s: readonly number[]): number => s.reduce((p, d) => p * d, 1);

async function checkAll(B: number, C: number, k: number, GH: number, GW: number, O: number, seed: number): Promise<void> {
  const x = f32t([B, C, GH * k, GW * k], randn(B * C * GH * k * GW * k, seed));
  const w = f32t([O, C, k, k], randn(O * C * k * k, seed + 1));
  const attrs = { stride: k };
  const out = outType('patch_embed', [x, w], attrs);
  const g = f32t(out.shape, randn(numel(out.shape), seed + 2));
  const what = `B${B} C${C} k${k} ${GH}x${GW} O${O}`;
  const cases: [string, HostTensor[], Record<string, unknown>][] = [
    ['patch_embed', [x, w], attrs],
    ['patch_embed_grad', [x, w, g], { ...attrs, wrt: 'x' }],
    ['patch_embed_grad', [x, w, g], { ...attrs, wrt: 'weight' }],
  ];
  for (const [op, inputs, a] of cases) {
    const o = outType(op, inputs, a as never);
    const want = reference(op, inputs, a as never, o);
    const scale = reference(op, inputs.map(absT), a as never, o);
    for (const v of VARIANTS) {
      expectClose(await gpu(op, inputs, a as never, o, v), want, (i) => 1e-6 * scale.data[i]! + 1e-7, `${op} ${JSON.stringify(a)} ${what} ${v}`);
    }
  }
}

describe('patch_embed kernels', () => {
  it('patch_embed and its gradients: random sizes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 2 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        async (B, C, k, GH, GW, O, seed) => checkAll(B, C, k, GH, GW, O, seed),
      ),
      { numRuns: 3 },
    );
  });

  it("CLIP's 14x14 RGB patches (K = 588), 9 patches, 37 channels", async () => {
    await checkAll(1, 3, 14, 3, 3, 37, 5);
  });
});
