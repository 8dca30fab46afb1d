// kiln train's checkpoints (compiler/train/checkpoints.ts): --save-every and the end save,
// --resume continuing so that every logged loss equals an uninterrupted run's bit for bit on the
// same backend (after a SIGKILL of the real process too), a checkpoint written by kiln train
// giving the logged loss in kiln loss and starting a run as --checkpoint on its own, and the
// refusals of a resume that would be another run.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';
import { latestCheckpoint, openTrainingCheckpoint } from '../../../runtime/node/checkpoint.js';

const G = 'test/golden/llama_b2';
const SPEC = 'models/vwlmm.kiln';
const FROM = ['--config', 'tiny', '--checkpoint', `${G}/llava`, '--vision-tower', `${G}/clip`, '--batch', `${G}/batch.safetensors`];
const RUN = ['--steps', '5', '--lr', '1e-3', '--warmup-steps', '2', '--max-grad-norm', '12', '--json'];

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-train-ckpt-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Step {
  step: number;
  loss: number;
  terms: Record<string, number>;
  lr: number;
  grad_norm: number;
}
interface Run {
  code: number;
  steps: Step[];
  summary: Record<string, unknown> | undefined;
  stdout: string;
  stderr: string;
}

async function kiln(args: string[]): Promise<Run> {
  const out = new Output(true);
  const code = await main(args, out);
  const stdout = out.out.join('\n');
  const lines = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  return {
    code,
    steps: lines.filter((l) => 'step' in l) as unknown as Step[],
    summary: (lines.find((l) => 'summary' in l) as { summary?: Record<string, unknown> } | undefined)?.summary,
    stdout,
    stderr: out.err.join('\n'),
  };
}

/** A step line without its timing. */
const logged = (s: Step | Record<string, unknown>) => {
  const r = s as Record<string, unknown>;
  return { step: r['step'], loss: r['loss'], terms: r['terms'], lr: r['lr'] ?? r['learning_rate'], grad_norm: r['grad_norm'] };
};
const sameFile = (a: string, b: string, f: string) => fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(b, f)));

describe.each(['cpu', 'webgpu'])('kiln train checkpoints on %s', (backend) => {
  let full: Run;
  let fullDir: string;

  it('--save-every 2 saves checkpoint-2, -4 and the end; --resume from checkpoint-2 logs steps 3-5 bit for bit as the uninterrupted run and ends in the same bytes', async () => {
    fullDir = path.join(tmp, backend, 'full');
    full = await kiln(['train', SPEC, ...FROM, ...RUN, '--backend', backend, '--out', fullDir, '--save-every', '2']);
    expect(full.code, full.stderr).toBe(0);
    expect(fs.readdirSync(fullDir).filter((f) => f.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-2', 'checkpoint-4', 'checkpoint-5']);
    expect(full.summary?.['checkpoint']).toBe(path.join(fullDir, 'checkpoint-5'));
    const state = openTrainingCheckpoint(path.join(fullDir, 'checkpoint-5')).state;
    expect(state).toMatchObject({ global_step: 5, max_steps: 5, learning_rate: 0, max_grad_norm: 12, data: { epoch: 5, position: 0 }, schedule: { kind: 'cosine', base_lr: 1e-3, warmup: 2, total: 5 } });
    expect(state.log_history.map(logged)).toEqual(full.steps.map(logged));

    // The interrupted run: only checkpoint-2 survived.
    const resumedDir = path.join(tmp, backend, 'resumed');
    fs.mkdirSync(resumedDir, { recursive: true });
    fs.cpSync(path.join(fullDir, 'checkpoint-2'), path.join(resumedDir, 'checkpoint-2'), { recursive: true });
    const resumed = await kiln(['train', SPEC, ...FROM, ...RUN, '--backend', backend, '--out', resumedDir, '--save-every', '2', '--resume']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toContain(`resuming from ${path.join(resumedDir, 'checkpoint-2')} (step 2 of 5)`);
    expect(resumed.steps.map(logged)).toEqual(full.steps.slice(2).map(logged));
    for (const f of ['model.safetensors', 'optimizer.safetensors', 'config.json']) expect(sameFile(path.join(resumedDir, 'checkpoint-5'), path.join(fullDir, 'checkpoint-5'), f), f).toBe(true);
    expect(openTrainingCheckpoint(path.join(resumedDir, 'checkpoint-5')).state.log_history.map(logged)).toEqual(full.steps.map(logged));
  }, 600_000);

  it('a checkpoint written by kiln train gives in kiln loss the loss the next step logged, and starts a run as --checkpoint on its own', async () => {
    // checkpoint-4 holds the parameters step 5 computed its loss with.
    const ckpt = path.join(fullDir, 'checkpoint-4');
    const out = new Output(true);
    expect(await main(['loss', SPEC, '--config', 'tiny', '--checkpoint', ckpt, '--batch', `${G}/batch.safetensors`, '--backend', backend, '--json'], out), out.err.join('\n')).toBe(0);
    const loss = JSON.parse(out.out.join('\n')) as { loss: number; terms: Record<string, number> };
    const step5 = full.steps[4]!;
    if (backend === 'cpu') {
      // The reference executor runs the same forward ops in kiln loss and in the train step.
      expect(loss.terms).toEqual(step5.terms);
    } else {
      // WebGPU fuses the loss entry and the train_step entry differently: f32 sums in another
      // order, ~1e-7 relative; 1e-5 is far from any real difference (a step moves them 1e-2).
      for (const k of ['lm', 'vm']) expect(Math.abs(loss.terms[k]! - step5.terms[k]!) / step5.terms[k]!).toBeLessThan(1e-5);
    }
    const again = await kiln(['train', SPEC, '--config', 'tiny', '--checkpoint', ckpt, '--batch', `${G}/batch.safetensors`, '--steps', '1', '--lr', '1e-3', '--json', '--backend', backend, '--out', path.join(tmp, backend, 'again')]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.steps[0]!.terms).toEqual(step5.terms);
  }, 600_000);
});

describe('--data: the data position and the tokenizer (cpu)', () => {
  it('resuming mid-epoch and across the epoch boundary sees the same batches; the checkpoint carries the tokenizer the run built', async () => {
    // builtin:shapes?size=24 trains on 20 samples (the rest are held out): in batches of 4, 5
    // steps an epoch, so 8 steps cross into the second epoch.
    const data = ['train', SPEC, '--config', 'tiny', '--data', 'builtin:shapes?size=24', '--batch-size', '4', '--steps', '8', '--lr', '1e-3', '--json', '--backend', 'cpu'];
    const fullDir = path.join(tmp, 'data-full');
    const full = await kiln([...data, '--out', fullDir, '--save-every', '3']);
    expect(full.code, full.stderr).toBe(0);
    expect(fs.readdirSync(fullDir).filter((f) => f.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-3', 'checkpoint-6', 'checkpoint-8']);
    const ck = openTrainingCheckpoint(path.join(fullDir, 'checkpoint-3'));
    expect(ck.state).toMatchObject({ global_step: 3, epoch: 0.6, data: { epoch: 0, position: 3 }, extra: { steps_per_epoch: 5, batch_size: 4 } });
    expect(openTrainingCheckpoint(path.join(fullDir, 'checkpoint-6')).state.data).toEqual({ epoch: 1, position: 1 });
    const tokenizer = JSON.parse(fs.readFileSync(path.join(fullDir, 'checkpoint-3', 'tokenizer.json'), 'utf8')) as { model: { type: string } };
    expect(tokenizer.model.type).toBe('WordLevel');
    expect(fs.existsSync(path.join(fullDir, 'checkpoint-3', 'tokenizer_config.json'))).toBe(true);
    const resumedDir = path.join(tmp, 'data-resumed');
    fs.mkdirSync(resumedDir);
    fs.cpSync(path.join(fullDir, 'checkpoint-3'), path.join(resumedDir, 'checkpoint-3'), { recursive: true });
    const resumed = await kiln([...data, '--out', resumedDir, '--save-every', '3', '--resume']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.steps.map(logged)).toEqual(full.steps.slice(3).map(logged));
    expect(sameFile(path.join(resumedDir, 'checkpoint-8'), path.join(fullDir, 'checkpoint-8'), 'model.safetensors')).toBe(true);
  }, 600_000);
});

describe('--grad-accum (cpu)', () => {
  it('resuming a run that accumulates 2 micro-batches per step logs the uninterrupted run\'s losses bit for bit', async () => {
    const data = ['train', SPEC, '--config', 'tiny', '--data', 'builtin:shapes?size=24', '--batch-size', '2', '--grad-accum', '2', '--steps', '4', '--lr', '1e-3', '--json', '--backend', 'cpu'];
    const fullDir = path.join(tmp, 'accum-full');
    const full = await kiln([...data, '--out', fullDir, '--save-every', '2']);
    expect(full.code, full.stderr).toBe(0);
    const resumedDir = path.join(tmp, 'accum-resumed');
    fs.mkdirSync(resumedDir);
    fs.cpSync(path.join(fullDir, 'checkpoint-2'), path.join(resumedDir, 'checkpoint-2'), { recursive: true });
    const resumed = await kiln([...data, '--out', resumedDir, '--save-every', '2', '--resume']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.steps.map(logged)).toEqual(full.steps.slice(2).map(logged));
    const other = await kiln([...data.map((a) => (a === '2' ? '1' : a)), '--out', resumedDir, '--resume']);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain('field "extra.batch_size" is 2 but this run has 1');
  }, 600_000);
});

describe('resume after the process was killed (cpu)', () => {
  it('SIGKILL of kiln train mid-run, then --resume: the steps after the newest checkpoint equal the uninterrupted run\'s', async () => {
    const dir = path.join(tmp, 'killed');
    const full = await kiln(['train', SPEC, ...FROM, ...RUN, '--backend', 'cpu', '--out', path.join(tmp, 'unkilled')]);
    expect(full.code, full.stderr).toBe(0);
    // KILN_STDERR_FILTERED=1: bin/kiln.js runs the command in this process itself (no filtering
    // parent), so the SIGKILL reaches the process that trains and writes.
    const child = spawn(process.execPath, ['bin/kiln.js', 'train', SPEC, ...FROM, ...RUN, '--backend', 'cpu', '--out', dir, '--save-every', '1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, KILN_STDERR_FILTERED: '1' },
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_c, sig) => resolve(sig)));
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t0 = Date.now();
    while (!fs.existsSync(path.join(dir, 'checkpoint-2')) && child.exitCode === null && Date.now() - t0 < 300_000) await new Promise((r) => setTimeout(r, 5));
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    const latest = latestCheckpoint(dir);
    expect(latest, stderr).toBeDefined();
    const at = openTrainingCheckpoint(latest!).step;
    // Killed mid-run: some steps are left to resume.
    expect(at).toBeGreaterThanOrEqual(2);
    expect(at).toBeLessThan(5);
    const resumed = await kiln(['train', SPEC, ...FROM, ...RUN, '--backend', 'cpu', '--out', dir, '--save-every', '1', '--resume']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.steps.map(logged)).toEqual(full.steps.slice(at).map(logged));
    expect(sameFile(path.join(dir, 'checkpoint-5'), path.join(tmp, 'unkilled', 'checkpoint-5'), 'model.safetensors')).toBe(true);
  }, 600_000);
});

describe('--resume with another --steps, as the Hugging Face Trainer resumes', () => {
  it('rebuilds the schedule over the new total: a 2-step run resumed to 4 steps equals the uninterrupted 4-step run (warmup 2 makes their first steps alike)', async () => {
    const dir = path.join(tmp, 'longer');
    const steps = (n: string) => RUN.map((a) => (a === '5' ? n : a));
    const first = await kiln(['train', SPEC, ...FROM, ...steps('2'), '--backend', 'cpu', '--out', dir]);
    expect(first.code, first.stderr).toBe(0);
    const resumed = await kiln(['train', SPEC, ...FROM, ...steps('4'), '--backend', 'cpu', '--out', dir, '--resume']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toContain("the checkpoint's run planned max_steps 2, this one 4: the schedule is rebuilt over 4 steps (warmup 2) and continued from step 2, as the Hugging Face Trainer does on resume");
    const whole = await kiln(['train', SPEC, ...FROM, ...steps('4'), '--backend', 'cpu', '--out', path.join(tmp, 'longer-whole')]);
    expect(whole.code, whole.stderr).toBe(0);
    // Under the old schedule (total 2) step 3's rate would be 0; the rebuilt one gives the 4-step run's.
    expect(resumed.steps.map(logged)).toEqual(whole.steps.slice(2).map(logged));
    expect(resumed.steps[0]!.lr).toBeGreaterThan(0);
    const state = openTrainingCheckpoint(latestCheckpoint(dir)!).state;
    expect(state).toMatchObject({ global_step: 4, max_steps: 4, schedule: { total: 4, warmup: 2 } });
    expect(state.log_history.map((h) => h.step)).toEqual([1, 2, 3, 4]);
  }, 600_000);

  it('a total at or below the checkpoint\'s step leaves nothing to train: exit 1 naming both', async () => {
    const dir = path.join(tmp, 'shorter');
    const steps = (n: string) => RUN.map((a) => (a === '5' ? n : a));
    expect((await kiln(['train', SPEC, ...FROM, ...steps('2'), '--backend', 'cpu', '--out', dir])).code).toBe(0);
    const r = await kiln(['train', SPEC, ...FROM, ...steps('1'), '--backend', 'cpu', '--out', dir, '--resume']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('--resume: the checkpoint is at step 2 (its run planned max_steps 2), and this run\'s total is 1 steps: nothing is left to train; give --steps above 2');
  }, 600_000);
});

describe('--resume refuses what would be another run', () => {
  it('bad --save-every / --save-total-limit values are usage errors (exit 2)', async () => {
    for (const [flag, value] of [['--save-every', '0'], ['--save-total-limit', 'three']] as const) {
      const r = await kiln(['train', SPEC, ...FROM, ...RUN, '--backend', 'cpu', '--out', path.join(tmp, 'usage'), flag, value]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`${flag} ${value}: expected an integer >= 1`);
    }
  });

  it('no checkpoint in --out; other flags than the run had; a checkpoint of another model', async () => {
    const empty = await kiln(['train', SPEC, ...FROM, ...RUN, '--backend', 'cpu', '--out', path.join(tmp, 'empty'), '--resume']);
    expect(empty.code).toBe(1);
    expect(empty.stderr).toContain(`${path.join(tmp, 'empty')}: --resume: no checkpoint to resume from`);
    const dir = path.join(tmp, 'other');
    const first = await kiln(['train', SPEC, ...FROM, ...RUN.map((a) => (a === '5' ? '2' : a)), '--backend', 'cpu', '--out', dir]);
    expect(first.code, first.stderr).toBe(0);
    const lr = await kiln(['train', SPEC, ...FROM, ...RUN.map((a) => (a === '5' ? '2' : a === '1e-3' ? '2e-3' : a)), '--backend', 'cpu', '--out', dir, '--resume']);
    expect(lr.code).toBe(1);
    expect(lr.stderr).toContain(`${path.join(dir, 'checkpoint-2', 'trainer_state.json')}: field "schedule" is {"kind":"cosine","base_lr":0.001,"warmup":2,"total":2} but this run has {"kind":"cosine","base_lr":0.002,"warmup":2,"total":2}`);
    const other = await kiln(['train', SPEC, '--config', 'tiny', '--batch', 'test/golden/llama_b2/batch.safetensors', '--set', 'text.vocab=97', '--set', 'text.hidden=48', '--set', 'text.kv_heads=4', '--set', 'text.heads=4', '--set', 'text.ffn=96', '--steps', '2', '--lr', '1e-3', '--warmup-steps', '2', '--max-grad-norm', '12', '--json', '--backend', 'cpu', '--out', dir, '--resume']);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain(`${path.join(dir, 'checkpoint-2', 'config.json')}: field "intermediate_size" is 80, but the model being trained has text.ffn = 96 (a checkpoint of another model?)`);
  }, 600_000);
});
