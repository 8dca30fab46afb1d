// `kiln generate` (cpu reference and WebGPU, KV cache) against PyTorch + transformers greedy decoding with
// the model's own cache (test/golden/make_generate.py -> generate.json) on the golden checkpoints,
// mistral_swa with a sliding window of 4 under a 15-position prompt, and llama_pif (llama_b2's
// weights as a pseudo-image-feature model, which its config.json's architectures makes it: its
// tokens differ from llama_b2's from the first step, so a prefill without pif fails). Tokens must be equal up to
// and including the first near-tie: a step whose top-1/top-2 logit margin in PyTorch is under
// 1e-3 may flip under another f32 summation order, and the sequences may then part legitimately
// (generate.json's smallest margin is 0.0048, so today every step is compared).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { main } from '../../compiler/cli/main.js';
import { Output } from '../../compiler/cli/output.js';

interface Golden {
  steps: number;
  cases: Record<string, { prompt_length: number; tokens: number[]; margins: number[] }>;
}
const golden = JSON.parse(readFileSync('test/golden/generate.json', 'utf8')) as Golden;
const NEAR_TIE = 1e-3;

describe.each(Object.keys(golden.cases))('kiln generate equals transformers greedy decoding on %s', (name) => {
  // The same check on each backend: the reference executor, and the compiled prefill and
  // decode entries on WebGPU (f32 kernels with their own summation order; the margins above
  // say how far each step is from a tie that order could flip).
  it.each(['cpu', 'webgpu'])('the same tokens (%s)', async (backend) => {
    const g = golden.cases[name]!;
    const dir = `test/golden/${name}`;
    const out = new Output(true);
    const args = ['generate', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', `${dir}/llava`, '--vision-tower', `${dir}/clip`, '--batch', `${dir}/batch.safetensors`];
    const code = await main([...args, '--backend', backend, '--max-tokens', String(golden.steps), '--json'], out);
    expect(out.err.join('\n')).toBe('');
    expect(code).toBe(0);
    const got = (JSON.parse(out.out.join('')) as { tokens: number[] }).tokens;
    const tie = g.margins.findIndex((m) => m < NEAR_TIE);
    const n = tie < 0 ? g.tokens.length : tie + 1;
    expect(got.slice(0, n)).toEqual(g.tokens.slice(0, n));
    console.log(`${name} (${backend}): ${n} of ${g.tokens.length} tokens compared, equal; smallest margin ${Math.min(...g.margins).toFixed(4)}`);
  }, 600_000);
});
