// tie_word_embeddings: true with no lm_head.weight in the file (shared case tied-embeddings,
// copied to tied_embeddings/): one parameter, model.embed_tokens.weight, whose gradient sums the
// embedding's and the LM head's contributions, as torch's tied nn.Linear / nn.Embedding do
// (torch-grads.safetensors: float64 torch, written as f32). Before the spec's `tie`, Kiln loaded
// lm_head.weight as a copy: the loss was right (15.3841) but embed_tokens' gradient was 34% off
// and a gradient for lm_head.weight, which the checkpoint does not have, was written.
// Tolerances as the golden tests: loss 2e-4 relative, gradients 2e-2 relative Frobenius.
import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../compiler/cli/main.js';
import { Output } from '../../compiler/cli/output.js';
import { loadAndCheck } from '../../compiler/cli/spec.js';
import { checkpointOverrides } from '../../compiler/cli/loss.js';
import { differentiate } from '../../compiler/passes/autodiff.js';
import { withAdamW } from '../../compiler/passes/optimizer.js';
import { readSafetensors } from '../../runtime/node/safetensors-file.js';
import { relFrobenius } from './compare.js';
import { checkTexts, diagnose } from '../compiler/check/helpers.js';

const CASE = 'test/golden/tied_embeddings';
const torchGrads = readSafetensors(join(CASE, 'torch-grads.safetensors'));

describe('tied embeddings: one parameter, one summed gradient, one optimiser state', () => {
  it.each(['cpu', 'webgpu'])('kiln loss --grads on %s equals torch', async (backend) => {
    const grads = join(mkdtempSync(join(tmpdir(), 'kiln-tied-')), 'grads.safetensors');
    const out = new Output(true);
    const args = ['loss', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', join(CASE, 'llava'), '--vision-tower', 'test/golden/llama_b2/clip'];
    const code = await main([...args, '--batch', 'test/golden/llama_b2/batch.safetensors', '--grads', grads, '--json', '--backend', backend], out);
    expect(out.err.join('\n')).toBe('');
    expect(code).toBe(0);
    const loss = (JSON.parse(out.out.join('')) as { loss: number }).loss;
    expect(Math.abs(loss - 15.3841) / 15.3841).toBeLessThan(2e-4);
    const mine = readSafetensors(grads);
    expect([...mine.keys()].sort()).toEqual([...torchGrads.keys()].sort());
    expect(mine.has('lm_head.weight')).toBe(false);
    for (const [k, t] of torchGrads) expect(relFrobenius(mine.get(k)!.data, t.data), k).toBeLessThan(2e-2);
    // The summed gradient is what the old, separate copy got wrong: hold it much tighter.
    expect(relFrobenius(mine.get('model.embed_tokens.weight')!.data, torchGrads.get('model.embed_tokens.weight')!.data)).toBeLessThan(1e-4);
  }, 600_000);

  it('the graph has one parameter for both uses and AdamW keeps one state for it', () => {
    const m = loadAndCheck('models/vwlmm.kiln', { config: 'tiny', overrides: checkpointOverrides(join(CASE, 'llava')) }, new Output(true));
    expect(m.tied).toEqual([{ name: 'lm_head.weight', to: 'model.embed_tokens.weight' }]);
    expect(m.graph.params.map((p) => p.name)).not.toContain('lm_head.weight');
    const train = withAdamW(differentiate(m.graph), { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
    const updated = (train.updates ?? []).map((u) => u.name);
    expect(updated.filter((n) => n.includes('lm_head'))).toEqual([]);
    expect(updated.filter((n) => n.includes('embed_tokens')).length).toBe(3);
    // Untied, both are parameters of their own.
    const untied = loadAndCheck('models/vwlmm.kiln', { config: 'tiny' }, new Output(true));
    expect(untied.tied).toEqual([]);
    expect(untied.graph.params.map((p) => p.name)).toContain('lm_head.weight');
  });

  it('tie errors name the spec line', () => {
    const spec = (tie: string) => ({
      'm.kiln': `config c {\n  on = true\n  n = 3\n}\nmodule L(d) {\n  param weight: f32[d, 2]\n  forward(x) {\n    return linear(x, weight)\n  }\n}\nmodel M(c) {\n  input x: f32[B, 2]\n  sub a = L(3)\n  sub b = L(c.n)\n  ${tie}\n  forward {\n    output y = a(x) + b(x)\n  }\n}\n`,
    });
    expect(checkTexts(spec('tie b.weight = a.weight when c.on'), 'm.kiln').graph.params.map((p) => p.name)).toEqual(['a.weight']);
    expect(checkTexts(spec('tie b.weight = a.weight when !c.on'), 'm.kiln').graph.params.map((p) => p.name)).toEqual(['a.weight', 'b.weight']);
    expect(diagnose(spec('tie a.weight = b.weight'), 'm.kiln')).toContain("tie: 'b.weight' is not a parameter declared before 'a.weight'");
    expect(diagnose(spec('tie b.wait = a.weight'), 'm.kiln')).toContain("tie: 'b.wait' is not a parameter of M");
    expect(diagnose(spec('tie b.weight = a.weight when c.n'), 'm.kiln')).toContain('tie ... when: expected a boolean, got the number 3');
    expect(diagnose(spec('tie b.weight = a.weight'), 'm.kiln', { overrides: [{ key: 'n', value: 4, origin: '--set n=4' }] })).toContain(
      'tie: b.weight is f32[4, 2] but a.weight is f32[3, 2]',
    );
  });
});
