// Prefill and decode graphs with a KV cache, derived from any model graph whose attention is the
// `attention` op (so a decoder written in a spec gets generation without model-specific code).
//
//   prefill  the model over the prompt (B = 1, T = the prompt's length), with each attention's
//            keys and values (after rope) written into a fixed-capacity cache per layer (positions
//            past the prompt unchanged); outputs the logits of the last position.
//   decode   the model over one token (B = 1, T = 1) at a position fed at run time: every rope
//            rotates at that position, every attention writes its key and value into the cache
//            at that position (where(iota(C) == pos, new, cache)) and attends over the cache
//            positions <= pos (and > pos - window with a sliding window, the mask transformers'
//            Mistral applies with a cache: kv_idx > q_idx - sliding_window); outputs the logits.
//            A splice (the image placeholder) is the identity on a token that is not the
//            placeholder, so the vision tower drops out of the decode step.
// Both graphs have concrete shapes (no symbols), so they compile into one artefact whose state is
// the caches `kv.{layer}.k` / `kv.{layer}.v` [1, kv_heads, capacity, head_dim].
import { KilnError } from '../../runtime/errors.js';
import { GraphBuilder } from '../ir/builder.js';
import { dimToString, isSymDim, type SymbolBindings } from '../ir/dims.js';
import { evalAttr, evalAttrs, reachable, type AttrValue, type Attrs, type Graph, type Node } from '../ir/graph.js';

/** A cache tensor's name, for layer `layer` (attention nodes in graph order) and `which` k or v. */
export const cacheName = (layer: number, which: 'k' | 'v'): string => `kv.${layer}.${which}`;

/** The position axis of every cache tensor [1, kv_heads, capacity, head_dim]. */
export const CACHE_AXIS = 2;

export interface GenerationGraphs {
  readonly prefill: Graph;
  readonly decode: Graph;
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
 * The prefill and decode graphs of `graph` for a prompt of `T` input ids (one row) and a cache of
 * `capacity` positions. `promptLength` is the decoder's length of the prompt (T with the spliced
 * image); it must be at most `capacity`.
 * @throws KilnError when the graph has no `logits` output or no attention, or the prompt does not fit.
 */
export function generationGraphs(graph: Graph, opts: { T: number; capacity: number }): GenerationGraphs {
  const logits = logitsOf(graph);
  const C = opts.capacity;
  const caches: string[] = [];
  const decodeIds = decodeReachable(graph, logits);
  // The cached layers: the attentions the decode step runs (not the vision tower's).
  const cached = decodeIds.filter((id) => graph.nodes[id]!.op === 'attention');
  if (cached.length === 0) throw new KilnError('the model has no attention op on the path to its logits, so there is nothing to cache');
  for (const id of cached)
    if (graph.nodes[id]!.attrs['causal'] !== true) throw new KilnError(`attention${graph.nodes[id]!.label ? ` '${graph.nodes[id]!.label}'` : ''} is not causal: a token-by-token decode would change what it computes`);

  // Prefill: the model as written, plus the cache writes.
  const pre = replay(graph, reachable(graph, [logits]), new Map([['B', 1], ['T', opts.T]]), () => undefined);
  const attn = cached.map((id) => pre.map.get(id)!);
  let promptLength = -1;
  attn.forEach((a, layer) => {
    const node = pre.b.node(a);
    for (const [which, src] of [['k', node.inputs[1]!], ['v', node.inputs[2]!]] as const) {
      const [B, H, L, D] = shapeOf(pre.b, src) as [number, number, number, number];
      promptLength = L;
      if (L > C) throw new KilnError(`the prompt is ${L} positions long (with the image), more than the KV cache's capacity of ${C}`);
      const name = cacheName(layer, which);
      const cache = pre.b.add('input', [], { name, dtype: 'f32', shape: [B, H, C, D] });
      pre.b.inputs.push({ name, node: cache });
      // Positions past the prompt keep what they held: decode writes each before attending to it.
      const full = L === C ? src : pre.b.add('concat', [src, pre.b.add('slice', [cache], { axis: 2, start: L, stop: C })], { axis: 2 });
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
  const one = new Map([['B', 1], ['T', 1]]);
  const dec = replay(graph, decodeIds, one, (b, node, inputs) => {
    if (node.op === 'splice') return inputs[0];
    if (node.op === 'rope') return b.add('rope', [inputs[0]!, position(b)], evalAttrs(node.attrs, one));
    if (node.op !== 'attention') return undefined;
    const p = position(b);
    const [q, k, v] = inputs as [number, number, number];
    const [, Hq, , D] = shapeOf(b, q) as [number, number, number, number];
    const [, Hkv, , Dv] = shapeOf(b, v) as [number, number, number, number];
    const G = Hq / Hkv;
    const fill = (value: number, dtype: 'f32' | 'i32') => b.add('fill', [], { value, shape: [], dtype });
    const written = (which: 'k' | 'v', x: number, d: number): number => {
      const name = cacheName(layer, which);
      const cache = b.add('input', [], { name, dtype: 'f32', shape: [1, Hkv, C, d] });
      b.inputs.push({ name, node: cache });
      const hit = b.add('eq', [b.add('reshape', [b.add('iota', [], { n: C })], { shape: [1, 1, C, 1] }), p]);
      const w = b.add('where', [hit, x, cache]);
      b.updates.push({ name, node: w });
      return w;
    };
    const K = written('k', k, D);
    const V = written('v', v, Dv);
    layer++;
    const scale = typeof node.attrs['scale'] === 'number' ? node.attrs['scale'] : 1 / Math.sqrt(D);
    // Query head h reads kv head floor(h / G) (repeat_kv): [1, Hq, 1, D] as [1, Hkv, G, D].
    const qg = b.add('reshape', [q], { shape: [1, Hkv, G, D] });
    const scores = b.add('mul', [b.add('matmul', [qg, b.add('transpose', [K], { perm: [0, 1, 3, 2] })]), fill(scale, 'f32')]);
    const keys = b.add('reshape', [b.add('iota', [], { n: C })], { shape: [1, 1, 1, C] });
    // exp(-1e30 - max) is exactly 0 in f32, as transformers' finfo.min mask gives.
    const neg = fill(-1e30, 'f32');
    let masked = b.add('where', [b.add('le', [keys, p]), scores, neg]);
    const window = typeof node.attrs['window'] === 'number' ? node.attrs['window'] : 0;
    if (window > 0) masked = b.add('where', [b.add('gt', [b.add('add', [keys, fill(window, 'i32')]), p]), masked, neg]);
    const out = b.add('matmul', [b.add('softmax', [masked], { axis: -1 }), V]);
    return b.add('reshape', [out], { shape: [1, Hq, 1, Dv] });
  });
  if (pos < 0) position(dec.b);
  dec.b.outputs.push({ name: 'logits', node: dec.map.get(logits)! });
  const built = (b: GraphBuilder): Graph => ({ ...b.build(), symbols: [] });
  return { prefill: built(pre.b), decode: built(dec.b), caches, promptLength, capacity: C };
}
