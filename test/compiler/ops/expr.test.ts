// Every elementwise op defined in the expression IR (compiler/ops/expr/), on special values: ±0,
// ±1, ±inf, NaN, f32's largest and small normal magnitudes, exp's overflow edge (88, 100), in every
// pair for the binary ops. The reference (the IR's JS evaluator) against the op's math written
// out here independently, as PyTorch defines it (the oracle); then the IR's WGSL on the device
// against the reference. A NaN must be NaN, an inf the same inf, a finite value finite and within
// the stated tolerance.
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import type { Attrs, DType, Graph } from '../../../compiler/ir/graph.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { castValue, compileJS, erf } from '../../../compiler/ops/expr/js.js';
import { allOps, getOp } from '../../../compiler/ops/registry.js';
import { exprWGSL } from '../../../compiler/ops/expr/wgsl.js';
import { exprTorch } from '../../../compiler/ops/expr/torch.js';
import { arg, cast, div, mul, erf as erfE, select } from '../../../compiler/ops/expr/ir.js';
import { UNARY } from '../../../compiler/ops/unary.js';
import { BINARY } from '../../../compiler/ops/binary.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { getDevice } from '../../../runtime/node/device.js';
import { WebGpuExecutor } from '../../../compiler/exec/webgpu.js';
import { input } from './harness.js';

// Small magnitudes stay normal in f32 (1e-30): a device may flush subnormals to zero.
const SPECIAL = [0, -0, 1, -1, 0.5, -2.5, 7, -7, 1e-30, -1e-30, 1e30, -1e30, 3e38, -3e38, 88, -88, 100, -100, Infinity, -Infinity, NaN];
const N = SPECIAL.length;
const PAIRS = SPECIAL.length ** 2;
const first = Float32Array.from({ length: PAIRS }, (_, i) => SPECIAL[Math.floor(i / N)]!);
const second = Float32Array.from({ length: PAIRS }, (_, i) => SPECIAL[i % N]!);

const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));
const K = Math.sqrt(2 / Math.PI);
/** Forward and derivative of each unary op, written out from PyTorch's definitions. */
const ORACLE: Record<string, { f(x: number): number; df(x: number): number }> = {
  neg: { f: (x) => -x, df: () => -1 },
  exp: { f: Math.exp, df: Math.exp },
  log: { f: Math.log, df: (x) => 1 / x },
  sqrt: { f: Math.sqrt, df: (x) => 0.5 / Math.sqrt(x) },
  rsqrt: { f: (x) => 1 / Math.sqrt(x), df: (x) => -0.5 / (x * Math.sqrt(x)) },
  tanh: { f: Math.tanh, df: (x) => 1 - Math.tanh(x) ** 2 },
  sigmoid: { f: sigmoid, df: (x) => sigmoid(x) * (1 - sigmoid(x)) },
  // threshold_backward: 0 where x <= 0, so NaN passes g; abs backward: sgn(x), 0 at 0 and NaN.
  relu: { f: (x) => (Number.isNaN(x) ? x : Math.max(x, 0)), df: (x) => (x <= 0 ? 0 : 1) },
  abs: { f: Math.abs, df: (x) => (x > 0 ? 1 : x < 0 ? -1 : 0) },
  gelu: { f: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)), df: (x) => 0.5 * (1 + erf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI) },
  gelu_tanh: {
    f: (x) => 0.5 * x * (1 + Math.tanh(K * (x + 0.044715 * x ** 3))),
    df: (x) => {
      const t = Math.tanh(K * (x + 0.044715 * x ** 3));
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K * (1 + 3 * 0.044715 * x * x);
    },
  },
  quick_gelu: { f: (x) => x * sigmoid(1.702 * x), df: (x) => sigmoid(1.702 * x) * (1 + 1.702 * x * (1 - sigmoid(1.702 * x))) },
  silu: { f: (x) => x * sigmoid(x), df: (x) => sigmoid(x) * (1 + x * (1 - sigmoid(x))) },
};

function remainder(a: number, b: number): number {
  const m = a % b;
  return m !== 0 && b < 0 !== m < 0 ? m + b : m;
}
const BINARY_ORACLE: Record<string, (a: number, b: number) => number> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  remainder,
  maximum: (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a, b)),
  minimum: (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(a, b)),
  // C's pow (torch.pow): 1^b and (-1)^inf are 1, where Math.pow gives NaN.
  pow: (a, b) => (a === 1 || (a === -1 && Math.abs(b) === Infinity) ? 1 : Math.pow(a, b)),
};
const COMPARE_ORACLE: Record<string, (a: number, b: number) => boolean> = {
  eq: (a, b) => a === b,
  ne: (a, b) => a !== b,
  lt: (a, b) => a < b,
  le: (a, b) => a <= b,
  gt: (a, b) => a > b,
  ge: (a, b) => a >= b,
};

/** Elements where got and want disagree: NaN for NaN, the same inf, finite within atol + rtol |want|. */
function mismatches(got: ArrayLike<number>, want: ArrayLike<number>, atol: number | ((i: number) => number), rtol: number, skip: (i: number) => boolean = () => false): string[] {
  const bad: string[] = [];
  for (let i = 0; i < want.length; i++) {
    if (skip(i)) continue;
    const [g, w] = [got[i]!, want[i]!];
    const tol = (typeof atol === 'number' ? atol : atol(i)) + rtol * Math.abs(w);
    const ok = Number.isNaN(w) ? Number.isNaN(g) : !Number.isFinite(w) ? g === w : Number.isFinite(g) && Math.abs(g - w) <= tol;
    if (!ok) bad.push(`[${first[i]}, ${second[i]}] got ${g}, want ${w}`);
  }
  return bad;
}

interface Case {
  readonly name: string;
  readonly op: string;
  readonly attrs?: Attrs;
  /** feeds by name: x, y (f32, every pair of special values), c (bool, x > y), k, j (i32). */
  readonly operands: readonly string[];
  /** the oracle's value at element i, when the op has one here. */
  readonly oracle?: (i: number) => number;
  /**
   * Elements where WGSL's f32 formula legitimately differs from the step-by-step model, with the
   * reason where it is set. Besides these, an element passes if it matches the model with
   * subnormals flushed (WGSL leaves flushing to the implementation).
   */
  readonly gpuSkip?: (i: number) => boolean;
}

const a = (i: number) => first[i]!;
const c = (i: number) => second[i]!;
const inRange = (v: number) => Math.abs(v) < 2 ** 31;

function cases(): Case[] {
  const out: Case[] = [];
  for (const name of Object.keys(UNARY)) {
    const o = ORACLE[name]!;
    out.push({ name, op: name, operands: ['x'], oracle: (i) => o.f(a(i)) });
    if (name !== 'neg') out.push({ name: `unary_grad ${name}`, op: 'unary_grad', attrs: { fn: name }, operands: ['x', 'y'], oracle: (i) => c(i) * o.df(a(i)) });
  }
  for (const [name, f] of Object.entries(BINARY_ORACLE)) {
    const ratio = (i: number) => Math.abs(a(i) / c(i));
    // WGSL's f32 % is a - b * trunc(a / b): exact only while a / b fits f32's 24-bit mantissa.
    const gpuSkip = name === 'remainder' ? (i: number) => Number.isFinite(ratio(i)) && ratio(i) > 2 ** 23 : undefined;
    out.push({ name, op: name, operands: ['x', 'y'], oracle: (i) => f(a(i), c(i)), gpuSkip });
    out.push({ name: `${name} i32`, op: name, operands: ['k', 'j'] });
  }
  for (const [name, f] of Object.entries(COMPARE_ORACLE)) {
    out.push({ name, op: name, operands: ['x', 'y'], oracle: (i) => (f(a(i), c(i)) ? 1 : 0) });
    out.push({ name: `${name} bool`, op: name, operands: ['c', 'c'] });
  }
  out.push({ name: 'isfinite', op: 'isfinite', operands: ['x'], oracle: (i) => (Number.isFinite(a(i)) ? 1 : 0) });
  out.push({ name: 'where', op: 'where', operands: ['c', 'x', 'y'], oracle: (i) => (a(i) > c(i) ? a(i) : c(i)) });
  // torch's .to(): -> bool is != 0 (NaN is true); -> int32 truncates toward zero (out of range
  // is left open by C++, so only in-range values are compared).
  out.push({ name: 'cast bool', op: 'cast', attrs: { dtype: 'bool' }, operands: ['x'], oracle: (i) => (a(i) !== 0 ? 1 : 0) });
  out.push({ name: 'cast i32', op: 'cast', attrs: { dtype: 'i32' }, operands: ['x'], oracle: (i) => (inRange(a(i)) ? Math.trunc(a(i)) : NaN), gpuSkip: (i) => !inRange(a(i)) });
  out.push({ name: 'cast bool -> f32', op: 'cast', attrs: { dtype: 'f32' }, operands: ['c'], oracle: (i) => (a(i) > c(i) ? 1 : 0) });
  out.push({ name: 'cast i32 -> f32', op: 'cast', attrs: { dtype: 'f32' }, operands: ['k'] });
  for (const name of ['neg', 'relu', 'abs']) out.push({ name: `${name} i32`, op: name, operands: ['k'] });
  return out;
}

const FEEDS = new Map<string, HostTensor>([
  ['x', { dtype: 'f32', shape: [PAIRS], data: first }],
  ['y', { dtype: 'f32', shape: [PAIRS], data: second }],
  ['c', { dtype: 'bool', shape: [PAIRS], data: Int32Array.from({ length: PAIRS }, (_, i) => (a(i) > c(i) ? 1 : 0)) }],
  // Integers from the pairs: small, so i32 powers stay in range (an overflowing i32 pow wraps in
  // the reference and saturates in WGSL: left open); j never 0.
  ['k', { dtype: 'i32', shape: [PAIRS], data: Int32Array.from({ length: PAIRS }, (_, i) => (inRange(a(i)) ? Math.trunc(a(i)) % 10 : -3)) }],
  ['j', { dtype: 'i32', shape: [PAIRS], data: Int32Array.from({ length: PAIRS }, (_, i) => (inRange(c(i)) && Math.trunc(c(i)) % 9 !== 0 ? Math.trunc(c(i)) % 9 : 2)) }],
]);

function graph(list: readonly Case[]): { graph: Graph; nodes: number[] } {
  const b = new GraphBuilder();
  const ids = new Map([...FEEDS].map(([name, t]) => [name, input(b, name, t.dtype, t.shape)]));
  const nodes = list.map((k) => b.add(k.op, k.operands.map((o) => ids.get(o)!), k.attrs ?? {}));
  return { graph: b.build(), nodes };
}

describe('the expression IR on special values', () => {
  it('covers every elementwise op of the registry (fill and stop_gradient are a literal and the identity)', () => {
    const covered = new Set(cases().map((k) => k.op));
    const elementwise = allOps().filter((o) => o.kernel?.kind === 'elementwise').map((o) => o.name);
    expect(elementwise.filter((n) => !covered.has(n))).toEqual(['fill', 'stop_gradient']);
    expect(Object.keys(ORACLE).sort()).toEqual(Object.keys(UNARY).sort());
    expect(Object.keys(BINARY_ORACLE).sort()).toEqual(Object.keys(BINARY).sort());
  });

  it('the reference (f64) equals the oracle: NaN, inf and signs as PyTorch, finite values within 1e-12 relative', () => {
    const list = cases();
    const { graph: g, nodes } = graph(list);
    const f64 = new Map([...FEEDS].map(([k, v]) => [k, v.dtype === 'f32' ? { ...v, data: Float64Array.from(v.data) } : v]));
    const ref = runReference(g, f64, nodes, { precision: 'f64' });
    list.forEach((k, n) => {
      if (!k.oracle) return;
      const want = Float64Array.from({ length: PAIRS }, (_, i) => k.oracle!(i));
      const bad = mismatches(ref.get(nodes[n]!)!.data, want, 1e-300, 1e-12, (i) => k.name === 'cast i32' && Number.isNaN(want[i]!));
      expect(bad.slice(0, 5), `${k.name}: ${bad.length} of ${PAIRS}`).toEqual([]);
    });
  });

  it('the WGSL on the device equals the IR evaluated in f32 step by step: NaN and inf alike, finite within 1e-5 + 1e-4 relative', async () => {
    const list = cases();
    const { graph: g, nodes } = graph(list);
    const gpu = await new WebGpuExecutor(await getDevice(), g).run(FEEDS, nodes);
    const failures: string[] = [];
    list.forEach((k, n) => {
      const types = k.operands.map((o) => FEEDS.get(o)!.dtype);
      const out = g.nodes[nodes[n]!]!.type.dtype;
      const kernel = getOp(k.op).kernel;
      if (kernel?.kind !== 'elementwise') throw new Error(`${k.op} is not elementwise`);
      const [p, q, r] = k.operands.map((o) => FEEDS.get(o)!.data);
      const model = (steps: 'keep' | 'flush') => {
        const f = compileJS(kernel.ir(k.attrs ?? {}, types, out), types, { f32Steps: steps });
        return Float64Array.from({ length: PAIRS }, (_, i) => castValue(f(p![i]!, q ? q[i]! : 0, r ? r[i]! : 0), out));
      };
      const [keep, flush] = [model('keep'), model('flush')];
      const got = gpu.get(nodes[n]!)!.data;
      // f32 kernels with their own exp/erf/tanh: the nonfinite goldens' tolerance, absolute in
      // units of |g| for a gradient (g * f'(x): f'(x) is an f32 value that may cancel, as
      // 1 - tanh(x)^2 near |x| = 7, so its absolute error is what g scales).
      const atol = (i: number) => 1e-5 * (k.op === 'unary_grad' ? Math.max(1, Math.abs(c(i))) : 1);
      const bad = mismatches(got, keep, atol, 1e-4, (i) => k.gpuSkip?.(i) === true || mismatches([got[i]!], [flush[i]!], atol(i), 1e-4).length === 0);
      if (bad.length) failures.push(`${k.name}: ${bad.length} of ${PAIRS}: ${bad.slice(0, 4).join('; ')}`);
    });
    expect(failures).toEqual([]);
  });
});

describe('the expression IR renderers', () => {
  const types = (inputs: DType[], output: DType) => ({ inputs, output });
  it('fold a scale into erf, write bools as i32 0/1 and compare bool operands with 0', () => {
    // gelu's erf(x / sqrt 2): the scale goes into the polynomial's coefficients, not a division.
    expect(exprWGSL(erfE(div(arg(0), Math.SQRT2)), ['v'], types(['f32'], 'f32'))).not.toContain('/');
    expect(exprWGSL(select(arg(0), arg(1), 0), ['c', 'v'], types(['bool', 'f32'], 'f32'))).toBe('select(0.0, v, (c != 0))');
    expect(exprWGSL(cast(arg(0), 'bool'), ['v'], types(['f32'], 'bool'))).toMatch(/^select\(i32\(0\), i32\(1\), \(v != 0\.0 \|\| /);
    expect(exprWGSL(mul(arg(0), 3), ['k'], types(['i32'], 'i32'))).toBe('(k * i32(3))');
  });
  it('write PyTorch: floor division for i32, literals as Python numbers', () => {
    const ctx = { num: (v: number) => String(v), dtype: (d: DType) => `torch.${d}` };
    expect(exprTorch(div(arg(0), arg(1)), ['a', 'b'], types(['i32', 'i32'], 'i32'), ctx)).toBe('torch.div(a, b, rounding_mode="floor")');
    expect(exprTorch(select(arg(0), arg(1), 0), ['c', 'v'], types(['bool', 'f32'], 'f32'), ctx)).toBe('torch.where(c, v, 0)');
  });
});
