// Deterministic checkpoint contents for the checkpoint tests and their child writer process
// (write-checkpoints.ts): every value is a function of the step, so a checkpoint read back can be
// checked against what that step wrote, whichever step survived a kill.
import type { CheckpointContents, TensorSource, TrainerState } from '../../../runtime/node/checkpoint.js';
import type { HostTensor } from '../../../runtime/tensor.js';

export interface FakeShape {
  /** tensors in model.safetensors (and as many m and v moments each). */
  tensors: number;
  /** values per tensor. */
  size: number;
  /** milliseconds each read() waits, like a GPU read-back. */
  delayMs?: number;
}

export function fakeValues(step: number, index: number, size: number): Float32Array {
  const a = new Float32Array(size);
  for (let i = 0; i < size; i++) a[i] = step * 1000 + index + i * 1e-3;
  return a;
}

function source(name: string, step: number, index: number, shape: FakeShape): TensorSource {
  return {
    name,
    dtype: 'f32',
    shape: [shape.size / 4, 4],
    async read(): Promise<HostTensor> {
      if (shape.delayMs) await new Promise((r) => setTimeout(r, shape.delayMs));
      return { dtype: 'f32', shape: [shape.size / 4, 4], data: fakeValues(step, index, shape.size) };
    },
  };
}

export const paramName = (i: number) => `model.layers.${i}.mlp.up_proj.weight`;

export function fakeState(step: number): TrainerState {
  return {
    global_step: step,
    max_steps: 1000,
    epoch: step / 10,
    data: { epoch: Math.floor(step / 10), position: step % 10 },
    seed: 7,
    schedule: { kind: 'cosine', base_lr: 1e-3, warmup: 2, total: 1000 },
    optimizer: { name: 'adamw', beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0 },
    learning_rate: 1e-3,
    max_grad_norm: 1,
    log_history: Array.from({ length: step }, (_, i) => ({ step: i + 1, loss: 5 - i * 0.01, terms: { lm: 4, vm: 1 - i * 0.01 }, learning_rate: 1e-3, grad_norm: 2 })),
  };
}

export function fakeContents(step: number, shape: FakeShape): CheckpointContents {
  const model = Array.from({ length: shape.tensors }, (_, i) => source(paramName(i), step, i, shape));
  const optimizer = Array.from({ length: shape.tensors }, (_, i) => [
    source(`adamw.m:${paramName(i)}`, step, 100 + i, shape),
    source(`adamw.v:${paramName(i)}`, step, 200 + i, shape),
  ]).flat();
  return {
    config: { model_type: 'llava_llama', step },
    model,
    optimizer,
    state: fakeState(step),
    files: new Map([['tokenizer.json', JSON.stringify({ step })]]),
  };
}
