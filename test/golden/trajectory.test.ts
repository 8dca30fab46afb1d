// `kiln train --batch` against the Hugging Face Trainer (test/golden/make_trajectory.py): five
// optimiser steps of llama_b2 with torch AdamW, get_cosine_schedule_with_warmup (warmup 2 of 5,
// so step 1 runs at lr 0) and clip_grad_norm_ active on steps 1, 2 and 4. Every logged loss term
// and grad_norm within 1e-4 relative on both backends (the tolerance; the same run in
// float32 torch stays within 1.8e-5 of the float64 golden, so 1e-4 leaves 5x for Kiln's own f32
// rounding, and a wrong schedule step, a missing clip or a wrong bias correction moves a term by
// more than 1e-3); the learning rate equal to the Trainer's (both compute it in f64 from the same
// formula); and the checkpoint written at the end gives, in `kiln loss`, the Trainer's loss after
// the five updates, also within 1e-4. The parameters themselves: each trained tensor's change over
// the five steps equals the Trainer's (trajectory_params.safetensors) within 1e-3 relative
// Frobenius: AdamW divides by sqrt(v), which magnifies f32 rounding in elements whose gradients
// are tiny (measured 4e-5); a wrong update (bias correction, clip coefficient, weight decay) is
// off by 1e-2 or more.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { main } from '../../compiler/cli/main.js';
import { Output } from '../../compiler/cli/output.js';
import { readSafetensors } from '../../runtime/node/safetensors-file.js';

const G = 'test/golden/llama_b2';
interface Step {
  step: number;
  loss: number;
  terms: Record<string, number>;
  learning_rate: number;
  grad_norm: number;
}
interface Trajectory {
  kiln_train: string[];
  steps: Step[];
  final: { loss: number; terms: Record<string, number> };
}
const read = (file: string) => JSON.parse(fs.readFileSync(`${G}/${file}`, 'utf8')) as Trajectory;
const golden = read('trajectory.json');
/**
 * The same run with weight decay 5 (trajectory_wd.json), where the Trainer's own parameter groups
 * decide what decays (no bias, no norm weight): decaying every parameter instead moves a term by
 * 1.4e-2 (the file's checks.decay_all_vs_split_max_rel), so 1e-4 tells the split apart.
 */
const CASES = [
  { label: 'no weight decay', file: 'trajectory.json', params: 'trajectory_params.safetensors' },
  { label: 'weight decay 5', file: 'trajectory_wd.json', params: 'trajectory_wd_params.safetensors' },
];
const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
/** A checkpoint kiln train wrote, as PyTorch read it (see the golden README). */
const KT = 'test/golden/kiln_checkpoint/llama_b2_trained';
const torchOnKiln = JSON.parse(fs.readFileSync(`${KT}.json`, 'utf8')) as { model_sha256: string; loss: number; terms: Record<string, number> };

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-trajectory-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function kiln(args: string[]): Promise<{ code: number; lines: Record<string, unknown>[]; stderr: string }> {
  const out = new Output(true);
  const code = await main(args, out);
  return { code, lines: out.out.join('\n').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>), stderr: out.err.join('\n') };
}

describe.each(['cpu', 'webgpu'])('kiln train --batch equals the Hugging Face Trainer on llama_b2 (%s)', (backend) => {
  it.each(CASES)('$label: every logged loss term and grad_norm within 1e-4 relative, the learning rate exactly; the end checkpoint gives the final loss', async ({ label, file, params }) => {
    const golden = read(file);
    const out = path.join(tmp, `${backend}${file}`);
    const r = await kiln(['train', 'models/vwlmm.kiln', ...golden.kiln_train, '--checkpoint', `${G}/llava`, '--vision-tower', `${G}/clip`, '--batch', `${G}/batch.safetensors`, '--backend', backend, '--out', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const steps = r.lines.filter((l) => 'step' in l) as unknown as { step: number; loss: number; terms: Record<string, number>; lr: number; grad_norm: number }[];
    expect(steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5]);
    const worst: Record<string, number> = { loss: 0, lm: 0, vm: 0, grad_norm: 0 };
    steps.forEach((s, i) => {
      const g = golden.steps[i]!;
      expect(s.lr, `step ${s.step} lr`).toBe(g.learning_rate);
      const errs = { loss: rel(s.loss, g.loss), lm: rel(s.terms['lm']!, g.terms['lm']!), vm: rel(s.terms['vm']!, g.terms['vm']!), grad_norm: rel(s.grad_norm, g.grad_norm) };
      for (const [k, e] of Object.entries(errs)) {
        expect(e, `step ${s.step} ${k}: kiln ${JSON.stringify(s)} torch ${JSON.stringify(g)}`).toBeLessThan(1e-4);
        worst[k] = Math.max(worst[k]!, e);
      }
    });
    const summary = (r.lines.find((l) => 'summary' in l) as { summary: { checkpoint: string } }).summary;
    expect(summary.checkpoint).toBe(path.join(out, 'checkpoint-5'));
    const loss = await kiln(['loss', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', summary.checkpoint, '--batch', `${G}/batch.safetensors`, '--backend', backend, '--json']);
    expect(loss.code, loss.stderr).toBe(0);
    const fin = loss.lines[0] as { loss: number; terms: Record<string, number> };
    for (const k of ['lm', 'vm']) expect(rel(fin.terms[k]!, golden.final.terms[k]!), `final ${k}`).toBeLessThan(1e-4);
    const finalErr = Math.max(rel(fin.terms['lm']!, golden.final.terms['lm']!), rel(fin.terms['vm']!, golden.final.terms['vm']!));
    const trained = readSafetensors(path.join(summary.checkpoint, 'model.safetensors'));
    const initial = readSafetensors(`${G}/llava/model.safetensors`);
    let worstParam = 0;
    let worstName = '';
    for (const [name, t] of readSafetensors(`${G}/${params}`)) {
      const mine = trained.get(name)!.data;
      const before = initial.get(name)!.data;
      let diff = 0;
      let change = 0;
      for (let i = 0; i < t.data.length; i++) {
        diff += (mine[i]! - t.data[i]!) ** 2;
        change += (t.data[i]! - before[i]!) ** 2;
      }
      const e = Math.sqrt(diff / change);
      expect(e, name).toBeLessThan(1e-3);
      if (e > worstParam) [worstParam, worstName] = [e, name];
    }
    if (backend === 'cpu' && file === 'trajectory.json') {
      // kiln_checkpoint/llama_b2_trained is this run's checkpoint-5 as it was when PyTorch read it
      // (load_kiln_checkpoint.py); today's run must still write those values. Bit for bit here;
      // 1e-6 leaves room for another Node's libm in the reference's exp/log.
      const committed = readSafetensors(`${KT}/model.safetensors`);
      for (const [name, t] of committed) {
        const mine = trained.get(name)!.data;
        let diff = 0;
        let norm = 0;
        for (let i = 0; i < t.data.length; i++) {
          diff += (mine[i]! - t.data[i]!) ** 2;
          norm += t.data[i]! ** 2;
        }
        expect(Math.sqrt(diff / norm), name).toBeLessThan(1e-6);
      }
      expect(fs.readFileSync(path.join(summary.checkpoint, 'config.json')).equals(fs.readFileSync(`${KT}/config.json`))).toBe(true);
    }
    console.log(`${backend}, ${label}: worst relative error against the HF Trainer over 5 steps: loss ${worst['loss']!.toExponential(2)}, lm ${worst['lm']!.toExponential(2)}, vm ${worst['vm']!.toExponential(2)}, grad_norm ${worst['grad_norm']!.toExponential(2)}; final checkpoint ${finalErr.toExponential(2)}; parameter change ${worstParam.toExponential(2)} (${worstName})`);
  }, 600_000);
});

describe('a checkpoint written by kiln train, loaded by PyTorch', () => {
  it('PyTorch (load_kiln_checkpoint.py) gives the Trainer\'s loss after the five steps within 1e-4, and kiln loss gives PyTorch\'s within 1e-6', async () => {
    expect(createHash('sha256').update(fs.readFileSync(`${KT}/model.safetensors`)).digest('hex')).toBe(torchOnKiln.model_sha256);
    for (const k of ['lm', 'vm']) expect(rel(torchOnKiln.terms[k]!, golden.final.terms[k]!), k).toBeLessThan(1e-4);
    const r = await kiln(['loss', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', KT, '--batch', `${G}/batch.safetensors`, '--backend', 'cpu', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const mine = r.lines[0] as { terms: Record<string, number> };
    // Same f32 weights, torch in float64: ~1e-7 apart (kiln-checkpoint.test.ts's reasoning).
    for (const k of ['lm', 'vm']) expect(rel(mine.terms[k]!, torchOnKiln.terms[k]!), k).toBeLessThan(1e-6);
  });
});
