// x[start:stop] along one axis (step 1). start and stop are explicit dims: the checker turns
// `h[:, 1:, :]` and `z[:, :-1]` into (1, T) and (0, T - 1) before building the node.
import { dimsEqual, isConst, subDims, dimToString, shapeToString, type Dim } from '../ir/dims.js';
import type { OpDef } from './types.js';
import { sliceMap } from '../codegen/views.js';
import { alloc, splitAt } from './util/ref.js';
import { zeros } from './util/grad.js';
import { attrDim, attrInt, expectArity, fail, isFloatDType, normAxis } from './util/shape.js';

function negative(d: Dim): boolean {
  return isConst(d) && d < 0;
}

export const sliceOp: OpDef = {
  name: 'slice',
  fusion: 'view',
  surface: {
    inputs: ['x'],
    attrs: { axis: { type: 'int' }, start: { type: 'int' }, stop: { type: 'int' } },
    doc: 'slice(x, axis, start, stop): x[start:stop] along axis (what x[a:b] builds)',
  },
  infer(inputs, attrs) {
    expectArity('slice', inputs, 1);
    const x = inputs[0]!;
    const axis = normAxis('slice', attrInt('slice', attrs, 'axis'), x.shape.length);
    const start = attrDim('slice', attrs, 'start');
    const stop = attrDim('slice', attrs, 'stop');
    const dim = x.shape[axis]!;
    const size = subDims(stop, start);
    if (negative(start) || negative(size) || negative(subDims(dim, stop)))
      fail(
        `slice: [${dimToString(start)}:${dimToString(stop)}] is out of range for axis ${axis} of x ${shapeToString(x.shape)} (size ${dimToString(dim)})`,
        0,
      );
    const shape = [...x.shape];
    shape[axis] = size;
    return { dtype: x.dtype, shape };
  },
  vjp(b, node, g) {
    if (!isFloatDType(node.type.dtype)) return [null];
    // Pad the cotangent back with zeros on both sides (concat of fills keeps it symbolic).
    const x = b.type(node.inputs[0]!);
    const axis = normAxis('slice', attrInt('slice', node.attrs, 'axis'), x.shape.length);
    const start = attrDim('slice', node.attrs, 'start');
    const after = subDims(x.shape[axis]!, attrDim('slice', node.attrs, 'stop'));
    const parts: number[] = [];
    const pad = (n: Dim): void => {
      if (dimsEqual(n, 0)) return;
      const shape = [...x.shape];
      shape[axis] = n;
      parts.push(zeros(b, shape, x.dtype));
    };
    pad(start);
    parts.push(g);
    pad(after);
    return [parts.length === 1 ? g : b.add('concat', parts, { axis })];
  },
  reference([x], attrs, out, ctx) {
    const axis = normAxis('slice', attrInt('slice', attrs, 'axis'), x!.shape.length);
    const start = attrs['start'] as number;
    const { outer, n, inner } = splitAt(x!.shape, axis);
    const m = out.shape[axis]!;
    const y = alloc(ctx, out.dtype, out.shape);
    for (let o = 0; o < outer; o++) {
      const from = (o * n + start) * inner;
      y.data.set(x!.data.subarray(from, from + m * inner), o * m * inner);
    }
    return y;
  },
  // An index map in the reader's accessor (compiler/codegen/views.ts); never a kernel of its own.
  torch: {
    expr: (c) => {
      const axis = normAxis('slice', attrInt('slice', c.attrs, 'axis'), c.inputTypes[0]!.shape.length);
      const start = attrDim('slice', c.attrs, 'start');
      return `${c.inputs[0]!}.narrow(${axis}, ${c.dim(start)}, ${c.dim(subDims(attrDim('slice', c.attrs, 'stop'), start))})`;
    },
  },
  kernel: {
    kind: 'view',
    map(inShape, _out, attrs) {
      const a = attrs['axis'] as number;
      return sliceMap(inShape, a < 0 ? a + inShape.length : a, attrs['start'] as number, attrs['stop'] as number);
    },
  },
};
