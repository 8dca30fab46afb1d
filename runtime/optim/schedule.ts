// Learning-rate schedules as the Hugging Face trainer computes them, and the per-step scalars
// the AdamW graph (compiler/passes/optimizer.ts) takes as inputs.
import type { HostTensor } from '../tensor.js';

export interface Schedule {
  /**
   * transformers' get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup, and
   * get_constant_schedule_with_warmup (get_constant_schedule when warmup is 0).
   */
  kind: 'constant' | 'cosine' | 'linear';
  /** warmup steps (warmupSteps() turns a warmup_ratio into steps as the Trainer does). */
  warmup: number;
  /** optimiser steps of the whole run (the Trainer's num_training_steps). */
  total: number;
}

/**
 * The learning rate of optimiser step t (0-based: the first step uses t = 0, as LambdaLR gives
 * the optimiser lr_lambda(0) before the first scheduler.step()). Each factor is transformers'
 * lr_lambda to the last operation, multiplied into `base` as LambdaLR does (base_lr * lambda),
 * so the value equals Python's double for double.
 */
export function learningRate(base: number, s: Schedule, t: number): number {
  return base * lrLambda(s, t);
}

/** transformers' lr_lambda of schedule `s` at step t (optimization.py, num_cycles 0.5). */
export function lrLambda(s: Schedule, t: number): number {
  if (t < s.warmup) return t / Math.max(1, s.warmup);
  if (s.kind === 'constant') return 1;
  if (s.kind === 'linear') return Math.max(0, (s.total - t) / Math.max(1, s.total - s.warmup));
  const progress = (t - s.warmup) / Math.max(1, s.total - s.warmup);
  // math.pi * float(num_cycles) * 2.0 * progress with num_cycles = 0.5: pi * 0.5 * 2 is pi exactly.
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}

/**
 * Warmup steps as TrainingArguments.get_warmup_steps computes them: the steps when given,
 * else ceil(ratio * total).
 */
export function warmupSteps(total: number, opts: { steps?: number | undefined; ratio?: number | undefined }): number {
  if (opts.steps !== undefined && opts.steps > 0) return opts.steps;
  return Math.ceil(total * (opts.ratio ?? 0));
}

/**
 * Names of AdamW's step-scalar inputs and of each parameter's moment state; the compiler's
 * optimiser pass (compiler/passes/optimizer.ts) and the runtime agree on them here.
 */
export const STEP_INPUTS = { lr: 'step.lr', bc1: 'step.bc1', sqrtBc2: 'step.sqrt_bc2', maxGradNorm: 'step.max_grad_norm' } as const;
/** The state tensor holding AdamW moment `which` of parameter `param`. */
export const momentName = (which: 'm' | 'v', param: string): string => `adamw.${which}:${param}`;

const scalar = (v: number): HostTensor => ({ dtype: 'f32', shape: [], data: Float32Array.of(v) });

/**
 * Inputs for AdamW step number `step` (1-based, as torch counts it) at learning rate lr, with
 * gradients clipped to a global 2-norm of `maxGradNorm` (0, the default here, disables
 * clipping as the Trainer's max_grad_norm = 0 does).
 */
export function adamwStepInputs(lr: number, step: number, beta1: number, beta2: number, maxGradNorm = 0): Map<string, HostTensor> {
  return new Map([
    [STEP_INPUTS.lr, scalar(lr)],
    [STEP_INPUTS.bc1, scalar(1 - beta1 ** step)],
    [STEP_INPUTS.sqrtBc2, scalar(Math.sqrt(1 - beta2 ** step))],
    [STEP_INPUTS.maxGradNorm, scalar(maxGradNorm)],
  ]);
}
