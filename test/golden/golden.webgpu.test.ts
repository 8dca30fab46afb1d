// `kiln loss --backend webgpu` against PyTorch on the golden cases, with the reference test's
// tolerances (golden.test.ts): loss terms within 2e-4 relative, every gradient within 2e-2
// relative in Frobenius norm. Skipped, saying which, while some op of the model has no kernel.
import { describe, expect, it } from 'vitest';
import { Output } from '../../compiler/cli/output.js';
import { loadAndCheck } from '../../compiler/cli/spec.js';
import { differentiate } from '../../compiler/passes/autodiff.js';
import { fuse } from '../../compiler/passes/fuse.js';
import { opsWithoutKernels } from '../../compiler/passes/lower.js';
import { GOLDEN_CASES, runGoldenCase } from './compare.js';

const missing = (() => {
  const g = differentiate(loadAndCheck('models/vwlmm.kiln', { config: 'tiny' }, new Output(true)).graph);
  return opsWithoutKernels(fuse(g, [g.totalLoss!, ...g.gradients.map((x) => x.node)]));
})();

describe.each(GOLDEN_CASES)('kiln loss --backend webgpu equals PyTorch on %s', (name) => {
  it.skipIf(missing.length > 0)(`loss terms within 2e-4 and gradients within 2e-2 (relative)${missing.length ? ` [no kernel yet: ${missing.join(', ')}]` : ''}`, async () => {
    const r = await runGoldenCase(name, 'webgpu');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.gradNames.mine).toEqual(r.gradNames.theirs);
    expect(r.worstTerm).toBeLessThan(2e-4);
    expect(r.worstGrad).toBeLessThan(2e-2);
    console.log(`${name} on webgpu: worst loss-term rel error ${r.worstTerm.toExponential(2)}, worst gradient rel error ${r.worstGrad.toExponential(2)} (${r.worstGradName})`);
  }, 600_000);
});
