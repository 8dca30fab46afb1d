// Dtype conversion as PyTorch's .to(): float -> i32 truncates toward zero, -> bool is != 0.
import type { OpDef } from './types.js';
import { attrDType, expectArity, isFloatDType } from './util/shape.js';
import { arg, cast } from './expr/ir.js';
import { fromExpr } from './expr/op.js';

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
  // torch's .to(): float -> int truncates toward zero, -> bool is != 0 (the IR's cast).
  ...fromExpr((_attrs, _inputs, to) => cast(arg(0), to)),
};
