// Binary elementwise arithmetic with numpy broadcasting, as a table: same-dtype operands only
// (f32 with f32, i32 with i32, which stays i32); the VJPs sum broadcast cotangents back down.
import type { GraphBuilder } from '../ir/builder.js';
import type { Node, TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { alloc, broadcastIndex } from './util/ref.js';
import { scalar, unbroadcast } from './util/grad.js';
import { broadcastShapes, expectArity, fail, isFloatDType, typeToString } from './util/shape.js';
import { f32Lit, isNanWGSL } from '../codegen/expr.js';

type Vjp = (b: GraphBuilder, node: Node, g: number) => [number, number];

interface BinaryRow {
  readonly f: (a: number, b: number) => number;
  readonly ints: (a: number, b: number) => number;
  readonly vjp: Vjp;
  readonly doc: string;
}

/** PyTorch for each row (a, b Python expressions; i32 operands stay i32 as in torch). */
const BINARY_TORCH: Readonly<Record<string, { f(a: string, b: string): string; i?(a: string, b: string): string }>> = {
  add: { f: (a, b) => `(${a} + ${b})` },
  sub: { f: (a, b) => `(${a} - ${b})` },
  mul: { f: (a, b) => `(${a} * ${b})` },
  div: { f: (a, b) => `(${a} / ${b})`, i: (a, b) => `torch.div(${a}, ${b}, rounding_mode="floor")` },
  remainder: { f: (a, b) => `torch.remainder(${a}, ${b})` },
  maximum: { f: (a, b) => `torch.maximum(${a}, ${b})` },
  minimum: { f: (a, b) => `torch.minimum(${a}, ${b})` },
  pow: { f: (a, b) => `torch.pow(${a}, ${b})` },
};

function intDiv(a: number, b: number): number {
  if (b === 0) throw new Error('div: integer division by zero');
  return Math.floor(a / b);
}

/** torch.remainder / Python %: fmod, then moved into the divisor's sign (so -3 % 2 is 1). */
function remainder(a: number, b: number): number {
  const m = a % b;
  return m !== 0 && b < 0 !== m < 0 ? m + b : m;
}

function intRemainder(a: number, b: number): number {
  if (b === 0) throw new Error('remainder: integer division by zero');
  return remainder(a, b) | 0;
}

function minmaxVjp(pick: 'gt' | 'lt'): Vjp {
  // torch.maximum/minimum: the winner takes the gradient, ties split it in half, and the loser
  // gets 0 (written as torch does: where(x == y, g/2, g) zeroed where x loses, so a NaN operand,
  // which neither wins nor ties, passes g to both).
  return (b, node, g) => {
    const [x, y] = node.inputs as [number, number];
    const dt = node.type.dtype;
    const zero = scalar(b, 0, dt);
    const shared = b.add('where', [b.add('eq', [x, y]), b.add('mul', [g, scalar(b, 0.5, dt)]), g]);
    const other = pick === 'gt' ? 'lt' : 'gt';
    return [b.add('where', [b.add(other, [x, y]), zero, shared]), b.add('where', [b.add(pick, [x, y]), zero, shared])];
  };
}

export const BINARY: Readonly<Record<string, BinaryRow>> = {
  add: { f: (a, b) => a + b, ints: (a, b) => (a + b) | 0, vjp: (_b, _n, g) => [g, g], doc: 'add(a, b): a + b, broadcasting' },
  sub: {
    f: (a, b) => a - b,
    ints: (a, b) => (a - b) | 0,
    vjp: (b, _n, g) => [g, b.add('neg', [g])],
    doc: 'sub(a, b): a - b, broadcasting',
  },
  mul: {
    f: (a, b) => a * b,
    ints: Math.imul,
    vjp: (b, n, g) => [b.add('mul', [g, n.inputs[1]!]), b.add('mul', [g, n.inputs[0]!])],
    doc: 'mul(a, b): a * b, broadcasting',
  },
  div: {
    f: (a, b) => a / b,
    ints: intDiv,
    vjp: (b, n, g) => {
      const den = n.inputs[1]!;
      return [b.add('div', [g, den]), b.add('neg', [b.add('div', [b.add('mul', [g, n.id]), den])])];
    },
    doc: 'div(a, b): a / b, broadcasting (i32: floor division)',
  },
  remainder: {
    f: remainder,
    ints: intRemainder,
    // As torch: d/da = 1, d/db = -floor(a / b); floor(a / b) is (a - remainder) / b, exact up to rounding.
    vjp: (b, n, g) => {
      const [x, y] = n.inputs as [number, number];
      const quotient = b.add('div', [b.add('sub', [x, n.id]), y]);
      return [g, b.add('neg', [b.add('mul', [g, quotient])])];
    },
    doc: 'remainder(a, b): a - floor(a / b) * b, with the sign of b (torch.remainder, Python %), broadcasting; written a % b',
  },
  maximum: { f: Math.max, ints: Math.max, vjp: minmaxVjp('gt'), doc: 'maximum(a, b): elementwise max, broadcasting' },
  minimum: { f: Math.min, ints: Math.min, vjp: minmaxVjp('lt'), doc: 'minimum(a, b): elementwise min, broadcasting' },
  pow: {
    f: Math.pow,
    ints: (a, b) => Math.trunc(a ** b) | 0,
    vjp: (b, n, g) => {
      // As torch: d/da is 0 where the exponent is 0, d/db is 0 where the base is 0.
      const [x, e] = n.inputs as [number, number];
      const dt = n.type.dtype;
      const zero = scalar(b, 0, dt);
      const da = b.add('mul', [g, b.add('mul', [e, b.add('pow', [x, b.add('sub', [e, scalar(b, 1, dt)])])])]);
      const db = b.add('mul', [g, b.add('mul', [n.id, b.add('log', [x])])]);
      return [b.add('where', [b.add('eq', [e, zero]), zero, da]), b.add('where', [b.add('eq', [x, zero]), zero, db])];
    },
    doc: 'pow(a, b): a ** b, broadcasting',
  },
};

const NAN = f32Lit(NaN);

/**
 * WGSL for each row, f32 and i32 (a, b identifiers). i32 add/sub/mul wrap in WGSL as `| 0` and
 * Math.imul do; i32 div floors like the reference (WGSL's `/` truncates, and x / 0 is x rather
 * than a trap); pow follows Math.pow where WGSL's pow (exp2(b log2 a)) is undefined: a < 0, 0^0.
 */
export const BINARY_WGSL: Readonly<Record<string, { f(a: string, b: string): string; i(a: string, b: string): string }>> = {
  add: { f: (a, b) => `(${a} + ${b})`, i: (a, b) => `(${a} + ${b})` },
  sub: { f: (a, b) => `(${a} - ${b})`, i: (a, b) => `(${a} - ${b})` },
  mul: { f: (a, b) => `(${a} * ${b})`, i: (a, b) => `(${a} * ${b})` },
  div: {
    f: (a, b) => `(${a} / ${b})`,
    i: (a, b) => `(${a} / ${b} - select(0, 1, ${a} % ${b} != 0 && ((${a} < 0) != (${b} < 0))))`,
  },
  // WGSL's % truncates (fmod, as a - b * trunc(a / b), which is NaN for an infinite b where fmod
  // gives a); the result then moves into the divisor's sign, as the reference.
  remainder: {
    f: (a, b) => {
      const m = `select(${a} % ${b}, ${a}, abs(${b}) == ${f32Lit(Infinity)})`;
      return `select(${m}, ${m} + ${b}, ${m} != 0.0 && ((${b} < 0.0) != (${m} < 0.0)))`;
    },
    i: (a, b) => `select(${a} % ${b}, ${a} % ${b} + ${b}, ${a} % ${b} != 0 && ((${b} < 0) != (${a} % ${b} < 0)))`,
  },
  // NaN in either operand gives NaN, as torch.maximum/minimum (WGSL's max/min leave it open).
  maximum: { f: (a, b) => `select(max(${a}, ${b}), ${NAN}, ${isNanWGSL(a)} || ${isNanWGSL(b)})`, i: (a, b) => `max(${a}, ${b})` },
  minimum: { f: (a, b) => `select(min(${a}, ${b}), ${NAN}, ${isNanWGSL(a)} || ${isNanWGSL(b)})`, i: (a, b) => `min(${a}, ${b})` },
  pow: {
    f: (a, b) => {
      const odd = `select(pow(-${a}, ${b}), -pow(-${a}, ${b}), fract(${b} * 0.5) != 0.0)`;
      const negBase = `select(${NAN}, ${odd}, fract(${b}) == 0.0)`;
      const zeroBase = `select(0.0, ${f32Lit(Infinity)}, ${b} < 0.0)`;
      return `select(select(select(${negBase}, pow(${a}, ${b}), ${a} > 0.0), ${zeroBase}, ${a} == 0.0), 1.0, ${b} == 0.0)`;
    },
    // Exact for the small integer powers an i32 pow is for; negative exponents truncate to 0.
    i: (a, b) =>
      `select(select(i32(0), select(i32(1), select(1, -1, (${b} & 1) == 1), ${a} == -1), abs(${a}) == 1), ` +
      `i32(round(pow(f32(abs(${a})), f32(${b})))) * select(1, -1, ${a} < 0 && (${b} & 1) == 1), ${b} >= 0)`,
  },
};

export function binaryInfer(name: string, inputs: readonly TensorType[], allowBool: boolean): TensorType {
  expectArity(name, inputs, 2);
  const [a, b] = inputs as [TensorType, TensorType];
  if (a.dtype !== b.dtype) fail(`${name}: dtypes differ: a is ${typeToString(a)}, b is ${typeToString(b)}`, 1);
  if (!allowBool && a.dtype === 'bool') fail(`${name}: arithmetic on bool tensors is not defined (a is ${typeToString(a)})`, 0);
  return { dtype: a.dtype, shape: broadcastShapes(name, [a.shape, b.shape], ['a', 'b']) };
}

/** Applies f elementwise with broadcasting; used by the arithmetic and comparison tables. */
export function binaryApply(
  a: { shape: readonly number[]; data: ArrayLike<number> },
  b: { shape: readonly number[]; data: ArrayLike<number> },
  outShape: readonly number[],
  dst: { [i: number]: number; length: number },
  f: (x: number, y: number) => number,
): void {
  const ia = broadcastIndex(a.shape, outShape);
  const ib = broadcastIndex(b.shape, outShape);
  const da = a.data;
  const db = b.data;
  for (let i = 0; i < dst.length; i++) dst[i] = f(da[ia ? ia[i]! : i]!, db[ib ? ib[i]! : i]!);
}

function binaryOp(name: string, row: BinaryRow): OpDef {
  return {
    name,
    surface: { inputs: ['a', 'b'], attrs: {}, doc: row.doc },
    infer: (inputs) => binaryInfer(name, inputs, false),
    vjp(b, node, g) {
      if (!isFloatDType(node.type.dtype)) return [null, null];
      const [ga, gb] = row.vjp(b, node, g);
      const [x, y] = node.inputs as [number, number];
      return [unbroadcast(b, ga, b.type(x).shape), unbroadcast(b, gb, b.type(y).shape)];
    },
    reference([a, b], _attrs, out, ctx) {
      const y = alloc(ctx, out.dtype, out.shape);
      binaryApply(a!, b!, out.shape, y.data, out.dtype === 'i32' ? row.ints : row.f);
      return y;
    },
    kernel: { kind: 'elementwise', expr: ([a, b], types) => BINARY_WGSL[name]![types.output === 'i32' ? 'i' : 'f'](a!, b!) },
    torch: {
      expr: (c) => {
        const t = BINARY_TORCH[name]!;
        return (c.output.dtype === 'i32' && t.i ? t.i : t.f)(c.inputs[0]!, c.inputs[1]!);
      },
    },
  };
}

export const binaryOps: readonly OpDef[] = Object.entries(BINARY).map(([n, row]) => binaryOp(n, row));
