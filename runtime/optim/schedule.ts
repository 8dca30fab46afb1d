// Learning-rate schedules as the Hugging Face trainer computes them, and the per-step scalars
// the AdamW graph (compiler/passes/optimizer.ts) takes as inputs.
import type { HostTensor } from '../tensor.js';

export interface Schedule {
  kind: 'constant' | 'cosine' | 'linear';
  /** warmup steps (from warmup_ratio * total when given that way). */
  warmup: number;
  total: number;
}

/** The learning rate at step t (0-based, before the step), as transformers' schedulers give it. */
export function learningRate(base: number, s: Schedule, t: number): number {
  if (t < s.warmup) return (base * t) / Math.max(1, s.warmup);
  if (s.kind === 'constant') return base;
  const progress = (t - s.warmup) / Math.max(1, s.total - s.warmup);
  if (s.kind === 'linear') return base * Math.max(0, 1 - progress);
  return base * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}

/**
 * Names of AdamW's step-scalar inputs and of each parameter's moment state; the compiler's
 * optimiser pass (compiler/passes/optimizer.ts) and the runtime agree on them here.
 */
export const STEP_INPUTS = { lr: 'step.lr', bc1: 'step.bc1', sqrtBc2: 'step.sqrt_bc2' } as const;
/** The state tensor holding AdamW moment `which` of parameter `param`. */
export const momentName = (which: 'm' | 'v', param: string): string => `adamw.${which}:${param}`;

const scalar = (v: number): HostTensor => ({ dtype: 'f32', shape: [], data: Float32Array.of(v) });

/** Inputs for AdamW step number `step` (1-based, as torch counts it) at learning rate lr. */
export function adamwStepInputs(lr: number, step: number, beta1: number, beta2: number): Map<string, HostTensor> {
  return new Map([
    [STEP_INPUTS.lr, scalar(lr)],
    [STEP_INPUTS.bc1, scalar(1 - beta1 ** step)],
    [STEP_INPUTS.sqrtBc2, scalar(Math.sqrt(1 - beta2 ** step))],
  ]);
}
