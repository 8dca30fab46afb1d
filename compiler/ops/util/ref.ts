// Shared pieces of the CPU reference: index maps for broadcasting and reductions, permutes.
// Everything accumulates in JS numbers (f64); outputs are stored through ctx.alloc, so f32 mode
// rounds once per output element as PyTorch's f32 kernels do.
import type { DType } from '../../ir/graph.js';
import { numel, stridesOf, type HostTensor, type TensorData } from '../../../runtime/tensor.js';
import type { ReferenceContext } from '../types.js';

export function tensor(dtype: DType, shape: readonly number[], data: TensorData): HostTensor {
  return { dtype, shape: [...shape], data };
}

export function alloc(ctx: ReferenceContext, dtype: DType, shape: readonly number[]): HostTensor {
  return tensor(dtype, shape, ctx.alloc(dtype, numel(shape)));
}

/**
 * For each element of `outShape`, the flat index of the element of `inShape` it reads under numpy
 * broadcasting (in aligned right; size-1 dims repeat). null when the shapes are equal.
 * Also serves reductions: map the input (big) shape onto the keepdims output (small) shape.
 */
export function broadcastIndex(inShape: readonly number[], outShape: readonly number[]): Int32Array | null {
  if (inShape.length === outShape.length && inShape.every((d, i) => d === outShape[i])) return null;
  const rank = outShape.length;
  const inStrides = stridesOf(inShape);
  const eff = new Array<number>(rank).fill(0);
  for (let i = 0; i < rank; i++) {
    const j = inShape.length - rank + i;
    if (j >= 0 && inShape[j] !== 1) eff[i] = inStrides[j]!;
  }
  const total = numel(outShape);
  const map = new Int32Array(total);
  const idx = new Array<number>(rank).fill(0);
  let off = 0;
  for (let n = 0; n < total; n++) {
    map[n] = off;
    for (let a = rank - 1; a >= 0; a--) {
      idx[a]!++;
      off += eff[a]!;
      if (idx[a]! < outShape[a]!) break;
      off -= eff[a]! * outShape[a]!;
      idx[a] = 0;
    }
  }
  return map;
}

/** out[...] = x permuted: out axis i is input axis perm[i]. */
export function permute(x: HostTensor, perm: readonly number[], out: HostTensor): void {
  const rank = perm.length;
  const inStrides = stridesOf(x.shape);
  const outShape = perm.map((p) => x.shape[p]!);
  const eff = perm.map((p) => inStrides[p]!);
  const total = numel(outShape);
  const idx = new Array<number>(rank).fill(0);
  const src = x.data;
  const dst = out.data;
  let off = 0;
  for (let n = 0; n < total; n++) {
    dst[n] = src[off]!;
    for (let a = rank - 1; a >= 0; a--) {
      idx[a]!++;
      off += eff[a]!;
      if (idx[a]! < outShape[a]!) break;
      off -= eff[a]! * outShape[a]!;
      idx[a] = 0;
    }
  }
}

/** [outer, n, inner] view of a shape around one axis: rows along `axis` for softmax-like ops. */
export function splitAt(shape: readonly number[], axis: number): { outer: number; n: number; inner: number } {
  let outer = 1;
  let inner = 1;
  for (let i = 0; i < axis; i++) outer *= shape[i]!;
  for (let i = axis + 1; i < shape.length; i++) inner *= shape[i]!;
  return { outer, n: shape[axis]!, inner };
}

export function logSumExp(x: TensorData, base: number, n: number, stride: number): number {
  let m = -Infinity;
  for (let i = 0; i < n; i++) m = Math.max(m, x[base + i * stride]!);
  if (m === -Infinity || Number.isNaN(m)) return m;
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp(x[base + i * stride]! - m);
  return m + Math.log(s);
}
