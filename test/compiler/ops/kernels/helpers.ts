// Kernel tests: run an op's custom kernel on the real WebGPU device (optionally with adjusted
// device traits, to exercise the portable one-lane path and grid folding) and compare it with
// the op's f64 (or f32) reference.
import { expect } from 'vitest';
import { getOp } from '../../../../compiler/ops/registry.js';
import type { Attrs, DType } from '../../../../compiler/ir/graph.js';
import { wrapPlain, type DeviceTraits } from '../../../../compiler/codegen/kernel.js';
import { getDevice, gpuStep } from '../../../../runtime/node/device.js';
import { bindAll, createStorageBuffer, dispatch, getPipeline, readBuffer, uploadBuffer } from '../../../../runtime/webgpu/buffers.js';
import { numel, type HostTensor } from '../../../../runtime/tensor.js';
import { runOpOnGpu, traitsOf } from '../../../helpers/gpu-op.js';

export interface OutType {
  dtype: DType;
  shape: readonly number[];
}

/**
 * Device variants a kernel is tested under: the adapter as it is (subgroup lanes on lavapipe),
 * no fixed subgroup size (one lane per group, the portable path), and a tiny per-dimension
 * workgroup limit so dispatches fold into y and z, together with almost no workgroup memory so
 * per-lane arrays fall back to private memory and attention_grad's row statistics to chunks.
 */
export type Variant = 'device' | 'portable' | 'folded';
export const VARIANTS: readonly Variant[] = ['device', 'portable', 'folded'];

const isInt = (d: DType): boolean => d === 'i32' || d === 'bool';

export async function gpu(op: string, inputs: readonly HostTensor[], attrs: Attrs, out: OutType, variant: Variant = 'device'): Promise<HostTensor> {
  const kd = await getDevice();
  // Inside error scopes, so a shader that fails to compile fails the test with Tint's message.
  return gpuStep(kd.device, `${op} kernel test (${variant})`, () => (variant === 'device' ? runOpOnGpu(op, inputs, attrs, out) : runVariant(op, inputs, attrs, out, variant)));
}

async function runVariant(op: string, inputs: readonly HostTensor[], attrs: Attrs, out: OutType, variant: Variant): Promise<HostTensor> {
  const kd = await getDevice();
  const device = kd.device;
  const base = traitsOf(kd);
  const traits: DeviceTraits = variant === 'portable' ? { ...base, subgroupSize: undefined } : { ...base, maxWorkgroupsPerDimension: 3, workgroupMemoryBytes: 700 };
  const kernel = getOp(op).kernel;
  if (kernel?.kind !== 'custom') throw new Error(`${op} has no custom kernel`);
  const n = numel(out.shape);
  const body = kernel.lower({ op, inputs: inputs.map((t) => ({ dtype: t.dtype, shape: t.shape })), output: out, attrs, device: traits });
  const code = wrapPlain(body, inputs.map((t) => ({ dtype: t.dtype, length: numel(t.shape) })), { dtype: out.dtype, length: n }, traits);
  const buffers = inputs.map((t) => uploadBuffer(device, isInt(t.dtype) ? Int32Array.from(t.data) : Float32Array.from(t.data)));
  const outBuf = createStorageBuffer(device, n * 4);
  try {
    const pipeline = getPipeline(device, code, `${op} test`);
    dispatch(device, pipeline, bindAll(device, pipeline, [...buffers, outBuf]), body.workgroups);
    const bytes = await readBuffer(device, outBuf, Math.max(4, n * 4));
    const data = isInt(out.dtype) ? new Int32Array(bytes, 0, n) : new Float32Array(bytes, 0, n);
    return { dtype: out.dtype, shape: out.shape, data: data.slice() };
  } finally {
    for (const b of [...buffers, outBuf]) b.destroy();
  }
}

export function reference(op: string, inputs: readonly HostTensor[], attrs: Attrs, out: OutType, precision: 'f32' | 'f64' = 'f64'): HostTensor {
  const alloc = (dtype: DType, size: number) => (isInt(dtype) ? new Int32Array(size) : precision === 'f32' ? new Float32Array(size) : new Float64Array(size));
  return getOp(op).reference(inputs, attrs, out, { precision, alloc });
}

/** The op's shape rule on concrete inputs. */
export function outType(op: string, inputs: readonly HostTensor[], attrs: Attrs): OutType {
  const t = getOp(op).infer(inputs.map((x) => ({ dtype: x.dtype, shape: x.shape })), attrs);
  return { dtype: t.dtype, shape: t.shape as number[] };
}

/** Deterministic uniform values in [lo, hi), rounded to f32 (mulberry32). */
export function randn(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = lo + (hi - lo) * (((t ^ (t >>> 14)) >>> 0) / 4294967296);
  }
  return out;
}

export function randInts(n: number, seed: number, lo: number, hi: number): Int32Array {
  return Int32Array.from(randn(n, seed, 0, 1), (u) => Math.min(hi - 1, lo + Math.floor(u * (hi - lo))));
}

export function f32t(shape: readonly number[], data: ArrayLike<number>): HostTensor {
  return { dtype: 'f32', shape: [...shape], data: Float32Array.from(data) };
}

export function i32t(shape: readonly number[], data: ArrayLike<number>): HostTensor {
  return { dtype: 'i32', shape: [...shape], data: Int32Array.from(data) };
}

/**
 * Element-wise |got - want| <= tol(i); the failure names the worst element. Both NaN counts as
 * equal (the reference's 0/0 cases).
 */
export function expectClose(got: HostTensor, want: HostTensor, tol: number | ((i: number) => number), what: string): void {
  expect(got.data.length, `${what}: length`).toBe(want.data.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < want.data.length; i++) {
    const g = got.data[i]!;
    const w = want.data[i]!;
    if (Number.isNaN(g) && Number.isNaN(w)) continue;
    const t = typeof tol === 'number' ? tol : tol(i);
    const excess = Number.isNaN(g) || Number.isNaN(w) ? Infinity : Math.abs(g - w) - t;
    if (excess > worstExcess || (excess > 0 && worst < 0)) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    const t = typeof tol === 'number' ? tol : tol(worst);
    expect.fail(`${what}: element ${worst} of ${want.data.length}: got ${got.data[worst]}, want ${want.data[worst]} (tolerance ${t})`);
  }
}

/** Relative-to-scale tolerance: |err| <= rel * (|want_i| + floor). */
export function relTol(want: HostTensor, rel: number, floor: number): (i: number) => number {
  return (i) => rel * (Math.abs(want.data[i]!) + floor);
}
