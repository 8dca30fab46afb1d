// Shared by the golden tests: run `kiln loss` on a case made by make_golden.py and measure how
// far its loss terms and gradients are from PyTorch's.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../compiler/cli/main.js';
import { Output } from '../../compiler/cli/output.js';
import { readSafetensors } from '../../runtime/node/safetensors-file.js';

export const GOLDEN_CASES = ['llama_b2', 'mistral_gqa', 'llama_vmw', 'mistral_swa', 'llama_pif'] as const;

export function relFrobenius(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let ref = 0;
  for (let i = 0; i < a.length; i++) {
    diff += (a[i]! - b[i]!) ** 2;
    ref += b[i]! ** 2;
  }
  return Math.sqrt(diff) / Math.max(Math.sqrt(ref), 1e-30);
}

interface Expected {
  loss: number;
  terms: Record<string, number>;
}

export interface GoldenRun {
  code: number;
  stderr: string;
  /** the worst relative error over the total loss and every term. */
  worstTerm: number;
  worstGrad: number;
  worstGradName: string;
  gradNames: { mine: string[]; theirs: string[] };
}

export async function runGoldenCase(name: string, backend: 'cpu' | 'webgpu'): Promise<GoldenRun> {
  const dir = join('test/golden', name);
  const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as Expected;
  // The loss weight of the VM term is part of each case (llama_vmw uses 0.5).
  const vmWeight = (expected.loss - expected.terms['lm']!) / expected.terms['vm']!;
  const grads = join(mkdtempSync(join(tmpdir(), `kiln-golden-${backend}-`)), 'grads.safetensors');
  const out = new Output(true);
  const args = ['loss', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', join(dir, 'llava'), '--vision-tower', join(dir, 'clip'), '--batch', join(dir, 'batch.safetensors')];
  args.push('--set', `vm_weight=${Math.round(vmWeight * 1e6) / 1e6}`, '--grads', grads, '--json', '--backend', backend);
  const code = await main(args, out);
  const stderr = out.err.join('\n');
  if (code !== 0) return { code, stderr, worstTerm: Infinity, worstGrad: Infinity, worstGradName: '', gradNames: { mine: [], theirs: [] } };
  const got = JSON.parse(out.out.join('')) as Expected;
  const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
  let worstTerm = rel(got.loss, expected.loss);
  for (const [k, v] of Object.entries(expected.terms)) worstTerm = Math.max(worstTerm, rel(got.terms[k]!, v));
  const mine = readSafetensors(grads);
  const theirs = readSafetensors(join(dir, 'grads.safetensors'));
  let worstGrad = 0;
  let worstGradName = '';
  for (const [k, t] of theirs) {
    const m = mine.get(k);
    const r = m ? relFrobenius(m.data, t.data) : Infinity;
    if (!(r <= worstGrad)) [worstGrad, worstGradName] = [r, k];
  }
  return { code, stderr, worstTerm, worstGrad, worstGradName, gradNames: { mine: [...mine.keys()].sort(), theirs: [...theirs.keys()].sort() } };
}
