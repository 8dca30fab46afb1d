// The scalar expression IR: each elementwise op's math (and its derivative) written once, as a
// tree over the op's operands, constants and a closed set of scalar operations. Three renderers
// read it: the reference executor's evaluator (./js.ts), WGSL (./wgsl.ts) and PyTorch text
// (./torch.ts). A primitive is the unit each backend implements natively (erf is a primitive:
// WGSL has none, so ./wgsl.ts supplies the f32 polynomial and ./js.ts the f64 series); every op
// of compiler/ops/ built from primitives inherits NaN/inf behaviour from them, and
// test/compiler/ops/expr.test.ts checks each op on special values on both backends.
import type { DType } from '../../ir/graph.js';

/** The scalar operations. Arithmetic takes float or i32 operands (both the same type). */
export type Prim =
  | 'neg' | 'add' | 'sub' | 'mul'
  /** floats: a / b; i32: floor division (torch rounding_mode='floor'). */
  | 'div'
  /** torch.remainder / Python %: the result has the divisor's sign. */
  | 'rem'
  /** NaN in either operand gives NaN (torch.maximum/minimum). */
  | 'max' | 'min'
  | 'pow' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'tanh' | 'erf' | 'sigmoid' | 'abs'
  /** 1, -1 or 0 (the derivative of abs: 0 at the kink). */
  | 'sign'
  | 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge'
  | 'and' | 'or' | 'not'
  | 'isnan' | 'isfinite'
  /** select(cond, a, b): a where cond, else b. */
  | 'select'
  /** to the dtype in `to` (float -> i32 truncates toward zero; -> bool is != 0). */
  | 'cast';

/** The scalar type of a subexpression: float math (f32 on WebGPU, f64 or f32 on the reference), i32, bool. */
export type SType = 'f' | 'i' | 'b';

export type Expr =
  | { readonly k: 'arg'; readonly i: number }
  | { readonly k: 'lit'; readonly v: number }
  | { readonly k: 'op'; readonly op: Prim; readonly args: readonly Expr[]; readonly to?: DType };

/** The scalar type a tensor dtype computes in. */
export function stype(d: DType): SType {
  return d === 'bool' ? 'b' : d === 'i32' ? 'i' : 'f';
}

export const COMPARISONS: ReadonlySet<Prim> = new Set(['eq', 'ne', 'lt', 'le', 'gt', 'ge']);
const BOOLEAN: ReadonlySet<Prim> = new Set([...COMPARISONS, 'and', 'or', 'not', 'isnan', 'isfinite']);

/**
 * The type of `e` given its operands' types; a literal takes its sibling's type (or `want`, the
 * type its parent expects). Throws on a tree that mixes float and i32 operands.
 */
export function typeOf(e: Expr, args: readonly SType[], want: SType = 'f'): SType {
  if (e.k === 'arg') {
    const t = args[e.i];
    if (t === undefined) throw new Error(`expr: operand ${e.i} is not given`);
    return t;
  }
  if (e.k === 'lit') return want;
  if (BOOLEAN.has(e.op)) return 'b';
  if (e.op === 'cast') return stype(e.to!);
  return operandType(e, args, want);
}

/** The type the operands of an arithmetic primitive (or select's two branches) compute in. */
export function operandType(e: Expr & { k: 'op' }, args: readonly SType[], want: SType = 'f'): SType {
  if (e.op === 'and' || e.op === 'or' || e.op === 'not') return 'b';
  if (e.op === 'cast') return 'f';
  const vals = e.op === 'select' ? e.args.slice(1) : e.args;
  const known = vals.find((a) => a.k !== 'lit');
  const t = known ? typeOf(known, args, want) : want;
  // Bool operands of arithmetic or comparisons compute as i32 0/1, as the kernels store them.
  return t === 'b' && e.op !== 'select' ? 'i' : t;
}

// Builders: the trees in compiler/ops/ read as formulas.
const op = (p: Prim, ...args: (Expr | number)[]): Expr => ({ k: 'op', op: p, args: args.map(lift) });
function lift(e: Expr | number): Expr {
  return typeof e === 'number' ? { k: 'lit', v: e } : e;
}
type E = Expr | number;
export const arg = (i: number): Expr => ({ k: 'arg', i });
export const lit = (v: number): Expr => ({ k: 'lit', v });
export const neg = (a: E): Expr => op('neg', a);
export const add = (a: E, b: E): Expr => op('add', a, b);
export const sub = (a: E, b: E): Expr => op('sub', a, b);
export const mul = (a: E, b: E): Expr => op('mul', a, b);
export const div = (a: E, b: E): Expr => op('div', a, b);
export const rem = (a: E, b: E): Expr => op('rem', a, b);
export const max = (a: E, b: E): Expr => op('max', a, b);
export const min = (a: E, b: E): Expr => op('min', a, b);
export const pow = (a: E, b: E): Expr => op('pow', a, b);
export const exp = (a: E): Expr => op('exp', a);
export const log = (a: E): Expr => op('log', a);
export const sqrt = (a: E): Expr => op('sqrt', a);
export const rsqrt = (a: E): Expr => op('rsqrt', a);
export const tanh = (a: E): Expr => op('tanh', a);
export const erf = (a: E): Expr => op('erf', a);
export const sigmoid = (a: E): Expr => op('sigmoid', a);
export const abs = (a: E): Expr => op('abs', a);
export const sign = (a: E): Expr => op('sign', a);
export const cmp = (p: 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge', a: E, b: E): Expr => op(p, a, b);
export const and = (a: E, b: E): Expr => op('and', a, b);
export const or = (a: E, b: E): Expr => op('or', a, b);
export const not = (a: E): Expr => op('not', a);
export const isnan = (a: E): Expr => op('isnan', a);
export const isfinite = (a: E): Expr => op('isfinite', a);
export const select = (c: E, a: E, b: E): Expr => op('select', c, a, b);
export const cast = (a: E, to: DType): Expr => ({ k: 'op', op: 'cast', args: [lift(a)], to });

