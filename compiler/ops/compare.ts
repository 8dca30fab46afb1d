// Comparisons with broadcasting; bool results, so no gradient flows through them.
import type { OpDef } from './types.js';
import { binaryInfer } from './binary.js';
import { expectArity, fail, isFloatDType, typeToString } from './util/shape.js';
import { arg, cmp, isfinite } from './expr/ir.js';
import { fromExpr } from './expr/op.js';

const SYMBOL = { eq: '==', ne: '!=', lt: '<', le: '<=', gt: '>', ge: '>=' } as const;

// Bool is i32 0/1 in kernels, as in the reference's Int32Array (./expr/wgsl.ts writes it so).
export const compareOps: readonly OpDef[] = (Object.keys(SYMBOL) as (keyof typeof SYMBOL)[]).map((name) => ({
  name,
  surface: { inputs: ['a', 'b'], attrs: {}, doc: `${name}(a, b): a ${SYMBOL[name]} b as bool, broadcasting` },
  infer(inputs) {
    return { dtype: 'bool', shape: binaryInfer(name, inputs, true).shape };
  },
  ...fromExpr(() => cmp(name, arg(0), arg(1))),
}));

/**
 * isfinite(x): true where x is neither NaN nor +-inf (torch.isfinite). The kernel tests the
 * exponent bits: WGSL lets compilers assume floats are finite, so `x - x == 0` could be folded
 * to true. What the optimiser step uses to leave the state alone after a non-finite loss or
 * gradient (compiler/passes/optimizer.ts).
 */
export const isfiniteOp: OpDef = {
  name: 'isfinite',
  surface: { inputs: ['x'], attrs: {}, doc: 'isfinite(x): x is neither NaN nor +-inf, as bool' },
  infer(inputs) {
    expectArity('isfinite', inputs, 1);
    const x = inputs[0]!;
    if (!isFloatDType(x.dtype)) fail(`isfinite: x must be a float tensor, got ${typeToString(x)}`, 0);
    return { dtype: 'bool', shape: x.shape };
  },
  ...fromExpr(() => isfinite(arg(0))),
};
