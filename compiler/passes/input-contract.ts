// Derives a graph's input contract (runtime/validate.ts): which values each integer input may
// hold, found by following every integer input through the graph to the ops that index with it.
// The reference ops reject out-of-range indices while they run; the WebGPU kernels cannot (they
// clamp), so the host must know, before anything runs, every rule an op would enforce.
//
// What flows: an integer value's *origin* is the input it was read from plus what happened on the
// way. Ops that move values without changing them (slice, reshape, transpose, broadcast, concat,
// the `seq` of a splice) keep the origin; `where(x == c, k, x)` keeps it but lets the value c
// through (it never reaches the consumer); a splice drops the placeholder's column of its `seq`.
// Any other op ends the trail (its result is no longer the input's values). Positions are not
// tracked through slices, so a rule covers every position of the input that is not dropped by a
// splice: a label that a later shift discards is still checked (stricter than the reference,
// never laxer).
import { dimToString, isSymDim, type Dim } from '../ir/dims.js';
import type { Graph, Node } from '../ir/graph.js';
import type { IndexRule, InputContract, InputDecl, OncePerRowRule, SpecialValue, ValueRule } from '../../runtime/validate.js';

interface Origin {
  readonly input: string;
  /** values replaced on the way (where(x == c, k, x)): they never reach an indexing op. */
  readonly passed: readonly SpecialValue[];
  /** set when a splice dropped the placeholder column of the input's rows. */
  readonly skip?: { readonly ids: string; readonly token: number };
}

const MOVES = new Set(['slice', 'reshape', 'transpose', 'broadcast', 'concat', 'stop_gradient', 'sum_to']);

function constValue(graph: Graph, id: number): number | undefined {
  const n = graph.nodes[id]!;
  if (n.op !== 'fill' || !(n.attrs['shape'] as readonly Dim[]).every((d) => d === 1)) return undefined;
  const v = n.attrs['value'];
  return typeof v === 'number' ? v : undefined;
}

function inputName(graph: Graph, id: number): string | undefined {
  const n = graph.nodes[id]!;
  return n.op === 'input' ? String(n.attrs['name']) : undefined;
}

/** The constant c when `cond` is `x == c` or `c == x` with x the input `input` itself. */
function equalityWith(graph: Graph, cond: number, origins: ReadonlyMap<number, Origin[]>, input: string): number | undefined {
  const n = graph.nodes[cond]!;
  if (n.op !== 'eq') return undefined;
  const [a, b] = n.inputs as [number, number];
  for (const [x, c] of [[a, b], [b, a]] as const) {
    const v = constValue(graph, c);
    if (v !== undefined && origins.get(x)?.some((o) => o.input === input)) return v;
  }
  return undefined;
}

function shapeDecl(shape: readonly Dim[]): (number | string | null)[] {
  return shape.map((d) => {
    if (typeof d === 'number') return d;
    const s = dimToString(d);
    return isSymDim(d) && /^[A-Za-z_]\w*$/.test(s) ? s : null;
  });
}

/** The image placeholder is the only splice token LLaVA-style models have; name it as they do. */
const PLACEHOLDER = 'the image placeholder';

/**
 * The contract of `graph`'s inputs: each declared input's dtype and shape, and every value rule
 * an indexing op (embedding, embedding_grad, cross_entropy, linear_cross_entropy and their
 * gradients, splice and its gradient) puts on an integer input it reads. Rules are deduplicated (forward and backward read
 * the same ids) and listed in the order the graph first uses them.
 */
export function inputContract(graph: Graph): InputContract {
  const inputs: InputDecl[] = graph.inputs.map((i) => {
    const t = graph.nodes[i.node]!.type;
    return { name: i.name, dtype: t.dtype, shape: shapeDecl(t.shape) };
  });
  const origins = new Map<number, Origin[]>();
  const rules: ValueRule[] = [];
  const keys = new Set<string>();
  const add = (r: ValueRule) => {
    const key = JSON.stringify(r);
    if (!keys.has(key)) {
      keys.add(key);
      rules.push(r);
    }
  };
  const index = (node: Node, operand: number, what: 'id' | 'label', size: Dim, also: SpecialValue[]) => {
    if (typeof size !== 'number') return;
    for (const o of origins.get(node.inputs[operand]!) ?? []) {
      const rule: IndexRule = { kind: 'index', input: o.input, what, size, also: [...o.passed, ...also], ...(o.skip ? { skip: o.skip } : {}) };
      add(rule);
    }
  };
  const placeholder = (node: Node, operand: number) => {
    const ids = inputName(graph, node.inputs[operand]!);
    const token = node.attrs['token'];
    if (ids !== undefined && typeof token === 'number' && graph.nodes[node.inputs[operand]!]!.type.shape.length === 2) {
      const rule: OncePerRowRule = { kind: 'once-per-row', input: ids, token, means: PLACEHOLDER };
      add(rule);
    }
  };

  for (const node of graph.nodes) {
    const isInt = node.type.dtype === 'i32';
    if (node.op === 'input' && isInt) origins.set(node.id, [{ input: String(node.attrs['name']), passed: [] }]);
    else if (isInt && MOVES.has(node.op)) origins.set(node.id, node.inputs.flatMap((i) => origins.get(i) ?? []));
    else if (isInt && node.op === 'where') {
      const [cond, a, b] = node.inputs as [number, number, number];
      const out: Origin[] = [];
      // The branch taken where cond is false keeps its values, except those the condition caught.
      for (const o of origins.get(b) ?? []) {
        const c = equalityWith(graph, cond, origins, o.input);
        out.push(c === undefined ? o : { ...o, passed: [...o.passed, { value: c, means: PLACEHOLDER }] });
      }
      out.push(...(origins.get(a) ?? []));
      origins.set(node.id, out);
    } else if (node.op === 'splice') {
      placeholder(node, 2);
      if (isInt) {
        const ids = inputName(graph, node.inputs[2]!);
        const token = node.attrs['token'] as number;
        const seq = (origins.get(node.inputs[0]!) ?? []).map((o) => (ids === undefined ? o : { ...o, skip: { ids, token } }));
        origins.set(node.id, [...seq, ...(origins.get(node.inputs[1]!) ?? [])]);
      }
    }
    if (node.op === 'splice_grad') placeholder(node, 1);
    if (node.op === 'embedding') index(node, 0, 'id', graph.nodes[node.inputs[1]!]!.type.shape[0]!, []);
    if (node.op === 'embedding_grad') index(node, 0, 'id', node.attrs['vocab'] as Dim, []);
    if (node.op === 'cross_entropy' || node.op === 'cross_entropy_grad') {
      const logits = graph.nodes[node.inputs[0]!]!.type.shape;
      const ignore = node.attrs['ignore_index'];
      index(node, 1, 'label', logits[logits.length - 1]!, typeof ignore === 'number' ? [{ value: ignore, means: 'the ignore index' }] : []);
    }
    // The loss head fused with its projection (compiler/ops/linear_loss.ts): classes are the weight's rows.
    if (node.op === 'linear_cross_entropy' || node.op === 'linear_cross_entropy_grad') {
      const ignore = node.attrs['ignore_index'];
      index(node, 2, 'label', graph.nodes[node.inputs[1]!]!.type.shape[0]!, typeof ignore === 'number' ? [{ value: ignore, means: 'the ignore index' }] : []);
    }
  }
  return { inputs, rules };
}
