// Printed numbers say what ran (issue 8 §3): backend, adapter and storage dtype in the text and
// --json output of `kiln loss`, and f16 figures with the digits f16 storage keeps.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';
import { significantDigits } from '../../../compiler/cli/loss.js';

const G = 'test/golden/llama_b2';
const expected = JSON.parse(readFileSync(`${G}/expected.json`, 'utf8')) as { loss: number };
const args = ['loss', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', `${G}/llava`, '--vision-tower', `${G}/clip`, '--batch', `${G}/batch.safetensors`];

async function kiln(...extra: string[]) {
  const out = new Output(true);
  const code = await main([...args, ...extra], out);
  return { code, stdout: out.out.join('\n'), stderr: out.err.join('\n') };
}

describe('kiln loss says what computed its figures', () => {
  it('digits: f32 keeps 8 significant digits, f16 4', () => {
    expect(significantDigits('f32')).toBe(8);
    expect(significantDigits('f16')).toBe(4);
  });

  it('cpu: text and --json name the backend, the executor and f32 storage', async () => {
    const text = await kiln('--backend', 'cpu');
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^loss 5\.87660\d\d\n/);
    expect(text.stdout).toContain('backend cpu (host CPU, reference executor), f32 storage');
    const json = await kiln('--backend', 'cpu', '--json');
    const j = JSON.parse(json.stdout) as Record<string, unknown>;
    expect(j).toMatchObject({ backend: 'cpu', adapter: 'host CPU, reference executor', storage: 'f32', significant_digits: 8 });
    expect(Math.abs((j['loss'] as number) - expected.loss) / expected.loss).toBeLessThan(2e-4);
  }, 120_000);

  it('webgpu --dtype f16: the adapter, f16 storage, and 4 significant digits in text and --json', async () => {
    const json = await kiln('--dtype', 'f16', '--json');
    expect(json.code, json.stderr).toBe(0);
    const j = JSON.parse(json.stdout) as { loss: number; terms: Record<string, number>; backend: string; adapter: string; storage: string; significant_digits: number };
    expect(j).toMatchObject({ backend: 'webgpu', storage: 'f16', significant_digits: 4 });
    expect(j.adapter.length).toBeGreaterThan(0);
    for (const v of [j.loss, ...Object.values(j.terms)]) expect(Number(v.toPrecision(4))).toBe(v);
    expect(Math.abs(j.loss - expected.loss) / expected.loss).toBeLessThan(5e-3);
    const text = await kiln('--dtype', 'f16');
    expect(text.stdout).toMatch(/^loss \d\.\d{3}\n {2}lm {7}\d\.\d{3} {2}\(weight 1\)\n {2}vm {7}\d\.\d{3} {2}\(weight 1\)\n/);
    expect(text.stdout).toContain(`backend webgpu (${j.adapter}), f16 storage: 4 significant digits`);
  }, 600_000);
});
