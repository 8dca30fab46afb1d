// The expression IR evaluated in JS numbers, for the reference executor: float math in f64 (the
// executor stores each op's output through its precision's array, so f32 mode rounds once per
// element as PyTorch's f32 kernels do), i32 math wrapping as WGSL's does, bools as 0/1.
import type { DType } from '../../ir/graph.js';
import { operandType, stype, typeOf, type Expr, type Prim, type SType } from './ir.js';

/** A compiled expression: the value at one element from its operands' values there. */
export type ScalarFn = (x: number, y: number, z: number) => number;

/**
 * erf to ~1e-15 relative: the all-positive series 2/sqrt(pi) e^{-x^2} sum (2x^2)^n x / (2n+1)!!
 * (no cancellation), and 1 beyond |x| = 6 where erf is 1 to double precision. Needed because
 * the f64 gradient checks compare gelu's derivative against finite differences at ~1e-7.
 */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax >= 6) return Math.sign(x);
  if (Number.isNaN(x)) return NaN;
  const x2 = 2 * ax * ax;
  let term = ax;
  let sum = ax;
  for (let n = 1; n < 400; n++) {
    term *= x2 / (2 * n + 1);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  const r = (2 / Math.sqrt(Math.PI)) * Math.exp(-ax * ax) * sum;
  return x < 0 ? -r : r;
}

/** Without overflow at either end: exp of the non-positive side only. */
function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/** torch.remainder / Python %: fmod, then moved into the divisor's sign (so -3 % 2 is 1). */
function remainder(a: number, b: number): number {
  const m = a % b;
  return m !== 0 && b < 0 !== m < 0 ? m + b : m;
}

function intDiv(a: number, b: number): number {
  if (b === 0) throw new Error('div: integer division by zero');
  return Math.floor(a / b);
}

function intRemainder(a: number, b: number): number {
  if (b === 0) throw new Error('remainder: integer division by zero');
  return remainder(a, b) | 0;
}

/** C's pow, as torch.pow: 1^b and (-1)^±inf are 1, where Math.pow gives NaN. */
function powC(a: number, b: number): number {
  if (a === 1 || (a === -1 && (b === Infinity || b === -Infinity))) return 1;
  return Math.pow(a, b);
}

type F1 = (a: number) => number;
type F2 = (a: number, b: number) => number;

const sgn: F1 = (a) => (a > 0 ? 1 : a < 0 ? -1 : 0);
const b01 = (v: boolean): number => (v ? 1 : 0);

/** Per primitive: its float form and, where i32 differs, its i32 form. */
const UNARY: Partial<Record<Prim, { f: F1; i?: F1 }>> = {
  neg: { f: (a) => -a, i: (a) => -a | 0 },
  exp: { f: Math.exp },
  log: { f: Math.log },
  sqrt: { f: Math.sqrt },
  rsqrt: { f: (a) => 1 / Math.sqrt(a) },
  tanh: { f: Math.tanh },
  erf: { f: erf },
  sigmoid: { f: sigmoid },
  abs: { f: Math.abs, i: (a) => Math.abs(a) | 0 },
  sign: { f: sgn },
  isnan: { f: (a) => b01(Number.isNaN(a)) },
  isfinite: { f: (a) => b01(Number.isFinite(a)) },
  not: { f: (a) => b01(a === 0) },
};

const BINARY: Partial<Record<Prim, { f: F2; i?: F2 }>> = {
  add: { f: (a, b) => a + b, i: (a, b) => (a + b) | 0 },
  sub: { f: (a, b) => a - b, i: (a, b) => (a - b) | 0 },
  mul: { f: (a, b) => a * b, i: Math.imul },
  div: { f: (a, b) => a / b, i: intDiv },
  rem: { f: remainder, i: intRemainder },
  max: { f: Math.max },
  min: { f: Math.min },
  pow: { f: powC, i: (a, b) => Math.trunc(a ** b) | 0 },
  eq: { f: (a, b) => b01(a === b) },
  ne: { f: (a, b) => b01(a !== b) },
  lt: { f: (a, b) => b01(a < b) },
  le: { f: (a, b) => b01(a <= b) },
  gt: { f: (a, b) => b01(a > b) },
  ge: { f: (a, b) => b01(a >= b) },
  and: { f: (a, b) => b01(a !== 0 && b !== 0) },
  or: { f: (a, b) => b01(a !== 0 || b !== 0) },
};

/** A value converted to `to` as PyTorch's .to() converts. */
export function castValue(v: number, to: DType): number {
  if (to === 'bool') return v !== 0 ? 1 : 0;
  if (to === 'i32') return Math.trunc(v) | 0;
  return v;
}

/**
 * Compiles `e` over operands of the given dtypes into a closure tree (no code generation at run
 * time). Throws on a primitive with no JS form, which would be a bug in ./ir.ts's closed set.
 */
export function compileJS(e: Expr, args: readonly DType[], opts: { readonly f32Steps?: 'keep' | 'flush' } = {}): ScalarFn {
  return build(e, args.map(stype), 'f', opts.f32Steps === 'flush' ? f32Flush : opts.f32Steps === 'keep' ? Math.fround : undefined);
}

/**
 * With `f32Steps` the evaluator models a WGSL kernel's arithmetic instead of PyTorch's one
 * rounding per op: every float step rounds to f32, and ('flush') subnormals become zero, which
 * WGSL allows (test/compiler/ops/expr.test.ts checks the WGSL against both).
 */
function f32Flush(v: number): number {
  const r = Math.fround(v);
  return Math.abs(r) < 2 ** -126 ? r * 0 : r;
}

function build(e: Expr, args: readonly SType[], want: SType, step?: (v: number) => number): ScalarFn {
  const inner = buildExact(e, args, want, step);
  if (!step || e.k === 'arg' || typeOf(e, args, want) !== 'f') return inner;
  return (x, y, z) => step(inner(x, y, z));
}

function buildExact(e: Expr, args: readonly SType[], want: SType, step?: (v: number) => number): ScalarFn {
  if (e.k === 'lit') {
    const v = e.v;
    return () => v;
  }
  if (e.k === 'arg') {
    if (e.i === 0) return (x) => x;
    if (e.i === 1) return (_x, y) => y;
    if (e.i === 2) return (_x, _y, z) => z;
    throw new Error(`expr: operand ${e.i} (at most 3)`);
  }
  const t = operandType(e, args, want);
  const parts = e.args.map((a) => build(a, args, t, step));
  if (e.op === 'select') {
    const [c, a, b] = parts as [ScalarFn, ScalarFn, ScalarFn];
    return (x, y, z) => (c(x, y, z) !== 0 ? a(x, y, z) : b(x, y, z));
  }
  if (e.op === 'cast') {
    const [a] = parts as [ScalarFn];
    const to = e.to!;
    return (x, y, z) => castValue(a(x, y, z), to);
  }
  const u = UNARY[e.op];
  if (u) {
    const f = (t === 'i' && u.i) || u.f;
    const [a] = parts as [ScalarFn];
    return (x, y, z) => f(a(x, y, z));
  }
  const bin = BINARY[e.op];
  if (!bin) throw new Error(`expr: no JS form for ${e.op}`);
  const f = (t === 'i' && bin.i) || bin.f;
  const [a, b] = parts as [ScalarFn, ScalarFn];
  return (x, y, z) => f(a(x, y, z), b(x, y, z));
}
