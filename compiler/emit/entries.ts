// The default entries of a model's artefact: what a training loop, an evaluation and a
// checkpoint writer call, over one set of parameters and optimiser state.
//   loss        forward: the total loss and each term
//   grads       forward + backward: the same, and d(loss)/d(param) for the stage's trainable params
//   train_step  forward, backward and the stage's AdamW update, written into the state in place
//   eval        forward: the loss terms and the model's `logits` (held-out answer accuracy);
//               not compiled by default: it reads back [B, L, vocab] floats per call
//   prefill     generation (compiler/passes/kv-cache.ts): the prompt's logits of its last
//               position, filling the KV caches (state); with `decode`, on request
//   decode      one token per row at a run-time cache position, reading and writing the caches
import { KilnError } from '../../runtime/errors.js';
import type { CheckedModel } from '../check/index.js';
import type { Graph, NamedValue } from '../ir/graph.js';
import { differentiate } from '../passes/autodiff.js';
import { withAdamW, type AdamWHyper } from '../passes/optimizer.js';
import type { GenerationDecl } from '../../runtime/artefact.js';
import { CACHE_AXIS, type GenerationGraphs } from '../passes/kv-cache.js';
import type { EntrySpec, PerCallSymbol } from './artefact.js';

export const DEFAULT_ENTRIES = ['loss', 'grads', 'train_step'] as const;
/** Every entry `defaultEntries` can make: the defaults and `eval`. */
export const ENTRY_NAMES = [...DEFAULT_ENTRIES, 'eval'] as const;
/** The generation entries (`generationEntries`), always compiled together. */
export const GENERATION_ENTRIES = ['prefill', 'decode'] as const;

/** AdamW's settings from the stage's `optimizer adamw(...)` (torch's defaults where not given). */
export function adamwHyper(model: CheckedModel): AdamWHyper {
  const o = model.stage?.optimizer;
  if (o && o.name !== 'adamw') throw new KilnError(`stage ${model.stage!.name}: optimizer ${o.name} cannot be compiled yet (adamw can)`);
  const num = (key: string, fallback: number): number => (typeof o?.args[key] === 'number' ? (o.args[key] as number) : fallback);
  return { beta1: num('beta1', 0.9), beta2: num('beta2', 0.999), eps: num('eps', 1e-8), weightDecay: num('weight_decay', 0.0) };
}

/** Output names of an entry: `loss`, the loss terms by name, `grad:<checkpoint name>`. */
function lossOutputs(g: Graph): NamedValue[] {
  return [{ name: 'loss', node: g.totalLoss! }, ...g.losses.map((l) => ({ name: `loss:${l.name}`, node: l.node }))];
}

/**
 * The `eval` entry's outputs: the loss, its terms, and the model's output `logits` [B, L, vocab].
 * Reading the logits back costs B * L * vocab * 4 bytes per call (about 262 MB for one row of
 * 2048 positions at a vocabulary of 32000): fine for held-out scoring of small models, a
 * reason to score on the device for large ones.
 * @throws KilnError when the model declares no output named `logits`.
 */
export function evalOutputs(model: CheckedModel, graph: Graph = model.graph): NamedValue[] {
  const logits = graph.outputs.find((o) => o.name === 'logits');
  if (!logits) throw new KilnError(`model ${model.modelName} has no output named 'logits', so it has no eval entry (outputs: ${graph.outputs.map((o) => o.name).join(', ') || 'none'})`);
  return [...lossOutputs(graph), { name: 'logits', node: logits.node }];
}

/**
 * Entry specs for `names` (default: the three of DEFAULT_ENTRIES; `eval` on request). One graph serves them all (the training graph
 * holds the forward and backward), so they name their parameters and state alike.
 */
export function defaultEntries(model: CheckedModel, names: readonly string[] = DEFAULT_ENTRIES): EntrySpec[] {
  for (const n of names) if (!(ENTRY_NAMES as readonly string[]).includes(n)) throw new KilnError(`no entry '${n}' (entries: ${ENTRY_NAMES.join(', ')})`);
  if (model.graph.totalLoss === null) throw new KilnError(`model ${model.modelName} declares no loss, so it has no loss, grads, train_step or eval entry`);
  const needsGrads = names.some((n) => n !== 'loss' && n !== 'eval');
  let graph = needsGrads ? differentiate(model.graph) : model.graph;
  if (needsGrads && graph.gradients.length === 0) throw new KilnError(`stage ${model.stage?.name ?? '(none)'} trains no parameter: there are no gradients to compile`);
  if (names.includes('train_step')) graph = withAdamW(graph, adamwHyper(model));
  return names.map((name): EntrySpec => {
    if (name === 'loss') return { name, graph, outputs: lossOutputs(graph) };
    if (name === 'eval') return { name, graph, outputs: evalOutputs(model, graph) };
    if (name === 'grads') return { name, graph, outputs: [...lossOutputs(graph), ...graph.gradients.map((g) => ({ name: `grad:${g.name}`, node: g.node }))] };
    return { name, graph, outputs: lossOutputs(graph), applyUpdates: true };
  });
}

/** How `g` was built, as the manifest records it for runtime/generate.ts. */
export function generationDecl(g: GenerationGraphs): GenerationDecl {
  const ids = g.prefill.inputs.find((i) => i.name === 'input_ids');
  const T = ids ? g.prefill.nodes[ids.node]!.type.shape[1] : undefined;
  if (typeof T !== 'number') throw new KilnError('the prefill graph has no input_ids [rows, T] with a concrete T');
  const splice = g.prefill.nodes.find((n) => n.op === 'splice');
  const imageToken = splice ? Number(splice.attrs['token']) : undefined;
  return { rows: g.rows, promptTokens: T, promptLength: g.promptLength, capacity: g.capacity, leftPadded: g.leftPadded, ...(imageToken === undefined ? {} : { imageToken }) };
}

/**
 * The `prefill` and `decode` entries of `g` (their output: `logits`; their updates: the KV caches),
 * and what compileArtefact needs beside them: the caches' position axis, the manifest's
 * generation block, and the decode step's per-call symbol `position` (the cache position,
 * 0 .. capacity - 1), so that one compiled decode serves every position.
 */
export function generationEntries(g: GenerationGraphs): { specs: EntrySpec[]; kvCaches: Map<string, number>; generation: GenerationDecl; perCall: PerCallSymbol[] } {
  const logits = (graph: Graph) => graph.outputs.filter((o) => o.name === 'logits');
  return {
    specs: [
      { name: 'prefill', graph: g.prefill, outputs: logits(g.prefill), applyUpdates: true },
      { name: 'decode', graph: g.decode, outputs: logits(g.decode), applyUpdates: true },
    ],
    kvCaches: new Map(g.caches.map((n) => [n, CACHE_AXIS])),
    generation: generationDecl(g),
    perCall: [{ name: 'position', input: 'position', min: 0, max: g.capacity - 1 }],
  };
}
