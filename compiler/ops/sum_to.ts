// Backward of broadcasting: sums a tensor down to a shape it was broadcast from.
import { shapesEqual, shapeToString } from '../ir/dims.js';
import type { OpDef } from './types.js';
import { alloc, broadcastIndex } from './util/ref.js';
import { attrDims, broadcastShapes, expectArity, fail, isFloatDType, typeToString } from './util/shape.js';
import { lowerReduce } from './wgsl/reduce.js';

export const sumToOp: OpDef = {
  name: 'sum_to',
  fusion: 'custom',
  infer(inputs, attrs) {
    expectArity('sum_to', inputs, 1);
    const x = inputs[0]!;
    const shape = attrDims('sum_to', attrs, 'shape');
    if (!isFloatDType(x.dtype)) fail(`sum_to: x must be a float tensor, got ${typeToString(x)}`, 0);
    const back = broadcastShapes('sum_to', [shape, x.shape], ['shape', 'x']);
    if (!shapesEqual(back, x.shape)) fail(`sum_to: ${shapeToString(shape)} does not broadcast to x ${shapeToString(x.shape)}`, 0);
    return { dtype: x.dtype, shape };
  },
  vjp: (b, node, g) => [b.add('broadcast', [g], { shape: [...b.type(node.inputs[0]!).shape] })],
  reference([x], _attrs, out, ctx) {
    const map = broadcastIndex(out.shape, x!.shape);
    const y = alloc(ctx, out.dtype, out.shape);
    const acc = new Float64Array(y.data.length);
    const src = x!.data;
    for (let i = 0; i < src.length; i++) {
      const j = map ? map[i]! : i;
      acc[j] = acc[j]! + src[i]!;
    }
    y.data.set(acc);
    return y;
  },
  torch: {
    expr: (c) => `_sum_to(${c.inputs[0]!}, ${c.shape(attrDims('sum_to', c.attrs, 'shape'))})`,
    helpers: {
      _sum_to: `def _sum_to(x, shape):
    lead = x.dim() - len(shape)
    dims = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and x.shape[lead + i] != 1)
    y = x.sum(dim=dims, keepdim=True) if dims else x
    return y.reshape(shape)`,
    },
  },
  kernel: {
    kind: 'custom',
    lower(ctx) {
      // Summed axes: those the output lacks (leading) or holds as 1, aligned right.
      const x = ctx.inputs[0]!.shape;
      const lead = x.length - ctx.output.shape.length;
      return lowerReduce(ctx, 'sum', x, (a) => a < lead || ctx.output.shape[a - lead] === 1);
    },
  },
};
