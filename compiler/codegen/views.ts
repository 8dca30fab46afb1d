// Movement ops as index maps: for an element index of the view (row-major, its own shape), the
// index of the element it reads in its operand. Fused code applies them inside the accessors, so
// reshape, transpose, slice and broadcast (and the implicit broadcasting of elementwise operands)
// never run as kernels (each view op declares its map: OpDef kernel.map). Shapes are concrete;
// every size is baked into the WGSL as a constant.
import { stridesOf, numel } from '../../runtime/tensor.js';

export interface IndexMap {
  /** true when the operand is read at the same index (reshape, equal shapes). */
  readonly identity: boolean;
  /** WGSL statements over the u32 identifier `i`, and the u32 expression they leave. */
  wgsl(i: string): { lets: string[]; index: string };
  /** the same map on the CPU (tests, and the plan's checks). */
  apply(i: number): number;
}

const u = (n: number): string => `${n}u`;

const strides = stridesOf;

export const IDENTITY: IndexMap = { identity: true, wgsl: (i) => ({ lets: [], index: i }), apply: (i) => i };

/**
 * The general form: peel the view's coordinates off `i` (last axis first) and sum each times the
 * operand stride it moves along (0 for a broadcast axis). Axes of size 1 contribute nothing.
 */
function strided(outShape: readonly number[], strideOf: readonly number[], offset = 0): IndexMap {
  return {
    identity: false,
    wgsl(i) {
      const lets: string[] = [`var r = ${i};`];
      const terms: string[] = offset ? [u(offset)] : [];
      for (let d = outShape.length - 1; d >= 0; d--) {
        const n = outShape[d]!;
        if (n === 1) continue;
        const s = strideOf[d]!;
        const outer = outShape.slice(0, d).some((x) => x > 1);
        if (s !== 0) {
          lets.push(`let c${d} = ${outer ? `r % ${u(n)}` : 'r'};`);
          terms.push(s === 1 ? `c${d}` : `c${d} * ${u(s)}`);
        }
        if (outer) lets.push(`r = r / ${u(n)};`);
      }
      return { lets, index: terms.length ? terms.join(' + ') : '0u' };
    },
    apply(i) {
      let r = i;
      let index = offset;
      for (let d = outShape.length - 1; d >= 0; d--) {
        index += (r % outShape[d]!) * strideOf[d]!;
        r = Math.floor(r / outShape[d]!);
      }
      return index;
    },
  };
}

/** numpy broadcasting of `inShape` up to `outShape` (aligned right; size-1 axes repeat). */
export function broadcastMap(inShape: readonly number[], outShape: readonly number[]): IndexMap {
  if (inShape.length === outShape.length && inShape.every((d, k) => d === outShape[k])) return IDENTITY;
  const inStrides = strides(inShape);
  const lead = outShape.length - inShape.length;
  const s = outShape.map((_, d) => {
    const j = d - lead;
    return j < 0 || inShape[j] === 1 ? 0 : inStrides[j]!;
  });
  return strided(outShape, s);
}

/** Output axis d is input axis perm[d]. */
export function transposeMap(inShape: readonly number[], perm: readonly number[]): IndexMap {
  if (perm.every((p, d) => p === d)) return IDENTITY;
  const inStrides = strides(inShape);
  return strided(
    perm.map((p) => inShape[p]!),
    perm.map((p) => inStrides[p]!),
  );
}

/** x[start:stop] along `axis`: skip the rows outside the window in each outer block. */
export function sliceMap(inShape: readonly number[], axis: number, start: number, stop: number): IndexMap {
  const n = inShape[axis]!;
  const m = stop - start;
  if (m === n) return IDENTITY;
  const inner = numel(inShape.slice(axis + 1));
  const outer = numel(inShape.slice(0, axis));
  return {
    identity: false,
    wgsl(i) {
      const parts = [i];
      if (outer > 1) parts.push(`(${i} / ${u(m * inner)}) * ${u((n - m) * inner)}`);
      if (start) parts.push(u(start * inner));
      return { lets: [], index: parts.join(' + ') };
    },
    apply: (i) => i + Math.floor(i / (m * inner)) * (n - m) * inner + start * inner,
  };
}
