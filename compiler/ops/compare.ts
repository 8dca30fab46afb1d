// Comparisons with broadcasting; bool results, so no gradient flows through them.
import type { OpDef } from './types.js';
import { binaryApply, binaryInfer } from './binary.js';
import { alloc } from './util/ref.js';
import { boolToI32 } from '../codegen/expr.js';
import { expectArity, fail, isFloatDType, typeToString } from './util/shape.js';

const COMPARE: Readonly<Record<string, (a: number, b: number) => boolean>> = {
  eq: (a, b) => a === b,
  ne: (a, b) => a !== b,
  lt: (a, b) => a < b,
  le: (a, b) => a <= b,
  gt: (a, b) => a > b,
  ge: (a, b) => a >= b,
};

const SYMBOL: Readonly<Record<string, string>> = { eq: '==', ne: '!=', lt: '<', le: '<=', gt: '>', ge: '>=' };

export const compareOps: readonly OpDef[] = Object.entries(COMPARE).map(([name, f]) => ({
  name,
  surface: { inputs: ['a', 'b'], attrs: {}, doc: `${name}(a, b): a ${SYMBOL[name]} b as bool, broadcasting` },
  infer(inputs) {
    return { dtype: 'bool', shape: binaryInfer(name, inputs, true).shape };
  },
  reference([a, b], _attrs, out, ctx) {
    const y = alloc(ctx, 'bool', out.shape);
    binaryApply(a!, b!, out.shape, y.data, (x, z) => (f(x, z) ? 1 : 0));
    return y;
  },
  // Bool is i32 0/1 in kernels, as in the reference's Int32Array.
  kernel: { kind: 'elementwise', expr: ([a, b]) => boolToI32(`${a} ${SYMBOL[name]} ${b}`) },
  torch: { expr: (c) => `(${c.inputs[0]!} ${SYMBOL[name]} ${c.inputs[1]!})` },
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
  reference([x], _attrs, out, ctx) {
    const y = alloc(ctx, 'bool', out.shape);
    const src = x!.data;
    for (let i = 0; i < src.length; i++) y.data[i] = Number.isFinite(src[i]!) ? 1 : 0;
    return y;
  },
  kernel: { kind: 'elementwise', expr: ([x]) => boolToI32(`((bitcast<u32>(${x}) & 0x7fffffffu) < 0x7f800000u)`) },
  torch: { expr: (c) => `torch.isfinite(${c.inputs[0]!})` },
};
