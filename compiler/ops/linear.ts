// torch.nn.functional.linear: x @ weight^T + bias with weight [out, in], x [..., in].
import { dimsEqual, dimToString, numelDims, shapeToString } from '../ir/dims.js';
import type { TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { LINEAR_FORM, lowerLinear } from '../codegen/matmul-op.js';
import { alloc } from './util/ref.js';
import { expectArity, expectFloat, expectRank, fail, typeToString } from './util/shape.js';

export const linearOp: OpDef = {
  name: 'linear',
  fusion: 'matmul',
  surface: { inputs: ['x', 'weight', 'bias?'], attrs: {}, doc: 'linear(x, weight, bias?): x @ weight^T + bias, weight [out, in]' },
  infer(inputs) {
    expectArity('linear', inputs, 2, 3);
    const [x, w, bias] = inputs as [TensorType, TensorType, TensorType | undefined];
    expectFloat('linear', x, 'x', 0);
    expectRank('linear', w, 'weight', 1, 2);
    if (x.shape.length < 1) fail(`linear: x must have rank >= 1, got ${typeToString(x)}`, 0);
    if (w.dtype !== x.dtype) fail(`linear: dtypes differ: x is ${x.dtype}, weight is ${w.dtype}`, 1);
    const xin = x.shape[x.shape.length - 1]!;
    if (!dimsEqual(xin, w.shape[1]!))
      fail(`linear: x has ${dimToString(xin)} features (last dim) but weight expects ${dimToString(w.shape[1]!)} (weight dim 1)`, 1);
    const outDim = w.shape[0]!;
    if (bias) {
      if (bias.dtype !== x.dtype) fail(`linear: dtypes differ: x is ${x.dtype}, bias is ${bias.dtype}`, 2);
      if (bias.shape.length !== 1 || !dimsEqual(bias.shape[0]!, outDim))
        fail(`linear: bias ${shapeToString(bias.shape)} must be [${dimToString(outDim)}] (weight dim 0)`, 2);
    }
    return { dtype: x.dtype, shape: [...x.shape.slice(0, -1), outDim] };
  },
  vjp(b, node, g) {
    const [x, w, bias] = node.inputs as [number, number, number | undefined];
    const xs = b.type(x).shape;
    const [outDim, inDim] = b.type(w).shape as [typeof xs[0], typeof xs[0]];
    const rows = numelDims(xs.slice(0, -1));
    // dx = g @ W, written as linear(g, W^T) so it holds for any rank of x.
    const gx = b.add('linear', [g, b.add('transpose', [w], { perm: [1, 0] })]);
    const g2 = b.add('reshape', [g], { shape: [rows, outDim] });
    const x2 = b.add('reshape', [x], { shape: [rows, inDim] });
    const gw = b.add('matmul', [b.add('transpose', [g2], { perm: [1, 0] }), x2]);
    const grads: (number | null)[] = [gx, gw];
    if (bias !== undefined) grads.push(b.add('sum_to', [g], { shape: [outDim] }));
    return grads;
  },
  reference([x, w, bias], _attrs, out, ctx) {
    const [O, I] = w!.shape as [number, number];
    const rows = x!.data.length / I;
    const y = alloc(ctx, out.dtype, out.shape);
    const xs = x!.data;
    const ws = w!.data;
    const bs = bias?.data;
    for (let r = 0; r < rows; r++) {
      const xo = r * I;
      for (let o = 0; o < O; o++) {
        const wo = o * I;
        let s = bs ? bs[o]! : 0;
        for (let i = 0; i < I; i++) s += xs[xo + i]! * ws[wo + i]!;
        y.data[r * O + o] = s;
      }
    }
    return y;
  },
  // The tuned generator (compiler/codegen/matmul.ts) behind the load/store contract.
  torch: { expr: (c) => `F.linear(${c.inputs.join(', ')})` },
  kernel: { kind: 'custom', lower: lowerLinear, matmul: LINEAR_FORM },
};
