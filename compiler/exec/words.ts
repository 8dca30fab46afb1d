// Visual words of an image's patches (VW-LMM's qualitative figure): the model's `image_words`
// output, softmax(vm_head(projector(tower(pixel_values)))) [1, patches, vocab], evaluated by the
// compiled graph on WebGPU or by the reference executor; the host only ranks the probabilities.
import { KilnError } from '../../runtime/errors.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { GraphBuilder } from '../ir/builder.js';
import { symbolsOf } from '../ir/dims.js';
import { reachable, type Graph } from '../ir/graph.js';
import { runReference } from './reference.js';
import { runOnWebGpu } from './webgpu-run.js';

/** The model output `kiln words` reads: each patch's visual word, [B, patches, vocab]. */
export const IMAGE_WORDS = 'image_words';

/** The `image_words` output node. @throws KilnError when the model declares no such output. */
export function imageWordsNode(graph: Graph): number {
  const o = graph.outputs.find((v) => v.name === IMAGE_WORDS);
  if (!o) throw new KilnError(`the model has no output named '${IMAGE_WORDS}' (the VM head's softmax over each image patch), so it has no visual words (outputs: ${graph.outputs.map((v) => v.name).join(', ') || 'none'})`);
  return o.node;
}

/**
 * The model's graph cut down to what `image_words` reads (tower, projector, VM head): the one
 * output, the pixel_values input, those parameters, and only the symbols their shapes use (B),
 * so that a compile needs no value for T.
 */
export function imageWordsGraph(graph: Graph): Graph {
  const root = imageWordsNode(graph);
  const b = new GraphBuilder();
  const map = new Map<number, number>();
  const params = new Map(graph.params.map((p) => [p.node, p]));
  const inputs = new Map(graph.inputs.map((i) => [i.node, i]));
  const symbols = new Set<string>();
  for (const id of reachable(graph, [root])) {
    const node = graph.nodes[id]!;
    const nid = b.add(node.op, node.inputs.map((i) => map.get(i)!), node.attrs, { ...(node.span ? { span: node.span } : {}), ...(node.label ? { label: node.label } : {}), ...(node.scope ? { scope: node.scope } : {}) });
    map.set(id, nid);
    for (const d of node.type.shape) for (const s of symbolsOf(d)) symbols.add(s);
    const p = params.get(id);
    if (p) b.params.push({ ...p, node: nid, type: b.type(nid) });
    const i = inputs.get(id);
    if (i) b.inputs.push({ ...i, node: nid });
  }
  b.outputs.push({ name: IMAGE_WORDS, node: map.get(root)! });
  return { ...b.build(), symbols: graph.symbols.filter((s) => symbols.has(s)) };
}

/** Checkpoint names of the parameters the visual words read (tower, projector, VM head). */
export function imageWordsParams(graph: Graph): Set<string> {
  const live = new Set(reachable(graph, [imageWordsNode(graph)]));
  return new Set(graph.params.filter((p) => live.has(p.node)).map((p) => p.name));
}

/** What one image's visual words are: probabilities per patch, patches in row-major order. */
export interface VisualWords {
  /** patches per column and per row of the image: [rows, cols]. */
  readonly grid: readonly [number, number];
  readonly vocab: number;
  /** [rows * cols, vocab] f32; each row sums to 1 (a softmax). */
  readonly probs: Float32Array;
}

/**
 * The visual words of one image. `pixel_values` [1, channels, size, size] f32 as the model's
 * input takes it (CLIP-normalised); `params` must hold imageWordsParams(graph). The patches form
 * a square grid (CLIP's patch embedding over a square image).
 * @throws KilnError when the patch count is not a square or the output is not [1, P, vocab].
 */
export async function visualWords(graph: Graph, params: ReadonlyMap<string, HostTensor>, pixelValues: HostTensor, backend: 'cpu' | 'webgpu'): Promise<VisualWords> {
  const sub = imageWordsGraph(graph);
  const node = imageWordsNode(sub);
  const feeds = new Map([...params, ['pixel_values', pixelValues]]);
  const w = backend === 'cpu' ? runReference(sub, feeds, [node], { precision: 'f32' }).get(node)! : (await runOnWebGpu(sub, feeds, [node])).get(node)!;
  if (w.shape.length !== 3 || w.shape[0] !== 1) throw new KilnError(`the model's ${IMAGE_WORDS} output is [${w.shape.join(', ')}], expected [1, patches, vocab]`);
  const [, P, V] = w.shape as [number, number, number];
  const side = Math.round(Math.sqrt(P));
  if (side * side !== P) throw new KilnError(`the model's ${IMAGE_WORDS} output has ${P} patches, not a square grid`);
  return { grid: [side, side], vocab: V, probs: w.data instanceof Float32Array ? w.data : Float32Array.from(w.data) };
}

/** One of a patch's most probable tokens. */
export interface WordChoice {
  readonly id: number;
  readonly p: number;
}

/**
 * The `k` most probable tokens of each patch, most probable first (equal probabilities: the
 * lower id first, as torch.topk's stable order on CPU gives), patches in row-major order.
 * @throws RangeError when k is not a whole number >= 1.
 */
export function topWords(w: VisualWords, k: number): WordChoice[][] {
  if (!Number.isSafeInteger(k) || k < 1) throw new RangeError(`topWords: k must be a whole number >= 1, got ${k}`);
  const V = w.vocab;
  const kk = Math.min(k, V);
  const out: WordChoice[][] = [];
  for (let patch = 0; patch < w.grid[0] * w.grid[1]; patch++) {
    const row = w.probs.subarray(patch * V, (patch + 1) * V);
    // Insertion into a sorted list of kk: O(V k), fine for k of a few and V of 32000.
    const best: WordChoice[] = [];
    for (let id = 0; id < V; id++) {
      const p = row[id]!;
      if (Number.isNaN(p)) throw new KilnError(`the visual word of patch ${patch} has a NaN probability at token ${id}: the checkpoint's weights give no number there`);
      if (best.length === kk && p <= best[kk - 1]!.p) continue;
      let at = best.length;
      while (at > 0 && best[at - 1]!.p < p) at--;
      best.splice(at, 0, { id, p });
      if (best.length > kk) best.pop();
    }
    out.push(best);
  }
  return out;
}
