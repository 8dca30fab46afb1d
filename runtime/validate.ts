// One host-side check of a batch against what a compiled model accepts, run before any backend
// sees the data. The WebGPU kernels cannot raise errors (an out-of-range id is clamped, a
// missing placeholder silently shifts rows), so every value the reference executor or PyTorch
// would reject must be rejected here, with the reference's wording plus the tensor, row and
// column. The contract is plain data (the compiler derives it from the graph, see
// compiler/passes/input-contract.ts) so a compiled artefact can carry it and training,
// generation and any backend can call `validateBatch` without the compiler.
import { KilnError } from './errors.js';
import type { HostTensor } from './tensor.js';

type InputDType = HostTensor['dtype'];

/** One declared input: its dtype and shape; a dim is a number, a symbol's name, or null (a formula checked later). */
export interface InputDecl {
  readonly name: string;
  readonly dtype: InputDType;
  readonly shape: readonly (number | string | null)[];
}

/** A value an index rule lets through besides its range, and what it stands for. */
export interface SpecialValue {
  readonly value: number;
  /** "the image placeholder", "the ignore index". */
  readonly means: string;
}

/**
 * Every value of `input` must lie in [0, size) or be one of `also`; `skip` exempts the positions
 * that a splice drops (the placeholder's column in each row, as LLaVA drops the label there).
 */
export interface IndexRule {
  readonly kind: 'index';
  readonly input: string;
  /** "id" (an embedding row) or "label" (a cross-entropy class): the word the message uses. */
  readonly what: 'id' | 'label';
  readonly size: number;
  readonly also: readonly SpecialValue[];
  readonly skip?: { readonly ids: string; readonly token: number };
}

/** Each row of `input` (rank 2) must hold `token` exactly once (LLaVA's image splice). */
export interface OncePerRowRule {
  readonly kind: 'once-per-row';
  readonly input: string;
  readonly token: number;
  readonly means: string;
}

export type ValueRule = IndexRule | OncePerRowRule;

/** What a model accepts as a batch: the declared inputs and the rules their values obey. */
export interface InputContract {
  readonly inputs: readonly InputDecl[];
  readonly rules: readonly ValueRule[];
}

export interface ValidateOptions {
  /** the batch file, named in every message. */
  readonly file?: string;
}

function describeShape(dtype: string, shape: readonly (number | string | null)[]): string {
  return `${dtype}[${shape.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
}

/** "row 1, column 5" for a [B, T] tensor, "position 4" for a vector, "position [i, j, k]" otherwise. */
export function describePosition(shape: readonly number[], flat: number): string {
  const at: number[] = [];
  let rest = flat;
  for (let i = shape.length - 1; i >= 0; i--) {
    at.unshift(rest % shape[i]!);
    rest = Math.floor(rest / shape[i]!);
  }
  if (at.length === 2) return `row ${at[0]}, column ${at[1]}`;
  return at.length === 1 ? `position ${at[0]}` : `position [${at.join(', ')}]`;
}

function allowedRange(rule: IndexRule): string {
  const range = rule.size === 1 ? '0' : `0..${rule.size - 1}`;
  return [range, ...rule.also.map((s) => `${s.value} (${s.means})`)].join(', ');
}

function checkIndexRule(rule: IndexRule, t: HostTensor, batch: ReadonlyMap<string, HostTensor>, contract: InputContract, where: ValidateOptions): void {
  const skipIds = rule.skip ? batch.get(rule.skip.ids) : undefined;
  const token = rule.skip?.token;
  const d = t.data;
  for (let i = 0; i < d.length; i++) {
    const v = d[i]!;
    if (v >= 0 && v < rule.size && Number.isInteger(v)) continue;
    if (rule.also.some((s) => s.value === v)) continue;
    // The splice drops this position (the placeholder's column): LLaVA ignores its label.
    if (skipIds && skipIds.shape.length === t.shape.length && skipIds.data[i] === token) continue;
    const range = rule.what === 'id' ? `a vocabulary of ${rule.size}` : `${rule.size} classes`;
    // A value that means something in another tensor (-100 in input_ids) says where it belongs.
    const elsewhere = contract.rules
      .filter((r): r is IndexRule => r.kind === 'index' && r.input !== rule.input)
      .flatMap((r) => r.also.filter((s) => s.value === v).map((s) => ` (${v} is ${s.means}, allowed in '${r.input}' only)`))[0];
    throw new KilnError(`${rule.what} ${v} at ${describePosition(t.shape, i)} is out of range for ${range}; allowed: ${allowedRange(rule)}${elsewhere ?? ''}`, {
      ...where,
      tensor: rule.input,
    });
  }
}

function checkOncePerRow(rule: OncePerRowRule, t: HostTensor, where: ValidateOptions): void {
  const [B, T] = t.shape as [number, number];
  for (let b = 0; b < B; b++) {
    let n = 0;
    for (let c = 0; c < T; c++) if (t.data[b * T + c] === rule.token) n++;
    if (n !== 1)
      throw new KilnError(`row ${b} holds ${rule.means} ${rule.token} ${n === 0 ? 'nowhere' : `${n} times`}; each row needs it exactly once`, {
        ...where,
        tensor: rule.input,
      });
  }
}

/**
 * Checks `batch` against `contract` and returns the tensors to feed, by input name (half-precision
 * floats relabelled f32, which they widen to losslessly). Throws a KilnError naming the file, the
 * tensor and, for values, the row, column, value and allowed range, for: a missing or unexpected
 * tensor; a wrong dtype or rank; a dim that differs from the declared one or from what the other
 * inputs bind its symbol to; a symbol of size 0 (a batch with no rows); and every value rule
 * (ids outside the vocabulary, labels outside the classes and not the ignore index, rows without
 * exactly one placeholder). Inputs are checked in declaration order, each element in row-major order.
 */
export function validateBatch(contract: InputContract, batch: ReadonlyMap<string, HostTensor>, where: ValidateOptions = {}): Map<string, HostTensor> {
  const feeds = new Map<string, HostTensor>();
  const names = contract.inputs.map((i) => i.name);
  for (const input of contract.inputs) {
    const t = batch.get(input.name);
    const expected = describeShape(input.dtype, input.shape);
    if (!t) throw new KilnError(`missing input tensor (the batch has ${[...batch.keys()].join(', ') || 'nothing'})`, { ...where, tensor: input.name });
    if (t.shape.length !== input.shape.length) throw new KilnError(`expected ${expected}, got ${t.dtype}[${t.shape.join(', ')}]`, { ...where, tensor: input.name });
    const widened = input.dtype === 'f32' && (t.dtype === 'f16' || t.dtype === 'bf16') ? { ...t, dtype: 'f32' as const } : t;
    if (widened.dtype !== input.dtype) throw new KilnError(`expected dtype ${input.dtype}, got ${t.dtype}`, { ...where, tensor: input.name });
    feeds.set(input.name, widened);
  }
  const extra = [...batch.keys()].filter((k) => !names.includes(k));
  if (extra.length > 0) throw new KilnError(`unexpected tensors ${extra.join(', ')}; the model's inputs are ${names.join(', ')}`, where);

  // Dims: constants must match; a symbol takes its value from its first use and must agree after.
  const bound = new Map<string, { value: number; from: string }>();
  for (const input of contract.inputs) {
    const t = feeds.get(input.name)!;
    input.shape.forEach((d, i) => {
      const got = t.shape[i]!;
      const mismatch = (why: string) =>
        new KilnError(`expected ${describeShape(input.dtype, input.shape)}, got ${t.dtype}[${t.shape.join(', ')}]${why}`, { ...where, tensor: input.name });
      if (typeof d === 'number') {
        if (got !== d) throw mismatch(` (dim ${i} must be ${d})`);
      } else if (typeof d === 'string') {
        const prior = bound.get(d);
        if (prior && prior.value !== got) throw mismatch(` (${d} is ${prior.value} from '${prior.from}')`);
        if (got === 0) throw new KilnError(`dim ${i} (${d}) is 0: ${i === 0 ? 'a batch needs at least one row' : `${d} must be at least 1`}`, { ...where, tensor: input.name });
        if (!prior) bound.set(d, { value: got, from: input.name });
      } else if (got === 0) {
        throw new KilnError(`dim ${i} is 0: every dim of an input must be at least 1`, { ...where, tensor: input.name });
      }
    });
  }

  for (const input of contract.inputs) {
    const t = feeds.get(input.name)!;
    const rules = contract.rules.filter((r) => r.input === input.name);
    for (const r of rules) if (r.kind === 'index') checkIndexRule(r, t, feeds, contract, where);
    for (const r of rules) if (r.kind === 'once-per-row') checkOncePerRow(r, t, where);
  }
  return feeds;
}
