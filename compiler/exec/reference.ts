// Runs any graph on the CPU with the ops' reference implementations: the semantics every
// backend is checked against. f32 precision rounds each op's output to f32 as PyTorch does;
// f64 keeps doubles throughout for gradient checks against finite differences.
import { dimToString, evalDim, isSymDim, shapeToString, type Dim } from '../ir/dims.js';
import type { DType, Graph, Node } from '../ir/graph.js';
import { evalAttrs, reachable } from '../ir/graph.js';
import { getOp } from '../ops/registry.js';
import type { ReferenceContext } from '../ops/types.js';
import { isFloat, numel, type HostTensor, type TensorData } from '../../runtime/tensor.js';
import type { Trace } from '../../runtime/nonfinite.js';

export interface ReferenceOptions {
  readonly precision: 'f32' | 'f64';
  /** filled in when given: which nodes ran, in order, and the most values held at once. */
  readonly stats?: { evaluated: number[]; peakLive: number };
  /** called with every node's value as it is computed (sources included): diagnostics. */
  readonly observe?: (id: number, value: HostTensor) => void;
}

function describe(dtype: DType, shape: readonly (Dim | number)[]): string {
  return `${dtype}${shapeToString(shape)}`;
}

function sourceName(node: Node): string {
  return String(node.attrs['name']);
}

/**
 * Values of the symbolic dims, from the shapes of the fed inputs. A dim that is a bare symbol
 * binds it; a dim like `T + 575` or `2*T` is solved once its other symbols are known.
 */
export function bindSymbols(graph: Graph, feeds: ReadonlyMap<string, HostTensor>): Map<string, number> {
  const bindings = new Map<string, number>();
  const pending: [Node, HostTensor][] = [];
  for (const node of graph.nodes) {
    if (node.op !== 'input') continue;
    const name = sourceName(node);
    const t = feeds.get(name);
    if (!t) continue;
    const want = node.type;
    const mismatch = (): Error =>
      new Error(`input ${name}: expected ${describe(want.dtype, want.shape)}, got ${describe(t.dtype, t.shape)}`);
    if (t.dtype !== want.dtype || t.shape.length !== want.shape.length) throw mismatch();
    pending.push([node, t]);
  }
  // Fixed point: each round binds what single-unknown linear dims determine.
  for (let progress = true; progress; ) {
    progress = false;
    for (const [node, t] of pending)
      node.type.shape.forEach((d, i) => {
        if (!isSymDim(d)) return;
        const unknown = [...d.terms].filter(([k]) => k !== '' && k.split('*').some((s) => !bindings.has(s)));
        if (unknown.length !== 1) return;
        const [mono, coef] = unknown[0]!;
        if (mono.includes('*')) return;
        let rest = 0;
        for (const [k, v] of d.terms) if (k !== mono) rest += evalDim({ kind: 'sym', terms: new Map([[k, v]]) }, bindings);
        const value = (t.shape[i]! - rest) / coef;
        if (!Number.isInteger(value) || value < 0)
          throw new Error(`input ${sourceName(node)}: dim ${i} is ${t.shape[i]}, which no integer ${mono} gives for ${shapeToString([d])}`);
        bindings.set(mono, value);
        progress = true;
      });
  }
  for (const [node, t] of pending) {
    const want = node.type;
    want.shape.forEach((d, i) => {
      let v: number;
      try {
        v = evalDim(d, bindings);
      } catch {
        throw new Error(`input ${sourceName(node)}: cannot determine ${shapeToString([d])} (dim ${i}) from the fed shapes`);
      }
      if (v !== t.shape[i])
        throw new Error(
          `input ${sourceName(node)}: expected ${describe(want.dtype, want.shape)}, got ${describe(t.dtype, t.shape)}` +
            (isSymDim(d) ? ` (${dimToString(d)} is ${v} from the other inputs)` : ''),
        );
    });
  }
  return bindings;
}

function makeContext(precision: 'f32' | 'f64'): ReferenceContext {
  return {
    precision,
    alloc(dtype: DType, size: number): TensorData {
      if (!isFloat(dtype)) return new Int32Array(size);
      return precision === 'f64' ? new Float64Array(size) : new Float32Array(size);
    },
  };
}

/** A fed tensor in the executor's representation: floats as the precision's array type. */
function adopt(t: HostTensor, ctx: ReferenceContext): HostTensor {
  if (!isFloat(t.dtype)) return t.data instanceof Int32Array ? t : { ...t, data: Int32Array.from(t.data) };
  const want = ctx.precision === 'f64' ? Float64Array : Float32Array;
  if (t.data instanceof want) return t;
  const data = ctx.alloc(t.dtype, t.data.length);
  data.set(t.data);
  return { dtype: t.dtype, shape: t.shape, data };
}

/**
 * Evaluates the nodes `wanted` needs, feeding inputs by input name and params by checkpoint
 * name, and returns the wanted values by node id. Intermediates are dropped after their last use.
 */
export function runReference(
  graph: Graph,
  feeds: ReadonlyMap<string, HostTensor>,
  wanted: readonly number[],
  opts: ReferenceOptions,
): Map<number, HostTensor> {
  const ctx = makeContext(opts.precision);
  const bindings = bindSymbols(graph, feeds);
  const order = reachable(graph, wanted);
  const remaining = new Map<number, number>();
  for (const id of order) for (const i of graph.nodes[id]!.inputs) remaining.set(i, (remaining.get(i) ?? 0) + 1);
  const keep = new Set(wanted);
  const values = new Map<number, HostTensor>();
  for (const id of order) {
    const node = graph.nodes[id]!;
    const shape = node.type.shape.map((d) => evalDim(d, bindings));
    let value: HostTensor;
    if (node.op === 'input' || node.op === 'param') {
      const name = sourceName(node);
      const fed = feeds.get(name);
      if (!fed) throw new Error(`${node.op} ${name}: no value was fed`);
      if (fed.dtype !== node.type.dtype || fed.shape.length !== shape.length || fed.shape.some((d, i) => d !== shape[i]))
        throw new Error(`${node.op} ${name}: expected ${describe(node.type.dtype, node.type.shape)}, got ${describe(fed.dtype, fed.shape)}`);
      value = adopt(fed, ctx);
    } else {
      const inputs = node.inputs.map((i) => values.get(i)!);
      value = getOp(node.op).reference(inputs, evalAttrs(node.attrs, bindings), { dtype: node.type.dtype, shape }, ctx);
      if (value.data.length !== numel(shape) || value.shape.length !== shape.length || value.shape.some((d, i) => d !== shape[i]))
        throw new Error(`reference ${node.op} (node ${id}) returned ${shapeToString(value.shape)}, expected ${shapeToString(shape)}`);
    }
    values.set(id, value);
    opts.observe?.(id, value);
    if (opts.stats) {
      opts.stats.evaluated.push(id);
      opts.stats.peakLive = Math.max(opts.stats.peakLive, values.size);
    }
    for (const i of node.inputs) {
      const left = remaining.get(i)! - 1;
      remaining.set(i, left);
      if (left === 0 && !keep.has(i)) values.delete(i);
    }
  }
  const out = new Map<number, HostTensor>();
  for (const id of wanted) out.set(id, values.get(id)!);
  return out;
}

/**
 * The reference's diagnostic run for runtime/nonfinite.ts: runs `wanted` and keeps every node's
 * value (no value is dropped, so it holds the whole forward and backward on the host).
 */
export function traceReference(graph: Graph, feeds: ReadonlyMap<string, HostTensor>, wanted: readonly number[], precision: 'f32' | 'f64'): Trace {
  const values = new Map<number, HostTensor>();
  runReference(graph, feeds, wanted, { precision, observe: (id, v) => values.set(id, v) });
  return { values };
}

/**
 * Evaluates `nodes` (ids, any order) with the reference ops, their inputs taken from `from` or
 * from nodes evaluated before them; symbolic dims bound from `feeds`. For naming the op inside
 * a fused kernel from the kernel's observed inputs. Throws when an input is neither.
 */
export function evaluateNodes(
  graph: Graph,
  feeds: ReadonlyMap<string, HostTensor>,
  nodes: readonly number[],
  from: ReadonlyMap<number, HostTensor>,
  precision: 'f32' | 'f64',
): Map<number, HostTensor> {
  const ctx = makeContext(precision);
  const bindings = bindSymbols(graph, feeds);
  const values = new Map<number, HostTensor>();
  for (const id of [...nodes].sort((a, b) => a - b)) {
    const node = graph.nodes[id]!;
    const inputs = node.inputs.map((i) => {
      const v = values.get(i) ?? from.get(i);
      if (!v) throw new Error(`evaluateNodes: input ${i} of node ${id} is not available`);
      return adopt(v, ctx);
    });
    const shape = node.type.shape.map((d) => evalDim(d, bindings));
    values.set(id, getOp(node.op).reference(inputs, evalAttrs(node.attrs, bindings), { dtype: node.type.dtype, shape }, ctx));
  }
  return values;
}
