// Host memory of WebGPU runs (README "Memory"): once a tensor is on the device the host keeps
// no copy of it, and a checkpoint reaches the device one tensor at a time: each tensor is
// written to the device before the next is read from the file. Unit-level checks on the tiny
// model; the 1B-parameter figures are measured by hand (README), not in a timed test.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { loadSpec } from '../../../compiler/syntax/load.js';
import { checkModel, type CheckedModel } from '../../../compiler/check/index.js';
import { checkpointOverrides, evaluateBatch } from '../../../compiler/cli/loss.js';
import { loadBatch, openModelParams } from '../../../compiler/cli/model-inputs.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { WebGpuBackend } from '../../../compiler/train/backend.js';
import { getDevice } from '../../../runtime/node/device.js';
import { TensorStore } from '../../../runtime/webgpu/store.js';
import type { HostTensor } from '../../../runtime/tensor.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const G = 'test/golden/mistral_gqa';
const paths = { checkpoint: `${G}/llava`, visionTower: `${G}/clip` };

function tinyModel(): CheckedModel {
  const files = loadSpec('models/vwlmm.kiln', (p: string) => readFileSync(p, 'utf8')).files;
  return checkModel(files, { config: 'tiny', overrides: [...checkpointOverrides(paths.checkpoint), ...checkpointOverrides(paths.visionTower, '--vision-tower')] });
}

/**
 * A parameter map over `inner` that logs every read and, through a spy on the device queue,
 * every tensor written: `events` is the interleaving ("get <name>", "write").
 */
function loggedParams(inner: ReadonlyMap<string, HostTensor>, events: string[]): ReadonlyMap<string, HostTensor> {
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === 'get') return (name: string) => (events.push(`get ${name}`), target.get(name));
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** Logs "write" for every queue.writeBuffer of `fn`'s run. */
async function spyWrites<T>(events: string[], fn: () => Promise<T>): Promise<T> {
  const queue = (await getDevice()).device.queue;
  const original = queue.writeBuffer.bind(queue);
  queue.writeBuffer = ((...args: Parameters<GPUQueue['writeBuffer']>) => {
    events.push('write');
    return original(...args);
  }) as GPUQueue['writeBuffer'];
  try {
    return await fn();
  } finally {
    queue.writeBuffer = original;
  }
}

/** Every "get" is followed by its "write" before the next "get": one tensor on the host at a time. */
function expectOneAtATime(events: readonly string[], count: number): void {
  const gets = events.filter((e) => e.startsWith('get ')).length;
  expect(gets).toBe(count);
  for (let i = 0; i < events.length; i++) if (events[i]!.startsWith('get ')) expect(events[i + 1], `after ${events[i]}`).toBe('write');
}

describe('host memory of WebGPU runs', () => {
  it('the store keeps no host copy of a tensor once written', async () => {
    const kd = await getDevice();
    const store = new TensorStore(kd);
    store.declare({ name: 'w', dtype: 'f32', shape: [256, 256] });
    let t: HostTensor | undefined = { dtype: 'f32', shape: [256, 256], data: new Float32Array(256 * 256).fill(1) };
    const ref = new WeakRef(t);
    await store.upload(new Map([['w', t]]));
    // While the caller holds it, writing the same object again sends nothing (it is remembered)...
    expect(store.writtenHostTensor('w')).toBe(t);
    t = undefined;
    // ...but only weakly: dropped by the caller, it is collected (WeakRefs live to the end of a job).
    await new Promise((r) => setTimeout(r, 0));
    gc();
    expect(ref.deref()).toBeUndefined();
    expect(store.writtenHostTensor('w')).toBeUndefined();
    expect((await store.read(['w'])).get('w')!.data.every((x) => x === 1)).toBe(true);
    store.destroy();
  });

  it('kiln loss uploads a checkpoint one tensor at a time, reading each from the file when its turn comes', async () => {
    const model = tinyModel();
    const graph = differentiate(model.graph);
    const lazy = openModelParams(model, paths);
    expect(lazy.loads).toBe(0);
    const events: string[] = [];
    const batch = loadBatch(model, `${G}/batch.safetensors`);
    const run = await spyWrites(events, () => evaluateBatch(graph, loggedParams(lazy, events), batch, [graph.totalLoss!], { backend: 'webgpu', later: graph.gradients.map((g) => g.node) }));
    // Each parameter the compiled entry reads (the tower's unused last layer is not among them), once.
    const read = events.filter((e) => e.startsWith('get '));
    expect(new Set(read).size).toBe(read.length);
    expect(read.length).toBeGreaterThan(model.graph.params.length / 2);
    expectOneAtATime(events, read.length);
    expect(lazy.loads).toBe(read.length);
    // The gradients stay on the device until read, one at a time.
    const first = graph.gradients[0]!;
    expect((await run.read(first.node)).shape).toEqual(graph.nodes[first.node]!.type.shape);
    for (const g of graph.gradients.slice(1)) await run.read(g.node);
  });

  it('kiln train uploads its starting checkpoint one tensor at a time and keeps no host copy', async () => {
    const model = tinyModel();
    const lazy = openModelParams(model, paths);
    const events: string[] = [];
    const backend = new WebGpuBackend(await getDevice(), model, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, loggedParams(lazy, events));
    try {
      const first = model.graph.params[0]!.name;
      const got = await spyWrites(events, () => backend.read([first]));
      // Moments start as the zeros a new buffer holds: nothing but the parameters is written.
      expectOneAtATime(events, model.graph.params.length);
      expect(events.filter((e) => e === 'write')).toHaveLength(model.graph.params.length);
      expect(got.get(first)!.data).toEqual(lazy.get(first)!.data);
      const moment = backend.stateNames()[0]!;
      expect((await backend.read([moment])).get(moment)!.data.every((x) => x === 0)).toBe(true);
      // The starting map is dropped once uploaded: reading again reads the device, not the file.
      const loads = lazy.loads;
      await backend.read([first]);
      expect(lazy.loads).toBe(loads);
    } finally {
      backend.destroy();
    }
  });
});
