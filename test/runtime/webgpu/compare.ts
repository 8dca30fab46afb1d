// Runs a graph on WebGPU and on the reference executor and measures how far apart they are.
import type { Graph } from '../../../compiler/ir/graph.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { getDevice } from '../../../runtime/node/device.js';
import { WebGpuExecutor, type ExecutorOptions } from '../../../compiler/exec/webgpu.js';
import type { HostTensor } from '../../../runtime/tensor.js';

export interface Compared {
  gpu: Map<number, HostTensor>;
  ref: Map<number, HostTensor>;
  executor: WebGpuExecutor;
}

export async function runBoth(graph: Graph, feeds: ReadonlyMap<string, HostTensor>, wanted: readonly number[], opts: ExecutorOptions = {}): Promise<Compared> {
  const executor = new WebGpuExecutor(await getDevice(), graph, opts);
  const gpu = await executor.run(feeds, wanted);
  const ref = runReference(graph, feeds, wanted, { precision: 'f64' });
  return { gpu, ref, executor };
}

/** max |got - want| / (atol + rtol |want|) over the elements: <= 1 means within tolerance. */
export function worst(got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol: number): { ratio: number; at: number } {
  if (got.length !== want.length) return { ratio: Infinity, at: -1 };
  let ratio = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const w = want[i]!;
    const g = got[i]!;
    const r = Number.isNaN(w) && Number.isNaN(g) ? 0 : w === g ? 0 : Math.abs(g - w) / (atol + rtol * Math.abs(w));
    if (!(r <= ratio)) {
      ratio = Number.isNaN(r) ? Infinity : r;
      at = i;
    }
  }
  return { ratio, at };
}

/** Deterministic uniform values in [lo, hi). */
export function uniform(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + (s / 2 ** 32) * (hi - lo);
  });
}

export function f32(shape: readonly number[], data: Float32Array): HostTensor {
  return { dtype: 'f32', shape: [...shape], data };
}

export function i32(shape: readonly number[], data: ArrayLike<number>): HostTensor {
  return { dtype: 'i32', shape: [...shape], data: Int32Array.from(data) };
}
