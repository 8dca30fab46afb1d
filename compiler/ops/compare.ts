// Comparisons with broadcasting; bool results, so no gradient flows through them.
import type { OpDef } from './types.js';
import { binaryApply, binaryInfer } from './binary.js';
import { alloc } from './util/ref.js';
import { boolToI32 } from '../codegen/expr.js';

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
}));
