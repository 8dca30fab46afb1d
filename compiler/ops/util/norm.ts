// Shape rule shared by layer_norm, rms_norm and their backward ops: x [..., D] with [D] vectors.
import { dimsEqual, dimToString, shapesEqual, shapeToString } from '../../ir/dims.js';
import type { Attrs, TensorType } from '../../ir/graph.js';
import { attrNumber, attrString, expectArity, expectFloat, fail, typeToString } from './shape.js';

export function checkNormVectors(op: string, x: TensorType, vectors: readonly [string, TensorType, number][]): void {
  expectFloat(op, x, 'x', 0);
  if (x.shape.length < 1) fail(`${op}: x must have rank >= 1, got ${shapeToString(x.shape)}`, 0);
  const d = x.shape[x.shape.length - 1]!;
  for (const [name, t, index] of vectors) {
    if (t.dtype !== x.dtype) fail(`${op}: dtypes differ: x is ${x.dtype}, ${name} is ${t.dtype}`, index);
    if (t.shape.length !== 1 || !dimsEqual(t.shape[0]!, d))
      fail(`${op}: x has ${dimToString(d)} features (last dim) but ${name} is ${shapeToString(t.shape)}`, index);
  }
}

/** Row statistics in f64: mean and 1/sqrt(var + eps) (biased variance), or RMS with no mean. */
export function rowStats(x: ArrayLike<number>, off: number, D: number, eps: number, centred: boolean): { mu: number; r: number } {
  let mu = 0;
  if (centred) {
    for (let i = 0; i < D; i++) mu += x[off + i]!;
    mu /= D;
  }
  let v = 0;
  for (let i = 0; i < D; i++) {
    const c = x[off + i]! - mu;
    v += c * c;
  }
  return { mu, r: 1 / Math.sqrt(v / D + eps) };
}

export function normWrt(op: string, attrs: Attrs): 'x' | 'weight' {
  const wrt = attrString(op, attrs, 'wrt');
  if (wrt !== 'x' && wrt !== 'weight') fail(`${op}: wrt must be 'x' or 'weight', got ${wrt}`);
  return wrt;
}

/** The shape rule of a norm's backward op (x, weight, g; eps, wrt): the type of x or of weight. */
export function inferNormGrad(op: string, inputs: readonly TensorType[], attrs: Attrs): TensorType {
  expectArity(op, inputs, 3);
  const [x, w, g] = inputs as [TensorType, TensorType, TensorType];
  checkNormVectors(op, x, [['weight', w, 1]]);
  if (g.dtype !== x.dtype || !shapesEqual(g.shape, x.shape)) fail(`${op}: g ${typeToString(g)} must have the type of x ${typeToString(x)}`, 2);
  attrNumber(op, attrs, 'eps');
  return normWrt(op, attrs) === 'x' ? x : w;
}
