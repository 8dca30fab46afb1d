// Unary elementwise ops as a table: each row is the function and its derivative, and one
// backward op (`unary_grad`, g * f'(x)) serves them all, so every unary VJP fuses the same way.
import type { Attrs, TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { attrString, expectArity, fail, isFloatDType, typeToString } from './util/shape.js';
import { shapesEqual } from '../ir/dims.js';
import { erfWGSL, f32Lit, isNanWGSL, sigmoidWGSL } from '../codegen/expr.js';
import type { ElementwiseKernel } from '../codegen/kernel.js';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

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

function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

interface UnaryRow {
  readonly f: (x: number) => number;
  /** df/dx at x. */
  readonly df: (x: number) => number;
  /** i32 inputs allowed (the op is exact on integers). */
  readonly ints?: (x: number) => number;
  readonly doc: string;
  /** the PyTorch expression (x a Python expression). */
  readonly torch: (x: string) => string;
}

export const UNARY: Readonly<Record<string, UnaryRow>> = {
  neg: { f: (x) => -x, df: () => -1, ints: (x) => -x | 0, doc: 'neg(x): -x', torch: (x) => `torch.neg(${x})` },
  exp: { f: Math.exp, df: Math.exp, doc: 'exp(x)', torch: (x) => `torch.exp(${x})` },
  log: { f: Math.log, df: (x) => 1 / x, doc: 'log(x): natural logarithm', torch: (x) => `torch.log(${x})` },
  sqrt: { f: Math.sqrt, df: (x) => 0.5 / Math.sqrt(x), doc: 'sqrt(x)', torch: (x) => `torch.sqrt(${x})` },
  rsqrt: { f: (x) => 1 / Math.sqrt(x), df: (x) => -0.5 / (x * Math.sqrt(x)), doc: 'rsqrt(x): 1 / sqrt(x)', torch: (x) => `torch.rsqrt(${x})` },
  tanh: { f: Math.tanh, df: (x) => 1 - Math.tanh(x) ** 2, doc: 'tanh(x)', torch: (x) => `torch.tanh(${x})` },
  sigmoid: { f: sigmoid, df: (x) => sigmoid(x) * (1 - sigmoid(x)), doc: 'sigmoid(x): 1 / (1 + exp(-x))', torch: (x) => `torch.sigmoid(${x})` },
  // PyTorch's relu and abs backward: 0 at the kink. relu keeps NaN, and its backward
  // (threshold_backward: 0 where the output <= 0) passes g through a NaN.
  relu: { f: (x) => (x > 0 || Number.isNaN(x) ? x : 0), df: (x) => (x <= 0 ? 0 : 1), ints: (x) => (x > 0 ? x : 0), doc: 'relu(x): max(x, 0)', torch: (x) => `torch.relu(${x})` },
  abs: { f: Math.abs, df: (x) => (x > 0 ? 1 : x < 0 ? -1 : 0), ints: (x) => Math.abs(x) | 0, doc: 'abs(x)', torch: (x) => `torch.abs(${x})` },
  gelu: {
    f: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
    df: (x) => 0.5 * (1 + erf(x / Math.SQRT2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x),
    doc: 'gelu(x): x * Phi(x) with the exact erf (torch.nn.GELU default)',
    torch: (x) => `F.gelu(${x})`,
  },
  gelu_tanh: {
    f: (x) => 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))),
    df: (x) => {
      const t = Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3));
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x);
    },
    doc: "gelu_tanh(x): GELU with the tanh approximation (approximate='tanh')",
    torch: (x) => `F.gelu(${x}, approximate="tanh")`,
  },
  quick_gelu: {
    f: (x) => x * sigmoid(1.702 * x),
    df: (x) => {
      const s = sigmoid(1.702 * x);
      return s + 1.702 * x * s * (1 - s);
    },
    doc: 'quick_gelu(x): x * sigmoid(1.702 x) (CLIP)',
    // transformers' QuickGELUActivation, written the same way.
    torch: (x) => `(${x} * torch.sigmoid(1.702 * ${x}))`,
  },
  silu: {
    f: (x) => x * sigmoid(x),
    df: (x) => {
      const s = sigmoid(x);
      return s + x * s * (1 - s);
    },
    doc: 'silu(x): x * sigmoid(x) (SwiGLU gate)',
    torch: (x) => `F.silu(${x})`,
  },
};

const K_TANH = f32Lit(SQRT_2_OVER_PI);
const INV_S2PI = f32Lit(INV_SQRT_2PI);
// WGSL's tanh may return NaN past the exponent's range on some drivers; tanh(20) is 1 in f32.
const tanh = (x: string): string => `tanh(clamp(${x}, -20.0, 20.0))`;
// clamp may turn a NaN into a bound: the tanh op keeps it (gelu_tanh's x * (...) keeps it anyway).
const tanhOp = (x: string): string => `select(${tanh(x)}, ${x}, ${isNanWGSL(x)})`;
const tanhGelu = (x: string): string => tanh(`(${K_TANH} * (${x} + 0.044715 * ${x} * ${x} * ${x}))`);
const sig = sigmoidWGSL;

/**
 * The rows' kernels: f(x) and g * f'(x) as WGSL (x, g identifiers), the same formulas as the
 * reference. The i32 forms of neg and abs are the same text, typed by their operand (relu: max).
 */
export const UNARY_WGSL: Readonly<Record<string, { f(x: string): string; df(x: string, g: string): string }>> = {
  neg: { f: (x) => `(-${x})`, df: (_x, g) => `(-${g})` },
  exp: { f: (x) => `exp(${x})`, df: (x, g) => `(${g} * exp(${x}))` },
  log: { f: (x) => `log(${x})`, df: (x, g) => `(${g} * (1.0 / ${x}))` },
  sqrt: { f: (x) => `sqrt(${x})`, df: (x, g) => `(${g} * (0.5 / sqrt(${x})))` },
  rsqrt: { f: (x) => `inverseSqrt(${x})`, df: (x, g) => `(${g} * (-0.5 / (${x} * sqrt(${x}))))` },
  tanh: { f: tanhOp, df: (x, g) => `(${g} * (1.0 - ${tanhOp(x)} * ${tanhOp(x)}))` },
  sigmoid: { f: sig, df: (x, g) => `(${g} * (${sig(x)} * (1.0 - ${sig(x)})))` },
  // f32 relu keeps NaN as torch does (a bit test: the comparison alone may be folded); the
  // backward passes g unless x <= 0. i32 relu: max(x, 0), in unaryOp.
  relu: {
    f: (x) => `select(0.0, ${x}, ${x} > 0.0 || ${isNanWGSL(x)})`,
    df: (x, g) => `(${g} * select(1.0, 0.0, ${x} <= 0.0 && !${isNanWGSL(x)}))`,
  },
  abs: { f: (x) => `abs(${x})`, df: (x, g) => `(${g} * sign(${x}))` },
  gelu: {
    f: (x) => `(0.5 * ${x} * (1.0 + ${erfWGSL(x, Math.SQRT1_2)}))`,
    df: (x, g) => `(${g} * (0.5 * (1.0 + ${erfWGSL(x, Math.SQRT1_2)}) + ${x} * ${INV_S2PI} * exp(-0.5 * ${x} * ${x})))`,
  },
  gelu_tanh: {
    f: (x) => `(0.5 * ${x} * (1.0 + ${tanhGelu(x)}))`,
    df: (x, g) =>
      `(${g} * (0.5 * (1.0 + ${tanhGelu(x)}) + 0.5 * ${x} * (1.0 - ${tanhGelu(x)} * ${tanhGelu(x)}) * ${K_TANH} * (1.0 + 3.0 * 0.044715 * ${x} * ${x})))`,
  },
  quick_gelu: {
    f: (x) => `(${x} * ${sig(`(1.702 * ${x})`)})`,
    df: (x, g) => `(${g} * (${sig(`(1.702 * ${x})`)} + 1.702 * ${x} * ${sig(`(1.702 * ${x})`)} * (1.0 - ${sig(`(1.702 * ${x})`)})))`,
  },
  silu: { f: (x) => `(${x} * ${sig(x)})`, df: (x, g) => `(${g} * (${sig(x)} + ${x} * ${sig(x)} * (1.0 - ${sig(x)})))` },
};

function wgslRow(fn: string): { f(x: string): string; df(x: string, g: string): string } {
  const w = UNARY_WGSL[fn];
  if (!w) throw new Error(`unary ${fn} has no WGSL form`);
  return w;
}

function unaryOp(name: string, row: UnaryRow): OpDef {
  return {
    name,
    surface: { inputs: ['x'], attrs: {}, doc: row.doc },
    infer(inputs: readonly TensorType[]): TensorType {
      expectArity(name, inputs, 1);
      const x = inputs[0]!;
      const ok = isFloatDType(x.dtype) || (row.ints !== undefined && x.dtype === 'i32');
      if (!ok) fail(`${name}: x must be ${row.ints ? 'a float or i32' : 'a float'} tensor, got ${typeToString(x)}`, 0);
      return x;
    },
    vjp(b, node, g) {
      if (!isFloatDType(node.type.dtype)) return [null];
      if (name === 'neg') return [b.add('neg', [g])];
      return [b.add('unary_grad', [node.inputs[0]!, g], { fn: name })];
    },
    reference([x], _attrs, out, ctx) {
      const y = alloc(ctx, out.dtype, out.shape);
      const f = x!.dtype === 'i32' ? row.ints! : row.f;
      const src = x!.data;
      const dst = y.data;
      for (let i = 0; i < src.length; i++) dst[i] = f(src[i]!);
      return y;
    },
    kernel: { kind: 'elementwise', expr: ([x], types) => (name === 'relu' && types.output === 'i32' ? `max(${x!}, 0)` : wgslRow(name).f(x!)) },
    torch: { expr: (c) => row.torch(c.inputs[0]!) },
  };
}

export const unaryOps: readonly OpDef[] = Object.entries(UNARY).map(([n, row]) => unaryOp(n, row));

function rowOf(attrs: Attrs): UnaryRow {
  const fn = attrString('unary_grad', attrs, 'fn');
  const row = UNARY[fn];
  if (!row) fail(`unary_grad: unknown function ${fn}`);
  return row;
}

/**
 * g * f'(x) for a unary op f named by `fn`; recomputes from x so it fuses with the forward. No
 * vjp: second derivatives are not needed for training, and autodiff says so if asked.
 */
export const unaryGrad: OpDef = {
  name: 'unary_grad',
  infer(inputs, attrs) {
    expectArity('unary_grad', inputs, 2);
    rowOf(attrs);
    const [x, g] = inputs as [TensorType, TensorType];
    if (!isFloatDType(x.dtype) || x.dtype !== g.dtype || !shapesEqual(x.shape, g.shape))
      fail(`unary_grad: x ${typeToString(x)} and g ${typeToString(g)} must be the same float type`, 1);
    return x;
  },
  reference([x, g], attrs, out, ctx) {
    const df = rowOf(attrs).df;
    const y = alloc(ctx, out.dtype, out.shape);
    const xs = x!.data;
    const gs = g!.data;
    const dst = y.data;
    for (let i = 0; i < xs.length; i++) dst[i] = gs[i]! * df(xs[i]!);
    return y;
  },
  kernel: {
    kind: 'elementwise',
    expr: ([x, g], _types, attrs = {}) => wgslRow(attrString('unary_grad', attrs, 'fn')).df(x!, g!),
  } satisfies ElementwiseKernel,
  // g * f'(x) by autograd through the forward op's own rendering.
  torch: {
    expr: (c) => `_unary_grad(lambda x: ${rowOf(c.attrs).torch('x')}, ${c.inputs[0]!}, ${c.inputs[1]!})`,
    helpers: {
      _unary_grad: `def _unary_grad(f, x, g):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(f(x), x, g)[0]`,
    },
  },
};
