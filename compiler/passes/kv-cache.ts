// Prefill and decode graphs with a KV cache, derived from any model graph whose attention is the
// `attention` op (so a decoder written in a spec gets generation without model-specific code).
//
//   prefill  the model over the prompt (B = 1, T = the prompt's length), with each attention's
//            keys and values (after rope) written into a fixed-capacity cache per layer at
//            position 0 (write_at; positions past the prompt unchanged); outputs the logits of
//            the last position.
//   decode   the model over one token (B = 1, T = 1) at a position fed at run time: every rope
//            rotates at that position, every attention writes its key and value into the cache
//            at that position (write_at: in place, a kernel over the new row only) and attends over the cache
//            positions <= pos (and > pos - window with a sliding window, the mask transformers'
//            Mistral applies with a cache: kv_idx > q_idx - sliding_window) by flash-decoding
//            (decode_attention_split over blocks of keys, then decode_attention_merge), whose work
//            follows the position rather than the capacity; outputs the logits.
//            A splice (the image placeholder) is the identity on a token that is not the
//            placeholder, so the vision tower drops out of the decode step.
// Both graphs have concrete shapes (no symbols), so they compile into one artefact whose state is
// the caches `kv.{layer}.k` / `kv.{layer}.v` [rows, kv_heads, capacity, head_dim].
//
// Several prompts at once (`leftPadded`): the rows are padded on the left to one length, as
// transformers pads for generation, and an input `prompt_start` [rows] (i32) gives each row's
// first real position (its number of padding positions; all before the image placeholder, so the
// splice keeps them in front). As transformers computes position_ids = cumsum(attention_mask) - 1
// for a left-padded batch, row b's positions count from its first real token: rope rotates cache
// position t at t - prompt_start[b]. Every attention masks the padding keys (key >= start) on
// top of the causal and sliding-window masks, which stay in cache positions as transformers'
// masks do (q_idx - kv_idx is the same with and without the padding). The prefill writes out
// its attention as matmul, mask, softmax, matmul for that; the padding rows' own outputs are
// never read by a real row. All rows share the cache position of the decode step.
import { KilnError } from '../../runtime/errors.js';
import { PROMPT_START } from '../../runtime/generate.js';
import { GraphBuilder } from '../ir/builder.js';
import { dimToString, isSymDim, type SymbolBindings } from '../ir/dims.js';
import { evalAttr, evalAttrs, reachable, type AttrValue, type Attrs, type Graph, type Node } from '../ir/graph.js';
import { DECODE_BLOCK } from '../ops/decode_attention.js';

/** A cache tensor's name, for layer `layer` (attention nodes in graph order) and `which` k or v. */
export const cacheName = (layer: number, which: 'k' | 'v'): string => `kv.${layer}.${which}`;

/** The position axis of every cache tensor [1, kv_heads, capacity, head_dim]. */
export const CACHE_AXIS = 2;

/** The input of left-padded generation graphs: each row's first real position [rows] i32. */
export { PROMPT_START };

export interface GenerationGraphs {
  readonly prefill: Graph;
  readonly decode: Graph;
  /** prompts per call (the batch dim B of both graphs). */
  readonly rows: number;
  /** whether both graphs take PROMPT_START (several prompts, left-padded). */
  readonly leftPadded: boolean;
  /** output names: `logits` [1, 1, vocab] in both. */
  readonly caches: readonly string[];
  /** the decoder's sequence length for the prompt: input_ids' T with the image spliced in. */
  readonly promptLength: number;
  readonly capacity: number;
}

type Rewrite = (b: GraphBuilder, node: Node, inputs: number[]) => number | undefined;

/**
 * The node's attributes with concrete dims. A symbolic dim that is a dim of one of its inputs
 * (a reshape keeping [B, L]) takes that input's dim in the rebuilt graph, since the decode step
 * changes lengths the symbols alone do not determine (the splice no longer inserts the image);
 * any other is evaluated under `bindings`.
 */
function concreteAttrs(graph: Graph, node: Node, b: GraphBuilder, inputs: readonly number[], bindings: SymbolBindings): Attrs {
  const known = new Map<string, number>();
  node.inputs.forEach((old, k) => {
    const now = b.type(inputs[k]!).shape;
    graph.nodes[old]!.type.shape.forEach((d, axis) => {
      const v = now[axis];
      if (isSymDim(d) && typeof v === 'number' && !known.has(dimToString(d))) known.set(dimToString(d), v);
    });
  });
  const conc = (v: AttrValue): AttrValue => {
    if (isSymDim(v)) return known.get(dimToString(v)) ?? evalAttr(v, bindings);
    if (Array.isArray(v)) return v.map((x: AttrValue) => conc(x));
    return v;
  };
  const out: Record<string, AttrValue> = {};
  for (const [k, v] of Object.entries(node.attrs)) out[k] = conc(v);
  return out;
}

/**
 * Rebuilds the nodes `roots` needs under concrete `bindings` (every shape and attribute
 * evaluated), letting `rewrite` replace a node; returns the builder and the old -> new node map.
 */
function replay(graph: Graph, ids: readonly number[], bindings: SymbolBindings, rewrite: Rewrite): { b: GraphBuilder; map: Map<number, number> } {
  const b = new GraphBuilder();
  const map = new Map<number, number>();
  const params = new Map(graph.params.map((p) => [p.node, p]));
  for (const id of ids) {
    const node = graph.nodes[id]!;
    const inputs = node.inputs.map((i) => map.get(i)!);
    const meta = { ...(node.span ? { span: node.span } : {}), ...(node.label ? { label: node.label } : {}) };
    let out = rewrite(b, node, inputs);
    if (out === undefined) {
      out = b.add(node.op, inputs, concreteAttrs(graph, node, b, inputs, bindings), meta);
      if (node.op === 'input') b.inputs.push({ name: String(node.attrs['name']), node: out });
      const p = params.get(id);
      if (p) b.params.push({ ...p, node: out, type: b.type(out) });
    }
    map.set(id, out);
  }
  return { b, map };
}

function logitsOf(graph: Graph): number {
  const o = graph.outputs.find((x) => x.name === 'logits');
  if (!o) throw new KilnError(`the model has no output named 'logits' to generate from (outputs: ${graph.outputs.map((x) => x.name).join(', ') || 'none'})`);
  return o.node;
}

function shapeOf(b: GraphBuilder, id: number): number[] {
  return b.type(id).shape.map((d) => {
    if (typeof d !== 'number') throw new KilnError('a generation graph must have concrete shapes');
    return d;
  });
}

/** What the decode step computes: the nodes `logits` needs when a splice passes its sequence through. */
function decodeReachable(graph: Graph, logits: number): number[] {
  const seen = new Uint8Array(graph.nodes.length);
  const stack = [logits];
  while (stack.length > 0) {
    const id = stack.pop()!;
    if (seen[id]) continue;
    seen[id] = 1;
    const n = graph.nodes[id]!;
    for (const i of n.op === 'splice' ? n.inputs.slice(0, 1) : n.inputs) if (!seen[i]) stack.push(i);
  }
  const out: number[] = [];
  for (let i = 0; i < seen.length; i++) if (seen[i]) out.push(i);
  return out;
}

/**
 * Attention over keys that `allowed` (bool, broadcasting to [B, Hq, Lq, Lk]) admits, written out:
 * q [B, Hq, Lq, D], k [B, Hkv, Lk, D], v [B, Hkv, Lk, Dv] -> [B, Hq, Lq, Dv]. Query head h reads
 * kv head floor(h / G) (repeat_kv): q as [B, Hkv, G * Lq, D] is the same memory. A masked score
 * is -1e30, and exp(-1e30 - max) is exactly 0 in f32, as transformers' finfo.min mask gives.
 */
function explicitAttention(b: GraphBuilder, q: number, k: number, v: number, scale: number, allowed: (b: GraphBuilder) => number): number {
  const [B, Hq, Lq, D] = shapeOf(b, q) as [number, number, number, number];
  const [, Hkv, Lk] = shapeOf(b, k) as [number, number, number, number];
  const Dv = shapeOf(b, v)[3]!;
  const G = Hq / Hkv;
  const qg = b.add('reshape', [q], { shape: [B, Hkv, G * Lq, D] });
  const raw = b.add('mul', [b.add('matmul', [qg, b.add('transpose', [k], { perm: [0, 1, 3, 2] })]), b.add('fill', [], { value: scale, shape: [], dtype: 'f32' })]);
  const scores = b.add('reshape', [raw], { shape: [B, Hq, Lq, Lk] });
  const masked = b.add('where', [allowed(b), scores, b.add('fill', [], { value: -1e30, shape: [], dtype: 'f32' })]);
  const p = b.add('reshape', [b.add('softmax', [masked], { axis: -1 })], { shape: [B, Hkv, G * Lq, Lk] });
  return b.add('reshape', [b.add('matmul', [p, v])], { shape: [B, Hq, Lq, Dv] });
}

/**
 * The prefill and decode graphs of `graph` for prompts of `T` input ids and a cache of
 * `capacity` positions. `rows` prompts per call (default 1); `leftPadded` (implied by rows > 1):
 * the graphs take PROMPT_START (see the file comment). `promptLength` is the decoder's length of
 * the prompt (T with the spliced image); it must be at most `capacity`.
 * @throws KilnError when the graph has no `logits` output or no attention, or the prompt does not fit.
 */
export function generationGraphs(graph: Graph, opts: { T: number; capacity: number; rows?: number; leftPadded?: boolean }): GenerationGraphs {
  const logits = logitsOf(graph);
  const C = opts.capacity;
  const rows = opts.rows ?? 1;
  const padded = opts.leftPadded === true || rows > 1;
  const startInputs = new Map<GraphBuilder, number>();
  /** PROMPT_START [rows], added to `b` on first use. */
  const start = (b: GraphBuilder): number => {
    let id = startInputs.get(b);
    if (id === undefined) {
      id = b.add('input', [], { name: PROMPT_START, dtype: 'i32', shape: [rows] });
      b.inputs.push({ name: PROMPT_START, node: id });
      startInputs.set(b, id);
    }
    return id;
  };
  const scaleOf = (node: Node, D: number): number => (typeof node.attrs['scale'] === 'number' ? node.attrs['scale'] : 1 / Math.sqrt(D));
  const windowOf = (node: Node): number => (typeof node.attrs['window'] === 'number' ? node.attrs['window'] : 0);
  const caches: string[] = [];
  const decodeIds = decodeReachable(graph, logits);
  // The cached layers: the attentions the decode step runs (not the vision tower's).
  const cached = decodeIds.filter((id) => graph.nodes[id]!.op === 'attention');
  if (cached.length === 0) throw new KilnError('the model has no attention op on the path to its logits, so there is nothing to cache');
  for (const id of cached)
    if (graph.nodes[id]!.attrs['causal'] !== true) throw new KilnError(`attention${graph.nodes[id]!.label ? ` '${graph.nodes[id]!.label}'` : ''} is not causal: a token-by-token decode would change what it computes`);

  // Prefill: the model as written, plus the cache writes (and with left padding, positions from
  // each row's start and the padding keys masked).
  const preBindings = new Map([['B', rows], ['T', opts.T]]);
  // Only the decoder's attentions and ropes see the padding (the vision tower's sequence is its patches).
  const decoderNodes = new Set(decodeIds);
  const pre = replay(graph, reachable(graph, [logits]), preBindings, (b, node, inputs) => {
    if (!padded || !decoderNodes.has(node.id)) return undefined;
    const fill = (value: number) => b.add('fill', [], { value, shape: [], dtype: 'i32' });
    if (node.op === 'rope') return b.add('rope', [inputs[0]!, b.add('sub', [fill(0), start(b)])], evalAttrs(node.attrs, preBindings));
    if (node.op !== 'attention') return undefined;
    const [q, k, v] = inputs as [number, number, number];
    const L = shapeOf(b, q)[2]!;
    const Lk = shapeOf(b, k)[2]!;
    return explicitAttention(b, q, k, v, scaleOf(node, shapeOf(b, q)[3]!), (b) => {
      const keys = b.add('reshape', [b.add('iota', [], { n: Lk })], { shape: [1, 1, 1, Lk] });
      const queries = b.add('reshape', [b.add('iota', [], { n: L })], { shape: [1, 1, L, 1] });
      let ok = b.add('ge', [keys, b.add('reshape', [start(b)], { shape: [rows, 1, 1, 1] })]);
      const and = (c: number) => (ok = b.add('where', [c, ok, c]));
      if (node.attrs['causal'] === true) and(b.add('le', [keys, queries]));
      const window = windowOf(node);
      if (window > 0) and(b.add('gt', [b.add('add', [keys, fill(window)]), queries]));
      return ok;
    });
  });
  let promptLength = -1;
  cached.forEach((id, layer) => {
    // The keys and values the attention read: its own inputs, in the prefill's nodes.
    const [k, v] = graph.nodes[id]!.inputs.slice(1, 3).map((i) => pre.map.get(i)!) as [number, number];
    for (const [which, src] of [['k', k], ['v', v]] as const) {
      const [B, H, L, D] = shapeOf(pre.b, src) as [number, number, number, number];
      promptLength = L;
      if (L > C) throw new KilnError(`the prompt is ${L} positions long (with the image), more than the KV cache's capacity of ${C}`);
      const name = cacheName(layer, which);
      const cache = pre.b.add('input', [], { name, dtype: 'f32', shape: [B, H, C, D] });
      pre.b.inputs.push({ name, node: cache });
      // Positions past the prompt keep what they held: decode writes each before attending to it.
      const full = pre.b.add('write_at', [cache, src, pre.b.add('fill', [], { value: 0, shape: [], dtype: 'i32' })], { axis: CACHE_AXIS });
      pre.b.updates.push({ name, node: full });
      caches.push(name);
    }
  });
  const preLogits = pre.map.get(logits)!;
  const [, Lz] = shapeOf(pre.b, preLogits) as [number, number];
  pre.b.outputs.push({ name: 'logits', node: pre.b.add('slice', [preLogits], { axis: 1, start: Lz - 1, stop: Lz }) });

  // Decode: one token at run-time position `position`.
  let layer = 0;
  let pos = -1;
  const position = (b: GraphBuilder): number => {
    if (pos < 0) {
      pos = b.add('input', [], { name: 'position', dtype: 'i32', shape: [] });
      b.inputs.push({ name: 'position', node: pos });
    }
    return pos;
  };
  const one = new Map([['B', rows], ['T', 1]]);
  const dec = replay(graph, decodeIds, one, (b, node, inputs) => {
    if (node.op === 'splice') return inputs[0];
    // With left padding, row b's token at cache position p is at position p - start[b].
    if (node.op === 'rope') return b.add('rope', [inputs[0]!, padded ? b.add('sub', [position(b), start(b)]) : position(b)], evalAttrs(node.attrs, one));
    if (node.op !== 'attention') return undefined;
    const p = position(b);
    const [q, k, v] = inputs as [number, number, number];
    const D = shapeOf(b, q)[3]!;
    const [, Hkv, , Dv] = shapeOf(b, v) as [number, number, number, number];
    const written = (which: 'k' | 'v', x: number, d: number): number => {
      const name = cacheName(layer, which);
      const cache = b.add('input', [], { name, dtype: 'f32', shape: [rows, Hkv, C, d] });
      b.inputs.push({ name, node: cache });
      const w = b.add('write_at', [cache, x, p], { axis: CACHE_AXIS });
      b.updates.push({ name, node: w });
      return w;
    };
    const K = written('k', k, D);
    const V = written('v', v, Dv);
    layer++;
    // Flash-decoding (compiler/ops/decode_attention.ts): blocks of keys up to the position, then
    // one merge; the split's workgroups along the blocks follow the per-call position.
    const split = b.add('decode_attention_split', [q, K, V, p, ...(padded ? [start(b)] : [])], { block: DECODE_BLOCK, window: windowOf(node), scale: scaleOf(node, D) });
    return b.add('decode_attention_merge', [split, p], { block: DECODE_BLOCK });
  });
  if (pos < 0) position(dec.b);
  // A padded graph takes PROMPT_START even where nothing reads it, so every call feeds the same inputs.
  if (padded) {
    start(pre.b);
    start(dec.b);
  }
  dec.b.outputs.push({ name: 'logits', node: dec.map.get(logits)! });
  const built = (b: GraphBuilder): Graph => ({ ...b.build(), symbols: [] });
  return { prefill: built(pre.b), decode: built(dec.b), caches, promptLength, capacity: C, rows, leftPadded: padded };
}
