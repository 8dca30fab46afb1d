// Unary elementwise ops as a table: each row is the function and its derivative, written once in
// the expression IR (./expr/), and one backward op (`unary_grad`, g * f'(x)) serves them all, so
// every unary VJP fuses the same way.
import type { Attrs, TensorType } from '../ir/graph.js';
import type { OpDef, TorchContext } from './types.js';
import { attrString, expectArity, fail, isFloatDType, typeToString } from './util/shape.js';
import { shapesEqual } from '../ir/dims.js';
import { add, and, arg, lit, cmp, div, erf, exp, isnan, log, mul, neg, not, or, rsqrt, select, sigmoid, sign, sqrt, sub, tanh, abs, type Expr } from './expr/ir.js';
import { fromExpr } from './expr/op.js';

export { erf } from './expr/js.js';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

interface UnaryRow {
  /** f(x) over operand 0. */
  readonly f: Expr;
  /** df/dx over operand 0. */
  readonly df: Expr;
  /** i32 inputs allowed (f is exact on integers). */
  readonly ints?: true;
  readonly doc: string;
  /**
   * PyTorch's own function for f, where it has one that the IR's text is not (x a Python
   * expression): the export calls torch's kernel, and model.py reads like the Hugging Face code.
   */
  readonly torch?: (x: string) => string;
}

const x = arg(0);
const sig = sigmoid(x);
// gelu_tanh's inner tanh, with x^3 as x * x * x (the kernels' f32 products, in this order).
const tanhGelu = tanh(mul(SQRT_2_OVER_PI, add(x, mul(mul(mul(0.044715, x), x), x))));
const sigQuick = sigmoid(mul(1.702, x));
const erfGelu = erf(div(x, Math.SQRT2));

export const UNARY: Readonly<Record<string, UnaryRow>> = {
  neg: { f: neg(x), df: lit(-1), ints: true, doc: 'neg(x): -x' },
  exp: { f: exp(x), df: exp(x), doc: 'exp(x)' },
  log: { f: log(x), df: div(1, x), doc: 'log(x): natural logarithm' },
  sqrt: { f: sqrt(x), df: div(0.5, sqrt(x)), doc: 'sqrt(x)' },
  rsqrt: { f: rsqrt(x), df: div(-0.5, mul(x, sqrt(x))), doc: 'rsqrt(x): 1 / sqrt(x)' },
  tanh: { f: tanh(x), df: sub(1, mul(tanh(x), tanh(x))), doc: 'tanh(x)' },
  sigmoid: { f: sig, df: mul(sig, sub(1, sig)), doc: 'sigmoid(x): 1 / (1 + exp(-x))' },
  // PyTorch's relu and abs backward: 0 at the kink. relu keeps NaN, and its backward
  // (threshold_backward: 0 where the output <= 0) passes g through a NaN.
  relu: {
    f: select(or(cmp('gt', x, 0), isnan(x)), x, 0),
    df: select(and(cmp('le', x, 0), not(isnan(x))), 0, 1),
    ints: true,
    doc: 'relu(x): max(x, 0)',
    torch: (v) => `torch.relu(${v})`,
  },
  abs: { f: abs(x), df: sign(x), ints: true, doc: 'abs(x)' },
  gelu: {
    f: mul(mul(0.5, x), add(1, erfGelu)),
    df: add(mul(0.5, add(1, erfGelu)), mul(mul(x, INV_SQRT_2PI), exp(mul(mul(-0.5, x), x)))),
    doc: 'gelu(x): x * Phi(x) with the exact erf (torch.nn.GELU default)',
    torch: (v) => `F.gelu(${v})`,
  },
  gelu_tanh: {
    f: mul(mul(0.5, x), add(1, tanhGelu)),
    df: add(mul(0.5, add(1, tanhGelu)), mul(mul(mul(mul(0.5, x), sub(1, mul(tanhGelu, tanhGelu))), SQRT_2_OVER_PI), add(1, mul(mul(3 * 0.044715, x), x)))),
    doc: "gelu_tanh(x): GELU with the tanh approximation (approximate='tanh')",
    torch: (v) => `F.gelu(${v}, approximate="tanh")`,
  },
  // transformers' QuickGELUActivation, written the same way (so the IR's PyTorch text is its code).
  quick_gelu: {
    f: mul(x, sigQuick),
    df: add(sigQuick, mul(mul(mul(1.702, x), sigQuick), sub(1, sigQuick))),
    doc: 'quick_gelu(x): x * sigmoid(1.702 x) (CLIP)',
  },
  silu: {
    f: mul(x, sig),
    df: add(sig, mul(mul(x, sig), sub(1, sig))),
    doc: 'silu(x): x * sigmoid(x) (SwiGLU gate)',
    torch: (v) => `F.silu(${v})`,
  },
};

function unaryOp(name: string, row: UnaryRow): OpDef {
  const derived = fromExpr(() => row.f);
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
    ...derived,
    ...(row.torch ? { torch: { expr: (c) => row.torch!(c.inputs[0]!) } } : {}),
  };
}

export const unaryOps: readonly OpDef[] = Object.entries(UNARY).map(([n, row]) => unaryOp(n, row));

function rowOf(attrs: Attrs): UnaryRow {
  const fn = attrString('unary_grad', attrs, 'fn');
  const row = UNARY[fn];
  if (!row) fail(`unary_grad: unknown function ${fn}`);
  return row;
}

const byName = new Map(unaryOps.map((op) => [op.name, op]));

/** The forward op's PyTorch rendering of `x` (unary_grad differentiates it with autograd). */
function forwardTorch(c: TorchContext): string {
  const op = byName.get(attrString('unary_grad', c.attrs, 'fn'));
  if (!op?.torch) fail(`unary_grad: unknown function ${String(c.attrs['fn'])}`);
  const t = c.inputTypes[0]!;
  return op.torch.expr({ ...c, inputs: ['x'], inputTypes: [t], output: t, attrs: {} });
}

const gradParts = fromExpr((attrs) => mul(arg(1), rowOf(attrs).df));

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
  ...gradParts,
  // g * f'(x) by autograd through the forward op's own rendering.
  torch: {
    expr: (c) => `_unary_grad(lambda x: ${forwardTorch(c)}, ${c.inputs[0]!}, ${c.inputs[1]!})`,
    helpers: {
      _unary_grad: `def _unary_grad(f, x, g):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(f(x), x, g)[0]`,
    },
  },
};
