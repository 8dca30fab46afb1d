// Training checkpoints of the tiny VW-LMM (compiler/train/checkpoints.ts writes them so): after
// one WebGPU training step, the time to save checkpoint-<step>/ (every tensor read back from the
// device one at a time, written streaming, fsynced, renamed into place) and its size, and the
// time to open it and restore every parameter and moment into a fresh backend (a --resume).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadSpec } from '../compiler/syntax/load.js';
import { checkModel } from '../compiler/check/index.js';
import { initParams } from '../compiler/exec/init.js';
import { adamwHyper } from '../compiler/emit/entries.js';
import { WebGpuBackend } from '../compiler/train/backend.js';
import { checkpointConfig, constShape, modelTensorSources, momentParam, stateTensorSources } from '../compiler/checkpoint/save.js';
import { openTrainingCheckpoint, saveCheckpoint } from '../runtime/node/checkpoint.js';
import type { KilnDevice } from '../runtime/node/device.js';
import { tinyBatch } from './tiny-step.js';

export interface CheckpointBenchResult {
  params: number;
  /** bytes of the folder: model.safetensors (f32 parameters) + optimizer.safetensors (two f32 moments per trained parameter) + JSON. */
  bytes: number;
  /** median over the runs. */
  save_ms: number;
  restore_ms: number;
  runs: number;
}

export async function benchCheckpoint(kd: KilnDevice, opts: { runs: number; log: (m: string) => void }): Promise<CheckpointBenchResult> {
  const files = loadSpec('models/vwlmm.kiln', (p: string) => readFileSync(p, 'utf8')).files;
  const model = checkModel(files, { config: 'tiny', stage: 'finetune' });
  const hyper = adamwHyper(model);
  const params = initParams(model.graph.params, 0);
  const backend = new WebGpuBackend(kd, model, hyper, params);
  const batch = tinyBatch(2, 32, 1000, 28);
  await backend.step(batch, { lr: 1e-3, step: 1, maxGradNorm: 1 });
  const shapes = new Map(model.graph.params.map((p) => [p.name, constShape(p)]));
  const read = async (n: string) => (await backend.read([n])).get(n)!;
  const root = mkdtempSync(join(tmpdir(), 'kiln-bench-ckpt-'));
  const save: number[] = [];
  const restore: number[] = [];
  let bytes = 0;
  try {
    for (let i = 0; i < opts.runs; i++) {
      const t0 = performance.now();
      const saved = await saveCheckpoint(
        root,
        {
          config: checkpointConfig(model),
          model: modelTensorSources(model.graph.params, read),
          optimizer: stateTensorSources(backend.stateNames(), (n) => shapes.get(momentParam(n)!)!, read),
          state: { global_step: i + 1, max_steps: opts.runs, epoch: 0, data: { epoch: 0, position: 0 }, seed: 0, schedule: { kind: 'constant', base_lr: 1e-3, warmup: 0, total: opts.runs }, optimizer: { name: 'adamw' }, learning_rate: 1e-3, max_grad_norm: 1, log_history: [] },
        },
        { keep: 1 },
      );
      save.push(performance.now() - t0);
      bytes = saved.bytes;
      const t1 = performance.now();
      const ck = openTrainingCheckpoint(saved.dir);
      for (const p of model.graph.params) await backend.write(new Map([[p.name, ck.model.load(p.name)]]));
      for (const n of backend.stateNames()) await backend.write(new Map([[n, ck.optimizer.load(n)]]));
      await backend.read([model.graph.params[0]!.name]);
      restore.push(performance.now() - t1);
      opts.log(`save ${save[i]!.toFixed(1)} ms, restore ${restore[i]!.toFixed(1)} ms, ${(bytes / 1e6).toFixed(2)} MB`);
    }
  } finally {
    backend.destroy();
    rmSync(root, { recursive: true, force: true });
  }
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
  const count = [...params.values()].reduce((n, t) => n + t.data.length, 0);
  return { params: count, bytes, save_ms: Math.round(median(save) * 10) / 10, restore_ms: Math.round(median(restore) * 10) / 10, runs: opts.runs };
}
