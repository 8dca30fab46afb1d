// Checkpoints of `kiln train`: a trainer hook (trainer.ts) that saves `checkpoint-<step>/` under
// --out every --save-every steps and at the end, and with --resume restores the newest one before
// the first step, so that the resumed run logs every loss an uninterrupted run logs, bit for bit
// on the same backend.
//
// What a resume restores, and why that is the whole state: the parameters (all of them: the
// frozen tower too, for the folder to be a model on its own) and AdamW's moments, read back from
// the backend exactly (f32 both ways); the optimiser step count, which is the trainer's step
// (AdamW's bias corrections use it, StepScalars.step); the schedule position, which is the step
// as well (learningRate(lr, schedule, t) is a pure function of t); and the data position, also
// the step (BatchSource.batchAt(t) is a pure function of t and the seed). Nothing else carries
// from step to step: no RNG draws during training (no dropout), and gradient accumulators are
// zero at every optimiser-step boundary. So the checks before restoring are that the run is the
// same run: the model's dims and parameters, the trained tensors, the schedule, learning rate,
// clipping, seed and batch size; a difference is an error naming the field (resuming under
// other settings would silently be another run).
//
// One exception, as the Hugging Face Trainer has it: the number of steps (--steps, or --epochs
// through the steps they make). Trainer.train(resume_from_checkpoint=...) (transformers 5.18)
// builds its scheduler from the new max_steps (create_scheduler(num_training_steps=max_steps),
// warmup get_warmup_steps(max_steps)) and then loads scheduler.pt, whose LambdaLR state carries
// the step count (last_epoch) but not the lambda's arguments (a functools.partial has no
// __dict__ to save): the schedule is the new run's, continued from the checkpoint's step. Kiln
// does the same: learningRate(lr, schedule over the new total, t), warmup recomputed from a
// --warmup-ratio, and says so. The logged losses then equal the old run's up to the checkpoint
// and follow the new schedule after it, so they equal no uninterrupted run (neither of the old
// length nor of the new, whose schedule differs from step 1); with the same --steps they equal
// the uninterrupted run's bit for bit as before. A new total at or below the checkpoint's step
// leaves nothing to train: an error naming both.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { CheckedModel } from '../check/index.js';
import type { AdamWHyper } from '../passes/optimizer.js';
import { checkTrainingCheckpoint, checkpointConfig, constShape, modelTensorSources, momentParam, stateTensorSources, tokenizerFolderFiles } from '../checkpoint/save.js';
import { KilnError } from '../../runtime/errors.js';
import { latestCheckpoint, openTrainingCheckpoint, saveCheckpoint, type LogEntry, type SavedCheckpoint, type TrainerState } from '../../runtime/node/checkpoint.js';
import { learningRate, type Schedule } from '../../runtime/optim/schedule.js';
import type { TrainBackend } from './backend.js';
import type { WordLevelFiles } from '../../data/wordlevel.js';
import type { StepRecord, Trainer, TrainHook } from './trainer.js';

export interface CheckpointHookOptions {
  readonly model: CheckedModel;
  readonly backend: TrainBackend;
  /** the --out folder: checkpoints go to <outDir>/checkpoint-<step>. */
  readonly outDir: string;
  /** save every N optimiser steps (0: only at the end). */
  readonly saveEvery: number;
  /** checkpoints kept (the newest by step). */
  readonly keep: number;
  /** restore the newest checkpoint under outDir before the first step. */
  readonly resume: boolean;
  /** the run's settings, recorded in trainer_state.json and compared on resume. */
  readonly run: {
    readonly lr: number;
    readonly schedule: Schedule;
    readonly totalSteps: number;
    readonly maxGradNorm: number;
    readonly seed: number;
    readonly hyper: AdamWHyper;
    /** rows per micro-batch, micro-batches per optimiser step, and how they combine. */
    readonly batchSize: number;
    readonly gradAccum: number;
    readonly meanOfMeans: boolean;
    /** optimiser steps per epoch. */
    readonly stepsPerEpoch: number;
  };
  /** the folder the run started from (--checkpoint): its config.json's other fields are kept. */
  readonly baseConfigDir?: string | undefined;
  /** tokenizer files to carry (tokenizer.json, tokenizer_config.json). */
  readonly files?: ReadonlyMap<string, string | Uint8Array>;
  /** a line for the user (stderr). */
  readonly note?: (line: string) => void;
}

/** The hook, and what it saved (for the summary and tests). */
export interface CheckpointHook extends TrainHook {
  readonly saved: readonly SavedCheckpoint[];
  /** the step the run resumed from (undefined when it did not resume). */
  readonly resumedFrom: number | undefined;
}

const logEntry = (r: StepRecord): LogEntry => ({ step: r.step, epoch: r.epoch, loss: r.loss, terms: { ...r.terms }, learning_rate: r.lr, grad_norm: r.gradNorm });

/** A checkpoint hook for `kiln train` (see the file comment). */
export function checkpointHook(o: CheckpointHookOptions): CheckpointHook {
  const { model, backend, run } = o;
  const history: LogEntry[] = [];
  const saved: SavedCheckpoint[] = [];
  let resumedFrom: number | undefined;
  let lastSaved = -1;
  const paramShape = new Map(model.graph.params.map((p) => [p.name, constShape(p)]));
  // A model config.json cannot describe (pif on a Mistral decoder) fails before the first step, not at the first save.
  checkpointConfig(model, o.baseConfigDir);
  const runState = {
    seed: run.seed,
    schedule: { kind: run.schedule.kind, base_lr: run.lr, warmup: run.schedule.warmup, total: run.schedule.total },
    optimizer: { name: 'adamw', beta1: run.hyper.beta1, beta2: run.hyper.beta2, eps: run.hyper.eps, weight_decay: run.hyper.weightDecay },
    max_grad_norm: run.maxGradNorm > 0 ? run.maxGradNorm : null,
    max_steps: run.totalSteps,
  };
  const runExtra = {
    config: model.configName,
    stage: model.stage?.name ?? null,
    batch_size: run.batchSize,
    grad_accum: run.gradAccum,
    accum_mean_of_means: run.meanOfMeans,
    steps_per_epoch: run.stepsPerEpoch,
  };

  const read = async (name: string) => (await backend.read([name])).get(name)!;

  async function save(trainer: Trainer): Promise<void> {
    const step = trainer.step;
    const state: TrainerState = {
      ...runState,
      global_step: step,
      epoch: step / run.stepsPerEpoch,
      data: { epoch: Math.floor(step / run.stepsPerEpoch), position: step % run.stepsPerEpoch },
      learning_rate: learningRate(run.lr, run.schedule, step),
      log_history: history,
      extra: { ...runExtra, backend: backend.name },
    };
    const stateNames = backend.stateNames();
    const s = await saveCheckpoint(
      o.outDir,
      {
        config: checkpointConfig(model, o.baseConfigDir),
        model: modelTensorSources(model.graph.params, read),
        optimizer: stateTensorSources(stateNames, (n) => paramShape.get(momentParam(n) ?? '') ?? [], read),
        state,
        ...(o.files ? { files: o.files } : {}),
      },
      { keep: o.keep },
    );
    saved.push(s);
    lastSaved = step;
  }

  /** The run must be the one the checkpoint belongs to; else resuming would silently be another run. */
  function checkSameRun(state: TrainerState, file: string): void {
    const theirs = state as unknown as Record<string, unknown>;
    const extra = (state.extra ?? {}) as Record<string, unknown>;
    // Another step count rebuilds the schedule over it (see the file comment): its total, and
    // the warmup a --warmup-ratio derives from it, may differ then; the kind and rate may not.
    const sameLength = theirs['max_steps'] === runState.max_steps;
    const scheduleOf = (x: TrainerState['schedule']) => (sameLength ? x : { kind: x.kind, base_lr: x.base_lr });
    const compare: [string, unknown, unknown][] = [
      ['seed', state.seed, runState.seed],
      ['schedule', scheduleOf(state.schedule), scheduleOf(runState.schedule)],
      ['optimizer', state.optimizer, runState.optimizer],
      ['max_grad_norm', state.max_grad_norm, runState.max_grad_norm],
      ...Object.entries(runExtra).map(([k, v]): [string, unknown, unknown] => [`extra.${k}`, extra[k], v]),
    ];
    for (const [field, was, now] of compare) {
      if (JSON.stringify(was) !== JSON.stringify(now)) {
        throw new KilnError(
          `field "${field}" is ${JSON.stringify(was)} but this run has ${JSON.stringify(now)}: --resume continues the same run (same flags); start a new --out to train with other settings, or --checkpoint ${join(file, '..')} to start from these weights`,
          { file },
        );
      }
    }
  }

  async function restore(trainer: Trainer): Promise<void> {
    const dir = latestCheckpoint(o.outDir);
    if (dir === undefined) throw new KilnError(`--resume: no checkpoint to resume from (no complete checkpoint-<step> folder)`, { file: o.outDir });
    const ckpt = openTrainingCheckpoint(dir);
    const statePath = join(dir, 'trainer_state.json');
    checkSameRun(ckpt.state, statePath);
    const planned = ckpt.state.max_steps;
    if (planned !== run.totalSteps && ckpt.state.global_step >= run.totalSteps) {
      throw new KilnError(
        `--resume: the checkpoint is at step ${ckpt.state.global_step} (its run planned max_steps ${planned}), and this run's total is ${run.totalSteps} steps: nothing is left to train; give --steps above ${ckpt.state.global_step}`,
        { file: statePath },
      );
    }
    const stateNames = backend.stateNames();
    checkTrainingCheckpoint(ckpt, model, stateNames);
    // One tensor at a time: the host holds one tensor's values, never the model's.
    for (const p of model.graph.params) await backend.write(new Map([[p.name, ckpt.model.load(p.name)]]));
    for (const n of stateNames) await backend.write(new Map([[n, ckpt.optimizer.load(n)]]));
    trainer.step = ckpt.state.global_step;
    history.push(...ckpt.state.log_history);
    resumedFrom = ckpt.state.global_step;
    lastSaved = ckpt.state.global_step;
    o.note?.(`resuming from ${dir} (step ${ckpt.state.global_step} of ${run.totalSteps})`);
    if (planned !== run.totalSteps) {
      const t = ckpt.state.global_step;
      const old = learningRate(run.lr, { kind: ckpt.state.schedule.kind as Schedule['kind'], warmup: ckpt.state.schedule.warmup, total: ckpt.state.schedule.total }, t);
      o.note?.(
        `note: the checkpoint's run planned max_steps ${planned}, this one ${run.totalSteps}: the schedule is rebuilt over ${run.totalSteps} steps (warmup ${run.schedule.warmup}) and continued from step ${t}, as the Hugging Face Trainer does on resume; the next learning rate is ${learningRate(run.lr, run.schedule, t)} (${old} under the old schedule), so the losses from here equal no uninterrupted run`,
      );
    }
  }

  return {
    saved,
    get resumedFrom() {
      return resumedFrom;
    },
    async atStart(trainer) {
      if (o.resume) await restore(trainer);
    },
    async afterStep(record, trainer) {
      history.push(logEntry(record));
      if (o.saveEvery > 0 && record.step % o.saveEvery === 0) await save(trainer);
    },
    async atEnd(summary, trainer) {
      if (lastSaved !== trainer.step) await save(trainer);
      const dir = join(o.outDir, `checkpoint-${trainer.step}`);
      summary.checkpoint = dir;
    },
  };
}

/**
 * The tokenizer a checkpoint carries: the word-level vocabulary the run built from its data, else
 * the files of the folder its tokenizer came from (--tokenizer, else --checkpoint), when that
 * folder has a tokenizer.json; none otherwise (a --batch run from initialisation).
 */
export function tokenizerFiles(built: WordLevelFiles | null, folder: string | undefined): Map<string, string | Uint8Array> {
  if (built) {
    // As data/node.ts writeTokenizerDir writes them (kiln data --save-tokenizer).
    return new Map([
      ['tokenizer.json', `${JSON.stringify(built.tokenizerJson, null, 1)}\n`],
      ['tokenizer_config.json', `${JSON.stringify(built.tokenizerConfig, null, 1)}\n`],
    ]);
  }
  if (folder !== undefined && existsSync(join(folder, 'tokenizer.json'))) return tokenizerFolderFiles(folder);
  return new Map();
}
