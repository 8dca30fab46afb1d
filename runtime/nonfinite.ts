// Non-finite values are never hidden: the one place that decides what a NaN or inf in a run's
// results means and where it came from, for every backend and entry point (`kiln loss` now,
// `kiln train` per step later).
//
// The design: every run checks the values it hands back (loss terms, gradients) with one cheap
// scan (`findNonFinite`). Only when that finds something does the caller pay for a diagnostic
// re-run (the backend's `trace`: the reference reports every node's value, WebGPU every kernel's
// outputs) and `locateNonFinite` walks back from the bad result along non-finite values only: to
// the earliest op whose inputs were all finite (the op that produced the first non-finite value)
// and to the inputs or parameters holding non-finite values, which are checked first. Values a
// fused kernel keeps in registers are not observed; the walk then ends at the kernel, and
// `evaluate` (the reference ops on the kernel's observed inputs) names the op inside it.
//
// Nothing here imports the compiler: the graph is seen through the small TraceGraph surface
// (the compiler's Graph satisfies it).
import { KilnError } from './errors.js';
import { numel, type HostTensor, type TensorData } from './tensor.js';

/** Where a tensor is not finite: how many elements, the first one's flat index and value. */
export interface NonFiniteSpot {
  readonly count: number;
  readonly index: number;
  readonly value: number;
}

/** The NaN / inf elements of `data` (integer tensors never have any), or null when all are finite. */
export function scanNonFinite(data: TensorData): NonFiniteSpot | null {
  if (data instanceof Int32Array) return null;
  let count = 0;
  let index = -1;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    // v - v is NaN exactly for NaN and +-inf: one test in the hot loop.
    if (v - v !== 0) {
      if (count === 0) index = i;
      count++;
    }
  }
  return count === 0 ? null : { count, index, value: data[index]! };
}

/** The node surface the diagnosis reads: op, inputs, label, and the name of inputs and params. */
export interface TraceNode {
  readonly id: number;
  readonly op: string;
  readonly inputs: readonly number[];
  readonly label?: string | undefined;
  /** where the spec wrote the value. */
  readonly span?: { readonly file: string; readonly line: number; readonly col: number } | undefined;
  readonly attrs: { readonly [k: string]: unknown };
}
export interface TraceGraph {
  readonly nodes: readonly TraceNode[];
}

/** A result the caller names for the user: "loss term 'vm'", "the gradient of 'lm_head.weight'". */
export interface NamedResult {
  readonly node: number;
  readonly what: string;
}

/** The first named result holding a NaN or inf, with where, or null when all are finite. */
export function findNonFinite(
  results: ReadonlyMap<number, HostTensor>,
  named: readonly NamedResult[],
): { result: NamedResult; spot: NonFiniteSpot; shape: readonly number[] } | null {
  for (const r of named) {
    const t = results.get(r.node);
    const spot = t ? scanNonFinite(t.data) : null;
    if (t && spot) return { result: r, spot, shape: t.shape };
  }
  return null;
}

/** One kernel of a diagnostic run: its position, its label, the graph nodes it computes. */
export interface TracedKernel {
  readonly step: number;
  readonly label: string;
  readonly nodes: readonly number[];
}

/**
 * What a backend's diagnostic run saw: each observed node's value (sources included) and, on
 * backends with kernels, which kernel wrote it.
 */
export interface Trace {
  readonly values: ReadonlyMap<number, HostTensor>;
  readonly kernelOf?: ReadonlyMap<number, TracedKernel>;
  /**
   * Evaluates nodes the trace did not observe (inside a fused kernel) on the reference, from
   * observed values; returns each evaluated node's value. Absent: every node is observed.
   */
  readonly evaluate?: (nodes: readonly number[], from: ReadonlyMap<number, HostTensor>) => Map<number, HostTensor>;
}

/** The op that produced the first non-finite value on the way to a result. */
export interface NonFiniteOp {
  readonly node: number;
  readonly op: string;
  readonly label?: string | undefined;
  /** the spec location as file:line:col. */
  readonly at?: string | undefined;
  /** the inputs and parameters it reads directly, by name. */
  readonly reads: readonly string[];
  readonly spot: NonFiniteSpot;
  readonly shape: readonly number[];
  readonly kernel?: TracedKernel;
}

/** A non-finite source (batch input or parameter) the result depends on. */
export interface NonFiniteSource {
  readonly kind: 'input' | 'param';
  readonly name: string;
  readonly spot: NonFiniteSpot;
  readonly shape: readonly number[];
}

export interface NonFiniteOrigin {
  readonly sources: readonly NonFiniteSource[];
  /** null: no op on the way was seen producing it (the result is a source itself). */
  readonly op: NonFiniteOp | null;
}

const isSource = (n: TraceNode): boolean => n.op === 'input' || n.op === 'param';

/** The nodes `target` depends on, itself included, in id (topological) order. */
function ancestors(graph: TraceGraph, target: number): number[] {
  const seen = new Set<number>([target]);
  const stack = [target];
  while (stack.length > 0)
    for (const i of graph.nodes[stack.pop()!]!.inputs) {
      if (seen.has(i)) continue;
      seen.add(i);
      stack.push(i);
    }
  return [...seen].sort((a, b) => a - b);
}

/**
 * Walks back from the non-finite `target` along non-finite values to where they began: the
 * sources holding NaN or inf that target depends on, and the earliest op producing a non-finite
 * value from finite inputs (or from a non-finite source) on the way. Unobserved nodes (fused
 * away) are evaluated through `trace.evaluate` to name the op inside the kernel.
 */
export function locateNonFinite(graph: TraceGraph, trace: Trace, target: number): NonFiniteOrigin {
  const bad = new Map<number, NonFiniteSpot | null>();
  const spotOf = (id: number): NonFiniteSpot | null => {
    if (!bad.has(id)) bad.set(id, scanNonFinite(trace.values.get(id)!.data));
    return bad.get(id)!;
  };
  const sources: NonFiniteSource[] = [];
  for (const id of ancestors(graph, target)) {
    const n = graph.nodes[id]!;
    const t = trace.values.get(id);
    if (!isSource(n) || !t) continue;
    const spot = spotOf(id);
    if (spot) sources.push({ kind: n.op as 'input' | 'param', name: String(n.attrs['name']), spot, shape: t.shape });
  }
  if (!trace.values.has(target) || !spotOf(target)) return { sources, op: null };
  if (isSource(graph.nodes[target]!)) return { sources, op: null };

  // Observed values feeding `id` through unobserved nodes, and those unobserved nodes.
  const frontier = (id: number): { observed: number[]; inner: number[] } => {
    const observed = new Set<number>();
    const inner = new Set<number>();
    const stack = [...graph.nodes[id]!.inputs];
    while (stack.length > 0) {
      const i = stack.pop()!;
      if (trace.values.has(i)) observed.add(i);
      else if (!inner.has(i)) {
        inner.add(i);
        stack.push(...graph.nodes[i]!.inputs);
      }
    }
    return { observed: [...observed].sort((a, b) => a - b), inner: [...inner].sort((a, b) => a - b) };
  };
  let cur = target;
  for (;;) {
    const { observed, inner } = frontier(cur);
    const next = observed.find((i) => spotOf(i) !== null && !isSource(graph.nodes[i]!));
    if (next !== undefined) {
      cur = next;
      continue;
    }
    // cur's observed inputs are finite (or non-finite sources): cur's computation produced it.
    const kernel = trace.kernelOf?.get(cur);
    if (inner.length > 0 && trace.evaluate) {
      const from = new Map(observed.map((i) => [i, trace.values.get(i)!]));
      const vals = trace.evaluate([...inner, cur], from);
      for (const id of [...inner, cur]) {
        const v = vals.get(id);
        const spot = v ? scanNonFinite(v.data) : null;
        if (v && spot) return { sources, op: opAt(graph, id, spot, v.shape, kernel) };
      }
    }
    const v = trace.values.get(cur)!;
    return { sources, op: opAt(graph, cur, spotOf(cur)!, v.shape, kernel) };
  }
}

function opAt(graph: TraceGraph, id: number, spot: NonFiniteSpot, shape: readonly number[], kernel: TracedKernel | undefined): NonFiniteOp {
  const n = graph.nodes[id]!;
  const at = n.span ? `${n.span.file}:${n.span.line}:${n.span.col}` : undefined;
  const reads = n.inputs.map((i) => graph.nodes[i]!).filter(isSource).map((s) => String(s.attrs['name']));
  return { node: id, op: n.op, label: n.label, at, reads, spot, shape, ...(kernel ? { kernel } : {}) };
}

/** Row-major multi-index of a flat index: [2, 7]. */
function indexOf(flat: number, shape: readonly number[]): string {
  const idx: number[] = [];
  for (let a = shape.length - 1; a >= 0; a--) {
    const d = shape[a]!;
    idx.unshift(d > 0 ? flat % d : 0);
    flat = d > 0 ? Math.floor(flat / d) : 0;
  }
  return `[${idx.join(', ')}]`;
}

/** "2 NaN/inf of 15 (first nan at [0, 3])". */
export function describeSpot(spot: NonFiniteSpot, shape: readonly number[]): string {
  const v = Number.isNaN(spot.value) ? 'NaN' : spot.value > 0 ? 'inf' : '-inf';
  const n = numel(shape);
  return `${spot.count === 1 ? `one ${v}` : `${spot.count} non-finite values of ${n}`} (${spot.count === 1 ? 'at' : `first ${v} at`} ${indexOf(spot.index, shape)})`;
}

function describeSource(s: NonFiniteSource): string {
  return `${s.kind === 'input' ? 'input tensor' : 'parameter'} '${s.name}' holds ${describeSpot(s.spot, s.shape)}`;
}

/**
 * The user's message for a non-finite result: which result, the sources it came from, and the
 * first op (and kernel) that produced a non-finite value.
 */
export function describeNonFinite(what: string, spot: NonFiniteSpot, shape: readonly number[], origin: NonFiniteOrigin): string {
  const lines = [`${what} is not finite: ${shape.length === 0 ? (Number.isNaN(spot.value) ? 'NaN' : String(spot.value)) : describeSpot(spot, shape)}`];
  for (const s of origin.sources) lines.push(`  it comes from the ${s.kind === 'input' ? 'batch' : 'checkpoint'}: ${describeSource(s)}`);
  const op = origin.op;
  if (op) {
    const reads = op.reads.length > 0 ? ` reading ${op.reads.map((r) => `'${r}'`).join(', ')}` : '';
    const name = `${op.op}${op.label ? ` '${op.label}'` : ''} (node ${op.node}${op.at ? `, ${op.at}` : ''})${reads}`;
    const kernel = op.kernel ? ` in kernel step ${op.kernel.step} (${op.kernel.label})` : '';
    const how = origin.sources.length > 0 ? 'first op with a non-finite output' : 'first op to produce a non-finite value from finite inputs';
    lines.push(`  ${how}: ${name}${kernel}, ${describeSpot(op.spot, op.shape)}`);
  }
  return lines.join('\n');
}

/** The error a command ends with on a non-finite result (exit 1: the inputs are the cause). */
export class NonFiniteError extends KilnError {
  constructor(
    message: string,
    readonly origin: NonFiniteOrigin,
  ) {
    super(message);
    this.name = 'NonFiniteError';
  }
}

/**
 * The whole check for one run's results: null when every named result is finite; otherwise
 * runs `trace` (the backend's diagnostic re-run, only now) and returns the error naming the
 * result, its sources and the first op. `kiln loss` throws it; a training loop can stop on it.
 */
export async function checkFinite(
  graph: TraceGraph,
  results: ReadonlyMap<number, HostTensor>,
  named: readonly NamedResult[],
  trace: () => Promise<Trace> | Trace,
): Promise<NonFiniteError | null> {
  const found = findNonFinite(results, named);
  if (!found) return null;
  const origin = locateNonFinite(graph, await trace(), found.result.node);
  return new NonFiniteError(describeNonFinite(found.result.what, found.spot, found.shape, origin), origin);
}
