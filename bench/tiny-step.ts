// The tiny VW-LMM training step on WebGPU: forward, backward of both losses and the AdamW update
// (the spec's finetune stage), fused and planned, parameters and moments resident on the device.
// Reports ms per step, dispatches against ops in the unfused graph, allocated bytes against the
// sum of all values' bytes, and the cold first step (compiling every kernel).
import { readFileSync } from 'node:fs';
import { loadSpec } from '../compiler/syntax/load.js';
import { checkModel } from '../compiler/check/index.js';
import { differentiate } from '../compiler/passes/autodiff.js';
import { momentName, withAdamW } from '../compiler/passes/optimizer.js';
import { initParams, seededRandom } from '../compiler/exec/init.js';
import { adamwStepInputs } from '../runtime/optim/schedule.js';
import type { HostTensor } from '../runtime/tensor.js';
import { numel } from '../runtime/tensor.js';
import type { KilnDevice } from '../runtime/node/device.js';
import { WebGpuExecutor } from '../compiler/exec/webgpu.js';
import { timeRuns } from './matmul.js';

export interface TinyStepResult {
  ms: number;
  dispatches: number;
  unfused_ops: number;
  /** device bytes allocated for the step. */
  peak_bytes: number;
  /** the sum of all values' bytes: every op's output of the unfused graph in its own buffer. */
  naive_bytes: number;
  /** the fused program's values in their own buffers: what liveness-based sharing saves. */
  unshared_bytes: number;
  cold_ms: number;
  batch: number;
  tokens: number;
  loss_first: number;
  loss_last: number;
}

/** A deterministic batch: BOS, the image placeholder, then tokens; labels skip the prompt. */
export function tinyBatch(batch: number, tokens: number, vocab: number, image: number, seed = 1): Map<string, HostTensor> {
  const r = seededRandom(seed);
  const ids = new Int32Array(batch * tokens);
  const labels = new Int32Array(batch * tokens);
  for (let b = 0; b < batch; b++)
    for (let t = 0; t < tokens; t++) {
      const id = t === 0 ? 1 : t === 1 ? -200 : 2 + Math.floor(r() * (vocab - 2));
      ids[b * tokens + t] = id;
      labels[b * tokens + t] = t < 4 ? -100 : id;
    }
  const pixels = Float32Array.from({ length: batch * 3 * image * image }, () => 2 * r() - 1);
  return new Map<string, HostTensor>([
    ['pixel_values', { dtype: 'f32', shape: [batch, 3, image, image], data: pixels }],
    ['input_ids', { dtype: 'i32', shape: [batch, tokens], data: ids }],
    ['labels', { dtype: 'i32', shape: [batch, tokens], data: labels }],
  ]);
}

export async function benchTinyStep(kd: KilnDevice, opts: { runs: number; log: (m: string) => void; batch?: number; tokens?: number }): Promise<TinyStepResult> {
  const batchSize = opts.batch ?? 2;
  const tokens = opts.tokens ?? 32;
  const files = loadSpec('models/vwlmm.kiln', (p: string) => readFileSync(p, 'utf8')).files;
  const model = checkModel(files, { config: 'tiny', stage: 'finetune' });
  const args = model.stage?.optimizer?.args ?? {};
  const num = (k: string, d: number) => (typeof args[k] === 'number' ? (args[k] as number) : d);
  const hyper = { beta1: num('beta1', 0.9), beta2: num('beta2', 0.999), eps: num('eps', 1e-8), weightDecay: num('weight_decay', 0) };
  const lr = 1e-3;
  const graph = withAdamW(differentiate(model.graph), hyper);
  const params = initParams(model.graph.params, 0);
  const moments = new Map<string, HostTensor>();
  for (const g of graph.gradients) {
    const shape = params.get(g.name)!.shape;
    for (const w of ['m', 'v'] as const) moments.set(momentName(w, g.name), { dtype: 'f32', shape, data: new Float32Array(numel(shape)) });
  }
  const vocab = model.graph.params.find((p) => p.name === 'lm_head.weight')!.type.shape[0] as number;
  const image = (model.graph.nodes[model.graph.inputs.find((i) => i.name === 'pixel_values')!.node]!.type.shape[2] as number);
  const batch = tinyBatch(batchSize, tokens, vocab, image);
  const exec = new WebGpuExecutor(kd, graph);
  let step = 0;
  const losses: number[] = [];
  const once = async () => {
    step++;
    const t0 = performance.now();
    const feeds = new Map([...params, ...moments, ...batch, ...adamwStepInputs(lr, step, hyper.beta1, hyper.beta2, 1.0)]);
    const r = await exec.run(feeds, [graph.totalLoss!], { applyUpdates: true });
    losses.push(r.get(graph.totalLoss!)!.data[0]!);
    return performance.now() - t0;
  };
  const cold = await once();
  opts.log(`tiny_step: cold first step ${cold.toFixed(0)} ms (compiles every kernel; Mesa's shader cache may be warm)`);
  const ms = await timeRuns(opts.runs, once);
  const stats = exec.lastStats!;
  exec.destroy();
  opts.log(`tiny_step: ${stats.inPlaceUpdates} of ${(graph.updates ?? []).length} optimiser updates written in place`);
  const result: TinyStepResult = {
    ms: Math.round(ms * 100) / 100,
    dispatches: stats.dispatches,
    unfused_ops: stats.unfusedOps,
    peak_bytes: stats.allocatedBytes,
    naive_bytes: stats.naiveBytes,
    unshared_bytes: stats.unsharedBytes,
    cold_ms: Math.round(cold),
    batch: batchSize,
    tokens,
    loss_first: losses[0]!,
    loss_last: losses[losses.length - 1]!,
  };
  opts.log(`tiny_step: ${result.ms} ms/step, ${result.dispatches} dispatches for ${result.unfused_ops} ops, ${result.peak_bytes} B allocated vs ${result.naive_bytes} B for all values (${result.unshared_bytes} B for the fused program's values unshared); loss ${result.loss_first.toFixed(4)} -> ${result.loss_last.toFixed(4)} over ${losses.length} steps`);
  return result;
}
