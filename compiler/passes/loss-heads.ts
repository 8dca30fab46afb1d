// The loss heads without their [rows, vocab] tensors. A spec writes VW-LMM's heads naturally:
//   z = lm_head(h);  cross_entropy(z[:, :-1, :], labels);  kl_div(z[:, :-1, :], vm_head(x)[:, 1:, :], mask)
// and a graph taken literally would hold z, the VM logits, and their gradients whole: at 7B each
// is rows x 32000 floats (320 MiB at 2.6k rows), several of them live at once in a training step.
// Two passes remove them:
//
// fuseLossHeads (symbolic, before autodiff; the checker runs it): a loss whose logits are a
// bias-free linear, seen through row slices, becomes one op over the linear's operands
// (linear_cross_entropy, linear_kl_div; compiler/ops/linear_loss.ts). The row slices move onto
// the linear's input (slicing rows commutes with the projection). The logits node stays for a
// declared output (`output logits = z`): an entry that requests logits computes them, the loss,
// gradients and training entries never read it. Autodiff then builds fused gradient ops, which
// recompute what they need from x and the weight rather than keeping the logits from the forward.
//
// chunkLossHeads (concrete symbols; artefact compilation and `kiln plan` run it before fusion):
// each fused op becomes row chunks of existing kernels: per chunk, linear into a [chunk, vocab]
// value, then the row-wise loss (reduction 'sum') or its gradient with the scale g / count; the
// chunk's value is dead before the next chunk's is written, so the memory plan gives every chunk
// the same slot. Losses over one projection (CE and KL through lm_head) share each chunk's
// logits, forward and backward alike; when the rows fit one chunk, the backward reads the
// forward's logits (and a KL's target logits) instead of projecting again: one [rows, vocab]
// value within the chunk budget stays live from the loss to its gradient, and a training step
// projects each head once forward plus its two gradient products.
//
// A KL whose target rows are a splice's inserted rows (VW-LMM: vm_head(splice(embeds, image,
// ids))[:, 1:] against the mask splice(0, 1, ids)[:, 1:], same ids and placeholder) counts only
// those rows, so with one chunk its target side projects only them: the target logits are
// linear(image, W) spliced into zeros (a masked row reads nothing else), and the target's
// gradients are the inserted rows of the logit gradient (splice_grad) projected back: the VM
// head's three products scale with the image positions, not with every row. Per counted row the
// numbers are the same products; the weight gradient sums the counted rows without the zero
// rows between them. Losses divide once by the count over all rows (torch's mean over counted rows;
// 0 when none is counted, as cross_entropy and kl_div define it). Input gradients are the chunks'
// linear(dz, W^T) rows concatenated; weight gradients accumulate dz^T x chunk by chunk (the add
// is the matmul's epilogue). Chunks are sized by a byte budget on one chunk's logits.
import { evalDim, numelDims, shapesEqual, subDims, type Dim, type SymbolBindings } from '../ir/dims.js';
import { reachable, type Attrs, type Graph, type NamedValue, type Node } from '../ir/graph.js';
import type { Span } from '../syntax/ast.js';
import { getOp } from '../ops/registry.js';
import { attrDim, attrInt, normAxis } from '../ops/util/shape.js';

/**
 * Bytes of one chunk's logits (f32), the budget that sizes the chunks: rows per chunk =
 * floor(budget / (4 * vocab)). 16 MiB is 128 rows of a 32000-word vocabulary: large enough that
 * each chunk's matmul still fills the device, small beside the 320 MiB a 7B step's logits take.
 */
export const LOSS_CHUNK_BYTES = 16 * 1024 * 1024;

/** The fused ops chunkLossHeads expands: on WebGPU their kernels are that expansion. */
export const CHUNKED_OPS: ReadonlySet<string> = new Set(['linear_cross_entropy', 'linear_cross_entropy_grad', 'linear_kl_div', 'linear_kl_div_grad']);

interface Meta {
  readonly span?: Span;
  readonly label?: string;
}

/** Builds a graph node by node; no hash-consing, so chunks recomputed apart stay apart. */
class Rewriter {
  readonly nodes: Node[] = [];
  constructor(readonly source: Graph) {}

  add(op: string, inputs: readonly number[], attrs: Attrs = {}, meta: Meta = {}): number {
    const type = getOp(op).infer(
      inputs.map((i) => this.nodes[i]!.type),
      attrs,
    );
    const id = this.nodes.length;
    this.nodes.push({ id, op, inputs: [...inputs], attrs, type, ...(meta.span ? { span: meta.span } : {}), ...(meta.label ? { label: meta.label } : {}) });
    return id;
  }

  copy(n: Node, inputs: readonly number[]): number {
    const id = this.nodes.length;
    this.nodes.push({ ...n, id, inputs: [...inputs] });
    return id;
  }

  /** The source graph's named values under `map`, with this graph's nodes. */
  build(map: (id: number) => number): Graph {
    const g = this.source;
    const named = (vs: readonly NamedValue[]): NamedValue[] => vs.map((v) => ({ ...v, node: map(v.node) }));
    return {
      nodes: this.nodes,
      inputs: named(g.inputs),
      params: g.params.map((p) => ({ ...p, node: map(p.node) })),
      outputs: named(g.outputs),
      losses: g.losses.map((l) => ({ ...l, node: map(l.node) })),
      totalLoss: g.totalLoss === null ? null : map(g.totalLoss),
      gradients: named(g.gradients),
      symbols: g.symbols,
      ...(g.updates ? { updates: named(g.updates) } : {}),
    };
  }
}

/** Drops nodes no named value reads (sources stay: the parameter list names them). */
function pruned(g: Graph): Graph {
  const roots = [...g.outputs, ...g.losses, ...g.gradients, ...(g.updates ?? [])].map((v) => v.node);
  if (g.totalLoss !== null) roots.push(g.totalLoss);
  for (const n of g.nodes) if (n.op === 'param' || n.op === 'input') roots.push(n.id);
  const live = reachable(g, roots);
  if (live.length === g.nodes.length) return g;
  const r = new Rewriter(g);
  const map = new Int32Array(g.nodes.length).fill(-1);
  for (const id of live) map[id] = r.copy(g.nodes[id]!, g.nodes[id]!.inputs.map((i) => map[i]!));
  return r.build((id) => map[id]!);
}

interface Head {
  readonly x: number;
  readonly weight: number;
  /** row slices between the linear and the loss, innermost first. */
  readonly slices: readonly Node[];
}

/** `z` as a bias-free linear seen through slices of leading axes, or null. */
function headOf(g: Graph, z: number): Head | null {
  const slices: Node[] = [];
  let n = g.nodes[z]!;
  while (n.op === 'slice') {
    const rank = n.type.shape.length;
    if (normAxis('slice', attrInt('slice', n.attrs, 'axis'), rank) === rank - 1) return null;
    slices.unshift(n);
    n = g.nodes[n.inputs[0]!]!;
  }
  if (n.op !== 'linear' || n.inputs.length !== 2) return null;
  return { x: n.inputs[0]!, weight: n.inputs[1]! , slices };
}

/**
 * Rewrites cross_entropy and kl_div over projected logits into linear_cross_entropy and
 * linear_kl_div (see the file comment). Graph to graph; values that no longer feed anything are
 * dropped. A graph without the pattern comes back unchanged.
 */
export function fuseLossHeads(graph: Graph): Graph {
  const heads = new Map<number, Head[]>();
  for (const n of graph.nodes) {
    if (n.op === 'cross_entropy' && n.attrs['reduction'] === undefined) {
      const h = headOf(graph, n.inputs[0]!);
      if (h) heads.set(n.id, [h]);
    } else if (n.op === 'kl_div' && n.attrs['reduction'] === undefined) {
      const z = headOf(graph, n.inputs[0]!);
      const t = headOf(graph, n.inputs[1]!);
      if (z && t) heads.set(n.id, [z, t]);
    }
  }
  if (heads.size === 0) return graph;
  const r = new Rewriter(graph);
  const map = new Int32Array(graph.nodes.length).fill(-1);
  const m = (id: number): number => map[id]!;
  // One sliced value per head, so the losses sharing a projection read the same rows.
  const sliced = new Map<string, number>();
  const rows = (h: Head): number => {
    const key = `${h.x}${JSON.stringify(h.slices.map((s) => s.attrs))}`;
    let v = sliced.get(key);
    if (v === undefined) sliced.set(key, (v = h.slices.reduce((x, s) => r.add('slice', [x], s.attrs, s.span ? { span: s.span } : {}), m(h.x))));
    return v;
  };
  for (const n of graph.nodes) {
    const hs = heads.get(n.id);
    const meta: Meta = { ...(n.span ? { span: n.span } : {}), ...(n.label ? { label: n.label } : {}) };
    if (!hs) map[n.id] = r.copy(n, n.inputs.map(m));
    else if (n.op === 'cross_entropy')
      map[n.id] = r.add('linear_cross_entropy', [rows(hs[0]!), m(hs[0]!.weight), m(n.inputs[1]!)], { ignore_index: attrInt('cross_entropy', n.attrs, 'ignore_index', -100) }, meta);
    else map[n.id] = r.add('linear_kl_div', [rows(hs[0]!), m(hs[0]!.weight), rows(hs[1]!), m(hs[1]!.weight), m(n.inputs[2]!)], {}, meta);
  }
  return pruned(r.build(m));
}

export interface ChunkedGraph {
  readonly graph: Graph;
  /** node of the input graph -> its node in `graph` (a fused op: the node holding its result). */
  readonly map: (id: number) => number;
  /** node of `graph` -> the input graph's node it stands for, where there is one. */
  readonly origin: ReadonlyMap<number, number>;
  /** node of `graph` inside a fused op's chunks -> that op's node in the input graph. */
  readonly partOf: ReadonlyMap<number, number>;
}

const isGrad = (n: Node): boolean => n.op.endsWith('_grad');
const lossKey = (n: Node): string => `${n.op.replace(/_grad$/, '')}(${n.inputs.join(',')})${attrInt(n.op, n.attrs, 'ignore_index', -100)}`;
/** The projection whose logits the loss reads (a KL's first side): gradients sharing it expand together. */
const sideKey = (n: Node): string => `${n.inputs[0]},${n.inputs[1]}`;

/**
 * Expands every fused loss-head op into row chunks (see the file comment) under concrete
 * `bindings`: the result is only valid for them. `chunkBytes` bounds one chunk's logits.
 *
 * Gradient ops over the same projection (cross_entropy's and kl_div's through lm_head) expand in
 * one chunk loop: per chunk the logits once, the losses' logit gradients summed, then one
 * linear(dz, W^T) and one dz^T x step. The first such op stands for the sum; the others become
 * zeros, and an add of a zero is dropped (autodiff sums every contribution to a value, so the
 * total is unchanged).
 */
export function chunkLossHeads(graph: Graph, bindings: SymbolBindings, chunkBytes = LOSS_CHUNK_BYTES): ChunkedGraph {
  const identity: ChunkedGraph = { graph, map: (id) => id, origin: new Map(graph.nodes.map((n) => [n.id, n.id])), partOf: new Map() };
  if (!graph.nodes.some((n) => CHUNKED_OPS.has(n.op))) return identity;
  const r = new Rewriter(graph);
  const map = new Int32Array(graph.nodes.length).fill(-1);
  const origin = new Map<number, number>();
  const zeros = new Set<number>();
  const m = (id: number): number => map[id]!;
  const bySide = new Map<string, Node[]>();
  const lossesBySide = new Map<string, Node[]>();
  for (const n of graph.nodes) {
    if (!CHUNKED_OPS.has(n.op)) continue;
    const by = isGrad(n) ? bySide : lossesBySide;
    by.set(sideKey(n), [...(by.get(sideKey(n)) ?? []), n]);
  }
  // Forward losses over one projection expand in one chunk loop, at the last of them (every
  // input of each is mapped there), when nothing between the first and the last reads one of
  // them; otherwise each expands alone where it stands.
  const deferred = new Set<number>();
  for (const [key, group] of lossesBySide) {
    const members = new Set(group.map((n) => n.id));
    const last = group[group.length - 1]!.id;
    const readEarly = graph.nodes.slice(group[0]!.id + 1, last).some((n) => n.inputs.some((i) => members.has(i)));
    if (group.length < 2 || readEarly) {
      lossesBySide.delete(key);
      continue;
    }
    for (const n of group) if (n.id !== last) deferred.add(n.id);
  }
  // Logits and target logits the losses projected, kept for the gradients (one chunk only).
  const kept = new Map<string, number>();
  const done = new Map<number, number>();
  const partOf = new Map<number, number>();
  for (const n of graph.nodes) {
    if (deferred.has(n.id)) continue;
    const before = r.nodes.length;
    let results: Map<number, number>;
    if (!CHUNKED_OPS.has(n.op)) {
      const ins = n.inputs.map(m);
      // x + 0 where the 0 stands for a gradient another op of its group carries.
      const zero = n.op === 'add' ? ins.findIndex((i) => zeros.has(i)) : -1;
      const other = ins[1 - zero];
      const id = zero >= 0 && other !== undefined && shapesEqual(r.nodes[other]!.type.shape, n.type.shape) ? other : r.copy(n, ins);
      results = new Map([[n.id, id]]);
    } else if (!isGrad(n)) results = expandLosses(r, lossesBySide.get(sideKey(n)) ?? [n], m, bindings, chunkBytes, kept, partOf);
    else {
      if (!done.has(n.id)) {
        const group = bySide.get(sideKey(n))!;
        for (const [k, v] of expandGrads(r, group, m, bindings, chunkBytes, zeros, kept)) done.set(k, v);
      }
      results = new Map([[n.id, done.get(n.id)!]]);
    }
    for (const [k, id] of results) {
      map[k] = id;
      if (!origin.has(id)) origin.set(id, k);
    }
    // The nodes an expansion added and did not charge to one of its losses are charged to the
    // first op it stands for; its results stand for their ops (origin), not a part of one.
    const first = [...results.keys()][0]!;
    const own = new Set(results.values());
    if (CHUNKED_OPS.has(n.op))
      for (let k = before; k < r.nodes.length; k++)
        if (own.has(k)) partOf.delete(k);
        else if (!partOf.has(k)) partOf.set(k, first);
  }
  return { graph: r.build(m), map: m, origin, partOf };
}

/** Where `kept` holds a projection's one-chunk logits: linear(x, w) over the flattened rows. */
const keptKey = (x: number, w: number): string => `${x},${w}`;

/** A KL target whose counted rows are exactly a splice's inserted rows (see the file comment). */
interface SplicedTarget {
  /** the inserted rows [B, P, features]. */
  readonly ins: number;
  readonly ids: number;
  readonly token: number;
  /** the splice's seq shape [B, T, ...]. */
  readonly seq: readonly Dim[];
  /** slices of leading axes from the spliced [B, L, ...] to the target rows, innermost first. */
  readonly slices: readonly Node[];
}

/**
 * `tx` (a KL's target input) and `mask` as slices S of splice(seq, ins, ids) and of
 * splice(fill 0, fill c != 0, ids), with the same ids, placeholder and slices; or null.
 */
function splicedTarget(r: Rewriter, tx: number, mask: number, bindings: SymbolBindings): SplicedTarget | null {
  const peel = (v: number): { slices: Node[]; at: Node } => {
    const slices: Node[] = [];
    let n = r.nodes[v]!;
    while (n.op === 'slice') {
      slices.unshift(n);
      n = r.nodes[n.inputs[0]!]!;
    }
    return { slices, at: n };
  };
  const t = peel(tx);
  const k = peel(mask);
  if (t.at.op !== 'splice' || k.at.op !== 'splice' || t.at.inputs[2] !== k.at.inputs[2] || t.at.attrs['token'] !== k.at.attrs['token']) return null;
  const fillOf = (v: number): number | null => {
    const n = r.nodes[v]!;
    return n.op === 'fill' && typeof n.attrs['value'] === 'number' ? n.attrs['value'] : null;
  };
  const off = fillOf(k.at.inputs[0]!);
  const on = fillOf(k.at.inputs[1]!);
  if (off !== 0 || on === null || on === 0) return null;
  const same = (a: Node, b: Node): boolean => {
    const rank = a.type.shape.length;
    const axis = normAxis('slice', attrInt('slice', a.attrs, 'axis'), rank);
    const at = (n: Node, key: string): number => evalDim(attrDim('slice', n.attrs, key), bindings);
    // Leading axes only (the mask has no feature axis), the same rows of each.
    return axis < rank - 1 && axis === normAxis('slice', attrInt('slice', b.attrs, 'axis'), b.type.shape.length) && at(a, 'start') === at(b, 'start') && at(a, 'stop') === at(b, 'stop');
  };
  if (t.slices.length !== k.slices.length || t.slices.some((sl, i) => !same(sl, k.slices[i]!))) return null;
  return { ins: t.at.inputs[1]!, ids: t.at.inputs[2]!, token: attrInt('splice', t.at.attrs, 'token'), seq: r.nodes[t.at.inputs[0]!]!.type.shape, slices: t.slices };
}

/** The inserted rows as the target rows: splice(zeros, rows, ids) seen through the slices. */
function spliceRows(r: Rewriter, sp: SplicedTarget, rows: number): number {
  const t = r.nodes[rows]!.type;
  const zeros = r.add('fill', [], { value: 0, shape: [sp.seq[0]!, sp.seq[1]!, ...t.shape.slice(2)], dtype: t.dtype });
  return sp.slices.reduce((v, sl) => r.add('slice', [v], sl.attrs), r.add('splice', [zeros, rows, sp.ids], { token: sp.token }));
}

/** The inserted rows [B, P, ...] of `g`, a value shaped like the target rows: the slices undone with zeros, then splice_grad. */
function insertedRows(r: Rewriter, sp: SplicedTarget, g: number, bindings: SymbolBindings): number {
  let v = g;
  for (const sl of [...sp.slices].reverse()) {
    const shape = [...r.nodes[v]!.type.shape];
    const axis = normAxis('slice', attrInt('slice', sl.attrs, 'axis'), shape.length);
    const whole = r.nodes[sl.inputs[0]!]!.type.shape[axis]!;
    const pad = (n: Dim): number | null => {
      if (evalDim(n, bindings) === 0) return null;
      const s2 = [...shape];
      s2[axis] = n;
      return r.add('fill', [], { value: 0, shape: s2, dtype: r.nodes[v]!.type.dtype });
    };
    const parts = [pad(attrDim('slice', sl.attrs, 'start')), v, pad(subDims(whole, attrDim('slice', sl.attrs, 'stop')))].filter((p): p is number => p !== null);
    v = parts.length === 1 ? v : r.add('concat', parts, { axis });
  }
  const ins = r.nodes[sp.ins]!.type.shape;
  const shape = [ins[0]!, ins[1]!, ...r.nodes[g]!.type.shape.slice(2)];
  return r.add('splice_grad', [v, sp.ids], { token: sp.token, part: 'insert', shape });
}

interface Chunking {
  readonly R: Dim;
  readonly chunks: number;
  /** rows [R, features] or [R] of a value shaped like the rows (leading dims) plus features or not. */
  flat(v: number): number;
  chunk(v: number, c: number): number;
}

function chunking(r: Rewriter, x: number, vocab: Dim, bindings: SymbolBindings, chunkBytes: number): Chunking {
  const lead = r.nodes[x]!.type.shape.slice(0, -1);
  const R = numelDims(lead);
  const per = Math.max(1, Math.floor(chunkBytes / (4 * evalDim(vocab, bindings))));
  const chunks = Math.max(1, Math.ceil(evalDim(R, bindings) / per));
  return {
    R,
    chunks,
    flat(v) {
      const s = r.nodes[v]!.type.shape;
      const want = s.length === lead.length ? [R] : [R, s[s.length - 1]!];
      return s.length === want.length ? v : r.add('reshape', [v], { shape: want });
    },
    chunk: (v, c) => (chunks === 1 ? v : r.add('slice', [v], { axis: 0, start: c * per, stop: c === chunks - 1 ? R : (c + 1) * per })),
  };
}

const metaOf = (n: Node, what: string): Meta => ({ ...(n.span ? { span: n.span } : {}), label: `${n.label ?? n.op} ${what}` });
const scalar = (r: Rewriter, value: number, dtype: string): number => r.add('fill', [], { value, shape: [], dtype });

/** Rows a loss counts: labels != ignore_index, or mask != 0 (flattened rows in). */
function rowCount(r: Rewriter, n: Node, rows: number, dtype: string): number {
  const kl = n.op.startsWith('linear_kl_div');
  const flags = r.nodes[rows]!.type.dtype === 'i32' ? rows : r.add('cast', [rows], { dtype: 'i32' });
  const hit = r.add('ne', [flags, scalar(r, kl ? 0 : attrInt(n.op, n.attrs, 'ignore_index', -100), 'i32')]);
  return r.add('sum', [r.add('cast', [hit], { dtype })], {}, metaOf(n, 'row count'));
}

/**
 * Fused losses over one projection (x, W) in one chunk loop: per chunk the logits once, then each
 * loss's chunk sum; each loss is the sum of its chunks' sums over its count (0 when nothing
 * counts). Returns, per loss node, the node holding its value. With one chunk the logits (and a
 * KL's target logits) go into `kept` for the gradients.
 */
function expandLosses(r: Rewriter, group: readonly Node[], m: (id: number) => number, bindings: SymbolBindings, chunkBytes: number, kept: Map<string, number>, partOf: Map<number, number>): Map<number, number> {
  const first = group[0]!;
  const x = m(first.inputs[0]!);
  const w = m(first.inputs[1]!);
  const dtype = r.nodes[x]!.type.dtype;
  const ch = chunking(r, x, r.nodes[w]!.type.shape[0]!, bindings, chunkBytes);
  const one = ch.chunks === 1;
  const fx = ch.flat(x);
  const losses = group.map((n) => {
    const kl = n.op === 'linear_kl_div';
    const tx = kl ? m(n.inputs[2]!) : -1;
    const spliced = kl && one ? splicedTarget(r, tx, m(n.inputs[4]!), bindings) : null;
    return { n, kl, tx, ftx: kl && !spliced ? ch.flat(tx) : -1, tw: kl ? m(n.inputs[3]!) : -1, rows: ch.flat(m(n.inputs[kl ? 4 : 2]!)), spliced, total: -1 };
  });
  for (let c = 0; c < ch.chunks; c++) {
    const at = `${c + 1}/${ch.chunks}`;
    const z = r.add('linear', [ch.chunk(fx, c), w], {}, metaOf(first, `logits ${at}`));
    if (one) kept.set(keptKey(x, w), z);
    for (const l of losses) {
      // The loss's own nodes are charged to it (a NaN in a KL's target weight names the KL).
      const before = r.nodes.length;
      const ignore = attrInt(l.n.op, l.n.attrs, 'ignore_index', -100);
      let s: number;
      if (l.kl) {
        const t = l.spliced
          ? ch.flat(spliceRows(r, l.spliced, r.add('linear', [l.spliced.ins, l.tw], {}, metaOf(l.n, `target logits ${at}`))))
          : r.add('linear', [ch.chunk(l.ftx, c), l.tw], {}, metaOf(l.n, `target logits ${at}`));
        if (one) kept.set(keptKey(l.tx, l.tw), t);
        s = r.add('kl_div', [z, t, ch.chunk(l.rows, c)], one ? {} : { reduction: 'sum' }, metaOf(l.n, `chunk ${at}`));
      } else s = r.add('cross_entropy', [z, ch.chunk(l.rows, c)], one ? { ignore_index: ignore } : { ignore_index: ignore, reduction: 'sum' }, metaOf(l.n, `chunk ${at}`));
      l.total = l.total < 0 ? s : r.add('add', [l.total, s]);
      for (let k = before; k < r.nodes.length; k++) partOf.set(k, l.n.id);
    }
  }
  const out = new Map<number, number>();
  for (const l of losses) {
    if (one) {
      out.set(l.n.id, l.total);
      continue;
    }
    const before = r.nodes.length;
    const k = rowCount(r, l.n, l.rows, dtype);
    // No counted row: 0, as cross_entropy and kl_div define it (total is 0 there, 0/0 is not).
    out.set(l.n.id, r.add('where', [r.add('eq', [k, scalar(r, 0, dtype)]), scalar(r, 0, dtype), r.add('div', [l.total, k])], {}, metaOf(l.n, 'mean')));
    for (let j = before; j < r.nodes.length; j++) partOf.set(j, l.n.id);
  }
  return out;
}

/**
 * The gradient ops of every loss over one projection (x, W), in one chunk loop. Returns, per
 * gradient node of `group`, the node holding its value (a zero for those another carries). With
 * one chunk, logits the forward kept are read rather than projected again.
 */
function expandGrads(r: Rewriter, group: readonly Node[], m: (id: number) => number, bindings: SymbolBindings, chunkBytes: number, zeros: Set<number>, kept: ReadonlyMap<string, number>): Map<number, number> {
  const first = group[0]!;
  const x = m(first.inputs[0]!);
  const w = m(first.inputs[1]!);
  const dtype = r.nodes[x]!.type.dtype;
  const ch = chunking(r, x, r.nodes[w]!.type.shape[0]!, bindings, chunkBytes);
  const one = ch.chunks === 1;
  const fx = ch.flat(x);
  interface Loss {
    readonly node: Node;
    readonly kl: boolean;
    readonly wrts: Set<string>;
    readonly rows: number;
    scale: number;
    ftx: number;
    spliced: SplicedTarget | null;
  }
  const losses = new Map<string, Loss>();
  for (const n of group) {
    const key = lossKey(n);
    let l = losses.get(key);
    if (!l) {
      const kl = n.op === 'linear_kl_div_grad';
      const spliced = kl && one ? splicedTarget(r, m(n.inputs[2]!), m(n.inputs[4]!), bindings) : null;
      l = { node: n, kl, wrts: new Set(), rows: ch.flat(m(n.inputs[kl ? 4 : 2]!)), scale: -1, ftx: kl && !spliced ? ch.flat(m(n.inputs[2]!)) : -1, spliced };
      losses.set(key, l);
    }
    l.wrts.add(String(n.attrs['wrt']));
  }
  for (const l of losses.values()) {
    const g = m(l.node.inputs[l.kl ? 5 : 3]!);
    // The scale each counted row's softmax difference takes: g / count ('sum' chunks), or g.
    l.scale = one ? g : r.add('div', [g, rowCount(r, l.node, l.rows, dtype)], {}, metaOf(l.node, 'scale'));
  }
  const all = [...losses.values()];
  const wantX = all.some((l) => l.wrts.has('x'));
  const wantW = all.some((l) => l.wrts.has('weight'));
  const sideLosses = all.filter((l) => l.wrts.has('x') || l.wrts.has('weight'));
  const targets = all.filter((l) => l.kl && (l.wrts.has('target_x') || l.wrts.has('target_weight')));
  const attrs = (l: Loss, wrt: 'logits' | 'target'): Attrs => {
    const a: Record<string, string | number> = l.kl ? { wrt } : { ignore_index: attrInt(l.node.op, l.node.attrs, 'ignore_index', -100) };
    if (!one) a['reduction'] = 'sum';
    return a;
  };
  const transposed = (v: number): number => r.add('transpose', [v], { perm: [1, 0] });
  const wT = wantX ? transposed(w) : -1;
  const dxs: number[] = [];
  let dw = -1;
  const tdx = new Map<Loss, number[]>(targets.map((l) => [l, []]));
  const tdw = new Map<Loss, number>();
  const tT = new Map<Loss, number>(targets.filter((l) => l.wrts.has('target_x')).map((l) => [l, transposed(m(l.node.inputs[3]!))]));
  // A step of a running sum: fusion keeps it a buffer, as the matmul's epilogue (fusion-rules.ts),
  // and the memory plan accumulates it in place.
  const accumulate = (acc: number, part: number): number => (acc < 0 ? part : r.add('add', [acc, part], { accumulate: true }));
  for (let c = 0; c < ch.chunks; c++) {
    const at = `${c + 1}/${ch.chunks}`;
    const xc = ch.chunk(fx, c);
    const z = (one ? kept.get(keptKey(x, w)) : undefined) ?? r.add('linear', [xc, w], {}, metaOf(first, `logits ${at}`));
    const targetLogits = new Map<Loss, number>();
    const tOf = (l: Loss): number => {
      let t = targetLogits.get(l) ?? (one ? kept.get(keptKey(m(l.node.inputs[2]!), m(l.node.inputs[3]!))) : undefined);
      if (t === undefined && l.spliced) t = ch.flat(spliceRows(r, l.spliced, r.add('linear', [l.spliced.ins, m(l.node.inputs[3]!)], {}, metaOf(l.node, `target logits ${at}`))));
      if (t === undefined) t = r.add('linear', [ch.chunk(l.ftx, c), m(l.node.inputs[3]!)], {}, metaOf(l.node, `target logits ${at}`));
      targetLogits.set(l, t);
      return t;
    };
    const dzOf = (l: Loss, wrt: 'logits' | 'target'): number =>
      l.kl
        ? r.add('kl_div_grad', [z, tOf(l), ch.chunk(l.rows, c), l.scale], attrs(l, wrt), metaOf(l.node, `${wrt === 'target' ? 'target ' : ''}gradient ${at}`))
        : r.add('cross_entropy_grad', [z, ch.chunk(l.rows, c), l.scale], attrs(l, 'logits'), metaOf(l.node, `gradient ${at}`));
    if (sideLosses.length > 0) {
      const dz = sideLosses.map((l) => dzOf(l, 'logits')).reduce((a, b) => r.add('add', [a, b]));
      if (wantX) dxs.push(r.add('linear', [dz, wT]));
      if (wantW) dw = accumulate(dw, r.add('matmul', [transposed(dz), xc]));
    }
    for (const l of targets) {
      const dt = dzOf(l, 'target');
      if (l.spliced) {
        // Only the inserted rows count: their logit gradients, projected back (one chunk).
        const sp = l.spliced;
        const tx = m(l.node.inputs[2]!);
        const lead = r.nodes[tx]!.type.shape.slice(0, -1);
        const dsel = insertedRows(r, sp, r.add('reshape', [dt], { shape: [...lead, r.nodes[dt]!.type.shape[1]!] }), bindings);
        if (l.wrts.has('target_x')) tdx.get(l)!.push(ch.flat(spliceRows(r, sp, r.add('linear', [dsel, tT.get(l)!]))));
        if (l.wrts.has('target_weight')) {
          const flatRows = (v: number): number => {
            const sh = r.nodes[v]!.type.shape;
            return r.add('reshape', [v], { shape: [numelDims(sh.slice(0, -1)), sh[sh.length - 1]!] });
          };
          tdw.set(l, r.add('matmul', [transposed(flatRows(dsel)), flatRows(sp.ins)]));
        }
        continue;
      }
      const txc = ch.chunk(l.ftx, c);
      if (l.wrts.has('target_x')) tdx.get(l)!.push(r.add('linear', [dt, tT.get(l)!]));
      if (l.wrts.has('target_weight')) tdw.set(l, accumulate(tdw.get(l) ?? -1, r.add('matmul', [transposed(dt), txc])));
    }
  }
  const rowsBack = (parts: readonly number[], like: number, n: Node, what: string): number => {
    const joined = parts.length === 1 ? parts[0]! : r.add('concat', [...parts], { axis: 0 });
    const shape = r.nodes[like]!.type.shape;
    return shape.length === 2 ? joined : r.add('reshape', [joined], { shape: [...shape] }, metaOf(n, what));
  };
  const zeroLike = (v: number): number => {
    const t = r.nodes[v]!.type;
    const z = r.add('fill', [], { value: 0, shape: [...t.shape], dtype: t.dtype });
    zeros.add(z);
    return z;
  };
  const dx = wantX ? rowsBack(dxs, x, first, 'dx') : -1;
  const out = new Map<number, number>();
  let carriedX = false;
  let carriedW = false;
  for (const n of group) {
    const wrt = String(n.attrs['wrt']);
    const l = losses.get(lossKey(n))!;
    if (wrt === 'x') {
      out.set(n.id, carriedX ? zeroLike(dx) : dx);
      carriedX = true;
    } else if (wrt === 'weight') {
      out.set(n.id, carriedW ? zeroLike(dw) : dw);
      carriedW = true;
    } else if (wrt === 'target_x') out.set(n.id, rowsBack(tdx.get(l)!, m(n.inputs[2]!), n, 'd target_x'));
    else out.set(n.id, tdw.get(l)!);
  }
  return out;
}
