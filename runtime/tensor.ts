// Host tensors: what the reference executor computes with and what checkpoints, batches and
// read-backs hold. Float dtypes are held as Float32Array (f32 semantics, as PyTorch computes) or
// Float64Array (the f64 reference used by gradient checks); i32 and bool as Int32Array.

/** Element types of tensors. f16 and bf16 are held on the host as Float32Array. */
export type DType = 'f32' | 'f16' | 'bf16' | 'i32' | 'bool';

export type TensorData = Float32Array | Float64Array | Int32Array;

export interface HostTensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: TensorData;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function isFloat(dtype: DType): boolean {
  return dtype === 'f32' || dtype === 'f16' || dtype === 'bf16';
}

/** Row-major strides. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}
