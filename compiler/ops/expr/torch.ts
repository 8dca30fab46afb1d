// The expression IR as PyTorch text (`kiln export --target torch`): operands are Python
// expressions of tensors, literals Python numbers. Each primitive maps to the torch function of
// the same semantics (torch.remainder for rem, torch.maximum's NaN propagation for max, floor
// division for i32 div), so the exported module computes what the reference computes.
import type { DType } from '../../ir/graph.js';
import { operandType, stype, type Expr, type Prim, type SType } from './ir.js';

/** What the renderer needs from the exporter (a subset of compiler/ops/types.ts TorchContext). */
export interface TorchText {
  num(v: number): string;
  dtype(d: DType): string;
}

const fn1 = (f: string) => (a: string) => `${f}(${a})`;
const infix = (o: string) => (a: string, b: string) => `(${a} ${o} ${b})`;

const UNARY: Partial<Record<Prim, (a: string) => string>> = {
  neg: (a) => `(-${a})`,
  exp: fn1('torch.exp'),
  log: fn1('torch.log'),
  sqrt: fn1('torch.sqrt'),
  rsqrt: fn1('torch.rsqrt'),
  tanh: fn1('torch.tanh'),
  erf: fn1('torch.erf'),
  sigmoid: fn1('torch.sigmoid'),
  abs: fn1('torch.abs'),
  sign: fn1('torch.sign'),
  isnan: fn1('torch.isnan'),
  isfinite: fn1('torch.isfinite'),
  not: (a) => `(~${a})`,
};

const BINARY: Partial<Record<Prim, { f: (a: string, b: string) => string; i?: (a: string, b: string) => string }>> = {
  add: { f: infix('+') },
  sub: { f: infix('-') },
  mul: { f: infix('*') },
  div: { f: infix('/'), i: (a, b) => `torch.div(${a}, ${b}, rounding_mode="floor")` },
  rem: { f: (a, b) => `torch.remainder(${a}, ${b})` },
  max: { f: (a, b) => `torch.maximum(${a}, ${b})` },
  min: { f: (a, b) => `torch.minimum(${a}, ${b})` },
  pow: { f: (a, b) => `torch.pow(${a}, ${b})` },
  eq: { f: infix('==') },
  ne: { f: infix('!=') },
  lt: { f: infix('<') },
  le: { f: infix('<=') },
  gt: { f: infix('>') },
  ge: { f: infix('>=') },
  and: { f: infix('&') },
  or: { f: infix('|') },
};

/** `e` as a Python expression, operand k being `args[k]` (a tensor of dtype `types.inputs[k]`). */
export function exprTorch(e: Expr, args: readonly string[], types: { readonly inputs: readonly DType[]; readonly output: DType }, ctx: TorchText): string {
  return render(e, args, types.inputs.map(stype), stype(types.output), ctx);
}

function render(e: Expr, args: readonly string[], st: readonly SType[], want: SType, ctx: TorchText): string {
  if (e.k === 'lit') return want === 'b' ? (e.v !== 0 ? 'True' : 'False') : ctx.num(want === 'i' ? Math.trunc(e.v) : e.v);
  if (e.k === 'arg') return args[e.i]!;
  if (e.op === 'cast') return `${render(e.args[0]!, args, st, 'f', ctx)}.to(${ctx.dtype(e.to!)})`;
  const t = operandType(e, st, want);
  const r = (a: Expr, w: SType = t) => render(a, args, st, w, ctx);
  if (e.op === 'select') return `torch.where(${r(e.args[0]!, 'b')}, ${r(e.args[1]!)}, ${r(e.args[2]!)})`;
  const u = UNARY[e.op];
  if (u) return u(r(e.args[0]!));
  const bin = BINARY[e.op];
  if (!bin) throw new Error(`expr: no PyTorch form for ${e.op}`);
  return ((t === 'i' && bin.i) || bin.f)(r(e.args[0]!), r(e.args[1]!));
}
