// Backward of softmax / log_softmax from the forward output y and the cotangent g:
// softmax: y * (g - sum(g * y)); log_softmax: g - exp(y) * sum(g).
import { shapesEqual } from '../ir/dims.js';
import type { TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { alloc, splitAt } from './util/ref.js';
import { attrBool, attrInt, expectArity, fail, normAxis, typeToString } from './util/shape.js';
import { rowKernel, rowLanes, rows, rowSum } from './wgsl/rows.js';

export const softmaxGradOp: OpDef = {
  name: 'softmax_grad',
  fusion: 'custom',
  infer(inputs, attrs) {
    expectArity('softmax_grad', inputs, 2);
    const [y, g] = inputs as [TensorType, TensorType];
    if (y.dtype !== g.dtype || !shapesEqual(y.shape, g.shape))
      fail(`softmax_grad: y ${typeToString(y)} and g ${typeToString(g)} must have the same type`, 1);
    normAxis('softmax_grad', attrInt('softmax_grad', attrs, 'axis'), y.shape.length);
    attrBool('softmax_grad', attrs, 'log');
    return y;
  },
  reference([y, g], attrs, out, ctx) {
    const axis = normAxis('softmax_grad', attrInt('softmax_grad', attrs, 'axis'), out.shape.length);
    const log = attrBool('softmax_grad', attrs, 'log');
    const { outer, n, inner } = splitAt(out.shape, axis);
    const dx = alloc(ctx, out.dtype, out.shape);
    const ys = y!.data;
    const gs = g!.data;
    for (let o = 0; o < outer; o++)
      for (let j = 0; j < inner; j++) {
        const base = o * n * inner + j;
        let s = 0;
        for (let i = 0; i < n; i++) s += log ? gs[base + i * inner]! : gs[base + i * inner]! * ys[base + i * inner]!;
        for (let i = 0; i < n; i++) {
          const at = base + i * inner;
          dx.data[at] = log ? gs[at]! - Math.exp(ys[at]!) * s : ys[at]! * (gs[at]! - s);
        }
      }
    return dx;
  },
  torch: {
    expr: (c) => {
      const [y, g] = c.inputs as [string, string];
      const axis = attrInt('softmax_grad', c.attrs, 'axis');
      return attrBool('softmax_grad', c.attrs, 'log') ? `(${g} - torch.exp(${y}) * ${g}.sum(dim=${axis}, keepdim=True))` : `(${y} * (${g} - (${g} * ${y}).sum(dim=${axis}, keepdim=True)))`;
    },
  },
  kernel: {
    kind: 'custom',
    lower(ctx) {
      const axis = normAxis('softmax_grad', attrInt('softmax_grad', ctx.attrs, 'axis'), ctx.output.shape.length);
      const log = attrBool('softmax_grad', ctx.attrs, 'log');
      const { outer, n, inner } = splitAt(ctx.output.shape, axis);
      const r = rows(rowLanes(ctx, outer * inner, n), outer * inner, n, inner);
      const sum = rowSum(r, 's', log ? 'load1(at)' : 'load1(at) * load0(at)');
      const write = log ? '    store(at, load1(at) - exp(load0(at)) * s);' : '    let y = load0(at);\n    store(at, y * (load1(at) - s));';
      return rowKernel(ctx, log ? 'log' : 'softmax', r, `${sum}\n${r.loop(write)}`);
    },
  },
};
