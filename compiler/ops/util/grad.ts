// Small graph-building helpers shared by the VJP rules.
import { shapesEqual, type Dim } from '../../ir/dims.js';
import type { GraphBuilder } from '../../ir/builder.js';
import type { DType } from '../../ir/graph.js';

/** Sums a broadcast cotangent back down to the shape of the input it came from. */
export function unbroadcast(b: GraphBuilder, g: number, shape: readonly Dim[]): number {
  return shapesEqual(b.type(g).shape, shape) ? g : b.add('sum_to', [g], { shape: [...shape] });
}

export function scalar(b: GraphBuilder, value: number, dtype: DType): number {
  return b.add('fill', [], { value, shape: [], dtype });
}

export function zeros(b: GraphBuilder, shape: readonly Dim[], dtype: DType): number {
  return b.add('fill', [], { value: 0, shape: [...shape], dtype });
}
