// The default entries of a model's artefact: what a training loop, an evaluation and a
// checkpoint writer call, over one set of parameters and optimiser state.
//   loss        forward: the total loss and each term
//   grads       forward + backward: the same, and d(loss)/d(param) for the stage's trainable params
//   train_step  forward, backward and the stage's AdamW update, written into the state in place
import { KilnError } from '../../runtime/errors.js';
import type { CheckedModel } from '../check/index.js';
import type { Graph, NamedValue } from '../ir/graph.js';
import { differentiate } from '../passes/autodiff.js';
import { withAdamW, type AdamWHyper } from '../passes/optimizer.js';
import type { EntrySpec } from './artefact.js';

export const DEFAULT_ENTRIES = ['loss', 'grads', 'train_step'] as const;

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
 * Entry specs for `names` (default: all three). One graph serves them all (the training graph
 * holds the forward and backward), so they name their parameters and state alike.
 */
export function defaultEntries(model: CheckedModel, names: readonly string[] = DEFAULT_ENTRIES): EntrySpec[] {
  for (const n of names) if (!(DEFAULT_ENTRIES as readonly string[]).includes(n)) throw new KilnError(`no entry '${n}' (entries: ${DEFAULT_ENTRIES.join(', ')})`);
  if (model.graph.totalLoss === null) throw new KilnError(`model ${model.modelName} declares no loss, so it has no loss, grads or train_step entry`);
  const needsGrads = names.some((n) => n !== 'loss');
  let graph = needsGrads ? differentiate(model.graph) : model.graph;
  if (needsGrads && graph.gradients.length === 0) throw new KilnError(`stage ${model.stage?.name ?? '(none)'} trains no parameter: there are no gradients to compile`);
  if (names.includes('train_step')) graph = withAdamW(graph, adamwHyper(model));
  return names.map((name): EntrySpec => {
    if (name === 'loss') return { name, graph, outputs: lossOutputs(graph) };
    if (name === 'grads') return { name, graph, outputs: [...lossOutputs(graph), ...graph.gradients.map((g) => ({ name: `grad:${g.name}`, node: g.node }))] };
    return { name, graph, outputs: lossOutputs(graph), applyUpdates: true };
  });
}
