// sum, mean and max over a set of axes share one shape rule and one accumulation loop, so they
// live in one table. Negative axes count from the end; no axis at all reduces everything.
import { isConst, mulDims, type Dim } from '../ir/dims.js';
import type { GraphBuilder } from '../ir/builder.js';
import type { Attrs, Node, TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { alloc, broadcastIndex } from './util/ref.js';
import { attrBool, expectArity, fail, isFloatDType, reduceAxes, typeToString } from './util/shape.js';
import { lowerReduce } from './wgsl/reduce.js';
import { numel } from '../../runtime/tensor.js';

type Kind = 'sum' | 'mean' | 'max';

function keptShape(shape: readonly Dim[], axes: readonly number[]): Dim[] {
  return shape.map((d, i) => (axes.includes(i) ? 1 : d));
}

function reduceInfer(kind: Kind, inputs: readonly TensorType[], attrs: Attrs): TensorType {
  expectArity(kind, inputs, 1);
  const x = inputs[0]!;
  if (x.dtype === 'bool' || (kind === 'mean' && !isFloatDType(x.dtype)))
    fail(`${kind}: x must be a ${kind === 'mean' ? 'float' : 'float or i32'} tensor, got ${typeToString(x)}`, 0);
  const axes = reduceAxes(kind, attrs, x.shape.length);
  const keep = attrBool(kind, attrs, 'keepdims', false);
  const shape = keep ? keptShape(x.shape, axes) : x.shape.filter((_d, i) => !axes.includes(i));
  return { dtype: x.dtype, shape };
}

/** The cotangent reshaped to the keepdims shape, so that it broadcasts against x. */
function keptCotangent(b: GraphBuilder, node: Node, g: number): { g: number; axes: number[]; x: TensorType } {
  const x = b.type(node.inputs[0]!);
  const axes = reduceAxes(node.op, node.attrs, x.shape.length);
  const keep = attrBool(node.op, node.attrs, 'keepdims', false);
  return { g: keep ? g : b.add('reshape', [g], { shape: keptShape(x.shape, axes) }), axes, x };
}

const VJP: Record<Kind, (b: GraphBuilder, node: Node, g: number) => number> = {
  sum(b, node, g) {
    const k = keptCotangent(b, node, g);
    return b.add('broadcast', [k.g], { shape: [...k.x.shape] });
  },
  mean(b, node, g) {
    const k = keptCotangent(b, node, g);
    const count = k.axes.reduce<Dim>((acc, a) => mulDims(acc, k.x.shape[a]!), 1);
    const scaled = isConst(count)
      ? b.add('mul', [k.g, b.add('fill', [], { value: 1 / count, shape: [], dtype: k.x.dtype })])
      : b.add('div', [k.g, b.add('fill', [], { value: count, shape: [], dtype: k.x.dtype })]);
    return b.add('broadcast', [scaled], { shape: [...k.x.shape] });
  },
  max(b, node, g) {
    // torch.amax: the gradient is shared evenly between tied maxima.
    const k = keptCotangent(b, node, g);
    const x = node.inputs[0]!;
    const m = node.attrs['keepdims'] === true ? node.id : b.add('reshape', [node.id], { shape: keptShape(k.x.shape, k.axes) });
    const hit = b.add('cast', [b.add('eq', [x, m])], { dtype: k.x.dtype });
    const count = b.add('sum', [hit], { axes: k.axes, keepdims: true });
    return b.add('mul', [hit, b.add('div', [k.g, count])]);
  },
};

function reduceOp(kind: Kind): OpDef {
  const doc = {
    sum: 'sum(x, axis = null, keepdims = false): sum over axis (an int or a list; null: all)',
    mean: 'mean(x, axis = null, keepdims = false): mean over axis (an int or a list; null: all)',
    max: 'max(x, axis = null, keepdims = false): maximum over axis (an int or a list; null: all)',
  }[kind];
  return {
    name: kind,
    fusion: 'custom',
    surface: { inputs: ['x'], attrs: { axis: { type: 'ints', default: null }, keepdims: { type: 'bool', default: false } }, doc },
    infer: (inputs, attrs) => reduceInfer(kind, inputs, attrs),
    vjp: (b, node, g) => (isFloatDType(node.type.dtype) ? [VJP[kind](b, node, g)] : [null]),
    // A mean to a scalar (a loss) averages over every element of x: count them as ones summed,
    // which holds for symbolic sizes too.
    ...(kind === 'mean'
      ? {
          count(b: GraphBuilder, node: Node): number {
            const x = b.type(node.inputs[0]!);
            if (node.type.shape.length !== 0) throw new Error(`mean: only a mean to a scalar has one item count (this one keeps [${node.type.shape.join(', ')}])`);
            const ones = b.add('broadcast', [b.add('fill', [], { value: 1, shape: [], dtype: 'f32' })], { shape: [...x.shape] });
            return b.add('sum', [ones], { axes: null, keepdims: false });
          },
        }
      : {}),
    reference([x], attrs, out, ctx) {
      const axes = reduceAxes(kind, attrs, x!.shape.length);
      const kept = x!.shape.map((d, i) => (axes.includes(i) ? 1 : d));
      const map = broadcastIndex(kept, x!.shape);
      const size = numel(out.shape);
      const acc = new Float64Array(size).fill(kind === 'max' ? -Infinity : 0);
      const src = x!.data;
      if (kind === 'max') {
        for (let i = 0; i < src.length; i++) {
          const j = map ? map[i]! : i;
          const v = src[i]!;
          // NaN propagates, as torch.amax does.
          if (v > acc[j]! || Number.isNaN(v)) acc[j] = v;
        }
      } else {
        for (let i = 0; i < src.length; i++) {
          const j = map ? map[i]! : i;
          acc[j] = acc[j]! + src[i]!;
        }
      }
      if (kind === 'mean') {
        const n = src.length / Math.max(size, 1);
        for (let j = 0; j < size; j++) acc[j] = acc[j]! / n;
      }
      const y = alloc(ctx, out.dtype, out.shape);
      if (out.dtype === 'i32') for (let j = 0; j < size; j++) y.data[j] = acc[j]! | 0;
      else y.data.set(acc);
      return y;
    },
    torch: {
      expr: (c) => {
        const axes = reduceAxes(kind, c.attrs, c.inputTypes[0]!.shape.length);
        const x = c.inputs[0]!;
        if (axes.length === 0) return x;
        const keep = c.attrs['keepdims'] === true ? 'True' : 'False';
        const fn = { sum: 'torch.sum', mean: 'torch.mean', max: 'torch.amax' }[kind];
        return `${fn}(${x}, dim=(${axes.join(', ')},), keepdim=${keep})`;
      },
    },
    kernel: {
      kind: 'custom',
      lower(ctx) {
        const shape = ctx.inputs[0]!.shape;
        const axes = reduceAxes(kind, ctx.attrs, shape.length);
        return lowerReduce(ctx, kind, shape, (a) => axes.includes(a));
      },
    },
  };
}

export const reduceOps: readonly OpDef[] = (['sum', 'mean', 'max'] as const).map(reduceOp);
