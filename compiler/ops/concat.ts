// Concatenation along one axis; every other dim must agree.
import { addDims, dimsEqual, dimToString, shapeToString, type Dim } from '../ir/dims.js';
import type { OpDef } from './types.js';
import { alloc, splitAt } from './util/ref.js';
import { attrInt, expectArity, fail, isFloatDType, normAxis } from './util/shape.js';

export const concatOp: OpDef = {
  name: 'concat',
  surface: { inputs: ['inputs*'], attrs: { axis: { type: 'int', default: 0 } }, doc: 'concat([a, b, ...], axis = 0): join along axis' },
  infer(inputs, attrs) {
    expectArity('concat', inputs, 1, Infinity);
    const first = inputs[0]!;
    const rank = first.shape.length;
    const axis = normAxis('concat', attrInt('concat', attrs, 'axis', 0), rank);
    let total: Dim = 0;
    inputs.forEach((t, k) => {
      if (t.dtype !== first.dtype) fail(`concat: dtypes differ: input 0 is ${first.dtype}, input ${k} is ${t.dtype}`, k);
      if (t.shape.length !== rank)
        fail(`concat: input 0 ${shapeToString(first.shape)} and input ${k} ${shapeToString(t.shape)} differ in rank`, k);
      t.shape.forEach((d, i) => {
        if (i !== axis && !dimsEqual(d, first.shape[i]!))
          fail(
            `concat: input 0 ${shapeToString(first.shape)} and input ${k} ${shapeToString(t.shape)} differ at axis ${i} ` +
              `(${dimToString(first.shape[i]!)} vs ${dimToString(d)}); only axis ${axis} may differ`,
            k,
          );
      });
      total = addDims(total, t.shape[axis]!);
    });
    const shape = [...first.shape];
    shape[axis] = total;
    return { dtype: first.dtype, shape };
  },
  vjp(b, node, g) {
    if (!isFloatDType(node.type.dtype)) return node.inputs.map(() => null);
    const axis = normAxis('concat', attrInt('concat', node.attrs, 'axis', 0), node.type.shape.length);
    let start: Dim = 0;
    return node.inputs.map((i) => {
      const stop = addDims(start, b.type(i).shape[axis]!);
      const s = b.add('slice', [g], { axis, start, stop });
      start = stop;
      return s;
    });
  },
  reference(inputs, attrs, out, ctx) {
    const axis = normAxis('concat', attrInt('concat', attrs, 'axis', 0), out.shape.length);
    const y = alloc(ctx, out.dtype, out.shape);
    const { outer, n: total, inner } = splitAt(out.shape, axis);
    let at = 0;
    for (const x of inputs) {
      const n = x.shape[axis]!;
      for (let o = 0; o < outer; o++) y.data.set(x.data.subarray(o * n * inner, (o + 1) * n * inner), (o * total + at) * inner);
      at += n;
    }
    return y;
  },
};
