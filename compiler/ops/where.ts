// where(cond, a, b) with broadcasting over all three; the condition gets no gradient.
import type { TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { unbroadcast, zeros } from './util/grad.js';
import { broadcastShapes, expectArity, expectInt, fail, isFloatDType, typeToString } from './util/shape.js';
import { arg, select } from './expr/ir.js';
import { fromExpr } from './expr/op.js';

export const whereOp: OpDef = {
  name: 'where',
  surface: { inputs: ['cond', 'a', 'b'], attrs: {}, doc: 'where(cond, a, b): a where cond is true, else b, broadcasting' },
  infer(inputs) {
    expectArity('where', inputs, 3);
    const [c, a, b] = inputs as [TensorType, TensorType, TensorType];
    expectInt('where', c, 'cond', 0, true);
    if (a.dtype !== b.dtype) fail(`where: dtypes differ: a is ${typeToString(a)}, b is ${typeToString(b)}`, 2);
    return { dtype: a.dtype, shape: broadcastShapes('where', [c.shape, a.shape, b.shape], ['cond', 'a', 'b']) };
  },
  vjp(b, node, g) {
    if (!isFloatDType(node.type.dtype)) return [null, null, null];
    const [c, x, y] = node.inputs as [number, number, number];
    const z = zeros(b, [], node.type.dtype);
    return [
      null,
      unbroadcast(b, b.add('where', [c, g, z]), b.type(x).shape),
      unbroadcast(b, b.add('where', [c, z, g]), b.type(y).shape),
    ];
  },
  ...fromExpr(() => select(arg(0), arg(1), arg(2))),
};
