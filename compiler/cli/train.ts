// `kiln train`: trains a model on WebGPU (or the reference executor) with the Hugging Face
// Trainer's arithmetic: AdamW with the stage's hyperparameters, the stage's learning-rate
// schedule step for step, clip_grad_norm_, the loss logged per optimiser step before its update.
// This file turns flags into a TrainContext (model, parameters, backend, batches, schedule) and
// runs compiler/train/trainer.ts with hooks: the progress output here; checkpoints and held-out
// evaluation attach the same way (push onto `hooks` in runTrain).
import { Bar, Presets } from 'cli-progress';
import { UsageError, type CheckedModel } from '../check/index.js';
import { adamwHyper } from '../emit/entries.js';
import { initParams } from '../exec/init.js';
import { webgpuAvailable } from '../exec/webgpu-run.js';
import type { AdamWHyper } from '../passes/optimizer.js';
import { KilnError } from '../../runtime/errors.js';
import { getDevice } from '../../runtime/node/device.js';
import { warmupSteps, type Schedule } from '../../runtime/optim/schedule.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { ReferenceBackend, WebGpuBackend, type TrainBackend } from '../train/backend.js';
import { RepeatedBatch, SampleBatches, type BatchSource } from '../train/data.js';
import { Trainer, type StepRecord, type TrainHook, type TrainSummary, type TrainerOptions } from '../train/trainer.js';
import { TermCounter } from '../train/accumulate.js';
import { KernelProfiler } from '../../runtime/webgpu/profile.js';
import { profileReport } from './profile.js';
import { checkOptions, defineCommand, specArg, specOptions, type Args, type OptionValues } from './args.js';
import { checkpointHook, tokenizerFiles } from '../train/checkpoints.js';
import { configNumber, prepareData, type PreparedData } from './data-source.js';
import { checkFolderRoles, checkpointOverrides } from './loss.js';
import { loadBatch, openModelParams } from './model-inputs.js';
import { checkOutputPath } from './output-path.js';
import type { Output } from './output.js';
import { loadAndCheck } from './spec.js';
import { join } from 'node:path';
import { evaluationHook, heldoutData } from './train-eval.js';

const pipeline = "the data pipeline's option, as kiln data takes it";

const trainOptions = {
  data: { type: 'string', arg: 'FILE|DIR', help: "LLaVA conversation JSON (or a folder with one and its images), or builtin:shapes[?...]; read by the pipeline 'kiln data' shows" },
  batch: { type: 'string', arg: 'FILE', help: 'a safetensors batch (as kiln loss --batch takes), repeated every step: the standard check that the model can overfit' },
  checkpoint: { type: 'string', arg: 'DIR', help: "start from a Hugging Face / LLaVA-1.5 folder (default: the spec's initialisers, seeded by --seed)" },
  'vision-tower': { type: 'string', arg: 'DIR', help: 'Hugging Face CLIP folder for the tower (with --checkpoint)' },
  steps: { type: 'string', arg: 'N', help: 'optimiser steps (default: --epochs)' },
  epochs: { type: 'string', arg: 'E', help: "passes over the data (default: the stage's epochs, else 1)" },
  'batch-size': { type: 'string', arg: 'B', help: "rows per step (default: the stage's batch_size); the last batch of an epoch is dropped when shorter" },
  lr: { type: 'string', arg: 'X', help: "peak learning rate (default: the stage's optimizer lr)" },
  'warmup-steps': { type: 'string', arg: 'W', help: "warmup steps of the schedule (default: the stage's)" },
  'warmup-ratio': { type: 'string', arg: 'R', help: 'warmup as ceil(R * total steps), as TrainingArguments.get_warmup_steps' },
  'grad-accum': {
    type: 'string',
    arg: 'K',
    help: 'micro-batches per optimiser step (default 1): each loss term is then normalised by its item count over the K micro-batches (tokens for the LM term, image rows for the VM term), the same loss and gradients as the K micro-batches in one batch',
  },
  'accum-mean-of-means': {
    type: 'boolean',
    help: "with --grad-accum: average the micro-batches' losses instead, as the Hugging Face Trainer does for models whose forward takes no item count (LLaVA, VW-LMM: what their checkpoints were trained with)",
  },
  'max-grad-norm': { type: 'string', arg: 'G', help: 'clip the global gradient 2-norm to G (default 1.0; 0: no clipping)' },
  'weight-decay': {
    type: 'string',
    arg: 'D',
    help: "AdamW's decoupled weight decay (default: the stage's optimizer weight_decay), on the parameters the Hugging Face Trainer decays: not on biases, LayerNorm/RMSNorm weights (compiler/passes/optimizer.ts)",
  },
  seed: { type: 'string', arg: 'S', help: 'initialisation and data order (default 0)' },
  out: { type: 'string', arg: 'DIR', help: 'where the run writes (default out/train): checkpoint-<step>/ folders, loss.png (a Hugging Face folder kiln loss and PyTorch load, plus the trainer state)' },
  'save-every': { type: 'string', arg: 'N', help: 'save a checkpoint every N optimiser steps (default: only at the end)' },
  'save-total-limit': { type: 'string', arg: 'K', help: 'keep the K newest checkpoints (default 3)' },
  resume: {
    type: 'boolean',
    help: "continue from the newest checkpoint in --out, with the same flags: every logged loss equals the uninterrupted run's (bit for bit on one backend); another --steps rebuilds the schedule over the new total from the checkpoint's step, as the Hugging Face Trainer does (a note says so)",
  },
  'eval-every': {
    type: 'string',
    arg: 'N',
    help: 'evaluate the held-out data every N steps too (default 0: before the first and after the last step only): both loss terms over the whole split and answer accuracy (every answer token the greedy prediction under teacher forcing), beside the image-blind baseline for builtin:shapes',
  },
  'eval-data': { type: 'string', arg: 'FILE|DIR', help: 'held-out LLaVA JSON for --data FILE|DIR (read with the training tokenizer and template); builtin:shapes uses its split=heldout' },
  backend: { type: 'string', arg: 'NAME', help: 'webgpu (default when an adapter exists) or cpu (the reference executor)' },
  profile: {
    type: 'boolean',
    help: "time every kernel the run dispatches with WebGPU timestamp queries (as kiln profile; the first step's too) and print kiln profile's table at the end (--json: under \"profile\" in the summary line); needs WebGPU",
  },
  tokenizer: { type: 'string', arg: 'DIR', help: pipeline },
  template: { type: 'string', arg: 'NAME', help: pipeline },
  'image-folder': { type: 'string', arg: 'DIR', help: pipeline },
  'max-length': { type: 'string', arg: 'N', help: pipeline },
  limit: { type: 'string', arg: 'N', help: pipeline },
  ...specOptions,
  json: { type: 'boolean', help: 'one JSON line per optimiser step, then a summary line' },
} as const;

export const trainCommand = defineCommand({
  summary: "train the model (AdamW, the stage's schedule, gradient clipping) on --data or a repeated --batch, on WebGPU or the cpu reference",
  usage: 'SPEC (--data DIR|FILE|builtin:shapes | --batch FILE) [options]',
  description:
    "Trains the model: forward, backward, gradient clipping and AdamW per optimiser step, with the Hugging Face Trainer's arithmetic (torch AdamW with the stage's hyperparameters, the stage's schedule step for step, clip_grad_norm_), parameters and optimiser state resident on the device.",
  args: [specArg],
  options: trainOptions,
  examples: [
    {
      run: 'kiln train models/vwlmm.kiln --config tiny --checkpoint test/golden/llama_b2/llava --vision-tower test/golden/llama_b2/clip --batch test/golden/llama_b2/batch.safetensors --steps 20 --json',
      does: 'overfit one batch (the standard check), one JSON line per optimiser step',
    },
    {
      run: "kiln train models/vwlmm.kiln --config tiny --data 'builtin:shapes?stage=mix' --template mistral --batch-size 16 --steps 1050 --lr 2e-3 --eval-every 350 --out out/demo",
      does: 'train from the spec\'s initialisers on the built-in data (npm run demo)',
    },
    { run: 'kiln train models/vwlmm.kiln --config tiny --data builtin:shapes --steps 200 --save-every 50 --out out/run --resume', does: 'continue an interrupted run from its newest checkpoint' },
    { run: 'kiln train models/vwlmm.kiln --config tiny --data builtin:shapes --steps 20 --profile', does: 'and where the time went: every kernel of the run timed on the GPU clock' },
  ],
  run: runTrain,
});

export type TrainValues = OptionValues<typeof trainOptions>;

function intFlag(flag: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${flag} ${v}: expected an integer >= ${min}`);
  return n;
}

function numberFlag(flag: string, v: string | undefined, check: (n: number) => boolean, want: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || !check(n)) throw new UsageError(`--${flag} ${v}: expected ${want}`);
  return n;
}

/** Everything a run needs, built from the flags; hooks read what they need from here. */
export interface TrainContext {
  readonly model: CheckedModel;
  readonly backend: TrainBackend;
  readonly data: BatchSource;
  /** the pipeline's samples and tokenizer (null with --batch). */
  readonly prepared: PreparedData | null;
  readonly hyper: AdamWHyper;
  readonly lr: number;
  readonly schedule: Schedule;
  readonly totalSteps: number;
  readonly maxGradNorm: number;
  readonly seed: number;
  /** micro-batches per optimiser step, and how they are combined (compiler/train/accumulate.ts). */
  readonly gradAccum: number;
  readonly meanOfMeans: boolean;
  readonly counter: TermCounter | null;
  /** the --out folder (not created until something writes there). */
  readonly outDir: string;
  /** the flags as parsed, for hooks with options of their own. */
  readonly values: TrainValues;
}

/** The stage's schedule as a Schedule (without its warmup/total, which the run decides). */
function stageSchedule(model: CheckedModel): { kind: Schedule['kind']; warmupSteps?: number; warmupRatio?: number } {
  const s = model.stage?.schedule;
  if (!s) return { kind: 'constant' };
  const kinds: Record<string, Schedule['kind']> = { cosine: 'cosine', linear: 'linear', constant: 'constant' };
  const kind = kinds[s.name];
  if (!kind) throw new KilnError(`stage ${model.stage!.name}: schedule ${s.name} is not supported (cosine, linear, constant)`);
  const num = (k: string): number | undefined => (typeof s.args[k] === 'number' ? (s.args[k] as number) : undefined);
  const ws = num('warmup_steps');
  const wr = num('warmup_ratio');
  return { kind, ...(ws !== undefined ? { warmupSteps: ws } : {}), ...(wr !== undefined ? { warmupRatio: wr } : {}) };
}

const stageSetting = (model: CheckedModel, key: string): number | undefined => {
  const v = model.stage?.settings[key];
  return typeof v === 'number' ? v : undefined;
};

/** Flags -> TrainContext: checks usage first (exit 2), then reads the spec, data and weights. */
export async function prepareTraining(values: TrainValues, spec: string, out: Output): Promise<TrainContext> {
  if (!values.data === !values.batch) throw new UsageError(values.data ? '--data and --batch exclude each other: give one' : 'say what to train on: --data DIR|FILE|builtin:shapes or --batch FILE');
  if (values.steps !== undefined && values.epochs !== undefined) throw new UsageError('--steps and --epochs exclude each other: give one');
  if (values['warmup-steps'] !== undefined && values['warmup-ratio'] !== undefined) throw new UsageError('--warmup-steps and --warmup-ratio exclude each other: give one');
  if (values.batch && values['batch-size'] !== undefined) throw new UsageError('--batch-size does not apply to --batch FILE (the file fixes the batch)');
  if (values.batch && values.steps === undefined && values.epochs === undefined) throw new UsageError('--batch repeats one batch: say how many steps with --steps N');
  if (values['vision-tower'] && !values.checkpoint) throw new UsageError('--vision-tower loads the tower into a checkpoint: give --checkpoint DIR too');
  if (values.backend !== undefined && values.backend !== 'cpu' && values.backend !== 'webgpu') throw new UsageError(`--backend ${values.backend}: expected webgpu or cpu`);
  if (values.profile && values.backend === 'cpu') throw new UsageError('--profile times WebGPU kernels: it does not apply to --backend cpu');
  for (const f of ['tokenizer', 'template', 'image-folder', 'max-length', 'limit'] as const)
    if (values.batch && values[f] !== undefined) throw new UsageError(`--${f} is a data pipeline option; it does not apply to --batch FILE`);
  const steps = intFlag('steps', values.steps, 1);
  const epochs = intFlag('epochs', values.epochs, 1);
  const batchSizeFlag = intFlag('batch-size', values['batch-size'], 1);
  const lrFlag = numberFlag('lr', values.lr, (n) => n >= 0, 'a learning rate >= 0');
  const warmupStepsFlag = intFlag('warmup-steps', values['warmup-steps'], 0);
  const warmupRatioFlag = numberFlag('warmup-ratio', values['warmup-ratio'], (n) => n >= 0 && n <= 1, 'a ratio in [0, 1]');
  const maxGradNorm = numberFlag('max-grad-norm', values['max-grad-norm'], (n) => n >= 0, 'a norm >= 0 (0: no clipping)') ?? 1.0;
  const weightDecay = numberFlag('weight-decay', values['weight-decay'], (n) => n >= 0, 'a weight decay >= 0');
  const seed = intFlag('seed', values.seed, 0) ?? 0;
  const gradAccum = intFlag('grad-accum', values['grad-accum'], 1) ?? 1;
  if (values['accum-mean-of-means'] && gradAccum === 1) throw new UsageError('--accum-mean-of-means applies to gradient accumulation: give --grad-accum K (K > 1)');
  const maxLength = intFlag('max-length', values['max-length'], 1) ?? 2048;
  const limit = intFlag('limit', values.limit, 1);
  const outDir = values.out ?? join('out', 'train');
  if (values.out !== undefined) checkOutputPath('--out', join(outDir, 'config.json'));
  // WebGPU asked for explicitly (or by --profile): no adapter is exit 3 before anything is read.
  if (values.backend === 'webgpu' || values.profile) await getDevice();

  const overrides = [...checkpointOverrides(values.checkpoint), ...checkpointOverrides(values['vision-tower'], '--vision-tower')];
  if (values.checkpoint) checkFolderRoles(values.checkpoint, values['vision-tower']);
  const model = loadAndCheck(spec, checkOptions(values, overrides), out);
  if (model.graph.totalLoss === null) throw new UsageError(`model ${model.modelName} declares no loss: there is nothing to train`);
  const hyper = { ...adamwHyper(model), ...(weightDecay === undefined ? {} : { weightDecay }) };
  const stageLr = model.stage?.optimizer?.args['lr'];
  const lr = lrFlag ?? (typeof stageLr === 'number' ? stageLr : undefined);
  if (lr === undefined) throw new UsageError(`stage ${model.stage?.name ?? '(none)'} gives no learning rate: pass --lr X`);

  // The batches: the data first, so bad data fails before weights are read.
  let data: BatchSource;
  let prepared: PreparedData | null = null;
  const imageTokens = (() => {
    try {
      return configNumber(model, 'vision.patches');
    } catch {
      return 1;
    }
  })();
  if (values.batch) {
    data = new RepeatedBatch(loadBatch(model, values.batch), imageTokens);
  } else {
    prepared = await prepareData(model, {
      data: values.data!,
      imageFolder: values['image-folder'],
      checkpoint: values.checkpoint,
      tokenizer: values.tokenizer,
      template: values.template,
      ...(limit !== undefined ? { limit } : {}),
      maxLength,
      onBadImage: 'fail',
      imagePlacement: 'front',
    });
    const batchSize = batchSizeFlag ?? stageSetting(model, 'batch_size') ?? 8;
    data = new SampleBatches(prepared.samples, { batchSize, seed, padId: prepared.tokenizer.padId, imageSize: prepared.imageSize, imageTokens: prepared.imageTokens });
  }
  const stepsPerEpoch = data.repeats ? 1 : Math.floor(data.stepsPerEpoch / gradAccum);
  if (stepsPerEpoch === 0) throw new KilnError(`an epoch has ${data.stepsPerEpoch} batches of ${data.batchSize}, fewer than --grad-accum ${gradAccum}`);
  const totalSteps = steps ?? (epochs ?? stageSetting(model, 'epochs') ?? 1) * stepsPerEpoch;
  const st = stageSchedule(model);
  const warmup = warmupSteps(totalSteps, {
    steps: warmupStepsFlag ?? (warmupRatioFlag === undefined ? st.warmupSteps : undefined),
    ratio: warmupRatioFlag ?? st.warmupRatio,
  });
  const schedule: Schedule = { kind: st.kind, warmup, total: totalSteps };

  // From a checkpoint lazily: the WebGPU backend uploads each tensor as it reads it (the host
  // never holds the model); the cpu reference copies them into its own map.
  const params: ReadonlyMap<string, HostTensor> = values.checkpoint
    ? openModelParams(model, { checkpoint: values.checkpoint, visionTower: values['vision-tower'] }, (w) => out.stderr(`warning: ${w}`))
    : initParams(model.graph.params, seed);
  let backendName = values.backend ?? (values.profile ? 'webgpu' : undefined);
  if (backendName === undefined) {
    backendName = (await webgpuAvailable()) ? 'webgpu' : 'cpu';
    if (backendName === 'cpu') out.stderr('note: no WebGPU adapter here; training on the cpu reference executor (slow)');
  }
  const backend: TrainBackend = backendName === 'webgpu' ? new WebGpuBackend(await getDevice(), model, hyper, params) : new ReferenceBackend(model, hyper, params);
  const meanOfMeans = values['accum-mean-of-means'] === true;
  // Counting items needs the loss ops' counts: checked now, before any step runs.
  const counter = gradAccum > 1 && !meanOfMeans ? new TermCounter(model) : null;
  return { model, backend, data, prepared, hyper, lr, schedule, totalSteps, maxGradNorm, seed, outDir, values, gradAccum, meanOfMeans, counter };
}

/** --out's checkpoints: --save-every, --save-total-limit, --resume (compiler/train/checkpoints.ts). */
function trainCheckpoints(ctx: TrainContext, out: Output): TrainHook {
  const v = ctx.values;
  return checkpointHook({
    model: ctx.model,
    backend: ctx.backend,
    outDir: ctx.outDir,
    saveEvery: intFlag('save-every', v['save-every'], 1) ?? 0,
    keep: intFlag('save-total-limit', v['save-total-limit'], 1) ?? 3,
    resume: v.resume === true,
    run: { lr: ctx.lr, schedule: ctx.schedule, totalSteps: ctx.totalSteps, maxGradNorm: ctx.maxGradNorm, seed: ctx.seed, hyper: ctx.hyper, batchSize: ctx.data.batchSize, gradAccum: ctx.gradAccum, meanOfMeans: ctx.meanOfMeans, stepsPerEpoch: ctx.data.repeats ? 1 : Math.floor(ctx.data.stepsPerEpoch / ctx.gradAccum) },
    baseConfigDir: v.checkpoint,
    files: tokenizerFiles(ctx.prepared?.built ?? null, v.tokenizer ?? v.checkpoint),
    note: (line) => out.stderr(line),
  });
}

/** The Trainer's options from a context. */
export function trainerOptions(ctx: TrainContext): TrainerOptions {
  return {
    totalSteps: ctx.totalSteps,
    lr: ctx.lr,
    schedule: ctx.schedule,
    maxGradNorm: ctx.maxGradNorm,
    gradAccum: ctx.gradAccum,
    meanOfMeans: ctx.meanOfMeans,
    ...(ctx.counter ? { countItems: (b: ReadonlyMap<string, HostTensor>) => ctx.counter!.count(b) } : {}),
  };
}

const fmt = (x: number): string => (Math.abs(x) >= 1e-3 || x === 0 ? x.toFixed(4) : x.toExponential(3));

/** The `--json` line of a step. */
export function stepJson(r: StepRecord): string {
  return JSON.stringify({ step: r.step, loss: r.loss, terms: r.terms, lr: r.lr, grad_norm: r.gradNorm, tokens_per_s: Math.round(r.tokensPerSecond * 10) / 10 });
}

/**
 * Progress output: `--json` lines; else a progress bar (cli-progress) when stdout is a terminal,
 * or plain lines every few steps when it is not (a log file, a pipe, a test).
 */
function progressHook(ctx: TrainContext, out: Output, json: boolean): TrainHook {
  const total = ctx.totalSteps;
  const termNames = ctx.model.graph.losses.map((l) => l.name);
  if (json) return { afterStep: (r) => out.stdout(stepJson(r)) };
  const tty = process.stdout.isTTY === true && !out.capture;
  const line = (r: StepRecord) =>
    `step ${r.step}/${total}  loss ${fmt(r.loss)}  ${termNames.map((n) => `${n} ${fmt(r.terms[n]!)}`).join('  ')}  lr ${r.lr.toExponential(2)}  grad_norm ${fmt(r.gradNorm)}  ${Math.round(r.tokensPerSecond)} tok/s`;
  if (!tty) {
    const every = Math.max(1, Math.ceil(total / 25));
    return { afterStep: (r) => void ((r.step % every === 0 || r.step === 1 || r.step === total) && out.stdout(line(r))) };
  }
  const bar = new Bar(
    {
      format: `step {value}/{total} |{bar}| ${termNames.map((n) => `${n} {${n}}`).join(' ')} | lr {lr} | {tps} tok/s | ETA {eta_formatted}`,
      stream: process.stdout,
      hideCursor: true,
      etaBuffer: 20,
    },
    Presets.shades_classic,
  );
  let started = false;
  return {
    afterStep: (r) => {
      const payload = { ...Object.fromEntries(termNames.map((n) => [n, fmt(r.terms[n]!)])), lr: r.lr.toExponential(2), tps: Math.round(r.tokensPerSecond) };
      if (!started) {
        bar.start(total, r.step, payload);
        started = true;
      } else bar.update(r.step, payload);
    },
    atEnd: () => {
      if (started) bar.stop();
    },
  };
}

async function runTrain(values: TrainValues, args: Args, out: Output): Promise<number> {
  const evalEvery = intFlag('eval-every', values['eval-every'], 0) ?? 0;
  const ctx = await prepareTraining(values, args[0]!, out);
  try {
    const held = await heldoutData(ctx, out);
    const s = ctx.schedule;
    out.stderr(
      `training ${ctx.model.modelName} (config ${ctx.model.configName}${ctx.model.stage ? `, stage ${ctx.model.stage.name}` : ''}) on ${ctx.backend.name} (${ctx.backend.adapter}): ` +
        `${ctx.totalSteps} steps of ${ctx.gradAccum > 1 ? `${ctx.gradAccum} x ` : ''}${ctx.data.batchSize} rows${ctx.gradAccum > 1 ? (ctx.meanOfMeans ? ' (mean of the micro-batches\' means)' : ' (terms normalised by their item counts)') : ''}, lr ${ctx.lr} ${s.kind} with ${s.warmup} warmup steps, ` +
        `max_grad_norm ${ctx.maxGradNorm || 'off'}, ${ctx.backend.trainable.length} trainable tensors`,
    );
    // Checkpoints before evaluation: a resume sets the step in atStart, which the first evaluation reads.
    const hooks: TrainHook[] = [progressHook(ctx, out, values.json === true), trainCheckpoints(ctx, out), evaluationHook(ctx, held, out, { every: evalEvery, json: values.json === true })];
    // --profile: every entry the backend runs from here on (steps, held-out evaluation) is timed.
    const profiler = values.profile && ctx.backend instanceof WebGpuBackend ? new KernelProfiler() : undefined;
    if (profiler) (ctx.backend as WebGpuBackend).profiler = profiler;
    const trainer = new Trainer(ctx.backend, ctx.data, trainerOptions(ctx), hooks);
    const summary: TrainSummary = await trainer.run();
    const compiles = ctx.backend.compileSeconds ? [...ctx.backend.compileSeconds].map(([k, v]) => [k, Math.round(v * 10) / 10] as const) : [];
    if (compiles.length > 0) summary['compile_s'] = Object.fromEntries(compiles);
    const profile = profiler ? profileReport(profiler, ctx.backend.adapter) : undefined;
    if (values.json) out.stdout(JSON.stringify({ summary, ...(profile ? { profile: profile.json } : {}) }));
    else {
      const last = trainer.last;
      const terms = last ? ctx.model.graph.losses.map((l) => `${l.name} ${fmt(last.terms[l.name]!)}`).join(', ') : '';
      out.stdout(`trained ${summary.steps} steps in ${summary.wall_s.toFixed(1)} s on ${ctx.backend.name}${last ? `: last loss ${fmt(last.loss)} (${terms})` : ''}`);
      // Each batch shape compiles once (lavapipe JIT-compiles every new shader on first use).
      if (compiles.length > 0) out.stdout(`compiled ${compiles.length} programs: ${compiles.map(([k, v]) => `${k} ${v} s`).join(', ')}`);
      if (profile) out.stdout(profile.text);
    }
    return 0;
  } finally {
    ctx.backend.destroy();
  }
}
