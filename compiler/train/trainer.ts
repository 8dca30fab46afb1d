// The training loop of `kiln train`, as the Hugging Face Trainer runs LLaVA: for each optimiser
// step t = 0, 1, ... the learning rate of step t from the schedule (so the first step uses
// lr_lambda(0), which is 0 under warmup, as LambdaLR gives it), one compiled step (forward,
// backward, clip_grad_norm_, AdamW; backend.ts), and the loss logged before that step's update.
//
// Other parts of training attach through hooks, so the loop stays this small:
//   atStart(trainer)            before the first step (resume: write state, set trainer.step)
//   afterStep(record, trainer)  after every optimiser step, with the logged record (progress
//                               output, evaluation every N steps, checkpoints every N steps)
//   atEnd(summary, trainer)     after the last step; may fill summary fields (checkpoint, heldout)
// Hooks run in the order given, awaited one after another.
import { KilnError } from '../../runtime/errors.js';
import { NonFiniteError } from '../../runtime/nonfinite.js';
import { learningRate, type Schedule } from '../../runtime/optim/schedule.js';
import { validateBatch } from '../../runtime/validate.js';
import type { TrainBackend } from './backend.js';
import type { BatchSource, TrainBatch } from './data.js';
import { accumulationScales } from './accumulate.js';
import type { HostTensor } from '../../runtime/tensor.js';

/** What one optimiser step logged (the `--json` line, less the formatting). */
export interface StepRecord {
  /** 1-based optimiser step (the Trainer's global_step after the step). */
  readonly step: number;
  /** 0-based epoch the step's batch belongs to. */
  readonly epoch: number;
  /** the loss and each term on the step's batch, before the step's update. */
  readonly loss: number;
  readonly terms: Readonly<Record<string, number>>;
  /** the learning rate the step used. */
  readonly lr: number;
  /** the global 2-norm of the gradients before clipping (what the Trainer logs as grad_norm). */
  readonly gradNorm: number;
  /** sequence positions processed per second of this step's wall time (see TrainBatch.positions). */
  readonly tokensPerSecond: number;
  /** wall time of the step, seconds (the first step of each batch shape includes its compile). */
  readonly seconds: number;
}

/** Held-out results the evaluation hook reports (absent when there is no held-out data). */
export interface HeldoutSummary {
  readonly accuracy: number;
  /** the image-blind baseline (builtin:shapes questions); null for other data. */
  readonly baseline_accuracy: number | null;
  readonly terms: Readonly<Record<string, number>>;
  readonly [key: string]: unknown;
}

/** The final `--json` line's `summary` object; hooks fill checkpoint and heldout. */
export interface TrainSummary {
  steps: number;
  wall_s: number;
  checkpoint: string | null;
  heldout?: HeldoutSummary;
  [key: string]: unknown;
}

export interface TrainHook {
  atStart?(trainer: Trainer): void | Promise<void>;
  afterStep?(record: StepRecord, trainer: Trainer): void | Promise<void>;
  atEnd?(summary: TrainSummary, trainer: Trainer): void | Promise<void>;
}

export interface TrainerOptions {
  /** optimiser steps of the whole run (the schedule's num_training_steps). */
  readonly totalSteps: number;
  /** the peak learning rate (AdamW's lr before the schedule). */
  readonly lr: number;
  readonly schedule: Schedule;
  /** clip_grad_norm_'s max_norm; 0 disables clipping. */
  readonly maxGradNorm: number;
  /** micro-batches per optimiser step (gradient accumulation; default 1). */
  readonly gradAccum?: number;
  /** accumulation: average the micro-batches' means (the Trainer's behaviour for LLaVA) instead of weighting by item counts. */
  readonly meanOfMeans?: boolean;
  /** accumulation by item counts: the items each loss term averages over in a batch (accumulate.ts's TermCounter). */
  readonly countItems?: (batch: ReadonlyMap<string, HostTensor>) => Record<string, number>;
}

const isFiniteNumber = (x: number): boolean => Number.isFinite(x);

export class Trainer {
  /** optimiser steps done (a resume hook sets it in atStart). */
  step = 0;
  /** the record of the last step, or null before the first. */
  last: StepRecord | null = null;

  constructor(
    readonly backend: TrainBackend,
    readonly data: BatchSource,
    readonly opts: TrainerOptions,
    readonly hooks: readonly TrainHook[] = [],
  ) {
    if (!(opts.totalSteps >= 1) || !Number.isInteger(opts.totalSteps)) throw new KilnError(`the run has ${opts.totalSteps} optimiser steps; it needs at least one`);
    const K = opts.gradAccum ?? 1;
    if (!(K >= 1) || !Number.isInteger(K)) throw new KilnError(`gradient accumulation over ${K} micro-batches: it needs a whole number >= 1`);
    if (K > 1 && !data.repeats && data.stepsPerEpoch < K) throw new KilnError(`an epoch has ${data.stepsPerEpoch} batches, fewer than the ${K} micro-batches of one optimiser step (--grad-accum)`);
    if (K > 1 && !opts.meanOfMeans && !opts.countItems) throw new KilnError('accumulation by item counts needs countItems');
  }

  /** Optimiser steps in one epoch: the epoch's batches over the micro-batches per step, rounded down. */
  get stepsPerEpoch(): number {
    return this.data.repeats ? 1 : Math.floor(this.data.stepsPerEpoch / (this.opts.gradAccum ?? 1));
  }

  /** The micro-batches of 0-based optimiser step t (a batch left over at an epoch's end is not used). */
  microBatches(t: number): TrainBatch[] {
    const K = this.opts.gradAccum ?? 1;
    if (this.data.repeats) return Array.from({ length: K }, () => this.data.batchAt(t));
    const M = this.data.stepsPerEpoch;
    const perEpoch = Math.floor(M / K);
    const first = Math.floor(t / perEpoch) * M + (t % perEpoch) * K;
    return Array.from({ length: K }, (_, j) => this.data.batchAt(first + j));
  }

  /** The learning rate of 0-based optimiser step t. */
  learningRateAt(t: number): number {
    return learningRate(this.opts.lr, this.opts.schedule, t);
  }

  /**
   * Runs from `step` to totalSteps. Throws KilnError for a bad batch (naming the step), and a
   * NonFiniteError naming the step and the op where a non-finite loss or gradient began; that
   * step is not applied.
   */
  async run(): Promise<TrainSummary> {
    const started = performance.now();
    for (const h of this.hooks) await h.atStart?.(this);
    const first = this.step;
    while (this.step < this.opts.totalSteps) {
      const t = this.step;
      const micro = this.microBatches(t);
      for (const [k, batch] of micro.entries()) {
        try {
          validateBatch(this.backend.batchContract, batch.inputs);
        } catch (e) {
          if (e instanceof KilnError) e.message = `step ${t + 1}${micro.length > 1 ? `, micro-batch ${k + 1}` : ''}: ${e.message}`;
          throw e;
        }
      }
      const lr = this.learningRateAt(t);
      const scalars = { lr, step: t + 1, maxGradNorm: this.opts.maxGradNorm };
      const t0 = performance.now();
      const r = micro.length === 1 ? await this.backend.step(micro[0]!.inputs, scalars) : await this.accumulated(t, micro, scalars);
      const seconds = (performance.now() - t0) / 1000;
      if (![r.loss, r.gradNorm, ...Object.values(r.terms)].every(isFiniteNumber)) await this.stopNonFinite(t, micro, r);
      this.step = t + 1;
      const positions = micro.reduce((a, b) => a + b.positions, 0);
      const record: StepRecord = { step: t + 1, epoch: micro[0]!.epoch, loss: r.loss, terms: r.terms, lr, gradNorm: r.gradNorm, tokensPerSecond: positions / seconds, seconds };
      this.last = record;
      for (const h of this.hooks) await h.afterStep?.(record, this);
    }
    const summary: TrainSummary = { steps: this.step - first, wall_s: (performance.now() - started) / 1000, checkpoint: null };
    for (const h of this.hooks) await h.atEnd?.(summary, this);
    summary.wall_s = (performance.now() - started) / 1000;
    return summary;
  }

  /**
   * One optimiser step over K micro-batches: each one's gradients accumulated with its scales
   * (accumulate.ts), then clipping and AdamW once. The logged terms are what the scales make of
   * the micro-batches' terms: the terms of the whole step's examples as one batch (by item
   * counts), or the mean of the micro-batches' terms (mean of means).
   */
  private async accumulated(t: number, micro: readonly TrainBatch[], scalars: { lr: number; step: number; maxGradNorm: number }): Promise<{ loss: number; terms: Record<string, number>; gradNorm: number }> {
    const losses = this.backend.graph.losses;
    const names = losses.map((l) => l.name);
    const meanOfMeans = this.opts.meanOfMeans === true;
    const counts = micro.map((b) => (meanOfMeans ? {} : this.opts.countItems!(b.inputs)));
    const scales = accumulationScales(names, counts, meanOfMeans);
    const terms: Record<string, number> = Object.fromEntries(names.map((n) => [n, 0]));
    for (const [k, b] of micro.entries()) {
      const r = await this.backend.accumulate(b.inputs, scales[k]!);
      if (!Object.values(r.terms).every(isFiniteNumber)) await this.stopNonFinite(t, [b], { ...r, gradNorm: NaN }, k);
      for (const n of names) terms[n] = terms[n]! + scales[k]![n]! * r.terms[n]!;
    }
    const loss = losses.reduce((a, l) => a + l.weight * terms[l.name]!, 0);
    const { gradNorm } = await this.backend.apply(scalars);
    return { loss, terms, gradNorm };
  }

  /** A non-finite step: re-run it on the same backend to name the op, and stop. */
  private async stopNonFinite(t: number, micro: readonly TrainBatch[], r: { loss: number; terms: Record<string, number>; gradNorm: number }, microIndex?: number): Promise<never> {
    const values = `loss ${r.loss}, ${Object.entries(r.terms)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}, grad_norm ${r.gradNorm}`;
    const part = microIndex !== undefined ? `, micro-batch ${microIndex + 1}` : '';
    const where = `training stopped at step ${t + 1}${part} (epoch ${micro[0]!.epoch}; the step was not applied): `;
    try {
      for (const b of micro) await this.backend.diagnose(b.inputs);
    } catch (e) {
      if (e instanceof NonFiniteError || e instanceof KilnError) {
        e.message = `${where}${e.message}`;
        throw e;
      }
      throw e;
    }
    throw new KilnError(`${where}${values} on ${this.backend.name}, but a diagnostic re-run of the step's forward and backward was finite`);
  }
}
