// The byte-level helpers the WebGPU runtime shares: buffer usage flags (spelled out, so importing
// a file needs no WebGPU globals), padded sizes, host tensors to and from device bytes (f16
// storage included), and a wait that rejects when the device is lost.
import { KilnError } from '../errors.js';
import { f16ArrayToF32, f32ArrayToF16 } from '../f16.js';
import { isFloat, numel, type DType, type HostTensor } from '../tensor.js';
import type { KilnDevice } from './device.js';

export const STORAGE = 0x80;
export const COPY_SRC = 0x04;
export const COPY_DST = 0x08;
export const UNIFORM = 0x40;
export const MAP_READ = 0x01;
export const QUERY_RESOLVE = 0x200;
export const COMPUTE = 0x4;

/** Buffer sizes are whole 4-byte words and never zero (a zero-sized binding is invalid). */
export const paddedBytes = (bytes: number): number => Math.max(4, Math.ceil(bytes / 4) * 4);

export const MIB = 1024 * 1024;
export const sizeText = (bytes: number): string => (bytes >= 1024 * MIB ? `${(bytes / 1024 / MIB).toFixed(2)} GiB` : `${(bytes / MIB).toFixed(2)} MiB`);

/** Rejects when the device is lost, so no await on the GPU can hang past a device loss. */
export function unlessLost<T>(kd: KilnDevice, what: string, p: Promise<T>): Promise<T> {
  const lost = kd.device.lost.then((info) => {
    throw new KilnError(`WebGPU device lost during ${what}: ${info.message || info.reason}`);
  });
  return Promise.race([p, lost]);
}

/**
 * A host tensor as the bytes its device buffer holds (f16 bits when floats are stored as f16).
 * A finite value past f16's range would be inf on the device and make every result NaN later:
 * an error naming the tensor (`what`: "parameter 'lm_head.weight'") and the value.
 */
export function deviceArray(t: HostTensor, floatStorage: 'f32' | 'f16', what = 'a tensor'): Float32Array | Int32Array | Uint16Array {
  if (isFloat(t.dtype) && floatStorage === 'f16') {
    const bits = f32ArrayToF16(t.data);
    for (let i = 0; i < t.data.length; i++)
      if ((bits[i]! & 0x7fff) === 0x7c00 && Number.isFinite(t.data[i]!))
        throw new KilnError(
          `${what} does not fit in f16 storage: element ${i} (flat, of [${t.shape.join(', ')}]) is ${Math.fround(t.data[i]!)}, past f16's largest finite value 65504, so f16 would hold inf; use f32 storage`,
        );
    return bits;
  }
  if (isFloat(t.dtype)) return t.data instanceof Float32Array ? t.data : Float32Array.from(t.data);
  return t.data instanceof Int32Array ? t.data : Int32Array.from(t.data);
}

/**
 * A typed array as TypeScript's DOM lib wants it for writeBuffer (not SharedArrayBuffer-backed);
 * @webgpu/types alone accepts any view. Host tensors are never shared, and pages compile this
 * file with the DOM lib (examples/browser/tsconfig.json).
 */
export type OwnedView = ArrayBufferView<ArrayBuffer>;

/** Device bytes (as read back) as a host tensor. */
export function hostTensor(raw: ArrayBuffer, dtype: DType, shape: readonly number[], floatStorage: 'f32' | 'f16'): HostTensor {
  const len = numel(shape);
  const data = !isFloat(dtype)
    ? new Int32Array(raw.slice(0, len * 4))
    : floatStorage === 'f16'
      ? f16ArrayToF32(new Uint16Array(raw, 0, len), len)
      : new Float32Array(raw.slice(0, len * 4));
  return { dtype, shape: [...shape], data };
}

export const sameShape = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((d, i) => d === b[i]);
export const describe = (t: { dtype: DType; shape: readonly number[] }): string => `${t.dtype}[${t.shape.join(', ')}]`;
