// Dtype conversion as PyTorch's .to(): float -> i32 truncates toward zero, -> bool is != 0.
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { attrDType, expectArity, isFloatDType } from './util/shape.js';
import { boolToI32 } from '../codegen/expr.js';
import { wgslType } from '../codegen/kernel.js';

export const castOp: OpDef = {
  name: 'cast',
  surface: { inputs: ['x'], attrs: { dtype: { type: 'dtype' } }, doc: 'cast(x, dtype): convert to another dtype' },
  infer(inputs, attrs) {
    expectArity('cast', inputs, 1);
    return { dtype: attrDType('cast', attrs, 'dtype'), shape: inputs[0]!.shape };
  },
  vjp(b, node, g) {
    const from = b.type(node.inputs[0]!).dtype;
    if (!isFloatDType(from) || !isFloatDType(node.type.dtype)) return [null];
    return [from === node.type.dtype ? g : b.add('cast', [g], { dtype: from })];
  },
  reference([x], _attrs, out, ctx) {
    const y = alloc(ctx, out.dtype, out.shape);
    const src = x!.data;
    const dst = y.data;
    const f = out.dtype === 'bool' ? (v: number) => (v !== 0 ? 1 : 0) : out.dtype === 'i32' ? (v: number) => Math.trunc(v) | 0 : (v: number) => v;
    for (let i = 0; i < src.length; i++) dst[i] = f(src[i]!);
    return y;
  },
  // torch's .to(): float -> int truncates toward zero, -> bool is != 0, as the reference.
  torch: { expr: (c) => `${c.inputs[0]!}.to(${c.dtype(c.output.dtype)})` },
  kernel: {
    kind: 'elementwise',
    expr([x], types) {
      const from = types.inputs[0]!;
      const to = types.output;
      // WGSL's f32 -> i32 conversion truncates toward zero, as Math.trunc does.
      if (to === 'bool') return from === 'bool' ? x! : boolToI32(`${x} != ${wgslType(from) === 'f32' ? '0.0' : '0'}`);
      return wgslType(from) === wgslType(to) ? x! : `${wgslType(to)}(${x})`;
    },
  },
};
