// A constant tensor. `value` may be a dim (mean's VJP divides by a symbolic count); the
// executor evaluates it like any dim-valued attribute.
import type { OpDef } from './types.js';
import type { Dim } from '../ir/dims.js';
import { alloc } from './util/ref.js';
import { attrDType, attrDims, expectArity, fail, isDim } from './util/shape.js';
import { lit } from './expr/ir.js';

export const fillOp: OpDef = {
  name: 'fill',
  fusion: 'const',
  surface: {
    inputs: [],
    attrs: { value: { type: 'number' }, shape: { type: 'dims' }, dtype: { type: 'dtype', default: 'f32' } },
    doc: 'fill(value, shape, dtype = f32): a tensor of one value',
  },
  infer(inputs, attrs) {
    expectArity('fill', inputs, 0);
    if (!isDim(attrs['value'])) fail(`fill: value must be a number, got ${JSON.stringify(attrs['value'])}`);
    const dtype = attrDType('fill', attrs, 'dtype', 'f32');
    const v = attrs['value'];
    if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16' && typeof v === 'number' && !Number.isInteger(v))
      fail(`fill: value ${v} is not an integer but dtype is ${dtype}`);
    return { dtype, shape: attrDims('fill', attrs, 'shape') };
  },
  reference(_inputs, attrs, out, ctx) {
    const v = attrs['value'] as number;
    const y = alloc(ctx, out.dtype, out.shape);
    y.data.fill(out.dtype === 'bool' ? (v !== 0 ? 1 : 0) : v);
    return y;
  },
  // A literal: fused code inlines it into every reader, so a fill never needs a buffer.
  torch: { expr: (c) => `torch.full(${c.shape(attrDims('fill', c.attrs, 'shape'))}, ${typeof c.attrs['value'] === 'number' ? c.num(c.attrs['value']) : c.dim(c.attrs['value'] as Dim)}, dtype=${c.dtype(c.output.dtype)}, device=dev)` },
  kernel: {
    kind: 'elementwise',
    ir(attrs, _inputs, output) {
      const v = attrs['value'];
      if (typeof v !== 'number') throw new Error(`fill: value ${JSON.stringify(v)} is not a number (symbolic dims must be bound first)`);
      return lit(output === 'bool' ? (v !== 0 ? 1 : 0) : v);
    },
  },
};
