// Explicit numpy-style broadcast to a shape (the class token repeated over the batch).
import { shapesEqual, shapeToString } from '../ir/dims.js';
import type { OpDef } from './types.js';
import { broadcastMap } from '../codegen/views.js';
import { alloc, broadcastIndex } from './util/ref.js';
import { unbroadcast } from './util/grad.js';
import { attrDims, broadcastShapes, expectArity, fail, isFloatDType } from './util/shape.js';

export const broadcastOp: OpDef = {
  name: 'broadcast',
  fusion: 'view',
  surface: { inputs: ['x'], attrs: { shape: { type: 'dims' } }, doc: 'broadcast(x, shape): repeat size-1 and missing leading dims up to shape' },
  infer(inputs, attrs) {
    expectArity('broadcast', inputs, 1);
    const x = inputs[0]!;
    const shape = attrDims('broadcast', attrs, 'shape');
    if (shape.length < x.shape.length)
      fail(`broadcast: cannot broadcast x ${shapeToString(x.shape)} to the lower-rank shape ${shapeToString(shape)}`, 0);
    const out = broadcastShapes('broadcast', [x.shape, shape], ['x', 'shape']);
    if (!shapesEqual(out, shape)) fail(`broadcast: x ${shapeToString(x.shape)} does not broadcast to ${shapeToString(shape)}`, 0);
    return { dtype: x.dtype, shape };
  },
  vjp: (b, node, g) => (isFloatDType(node.type.dtype) ? [unbroadcast(b, g, b.type(node.inputs[0]!).shape)] : [null]),
  reference([x], _attrs, out, ctx) {
    const map = broadcastIndex(x!.shape, out.shape);
    if (!map) return x!;
    const y = alloc(ctx, out.dtype, out.shape);
    const src = x!.data;
    for (let i = 0; i < y.data.length; i++) y.data[i] = src[map[i]!]!;
    return y;
  },
  // An index map in the reader's accessor (compiler/codegen/views.ts); never a kernel of its own.
  torch: { expr: (c) => `${c.inputs[0]!}.expand(${c.shape(attrDims('broadcast', c.attrs, 'shape'))})` },
  kernel: { kind: 'view', map: broadcastMap },
};
