// Test helpers: build small graphs by hand, run them on the reference, and check gradients
// against central finite differences.
import fc from 'fast-check';
import { expect } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { sym, type Dim } from '../../../compiler/ir/dims.js';
import type { Attrs, DType, Graph, TensorType } from '../../../compiler/ir/graph.js';
import { getOp } from '../../../compiler/ops/registry.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { runReference } from '../../../compiler/exec/reference.js';
import type { HostTensor } from '../../../runtime/tensor.js';

export const B = sym('B');
export const T = sym('T');

export function t(dtype: DType, shape: readonly Dim[]): TensorType {
  return { dtype, shape };
}

/** The op's shape rule applied to input types. */
export function infer(op: string, inputs: readonly TensorType[], attrs: Attrs = {}): TensorType {
  return getOp(op).infer(inputs, attrs);
}

export function input(b: GraphBuilder, name: string, dtype: DType, shape: readonly Dim[]): number {
  const node = b.add('input', [], { name, dtype, shape: [...shape] });
  b.inputs.push({ name, node });
  return node;
}

export function param(b: GraphBuilder, name: string, shape: readonly number[], trainable = true, dtype: DType = 'f32'): number {
  const node = b.add('param', [], { name, dtype, shape: [...shape] });
  b.params.push({
    name,
    node,
    type: { dtype, shape: [...shape] },
    init: { kind: 'zeros' },
    trainable,
    component: name.split('.')[0]!,
    path: name,
  });
  return node;
}

export function host(dtype: DType, shape: readonly number[], data: ArrayLike<number>): HostTensor {
  const n = shape.reduce((a, d) => a * d, 1);
  if (data.length !== n) throw new Error(`host: ${data.length} values for shape [${shape.join(', ')}]`);
  return { dtype, shape: [...shape], data: dtype === 'f32' ? Float64Array.from(data) : Int32Array.from(data) };
}

/** Runs one node of a graph on the reference and returns its values as a plain array. */
export function run(graph: Graph, feeds: Record<string, HostTensor>, node: number, precision: 'f32' | 'f64' = 'f64'): number[] {
  return [...runReference(graph, new Map(Object.entries(feeds)), [node], { precision }).get(node)!.data];
}

/** A tensor with a random shape-independent fill of doubles in [min, max], |x| >= gap. */
export function values(n: number, min = -2, max = 2, gap = 0): fc.Arbitrary<number[]> {
  const v = fc.double({ min, max, noNaN: true, noDefaultInfinity: true }).map((x) => (Math.abs(x) < gap ? (x < 0 ? -gap : gap) : x));
  return fc.array(v, { minLength: n, maxLength: n });
}

export interface GradCase {
  /** trainable parameters: name -> [shape, values]. */
  params: Record<string, [number[], number[]]>;
  /** non-differentiable inputs (ids, labels, masks): name -> host tensor. */
  inputs?: Record<string, HostTensor>;
  /** builds the op(s) under test from the param and input nodes; returns a float node. */
  build(b: GraphBuilder, v: Record<string, number>): number;
}

/**
 * Finite-difference gradient check in f64. loss = sum(f(params) * c) with a random cotangent c,
 * differentiated by autodiff, against central differences with h = 1e-6. In f64 the truncation
 * error is ~h^2 |f'''| ~ 1e-12 and the rounding error ~eps |loss| / h ~ 1e-10 |loss|, so a
 * tolerance of 1e-6 relative to the gradient's largest entry (or 1e-6 absolute) is loose enough
 * never to flake and tight enough to catch any wrong term (those show up at 1e-2 and above).
 */
export function gradCheck(c: GradCase, cotangentSeed: number[]): void {
  const b = new GraphBuilder();
  const v: Record<string, number> = {};
  for (const [name, [shape]] of Object.entries(c.params)) v[name] = param(b, name, shape);
  for (const [name, h] of Object.entries(c.inputs ?? {})) v[name] = input(b, name, h.dtype, h.shape);
  const out = c.build(b, v);
  const outShape = b.type(out).shape as number[];
  const n = outShape.reduce((a, d) => a * d, 1);
  const ct = input(b, '__cotangent', 'f32', outShape);
  b.totalLoss = b.add('sum', [b.add('mul', [out, ct])], { axes: null, keepdims: false });
  const graph = differentiate(b.build());
  const cot = Array.from({ length: n }, (_x, i) => cotangentSeed[i % cotangentSeed.length]! + 0.1 * (i % 7));
  const feeds = new Map<string, HostTensor>(Object.entries(c.inputs ?? {}));
  feeds.set('__cotangent', host('f32', outShape, cot));
  for (const [name, [shape, data]] of Object.entries(c.params)) feeds.set(name, host('f32', shape, data));
  const wanted = graph.gradients.map((g) => g.node);
  const res = runReference(graph, feeds, wanted, { precision: 'f64' });
  const lossAt = (): number => runReference(graph, feeds, [graph.totalLoss!], { precision: 'f64' }).get(graph.totalLoss!)!.data[0]!;
  const h = 1e-6;
  for (const g of graph.gradients) {
    const analytic = [...res.get(g.node)!.data];
    const [shape, data] = c.params[g.name]!;
    const numeric = data.map((_x, i) => {
      const plus = [...data];
      plus[i]! += h;
      feeds.set(g.name, host('f32', shape, plus));
      const lp = lossAt();
      const minus = [...data];
      minus[i]! -= h;
      feeds.set(g.name, host('f32', shape, minus));
      const lm = lossAt();
      return (lp - lm) / (2 * h);
    });
    feeds.set(g.name, host('f32', shape, data));
    const scale = Math.max(1, ...analytic.map(Math.abs));
    const worst = Math.max(0, ...analytic.map((a, i) => Math.abs(a - numeric[i]!)));
    expect(worst / scale, `gradient of ${g.name}: analytic ${analytic.slice(0, 8)} numeric ${numeric.slice(0, 8)}`).toBeLessThan(1e-6);
  }
}

/** Small shapes for property tests. */
export const dim = (max = 3): fc.Arbitrary<number> => fc.integer({ min: 1, max });
export const cotangent = values(5, -1.5, 1.5);
export const RUNS = { numRuns: 12 };
