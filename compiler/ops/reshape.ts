// Reshape to a fully explicit shape (the checker resolves 0 and -1 before building the node).
import { dimsEqual, numelDims, shapeToString, dimToString } from '../ir/dims.js';
import type { OpDef } from './types.js';
import { IDENTITY } from '../codegen/views.js';
import { tensor } from './util/ref.js';
import { attrDims, expectArity, fail, isFloatDType } from './util/shape.js';

export const reshapeOp: OpDef = {
  name: 'reshape',
  fusion: 'view',
  surface: { inputs: ['x'], attrs: { shape: { type: 'dims' } }, doc: 'reshape(x, shape): same elements, new shape (0 keeps a dim, -1 infers one)' },
  infer(inputs, attrs) {
    expectArity('reshape', inputs, 1);
    const x = inputs[0]!;
    const shape = attrDims('reshape', attrs, 'shape');
    const a = numelDims(x.shape);
    const c = numelDims(shape);
    if (!dimsEqual(a, c))
      fail(`reshape: x ${shapeToString(x.shape)} has ${dimToString(a)} elements but ${shapeToString(shape)} has ${dimToString(c)}`, 0);
    return { dtype: x.dtype, shape };
  },
  vjp: (b, node, g) => (isFloatDType(node.type.dtype) ? [b.add('reshape', [g], { shape: [...b.type(node.inputs[0]!).shape] })] : [null]),
  // Row-major data is unchanged by a reshape; host tensors are immutable, so share it.
  reference: ([x], _attrs, out) => tensor(x!.dtype, out.shape, x!.data),
  // Row-major order is unchanged: the fused code reads the same element index.
  torch: { expr: (c) => `${c.inputs[0]!}.reshape(${c.shape(attrDims('reshape', c.attrs, 'shape'))})` },
  kernel: { kind: 'view', map: () => IDENTITY, flat: true },
};
