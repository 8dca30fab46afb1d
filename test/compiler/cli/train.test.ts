// `kiln train` (issue 11 §1): the Hugging Face Trainer's arithmetic on both backends. The golden
// llama_b2 case (tiny VW-LMM, 2 rows) is the batch; clipping is made active with a small
// --max-grad-norm (the norms here are 6 to 17).
//   - WebGPU and the cpu reference log the same losses, terms and gradient norms step by step.
//   - The reference's clipped AdamW equals an independent f64 transcription of torch's
//     clip_grad_norm_ + AdamW on the same gradients.
//   - Schedules equal transformers' (values printed by transformers 5.18 / torch 2.13).
//   - Bad usage and bad input end with exit 2 / 1 and a message, no stack; a NaN stops training
//     naming the step and the op, with the step not applied.
import { decays } from '../../../compiler/passes/optimizer.js';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';
import { loadSpec } from '../../../compiler/syntax/load.js';
import { checkModel } from '../../../compiler/check/index.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { checkpointOverrides } from '../../../compiler/cli/loss.js';
import { loadModelInputs } from '../../../compiler/cli/model-inputs.js';
import { ReferenceBackend } from '../../../compiler/train/backend.js';
import { RepeatedBatch, bucketLength } from '../../../compiler/train/data.js';
import { Trainer, type StepRecord } from '../../../compiler/train/trainer.js';
import { learningRate, warmupSteps, type Schedule } from '../../../runtime/optim/schedule.js';
import { poked as pokedCopy } from '../../helpers/poked.js';

const G = 'test/golden/llama_b2';
const GOLDEN = ['models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', `${G}/llava`, '--vision-tower', `${G}/clip`];

interface JsonStep {
  step: number;
  loss: number;
  terms: Record<string, number>;
  lr: number;
  grad_norm: number;
  tokens_per_s: number;
}

async function train(args: string[]): Promise<{ code: number; steps: JsonStep[]; summary: Record<string, unknown> | null; stderr: string }> {
  const out = new Output(true);
  // Every run saves a checkpoint at the end: into a fresh folder, not the default out/train.
  const outDir = args.includes('--out') ? [] : ['--out', mkdtempSync(join(tmpdir(), 'kiln-train-out-'))];
  const code = await main(['train', ...args, ...outDir, '--json'], out);
  const lines = out.out.map((l) => JSON.parse(l) as Record<string, unknown>);
  return {
    code,
    steps: lines.filter((l) => 'step' in l) as unknown as JsonStep[],
    summary: (lines.find((l) => 'summary' in l)?.['summary'] as Record<string, unknown> | undefined) ?? null,
    stderr: out.err.join('\n'),
  };
}

const rel = (a: number, b: number): number => Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);

describe('kiln train: WebGPU against the cpu reference', () => {
  // Tolerance: 2e-4 relative on every logged loss, term and gradient norm, the golden loss
  // tolerance. The kernels and the reference sum in different orders (f32); Adam's first steps
  // move each weight by about lr * sign(g), so a near-zero gradient entry whose sign differs
  // moves one weight by 2 lr, and the next steps' losses carry that. Measured: ~3e-7.
  it('four clipped steps log the same losses, terms, learning rates and gradient norms', async () => {
    const args = [...GOLDEN, '--batch', `${G}/batch.safetensors`, '--steps', '4', '--lr', '1e-3', '--max-grad-norm', '0.5'];
    const cpu = await train([...args, '--backend', 'cpu']);
    const gpu = await train([...args, '--backend', 'webgpu']);
    expect(cpu.code, cpu.stderr).toBe(0);
    expect(gpu.code, gpu.stderr).toBe(0);
    expect(cpu.steps.map((s) => s.step)).toEqual([1, 2, 3, 4]);
    expect(gpu.steps.length).toBe(4);
    cpu.steps.forEach((want, i) => {
      const got = gpu.steps[i]!;
      expect(got.lr).toBe(want.lr);
      expect(rel(got.loss, want.loss), `step ${i + 1} loss`).toBeLessThan(2e-4);
      for (const t of ['lm', 'vm']) expect(rel(got.terms[t]!, want.terms[t]!), `step ${i + 1} ${t}`).toBeLessThan(2e-4);
      expect(rel(got.grad_norm, want.grad_norm), `step ${i + 1} grad_norm`).toBeLessThan(2e-4);
      // The clip is active at every step.
      expect(want.grad_norm).toBeGreaterThan(0.5);
      expect(got.tokens_per_s).toBeGreaterThan(0);
    });
    // warmup = ceil(0.03 * 4) = 1: the first step runs at lr 0 (LambdaLR's lr_lambda(0)), so
    // the second step sees the same weights and the same loss.
    expect(cpu.steps[0]!.lr).toBe(0);
    expect(cpu.steps[1]!.loss).toBe(cpu.steps[0]!.loss);
    expect(cpu.steps[3]!.loss).toBeLessThan(cpu.steps[1]!.loss);
    expect(gpu.summary).toMatchObject({ steps: 4, checkpoint: expect.stringMatching(/checkpoint-4$/) as unknown });
    expect(gpu.summary!['heldout']).toBeUndefined();
  }, 600_000);
});

describe('clip_grad_norm_ + AdamW on the reference, against a host transcription of torch', () => {
  it('three steps with the clip active: gradient norms and parameters', async () => {
    const files = loadSpec('models/vwlmm.kiln', (p: string) => readFileSync(p, 'utf8')).files;
    const m = checkModel(files, { config: 'tiny', overrides: [...checkpointOverrides(`${G}/llava`), ...checkpointOverrides(`${G}/clip`)] });
    const feeds = loadModelInputs(m, { checkpoint: `${G}/llava`, visionTower: `${G}/clip`, batch: `${G}/batch.safetensors` });
    const params = new Map([...feeds].filter(([k]) => m.graph.params.some((p) => p.name === k)));
    const batch = new Map([...feeds].filter(([k]) => !params.has(k)));
    const hyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
    const maxNorm = 0.5;
    const schedule: Schedule = { kind: 'cosine', warmup: 1, total: 4 };
    const backend = new ReferenceBackend(m, hyper, params);
    const records: StepRecord[] = [];
    // Step by step: after each, the host transcription starts from the backend's state.
    const diff = differentiate(m.graph);
    const names = diff.gradients.map((g) => g.name);
    const mom = new Map(names.map((n) => [n, { m: new Float64Array(params.get(n)!.data.length), v: new Float64Array(params.get(n)!.data.length) }]));
    let current = new Map(params);
    for (let t = 0; t < 3; t++) {
      // torch: grads of the loss at the current parameters (the same f32 reference gradients).
      const r = runReference(diff, new Map([...current, ...batch]), diff.gradients.map((g) => g.node), { precision: 'f32' });
      const grads = new Map(diff.gradients.map((g) => [g.name, r.get(g.node)!.data]));
      // clip_grad_norm_(norm_type=2): the norm of the per-tensor norms, clip_coef clamped at 1.
      let sq = 0;
      for (const g of grads.values()) {
        let s = 0;
        for (const x of g) s += x * x;
        sq += s;
      }
      const total = Math.sqrt(sq);
      const coef = Math.min(maxNorm / (total + 1e-6), 1);
      expect(coef).toBeLessThan(1);
      const lr = learningRate(1e-2, schedule, t);
      const step = t + 1;
      const want = new Map<string, Float64Array>();
      for (const n of names) {
        const p = Float64Array.from(current.get(n)!.data);
        const g = grads.get(n)!;
        const st = mom.get(n)!;
        // The Trainer's two groups: no decay on biases and norm weights (optimizer.ts `decays`).
        const wd = decays(m.graph.params.find((q) => q.name === n)!) ? hyper.weightDecay : 0;
        for (let i = 0; i < p.length; i++) {
          const gi = g[i]! * coef;
          p[i] = p[i]! * (1 - lr * wd);
          st.m[i] = hyper.beta1 * st.m[i]! + (1 - hyper.beta1) * gi;
          st.v[i] = hyper.beta2 * st.v[i]! + (1 - hyper.beta2) * gi * gi;
          const denom = Math.sqrt(st.v[i]!) / Math.sqrt(1 - hyper.beta2 ** step) + hyper.eps;
          p[i] = p[i]! - (lr / (1 - hyper.beta1 ** step)) * (st.m[i]! / denom);
        }
        want.set(n, p);
      }
      const one = new Trainer(backend, new RepeatedBatch(batch, 16), { totalSteps: t + 1, lr: 1e-2, schedule, maxGradNorm: maxNorm }, [{ afterStep: (rec) => void records.push(rec) }]);
      one.step = t;
      await one.run();
      // f32 sums against f64 ones: 1e-5 relative on the norm.
      expect(rel(records[t]!.gradNorm, total), `step ${step} grad_norm`).toBeLessThan(1e-5);
      const got = await backend.read(names);
      // f32 graph arithmetic against f64 after the same gradients: well under 1e-5 of the
      // parameter values (as in test/runtime/optim/adamw.test.ts).
      for (const n of names) {
        const a = got.get(n)!.data;
        const b = want.get(n)!;
        let worst = 0;
        for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
        expect(worst, `step ${step} ${n}`).toBeLessThan(2e-5);
      }
      // Moments: keep the host's in step with the backend's (f32), as the parameters.
      const state = await backend.read(backend.stateNames());
      for (const n of names) {
        mom.get(n)!.m.set(state.get(`adamw.m:${n}`)!.data);
        mom.get(n)!.v.set(state.get(`adamw.v:${n}`)!.data);
      }
      current = new Map([...current, ...got]);
    }
    expect(records.map((r) => r.step)).toEqual([1, 2, 3]);
  }, 120_000);
});

describe('learning-rate schedules as transformers computes them', () => {
  // transformers 5.18: get_{cosine,linear,constant}_schedule_with_warmup on torch.optim.AdamW(lr=2e-5),
  // param_groups[0]['lr'] before each optimizer.step(); scheduler.step() after it.
  const TRANSFORMERS: Record<string, number[]> = {
    'cosine 0 7': [2e-5, 1.900968867902419e-5, 1.6234898018587336e-5, 1.2225209339563144e-5, 7.774790660436857e-6, 3.7651019814126656e-6, 9.903113209758098e-7],
    'cosine 3 13': [0.0, 6.666666666666667e-6, 1.3333333333333333e-5, 2e-5, 1.9510565162951538e-5, 1.8090169943749477e-5, 1.5877852522924733e-5, 1.3090169943749475e-5, 1e-5, 6.909830056250527e-6, 4.12214747707527e-6, 1.9098300562505266e-6, 4.894348370484648e-7],
    'cosine 2 10': [0.0, 1e-5, 2e-5, 1.9238795325112867e-5, 1.7071067811865477e-5, 1.3826834323650899e-5, 1e-5, 6.173165676349103e-6, 2.9289321881345257e-6, 7.612046748871327e-7],
    'cosine 5 5': [0.0, 4.000000000000001e-6, 8.000000000000001e-6, 1.2e-5, 1.6000000000000003e-5],
    'linear 0 7': [2e-5, 1.7142857142857142e-5, 1.4285714285714287e-5, 1.1428571428571429e-5, 8.571428571428571e-6, 5.7142857142857145e-6, 2.8571428571428573e-6],
    'linear 3 13': [0.0, 6.666666666666667e-6, 1.3333333333333333e-5, 2e-5, 1.8e-5, 1.6000000000000003e-5, 1.4e-5, 1.2e-5, 1e-5, 8.000000000000001e-6, 6e-6, 4.000000000000001e-6, 2.0000000000000003e-6],
    'linear 2 10': [0.0, 1e-5, 2e-5, 1.7500000000000002e-5, 1.5000000000000002e-5, 1.25e-5, 1e-5, 7.500000000000001e-6, 5e-6, 2.5e-6],
    'constant 3 13': [0.0, 6.666666666666667e-6, 1.3333333333333333e-5, 2e-5, 2e-5, 2e-5, 2e-5, 2e-5, 2e-5, 2e-5, 2e-5, 2e-5, 2e-5],
    'constant 0 7': [2e-5, 2e-5, 2e-5, 2e-5, 2e-5, 2e-5, 2e-5],
  };
  it.each(Object.entries(TRANSFORMERS))('%s', (key, want) => {
    const [kind, w, total] = key.split(' ') as [Schedule['kind'], string, string];
    const s: Schedule = { kind, warmup: Number(w), total: Number(total) };
    const got = want.map((_, t) => learningRate(2e-5, s, t));
    // The same double operations as transformers' lr_lambda times LambdaLR's base_lr; cos may
    // differ from CPython's libm in the last place.
    got.forEach((g, t) => expect(Math.abs(g - want[t]!), `step ${t}`).toBeLessThanOrEqual(kind === 'cosine' ? 4e-21 : 0));
  });

  it('warmup steps from a ratio as TrainingArguments.get_warmup_steps (ceil)', () => {
    // transformers 5.18 (warmup_steps < 1 is the ratio): 0.03 of 10 -> 1, of 100 -> 3, 0.1 of 7 -> 1, 0.5 of 5 -> 3.
    expect(warmupSteps(10, { ratio: 0.03 })).toBe(1);
    expect(warmupSteps(100, { ratio: 0.03 })).toBe(3);
    expect(warmupSteps(7, { ratio: 0.1 })).toBe(1);
    expect(warmupSteps(5, { ratio: 0.5 })).toBe(3);
    expect(warmupSteps(100, { steps: 7, ratio: 0.5 })).toBe(7);
    expect(warmupSteps(100, {})).toBe(0);
  });
});

describe('sequence-length buckets', () => {
  it('round up to a power of two of at least 16, never past the longest row', () => {
    expect([1, 16, 17, 32, 33, 54, 64].map((n) => bucketLength(n, 68))).toEqual([16, 16, 32, 32, 64, 64, 64]);
    expect([65, 68].map((n) => bucketLength(n, 68))).toEqual([68, 68]);
    expect(bucketLength(20, 20)).toBe(20);
  });

  it('--data builtin:shapes trains on the pipeline\'s batches (cpu)', async () => {
    const r = await train(['models/vwlmm.kiln', '--config', 'tiny', '--data', 'builtin:shapes?size=24', '--batch-size', '2', '--steps', '2', '--lr', '1e-3', '--backend', 'cpu']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.steps.map((s) => s.step)).toEqual([1, 2]);
    for (const s of r.steps) expect(Number.isFinite(s.loss) && s.terms['lm']! > 0 && s.terms['vm']! >= 0).toBe(true);
    expect(r.summary).toMatchObject({ steps: 2, checkpoint: expect.stringMatching(/checkpoint-2$/) as unknown });
  }, 120_000);

  it('WebGPU: one compiled step per length bucket, whatever the batches\' own lengths', async () => {
    const r = await train(['models/vwlmm.kiln', '--config', 'tiny', '--data', 'builtin:shapes?size=24', '--batch-size', '2', '--steps', '6', '--lr', '1e-3', '--backend', 'webgpu']);
    expect(r.code, r.stderr).toBe(0);
    // The held-out evaluation compiles its own entry (eval B=4: the 4 held-out pictures, one length).
    const compiled = Object.keys(r.summary!['compile_s'] as Record<string, number>).filter((k) => k.startsWith('train_step'));
    // The rows are 54 to 68 ids long: buckets 64 and 68 (the longest), never one per length.
    expect(compiled.length).toBeGreaterThanOrEqual(1);
    for (const k of compiled) expect(k).toMatch(/^train_step B=2,T=(64|68)$/);
  }, 600_000);

  it('--grad-accum: by item counts and as the mean of means, from the command line (cpu)', async () => {
    // Seed 1: the first step's two micro-batches score different numbers of answer tokens (at
    // seed 0 they happen to score the same, and the two modes then agree exactly).
    const args = ['models/vwlmm.kiln', '--config', 'tiny', '--data', 'builtin:shapes?size=24', '--batch-size', '2', '--grad-accum', '2', '--steps', '1', '--lr', '1e-3', '--backend', 'cpu', '--seed', '1'];
    const counts = await train(args);
    const means = await train([...args, '--accum-mean-of-means']);
    expect(counts.code, counts.stderr).toBe(0);
    expect(means.code, means.stderr).toBe(0);
    expect(counts.stderr).toContain('1 steps of 2 x 2 rows (terms normalised by their item counts)');
    expect(means.stderr).toContain("(mean of the micro-batches' means)");
    // The same four examples; every image has the same rows, so the VM term agrees, and the
    // LM term differs as the micro-batches' token counts do.
    expect(counts.steps[0]!.terms['vm']).toBeCloseTo(means.steps[0]!.terms['vm']!, 6);
    expect(Math.abs(counts.steps[0]!.terms['lm']! - means.steps[0]!.terms['lm']!)).toBeGreaterThan(1e-3);
  }, 120_000);
});

const poked = (file: string, tensor: string, index: number, value: number): string => pokedCopy(G, file, tensor, index, value);

describe('a non-finite step stops training', () => {
  it.each(['cpu', 'webgpu'] as const)('one NaN in vm_head.weight: step 1, the parameter and the op are named (%s)', async (backend) => {
    const dir = poked('llava/model.safetensors', 'vm_head.weight', 7, NaN);
    const r = await train(['models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', join(dir, 'llava'), '--vision-tower', join(dir, 'clip'), '--batch', join(dir, 'batch.safetensors'), '--steps', '3', '--lr', '1e-3', '--backend', backend]);
    expect(r.code).toBe(1);
    expect(r.steps).toEqual([]);
    expect(r.stderr).toContain('training stopped at step 1 (epoch 0; the step was not applied)');
    expect(r.stderr).toContain("parameter 'vm_head.weight' holds one NaN (at [0, 7])");
    // The VM head's projection and the KL are one op (compiler/passes/loss-heads.ts).
    expect(r.stderr).toMatch(/linear_kl_div \(node \d+, models\/vwlmm\.kiln:\d+:\d+\) reading 'lm_head\.weight', 'vm_head\.weight'/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  }, 600_000);

  it('the step is not applied: parameters and moments keep their values (reference)', async () => {
    const dir = poked('batch.safetensors', 'pixel_values', 5, NaN);
    const files = loadSpec('models/vwlmm.kiln', (p: string) => readFileSync(p, 'utf8')).files;
    const m = checkModel(files, { config: 'tiny', overrides: [...checkpointOverrides(`${G}/llava`), ...checkpointOverrides(`${G}/clip`)] });
    const feeds = loadModelInputs(m, { checkpoint: `${G}/llava`, visionTower: `${G}/clip`, batch: join(dir, 'batch.safetensors') });
    const params = new Map([...feeds].filter(([k]) => m.graph.params.some((p) => p.name === k)));
    const batch = new Map([...feeds].filter(([k]) => !params.has(k)));
    const backend = new ReferenceBackend(m, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, params);
    const r = await backend.step(batch, { lr: 1e-2, step: 1, maxGradNorm: 1 });
    expect(Number.isNaN(r.loss)).toBe(true);
    const after = await backend.read([...backend.trainable, ...backend.stateNames()]);
    for (const n of backend.trainable) expect(after.get(n)!.data, n).toEqual(params.get(n)!.data);
    for (const n of backend.stateNames()) expect(after.get(n)!.data.every((x) => x === 0), n).toBe(true);
  }, 120_000);
});

describe('kiln train: bad usage and bad input (the real process)', () => {
  function kiln(args: string[]): { code: number; out: string; err: string } {
    try {
      const out = execFileSync('node', ['bin/kiln.js', 'train', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      return { code: 0, out, err: '' };
    } catch (e) {
      const x = e as { status: number; stdout: string; stderr: string };
      return { code: x.status, out: x.stdout, err: x.stderr };
    }
  }
  const base = ['models/vwlmm.kiln', '--config', 'tiny'];
  const CASES: [string, string[], number, string][] = [
    ['nothing to train on', [...base], 2, 'say what to train on: --data DIR|FILE|builtin:shapes or --batch FILE'],
    ['both --data and --batch', [...base, '--data', 'builtin:shapes', '--batch', `${G}/batch.safetensors`], 2, '--data and --batch exclude each other'],
    ['--steps and --epochs', [...base, '--data', 'builtin:shapes', '--steps', '2', '--epochs', '1'], 2, '--steps and --epochs exclude each other'],
    ['--steps 0', [...base, '--data', 'builtin:shapes', '--steps', '0'], 2, '--steps 0: expected an integer >= 1'],
    ['a bad --lr', [...base, '--data', 'builtin:shapes', '--lr', 'fast'], 2, '--lr fast: expected a learning rate >= 0'],
    ['a bad --backend', [...base, '--data', 'builtin:shapes', '--backend', 'tpu'], 2, '--backend tpu: expected webgpu or cpu'],
    ['--batch without --steps', [...base, '--batch', `${G}/batch.safetensors`], 2, '--batch repeats one batch: say how many steps with --steps N'],
    ['a missing batch file', [...base, '--batch', 'no/such.safetensors', '--steps', '1', '--backend', 'cpu'], 1, 'no/such.safetensors'],
    ['--accum-mean-of-means without --grad-accum', [...base, '--data', 'builtin:shapes', '--accum-mean-of-means'], 2, '--accum-mean-of-means applies to gradient accumulation'],
    ['--grad-accum 0', [...base, '--data', 'builtin:shapes', '--grad-accum', '0'], 2, '--grad-accum 0: expected an integer >= 1'],
    ['an unknown option', [...base, '--data', 'builtin:shapes', '--grad-acc', '2'], 2, "unknown option '--grad-acc'\n(Did you mean --grad-accum?)"],
  ];
  it.each(CASES)('%s', (_name, args, code, message) => {
    const r = kiln(args);
    expect(r.code, r.err).toBe(code);
    expect(r.err).toContain(message);
    expect(r.err).not.toMatch(/\n\s+at /);
    expect(r.out).toBe('');
  }, 60_000);
});
