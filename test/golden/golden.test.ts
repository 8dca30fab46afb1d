// `kiln loss --backend cpu` (the reference executor) against PyTorch + Hugging Face transformers
// on the files test/golden/make_golden.py wrote. Tolerances are the issue's: every loss term
// within 2e-4 relative, every gradient within 2e-2 relative in Frobenius norm. Both sides compute
// in f32 (Kiln accumulates in f64), so the real agreement is far tighter; the test prints it.
import { describe, expect, it } from 'vitest';
import { GOLDEN_CASES, runGoldenCase } from './compare.js';

describe.each(GOLDEN_CASES)('kiln loss equals PyTorch on %s', (name) => {
  it('loss terms within 2e-4 and gradients within 2e-2 (relative)', async () => {
    const r = await runGoldenCase(name, 'cpu');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.gradNames.mine).toEqual(r.gradNames.theirs);
    expect(r.worstTerm).toBeLessThan(2e-4);
    expect(r.worstGrad).toBeLessThan(2e-2);
    console.log(`${name}: worst loss-term rel error ${r.worstTerm.toExponential(2)}, worst gradient rel error ${r.worstGrad.toExponential(2)} (${r.worstGradName})`);
  });
});
