// softmax and log_softmax along one axis: the same max-shifted f64 pass, so one table. Their
// VJPs are one backward op (softmax_grad) that reads only the forward output.
import type { OpDef } from './types.js';
import { alloc, logSumExp, splitAt } from './util/ref.js';
import { attrInt, expectArity, expectFloat, normAxis } from './util/shape.js';
import { onlineLse, rowKernel, rowLanes, rows } from './wgsl/rows.js';

function softmaxOp(log: boolean): OpDef {
  const name = log ? 'log_softmax' : 'softmax';
  return {
    name,
    fusion: 'custom',
    surface: {
      inputs: ['x'],
      attrs: { axis: { type: 'int', default: -1 } },
      doc: log ? 'log_softmax(x, axis = -1): x - logsumexp(x) along axis' : 'softmax(x, axis = -1): exp(x) / sum(exp(x)) along axis',
    },
    infer(inputs, attrs) {
      expectArity(name, inputs, 1);
      const x = inputs[0]!;
      expectFloat(name, x, 'x', 0);
      normAxis(name, attrInt(name, attrs, 'axis', -1), x.shape.length);
      return x;
    },
    vjp: (b, node, g) => [b.add('softmax_grad', [node.id, g], { axis: attrInt(name, node.attrs, 'axis', -1), log })],
    reference([x], attrs, out, ctx) {
      const axis = normAxis(name, attrInt(name, attrs, 'axis', -1), out.shape.length);
      const { outer, n, inner } = splitAt(out.shape, axis);
      const y = alloc(ctx, out.dtype, out.shape);
      const src = x!.data;
      for (let o = 0; o < outer; o++)
        for (let j = 0; j < inner; j++) {
          const base = o * n * inner + j;
          const lse = logSumExp(src, base, n, inner);
          for (let i = 0; i < n; i++) {
            const at = base + i * inner;
            y.data[at] = log ? src[at]! - lse : Math.exp(src[at]! - lse);
          }
        }
      return y;
    },
    torch: { expr: (c) => `${log ? 'F.log_softmax' : 'F.softmax'}(${c.inputs[0]!}, dim=${attrInt(name, c.attrs, 'axis', -1)})` },
    kernel: {
      kind: 'custom',
      lower(ctx) {
        const axis = normAxis(name, attrInt(name, ctx.attrs, 'axis', -1), ctx.output.shape.length);
        const { outer, n, inner } = splitAt(ctx.output.shape, axis);
        const r = rows(rowLanes(ctx, outer * inner, n), outer * inner, n, inner);
        // Two reads per element: one online max/sum pass, one writing pass.
        const write = log ? '    store(at, (load0(at) - m) - ls);' : '    store(at, exp(load0(at) - m) / s);';
        return rowKernel(ctx, name, r, `${onlineLse(r, 'load0(at)')}\n  let ls = log(s);\n${r.loop(write)}`);
      },
    },
  };
}

export const softmaxOps: readonly OpDef[] = [softmaxOp(false), softmaxOp(true)];
