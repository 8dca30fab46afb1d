// One-shot WebGPU runs for the CLI: is there an adapter, and evaluate these values once.
import type { Graph } from '../ir/graph.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { getDevice } from '../../runtime/node/device.js';
import { WebGpuExecutor, type ExecutorOptions } from './webgpu.js';
import type { Trace } from '../../runtime/nonfinite.js';
import { evaluateNodes } from './reference.js';

/** Whether a WebGPU device can be had here (Dawn in Node, navigator.gpu in browsers). */
export async function webgpuAvailable(): Promise<boolean> {
  try {
    await getDevice();
    return true;
  } catch {
    return false;
  }
}

/** Evaluates `wanted` on the process's device and frees what the run allocated. */
export async function runOnWebGpu(
  graph: Graph,
  feeds: ReadonlyMap<string, HostTensor>,
  wanted: readonly number[],
  opts: ExecutorOptions = {},
): Promise<Map<number, HostTensor>> {
  const executor = new WebGpuExecutor(await getDevice(), graph, { stepByStep: process.env['KILN_GPU_STEPS'] === '1', ...opts });
  try {
    return await executor.run(feeds, [...new Set(wanted)]);
  } finally {
    executor.destroy();
  }
}

/**
 * The WebGPU diagnostic run for runtime/nonfinite.ts: every kernel's outputs, each with its
 * kernel; the ops a kernel fuses are evaluated on the reference from its observed inputs.
 */
export async function traceOnWebGpu(
  graph: Graph,
  feeds: ReadonlyMap<string, HostTensor>,
  wanted: readonly number[],
  opts: ExecutorOptions = {},
): Promise<Trace> {
  const executor = new WebGpuExecutor(await getDevice(), graph, opts);
  try {
    const { values, kernelOf } = await executor.trace(feeds, [...new Set(wanted)]);
    return { values, kernelOf, evaluate: (nodes, from) => evaluateNodes(graph, feeds, nodes, from, 'f32') };
  } finally {
    executor.destroy();
  }
}
