// Gradient accumulation over K micro-batches as two compiled entries over the shared store:
//   accumulate  forward + backward of one micro-batch, its gradients added into accumulator
//               state (`grad_accum:<param>`); the loss it differentiates is
//               sum_i scale_i * w_i * term_i, with scale_i a per-call scalar input per term
//   apply       clip_grad_norm_ + AdamW from the accumulators (compiler/passes/optimizer.ts),
//               then the accumulators set to zero
//
// The scales decide what the K micro-batches add up to:
//   by item count (default): scale_ki = n_ki / N_i, where n_ki counts the items term i averages
//     over in micro-batch k (non-ignored labels for cross_entropy, selected rows for kl_div)
//     and N_i = sum_k n_ki. Then sum_k scale_ki * term_ki = (sum_k n_ki term_ki) / N_i, the term
//     of one batch holding all K micro-batches' examples: the same loss and the same gradients,
//     whatever the token counts (padding a micro-batch changes no term; see data.ts).
//   mean of means (--accum-mean-of-means): scale_ki = 1/K, the Hugging Face Trainer's behaviour
//     for models whose forward takes no num_items_in_batch (loss / gradient_accumulation_steps
//     per micro-batch), which LLaVA's and VW-LMM's forward do not take: what their released
//     checkpoints were trained with.
// The counts come from the loss ops' own definitions (OpDef.count), evaluated on the host from
// the batch alone (they read labels and ids, not parameters), never from VW-LMM knowledge here.
import type { CheckedModel } from '../check/index.js';
import { GraphBuilder } from '../ir/builder.js';
import type { Graph } from '../ir/graph.js';
import { getOp } from '../ops/registry.js';
import { differentiate } from '../passes/autodiff.js';
import { withAdamW, type AdamWHyper } from '../passes/optimizer.js';
import { runReference } from '../exec/reference.js';
import { KilnError } from '../../runtime/errors.js';
import type { HostTensor } from '../../runtime/tensor.js';

/** The per-call scale input of loss term `term` in the accumulate entry. */
export const scaleName = (term: string): string => `accum.scale:${term}`;
/** The accumulator state tensor of parameter `param`. */
export const accumName = (param: string): string => `grad_accum:${param}`;

/**
 * The accumulate graph: the model's forward with its loss replaced by sum_i scale_i * w_i *
 * term_i, differentiated, and each gradient added into its accumulator (an update). Outputs of
 * interest: the loss terms (`graph.losses`, each the micro-batch's own mean, unscaled).
 */
export function accumulateGraph(model: CheckedModel): Graph {
  const g = model.graph;
  if (g.totalLoss === null || g.losses.length === 0) throw new KilnError(`model ${model.modelName} declares no loss: there is nothing to train`);
  const b = new GraphBuilder(g);
  const scalarInput = (name: string) => {
    const id = b.add('input', [], { name, dtype: 'f32', shape: [] }, { label: name });
    b.inputs.push({ name, node: id });
    return id;
  };
  const c = (value: number) => b.add('fill', [], { value, shape: [], dtype: 'f32' });
  let total: number | null = null;
  for (const l of g.losses) {
    const scaled = b.add('mul', [scalarInput(scaleName(l.name)), b.add('mul', [c(l.weight), l.node])]);
    total = total === null ? scaled : b.add('add', [total, scaled]);
  }
  b.totalLoss = total;
  const diff = differentiate(b.build());
  if (diff.gradients.length === 0) throw new KilnError(`stage ${model.stage?.name ?? '(none)'} trains no parameter`);
  const out = new GraphBuilder(diff);
  for (const grad of diff.gradients) {
    const p = diff.params.find((x) => x.name === grad.name)!;
    const name = accumName(grad.name);
    const acc = out.add('input', [], { name, dtype: 'f32', shape: p.type.shape }, { label: name });
    out.inputs.push({ name, node: acc });
    out.updates.push({ name, node: out.add('add', [acc, grad.node], {}, { label: `new ${name}` }) });
  }
  return out.build();
}

/**
 * The apply graph: every trainable parameter and its accumulator (the gradient), clipping and
 * AdamW as in the fused step (withAdamW, guarded on the norm: a non-finite norm applies
 * nothing), and the accumulators set to zero.
 */
export function applyGraph(model: CheckedModel, hyper: AdamWHyper): Graph {
  const b = new GraphBuilder();
  for (const p of model.graph.params) {
    if (!p.trainable) continue;
    const node = b.add('param', [], { name: p.name, dtype: p.type.dtype, shape: p.type.shape }, { label: p.name });
    b.params.push({ ...p, node });
    const name = accumName(p.name);
    const acc = b.add('input', [], { name, dtype: 'f32', shape: p.type.shape }, { label: name });
    b.inputs.push({ name, node: acc });
    b.gradients.push({ name: p.name, node: acc });
  }
  if (b.gradients.length === 0) throw new KilnError(`stage ${model.stage?.name ?? '(none)'} trains no parameter`);
  const withStep = new GraphBuilder(withAdamW(b.build(), hyper));
  // The accumulators start the next optimiser step at zero. One fill node per shape (hash-consed)
  // resets every accumulator of that shape: in place into one, copied into the others.
  for (const grad of b.gradients) {
    const shape = withStep.type(grad.node).shape;
    withStep.updates.push({ name: accumName(grad.name), node: withStep.add('fill', [], { value: 0, shape: [...shape], dtype: 'f32' }, { label: `zero ${accumName(grad.name)}` }) });
  }
  return withStep.build();
}

/**
 * Counts, per loss term, the items the term averages over in a batch, from the loss op's
 * definition (OpDef.count). Throws KilnError naming the term when its op declares no count
 * (then only --accum-mean-of-means can accumulate it) or when the count reads a parameter.
 */
export class TermCounter {
  private readonly graph: Graph;
  private readonly counts: readonly { name: string; node: number }[];

  constructor(model: CheckedModel) {
    const g = model.graph;
    const b = new GraphBuilder(g);
    this.counts = g.losses.map((l) => {
      const node = b.node(l.node);
      const def = getOp(node.op);
      if (!def.count)
        throw new KilnError(
          `loss term '${l.name}' is ${node.op}(...), which declares no count of the items it averages over, so micro-batches cannot be weighted by their counts; use --accum-mean-of-means`,
        );
      try {
        return { name: l.name, node: def.count(b, node) };
      } catch (e) {
        throw new KilnError(`loss term '${l.name}': ${(e as Error).message}; use --accum-mean-of-means`);
      }
    });
    this.graph = b.build();
    const paramNodes = new Set(g.params.map((p) => p.node));
    for (const c of this.counts) {
      const stack = [c.node];
      const seen = new Set<number>();
      while (stack.length) {
        const id = stack.pop()!;
        if (seen.has(id)) continue;
        seen.add(id);
        if (paramNodes.has(id)) throw new KilnError(`loss term '${c.name}': its item count depends on a parameter, so it cannot be counted from the batch; use --accum-mean-of-means`);
        stack.push(...this.graph.nodes[id]!.inputs);
      }
    }
  }

  /** Items per loss term in `batch` (the model's inputs by name). */
  count(batch: ReadonlyMap<string, HostTensor>): Record<string, number> {
    const r = runReference(this.graph, batch, this.counts.map((c) => c.node), { precision: 'f32' });
    return Object.fromEntries(this.counts.map((c) => [c.name, r.get(c.node)!.data[0]!]));
  }
}

/**
 * Scales of each micro-batch's terms (see the header): `counts[k][term]` from TermCounter, or
 * 1/K for every term with meanOfMeans. A term no micro-batch has items for gets scale 0 (its
 * ops define such a term as 0).
 */
export function accumulationScales(terms: readonly string[], counts: readonly Record<string, number>[], meanOfMeans: boolean): Record<string, number>[] {
  const K = counts.length;
  if (meanOfMeans) return counts.map(() => Object.fromEntries(terms.map((t) => [t, 1 / K])));
  const totals = Object.fromEntries(terms.map((t) => [t, counts.reduce((a, c) => a + c[t]!, 0)]));
  return counts.map((c) => Object.fromEntries(terms.map((t) => [t, totals[t]! > 0 ? c[t]! / totals[t]! : 0])));
}
