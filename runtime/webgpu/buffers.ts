// Storage buffers in and out of the device, and a small one-dispatch helper for tests and benches.
// The plan executor keeps its own buffers alive across steps; these helpers are for the edges.
import { COPY_DST, COPY_SRC, MAP_READ, paddedBytes as paddedSize, STORAGE } from './bytes.js';
import { gpuStep } from './device.js';

export type HostArray = Float32Array | Int32Array | Uint32Array;

/** A storage buffer holding `data` (also usable as a copy source and destination). */
export function uploadBuffer(device: GPUDevice, data: HostArray, label?: string): GPUBuffer {
  const buffer = device.createBuffer({
    size: paddedSize(data.byteLength),
    usage: STORAGE | COPY_SRC | COPY_DST,
    mappedAtCreation: true,
    ...(label === undefined ? {} : { label }),
  });
  const ctor = data.constructor as { new (b: ArrayBuffer): HostArray };
  new ctor(buffer.getMappedRange()).set(data);
  buffer.unmap();
  return buffer;
}

/** An uninitialised (zeroed, per WebGPU) storage buffer of `byteLength` bytes. */
export function createStorageBuffer(device: GPUDevice, byteLength: number, label?: string): GPUBuffer {
  return device.createBuffer({
    size: paddedSize(byteLength),
    usage: STORAGE | COPY_SRC | COPY_DST,
    ...(label === undefined ? {} : { label }),
  });
}

/** Copies `byteLength` bytes of `buffer` back to the host through a staging buffer. */
export async function readBuffer(device: GPUDevice, buffer: GPUBuffer, byteLength = buffer.size): Promise<ArrayBuffer> {
  const size = paddedSize(byteLength);
  const staging = device.createBuffer({ size, usage: MAP_READ | COPY_DST, label: 'kiln read-back' });
  try {
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(buffer, 0, staging, 0, size);
    device.queue.submit([enc.finish()]);
    await staging.mapAsync(1 /* GPUMapMode.READ */);
    // slice() copies out of the mapped range, which is detached on unmap.
    return staging.getMappedRange(0, size).slice(0, byteLength);
  } finally {
    if (staging.mapState === 'mapped') staging.unmap();
    staging.destroy();
  }
}

export async function readFloat32(device: GPUDevice, buffer: GPUBuffer, length: number): Promise<Float32Array> {
  return new Float32Array(await readBuffer(device, buffer, length * 4));
}

export async function readInt32(device: GPUDevice, buffer: GPUBuffer, length: number): Promise<Int32Array> {
  return new Int32Array(await readBuffer(device, buffer, length * 4));
}

// Shader compilation costs ~1 s per pipeline on lavapipe; tests and benches reuse the same code.
const pipelineCache = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

/** A compute pipeline for `code` (entry point `main`, layout 'auto'), cached per device and code. */
export function getPipeline(device: GPUDevice, code: string, label = 'kiln kernel', entryPoint = 'main'): GPUComputePipeline {
  let cache = pipelineCache.get(device);
  if (!cache) {
    cache = new Map();
    pipelineCache.set(device, cache);
  }
  const key = `${entryPoint}\n${code}`;
  let pipeline = cache.get(key);
  if (!pipeline) {
    const module = device.createShaderModule({ code, label });
    pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint }, label });
    cache.set(key, pipeline);
  }
  return pipeline;
}

/** Binds `buffers` to @group(0) @binding(0..n-1), in order. */
export function bindAll(device: GPUDevice, pipeline: GPUComputePipeline, buffers: readonly GPUBuffer[]): GPUBindGroup {
  return device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
}

/** Records and submits one dispatch. */
export function dispatch(
  device: GPUDevice,
  pipeline: GPUComputePipeline,
  bindGroup: GPUBindGroup,
  workgroups: readonly [number, number, number],
): void {
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  pass.dispatchWorkgroups(workgroups[0], workgroups[1], workgroups[2]);
  pass.end();
  device.queue.submit([enc.finish()]);
}

/** An output binding: `length` f32 values, zero-initialised, read back after the dispatch. */
export interface OutputSpec {
  output: number;
}

export interface RunKernelOptions {
  code: string;
  label?: string;
  /** bound at @group(0) @binding(i) in order: host arrays are uploaded, outputs read back */
  bindings: readonly (HostArray | OutputSpec)[];
  workgroups: readonly [number, number, number];
}

/** Uploads inputs, runs one dispatch, reads the outputs back (in binding order): for tests and benches. */
export async function runKernel(device: GPUDevice, opts: RunKernelOptions): Promise<Float32Array[]> {
  const label = opts.label ?? 'kiln test kernel';
  return gpuStep(device, label, async () => {
    const buffers = opts.bindings.map((b, i) =>
      'output' in b ? createStorageBuffer(device, b.output * 4, `${label} out@${i}`) : uploadBuffer(device, b, `${label} in@${i}`),
    );
    try {
      const pipeline = getPipeline(device, opts.code, label);
      dispatch(device, pipeline, bindAll(device, pipeline, buffers), opts.workgroups);
      const reads: Promise<Float32Array>[] = [];
      opts.bindings.forEach((b, i) => {
        if ('output' in b) reads.push(readFloat32(device, buffers[i]!, b.output));
      });
      return await Promise.all(reads);
    } finally {
      for (const b of buffers) b.destroy();
    }
  });
}
