// Shared pieces of the shape rules: attribute readers, dtype checks, broadcasting and axes.
// Every message names the op and the dims that disagree, in the spec's own symbolic terms.
import { dimsEqual, isConst, shapeToString, type Dim } from '../../ir/dims.js';
import type { AttrValue, Attrs, DType, TensorType } from '../../ir/graph.js';
import { ShapeError } from '../../ir/shape_error.js';
import { isFloat } from '../../../runtime/tensor.js';

export function fail(message: string, inputIndex?: number): never {
  throw new ShapeError(message, inputIndex);
}

export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i32', 'bool'];

/** f32, f16 or bf16 (one definition: runtime/tensor.ts). */
export const isFloatDType: (d: DType) => boolean = isFloat;

export function typeToString(t: TensorType): string {
  return `${t.dtype}${shapeToString(t.shape)}`;
}

export function expectArity(op: string, inputs: readonly TensorType[], min: number, max = min): void {
  if (inputs.length < min || inputs.length > max) {
    const want = min === max ? `${min}` : max === Infinity ? `at least ${min}` : `${min} to ${max}`;
    fail(`${op}: expects ${want} input${want.endsWith(' 1') || want === '1' ? '' : 's'}, got ${inputs.length}`);
  }
}

export function expectFloat(op: string, t: TensorType, what: string, index: number): void {
  if (!isFloatDType(t.dtype)) fail(`${op}: ${what} must be a float tensor, got ${typeToString(t)}`, index);
}

export function expectInt(op: string, t: TensorType, what: string, index: number, allowBool = false): void {
  if (t.dtype !== 'i32' && !(allowBool && t.dtype === 'bool'))
    fail(`${op}: ${what} must be ${allowBool ? 'i32 or bool' : 'i32'}, got ${typeToString(t)}`, index);
}

export function expectRank(op: string, t: TensorType, what: string, index: number, rank: number): void {
  if (t.shape.length !== rank) fail(`${op}: ${what} must have rank ${rank}, got ${typeToString(t)}`, index);
}

export function expectSameDType(op: string, a: TensorType, b: TensorType, names: [string, string]): void {
  if (a.dtype !== b.dtype) fail(`${op}: dtypes differ: ${names[0]} is ${a.dtype}, ${names[1]} is ${b.dtype}`, 1);
}

export function dimStr(d: Dim): string {
  return shapeToString([d]).slice(1, -1);
}

// ---- attributes ----------------------------------------------------------------------------

export function attrNumber(op: string, attrs: Attrs, key: string, fallback?: number): number {
  const v = attrs[key];
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'number') fail(`${op}: attribute ${key} must be a number, got ${JSON.stringify(v)}`);
  return v;
}

export function attrInt(op: string, attrs: Attrs, key: string, fallback?: number): number {
  const v = attrNumber(op, attrs, key, fallback);
  if (!Number.isInteger(v)) fail(`${op}: attribute ${key} must be an integer, got ${v}`);
  return v;
}

export function attrBool(op: string, attrs: Attrs, key: string, fallback?: boolean): boolean {
  const v = attrs[key];
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'boolean') fail(`${op}: attribute ${key} must be a bool, got ${JSON.stringify(v)}`);
  return v;
}

export function attrString(op: string, attrs: Attrs, key: string, fallback?: string): string {
  const v = attrs[key];
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'string') fail(`${op}: attribute ${key} must be a string, got ${JSON.stringify(v)}`);
  return v;
}

export function isDim(v: AttrValue | undefined): v is Dim {
  return typeof v === 'number' || (typeof v === 'object' && v !== null && !Array.isArray(v) && (v as { kind?: unknown }).kind === 'sym');
}

export function attrDim(op: string, attrs: Attrs, key: string, fallback?: Dim): Dim {
  const v = attrs[key];
  if (v === undefined && fallback !== undefined) return fallback;
  if (!isDim(v)) fail(`${op}: attribute ${key} must be a dim, got ${JSON.stringify(v)}`);
  if (isConst(v) && !Number.isInteger(v)) fail(`${op}: attribute ${key} must be an integer dim, got ${v}`);
  return v;
}

export function attrDims(op: string, attrs: Attrs, key: string): Dim[] {
  const v = attrs[key];
  if (!Array.isArray(v) || !v.every((d) => isDim(d as AttrValue))) fail(`${op}: attribute ${key} must be a list of dims`);
  return v as Dim[];
}

export function attrInts(op: string, attrs: Attrs, key: string): number[] {
  const v = attrs[key];
  if (typeof v === 'number') return [v];
  if (!Array.isArray(v) || !v.every((d) => typeof d === 'number' && Number.isInteger(d)))
    fail(`${op}: attribute ${key} must be a list of integers, got ${JSON.stringify(v)}`);
  return v as number[];
}

export function attrDType(op: string, attrs: Attrs, key: string, fallback?: DType): DType {
  const v = attrs[key] ?? fallback;
  if (typeof v !== 'string' || !DTYPES.includes(v as DType))
    fail(`${op}: attribute ${key} must be one of ${DTYPES.join(', ')}, got ${JSON.stringify(v)}`);
  return v as DType;
}

// ---- axes ----------------------------------------------------------------------------------

/** A possibly negative axis, checked against the rank. */
export function normAxis(op: string, axis: number, rank: number): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank)
    fail(`${op}: axis ${axis} is out of range for rank ${rank}`);
  return axis < 0 ? axis + rank : axis;
}

/**
 * Reduction axes. The spec surface passes `axis` (an int or a list); graphs built by hand or by
 * autodiff may say `axes`. Absent or null: every axis. Sorted, unique, non-negative.
 */
export function reduceAxes(op: string, attrs: Attrs, rank: number): number[] {
  const raw = attrs['axes'] !== undefined ? attrs['axes'] : attrs['axis'];
  if (raw === undefined || raw === null) return [...Array(rank).keys()];
  const list = typeof raw === 'number' ? [raw] : Array.isArray(raw) ? raw : null;
  if (list === null || !list.every((a) => typeof a === 'number'))
    fail(`${op}: axis must be an int or a list of ints, got ${JSON.stringify(raw)}`);
  const axes = (list as number[]).map((a) => normAxis(op, a, rank));
  if (new Set(axes).size !== axes.length) fail(`${op}: axis ${JSON.stringify(raw)} names an axis twice`);
  return axes.sort((a, b) => a - b);
}

// ---- broadcasting --------------------------------------------------------------------------

function isOne(d: Dim): boolean {
  return isConst(d) && d === 1;
}

/** numpy broadcasting of named shapes; the error names both shapes and the axis that disagrees. */
export function broadcastShapes(op: string, shapes: readonly (readonly Dim[])[], names: readonly string[]): Dim[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let cur: Dim = 1;
    let from = -1;
    for (let k = 0; k < shapes.length; k++) {
      const s = shapes[k]!;
      const j = s.length - rank + i;
      if (j < 0) continue;
      const d = s[j]!;
      if (isOne(d)) continue;
      if (isOne(cur)) {
        cur = d;
        from = k;
      } else if (!dimsEqual(cur, d)) {
        fail(
          `${op}: cannot broadcast ${names[from]} ${shapeToString(shapes[from]!)} with ${names[k]} ${shapeToString(s)}: ` +
            `axis ${i - rank} has ${dimStr(cur)} vs ${dimStr(d)}`,
          k,
        );
      }
    }
    out.push(cur);
  }
  return out;
}

/** Product of constant dims, or null when symbolic. */
export function constProduct(shape: readonly Dim[]): number | null {
  let n = 1;
  for (const d of shape) {
    if (!isConst(d)) return null;
    n *= d;
  }
  return n;
}
