// Pseudo image features end to end through the CLI: a checkpoint whose config.json names
// vwPifLlamaForCausalLM builds the pif graph in `kiln loss` (the golden llama_pif case: PyTorch's
// terms), `kiln train` from it writes that architecture back, and the written checkpoint alone
// gives the trained model's pif loss again (a plain reading of it would give another number).
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';

const G = 'test/golden/llama_pif';

async function kiln(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = new Output(true);
  const code = await main(args, out);
  return { code, out: out.out.join('\n'), err: out.err.join('\n') };
}

async function loss(checkpoint: string, extra: string[] = []): Promise<{ loss: number; terms: Record<string, number> }> {
  const r = await kiln(['loss', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', checkpoint, '--batch', `${G}/batch.safetensors`, '--backend', 'cpu', '--json', ...extra]);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.out) as { loss: number; terms: Record<string, number> };
}

describe('pif checkpoints', () => {
  it('kiln loss reads pif from architectures; kiln train writes it back and the checkpoint round-trips', async () => {
    const expected = JSON.parse(readFileSync(`${G}/expected.json`, 'utf8')) as { loss: number };
    const golden = await loss(`${G}/llava`, ['--vision-tower', `${G}/clip`]);
    expect(Math.abs(golden.loss - expected.loss) / expected.loss).toBeLessThan(2e-4);
    // The same folder read as a plain model is llama_b2's loss, far from the pif one.
    const plain = await loss(`${G}/llava`, ['--vision-tower', `${G}/clip`, '--set', 'pif=false']);
    expect(Math.abs(plain.loss - golden.loss)).toBeGreaterThan(0.1);

    const out = mkdtempSync(join(tmpdir(), 'kiln-pif-train-'));
    const t = await kiln(['train', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', `${G}/llava`, '--vision-tower', `${G}/clip`, '--batch', `${G}/batch.safetensors`, '--steps', '2', '--lr', '1e-3', '--backend', 'cpu', '--out', out, '--json']);
    expect(t.code, t.err).toBe(0);
    const lines = t.out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const steps = lines.filter((l) => 'step' in l) as unknown as { loss: number }[];
    // Step 1's forward is the checkpoint's pif loss.
    expect(Math.abs(steps[0]!.loss - golden.loss) / golden.loss).toBeLessThan(1e-6);
    const ckpt = join(out, 'checkpoint-2');
    const config = JSON.parse(readFileSync(join(ckpt, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config['architectures']).toEqual(['vwPifLlamaForCausalLM']);
    const again = await loss(ckpt);
    const forced = await loss(ckpt, ['--set', 'pif=true']);
    expect(again).toEqual(forced);
    const asPlain = await loss(ckpt, ['--set', 'pif=false']);
    expect(Math.abs(asPlain.loss - again.loss)).toBeGreaterThan(0.1);
  }, 300_000);

  it('a pif model whose config.json cannot say pif (a Mistral decoder) is refused before training', async () => {
    const out = mkdtempSync(join(tmpdir(), 'kiln-pif-mistral-'));
    const r = await kiln(['train', 'models/vwlmm.kiln', '--config', 'tiny', '--set', 'pif=true', '--set', 'text.sliding_window=4', '--batch', `${G}/batch.safetensors`, '--steps', '1', '--backend', 'cpu', '--out', out]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('pseudo image features for LLaMA only');
    expect(r.err).not.toMatch(/\n\s+at /);
  }, 120_000);
});
