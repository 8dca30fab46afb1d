// The expression IR as one WGSL expression, for the elementwise kernels and the fused code
// generator (compiler/codegen/fused.ts binds every operand to a `let` first, so operands are
// identifiers and an expression may repeat them). Float math is f32; bool tensors are i32 0/1 in
// kernels, so a bool operand is compared with 0 and a bool result is written as i32.
import type { DType } from '../../ir/graph.js';
import { boolToI32, erfWGSL, f32Lit, i32Lit, isNanWGSL, sigmoidWGSL } from '../../codegen/expr.js';
import { operandType, stype, typeOf, type Expr, type Prim, type SType } from './ir.js';

const NAN = f32Lit(NaN);
const INF = f32Lit(Infinity);

type W1 = (a: string) => string;
type W2 = (a: string, b: string) => string;

/** Per primitive: its f32 form and, where i32 differs, its i32 form. */
const UNARY: Partial<Record<Prim, { f: W1; i?: W1 }>> = {
  neg: { f: (a) => `(-${a})` },
  exp: { f: (a) => `exp(${a})` },
  log: { f: (a) => `log(${a})` },
  sqrt: { f: (a) => `sqrt(${a})` },
  rsqrt: { f: (a) => `inverseSqrt(${a})` },
  // WGSL's tanh may return NaN past the exponent's range on some drivers (tanh(20) is 1 in f32);
  // clamp may turn a NaN into a bound, so a NaN operand is passed through.
  tanh: { f: (a) => `select(tanh(clamp(${a}, -20.0, 20.0)), ${a}, ${isNanWGSL(a)})` },
  erf: { f: (a) => erfWGSL(a) },
  sigmoid: { f: sigmoidWGSL },
  abs: { f: (a) => `abs(${a})` },
  sign: { f: (a) => `sign(${a})` },
  // A bit test: WGSL lets compilers assume floats are finite, so `x != x` may be folded.
  isnan: { f: isNanWGSL, i: () => 'false' },
  isfinite: { f: (a) => `((bitcast<u32>(${a}) & 0x7fffffffu) < 0x7f800000u)`, i: () => 'true' },
  not: { f: (a) => `(!${a})` },
};

/**
 * i32 add/sub/mul wrap in WGSL as the reference's `| 0` and Math.imul do; i32 div floors like the
 * reference (WGSL's `/` truncates, and x / 0 is x rather than a trap); pow follows C's pow (as
 * torch) where WGSL's pow (exp2(b log2 a)) is undefined or NaN: a <= 0, a = 1, infinite b.
 */
const BINARY: Partial<Record<Prim, { f: W2; i?: W2 }>> = {
  add: { f: (a, b) => `(${a} + ${b})` },
  sub: { f: (a, b) => `(${a} - ${b})` },
  mul: { f: (a, b) => `(${a} * ${b})` },
  div: {
    f: (a, b) => `(${a} / ${b})`,
    i: (a, b) => `(${a} / ${b} - select(0, 1, ${a} % ${b} != 0 && ((${a} < 0) != (${b} < 0))))`,
  },
  // WGSL's % truncates (fmod, as a - b * trunc(a / b), which is NaN for an infinite b where fmod
  // gives a finite a); the result then moves into the divisor's sign, as the reference.
  rem: {
    f: (a, b) => {
      const m = `select(${a} % ${b}, ${a}, abs(${b}) == ${INF} && abs(${a}) != ${INF})`;
      return `select(${m}, ${m} + ${b}, ${m} != 0.0 && ((${b} < 0.0) != (${m} < 0.0)))`;
    },
    i: (a, b) => `select(${a} % ${b}, ${a} % ${b} + ${b}, ${a} % ${b} != 0 && ((${b} < 0) != (${a} % ${b} < 0)))`,
  },
  // NaN in either operand gives NaN, as torch.maximum/minimum (WGSL's max/min leave it open).
  max: { f: (a, b) => `select(max(${a}, ${b}), ${NAN}, ${isNanWGSL(a)} || ${isNanWGSL(b)})`, i: (a, b) => `max(${a}, ${b})` },
  min: { f: (a, b) => `select(min(${a}, ${b}), ${NAN}, ${isNanWGSL(a)} || ${isNanWGSL(b)})`, i: (a, b) => `min(${a}, ${b})` },
  pow: {
    f: (a, b) => {
      const inf = `abs(${b}) == ${INF}`;
      // A negative (or -inf) base: |a|^b, negated for an odd integer b; NaN for a non-integer b.
      const odd = `select(pow(-${a}, ${b}), -pow(-${a}, ${b}), fract(${b} * 0.5) == 0.5 && !(${inf}))`;
      const negBase = `select(${NAN}, ${odd}, fract(${b}) == 0.0 || ${inf} || ${a} == ${f32Lit(-Infinity)})`;
      // 0^b: inf for b < 0, 0 for b > 0, signed by a -0 base under an odd exponent; NaN for a NaN b.
      const oddNegZero = `(bitcast<u32>(${a}) == 0x80000000u && fract(${b} * 0.5) == 0.5)`;
      const zeroBase = `select(select(select(0.0, ${INF}, ${b} < 0.0), select(-0.0, ${f32Lit(-Infinity)}, ${b} < 0.0), ${oddNegZero}), ${NAN}, ${isNanWGSL(b)})`;
      // 1 for b = 0, a = 1 and (-1)^inf, as C's pow (exp2(b log2 a) would give NaN).
      const one = `${b} == 0.0 || ${a} == 1.0 || (${a} == -1.0 && ${inf})`;
      return `select(select(select(${negBase}, pow(${a}, ${b}), ${a} > 0.0), ${zeroBase}, ${a} == 0.0), 1.0, ${one})`;
    },
    // Exact for the small integer powers an i32 pow is for; negative exponents truncate to 0.
    i: (a, b) =>
      `select(select(i32(0), select(i32(1), select(1, -1, (${b} & 1) == 1), ${a} == -1), abs(${a}) == 1), ` +
      `i32(round(pow(f32(abs(${a})), f32(${b})))) * select(1, -1, ${a} < 0 && (${b} & 1) == 1), ${b} >= 0)`,
  },
  eq: { f: (a, b) => `(${a} == ${b})` },
  // NaN != anything is true (torch): an ordered != may say false, so the NaN test is explicit.
  ne: { f: (a, b) => `(${a} != ${b} || ${isNanWGSL(a)} || ${isNanWGSL(b)})`, i: (a, b) => `(${a} != ${b})` },
  lt: { f: (a, b) => `(${a} < ${b})` },
  le: { f: (a, b) => `(${a} <= ${b})` },
  gt: { f: (a, b) => `(${a} > ${b})` },
  ge: { f: (a, b) => `(${a} >= ${b})` },
  and: { f: (a, b) => `(${a} && ${b})` },
  or: { f: (a, b) => `(${a} || ${b})` },
};

/**
 * `e` as a WGSL expression of the kernel's arithmetic type for `types.output` (f32, or i32 for
 * i32 and bool), with operand k's value the identifier `args[k]` (of the type for
 * `types.inputs[k]`).
 */
export function exprWGSL(e: Expr, args: readonly string[], types: { readonly inputs: readonly DType[]; readonly output: DType }): string {
  const st = types.inputs.map(stype);
  // A bool output is stored as i32 0/1.
  return render(e, args, st, stype(types.output) === 'b' ? 'i' : stype(types.output));
}

/** `e` as WGSL of type `want` ('b': a WGSL bool; a bool value wanted as 'i' is i32 0/1). */
function render(e: Expr, args: readonly string[], st: readonly SType[], want: SType): string {
  if (e.k === 'lit') return want === 'b' ? (e.v !== 0 ? 'true' : 'false') : want === 'i' ? i32Lit(e.v) : f32Lit(e.v);
  const t = typeOf(e, st, want);
  if (e.k === 'arg') {
    const name = args[e.i]!;
    // A bool (or i32: where's condition may be one) is i32 in kernels: != 0 makes it a WGSL bool.
    if (want === 'b' && t !== 'b' && t !== 'i') throw new Error('expr: a float operand where a bool is wanted');
    return want === 'b' ? `(${name} != 0)` : name;
  }
  const code = renderOp(e, args, st, want);
  return t === 'b' && want !== 'b' ? boolToI32(code) : code;
}

function renderOp(e: Expr & { k: 'op' }, args: readonly string[], st: readonly SType[], want: SType): string {
  if (e.op === 'cast') {
    const from = typeOf(e.args[0]!, st, 'f');
    const a = render(e.args[0]!, args, st, from === 'b' ? 'i' : from);
    const to = stype(e.to!);
    // NaN is true as a bool (torch), which an ordered != 0.0 would miss.
    if (to === 'b') return from === 'f' ? `(${a} != 0.0 || ${isNanWGSL(a)})` : `(${a} != 0)`;
    const target = to === 'i' ? 'i32' : 'f32';
    return (from === 'f') === (to === 'f') ? a : `${target}(${a})`;
  }
  const t = operandType(e, st, want);
  if (e.op === 'select') {
    const [c, a, b] = e.args as [Expr, Expr, Expr];
    return `select(${render(b, args, st, t)}, ${render(a, args, st, t)}, ${render(c, args, st, 'b')})`;
  }
  if (e.op === 'erf') {
    // erf(x * c) and erf(x / c): the scale folds into erfWGSL's coefficients (gelu's 1/sqrt(2)).
    const a = e.args[0]!;
    const c = a.k === 'op' && (a.op === 'mul' || a.op === 'div') ? a.args[1]! : undefined;
    if (a.k === 'op' && c?.k === 'lit') return erfWGSL(render(a.args[0]!, args, st, 'f'), a.op === 'mul' ? c.v : 1 / c.v);
  }
  const u = UNARY[e.op];
  if (u) return ((t === 'i' && u.i) || u.f)(render(e.args[0]!, args, st, t));
  const bin = BINARY[e.op];
  if (!bin) throw new Error(`expr: no WGSL form for ${e.op}`);
  return ((t === 'i' && bin.i) || bin.f)(render(e.args[0]!, args, st, t), render(e.args[1]!, args, st, t));
}
