// The optimiser as graph ops: a pass that appends gradient clipping and AdamW's update to a
// differentiated graph, so that the update fuses and runs like any other part of the step (one
// elementwise kernel per parameter, reading the gradient where the backward left it). The
// moments are new inputs, and `updates` tells the executor to write the new parameter and
// moments back after the step.
//
// Clipping is torch.nn.utils.clip_grad_norm_ (norm_type 2, foreach) as the Hugging Face Trainer
// calls it before every optimiser step, over all trainable parameters:
//   norm_i = ||g_i||_2;  total = ||(norm_1, ..., norm_n)||_2   (torch's _get_total_norm)
//   coef = min(max_norm / (total + 1e-6), 1);  g_i <- g_i * coef
// It needs every gradient before any update, so it lives here, in the step's graph: the plan
// then keeps every gradient alive until the norm is known (the price: the sum of the gradients'
// bytes at the step's peak, where before each could die at its own update). max_norm is a
// per-step scalar input so one compiled step serves any value; max_norm <= 0 disables clipping
// (the Trainer skips clip_grad_norm_ for max_grad_norm 0): coef is then exactly 1. The total is
// an output (`grad_norm`, what the Trainer logs: the norm before clipping).
//
// The arithmetic is torch.optim.AdamW's (decoupled weight decay, bias corrections):
//   p <- p * (1 - lr * wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),   bc_i = 1 - b_i^t
// The step-dependent scalars (lr after the schedule, bc1, sqrt(bc2)) are inputs, so one compiled
// step serves every step.
//
// Weight decay goes where the Hugging Face Trainer puts it (transformers 5.18,
// Trainer.create_optimizer / get_decay_parameter_names): two parameter groups, `weight_decay`
// for the decaying ones and 0 for the rest, where a parameter is exempt when its lowercased
// name matches one of the Trainer's patterns (`bias`, `layernorm`, `rmsnorm`, a dotted
// component that is exactly `norm`, or `_norm` ending a component) or it lies inside an
// nn.LayerNorm (ALL_LAYERNORM_LAYERS). Kiln asks the same of the checkpoint name (the patterns
// do not depend on the prefix a wrapper adds) and of the spec's module types: a parameter
// declared under a module named `LayerNorm` (models/common.kiln's, the spec's nn.LayerNorm) is
// exempt. So biases, every LayerNorm (CLIP's layer_norm1/2 and pre_layrnorm by their module,
// since their names match no pattern) and every RMSNorm weight named like transformers names
// them (input_layernorm, post_attention_layernorm, model.norm) keep their values under decay;
// matrices and embeddings decay. See `decays`.
//
// A step whose loss or gradient norm is not finite is not applied: parameters and moments keep
// their values (torch would write NaN into them). Kiln stops training at such a step, and the
// state left on the device is then the one that produced it, which the diagnosis re-runs to
// name the op where the NaN or inf began.
import { GraphBuilder } from '../ir/builder.js';
import { OPTIMIZER_SCOPE, type Graph, type ParamInfo } from '../ir/graph.js';
import { STEP_INPUTS, momentName } from '../../runtime/optim/schedule.js';

export interface AdamWHyper {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export { STEP_INPUTS, momentName };

/** The output name of the pre-clip global gradient norm in a graph from withAdamW. */
export const GRAD_NORM = 'grad_norm';

/** The node of the pre-clip global gradient norm (an f32 scalar) of a graph from withAdamW. */
export function gradNormNode(graph: Graph): number {
  const o = graph.outputs.find((v) => v.name === GRAD_NORM);
  if (!o) throw new Error('gradNormNode: the graph has no optimiser step (withAdamW)');
  return o.node;
}

/** transformers 5.18 Trainer.get_decay_parameter_names' forbidden_name_patterns, searched in the lowercased name. */
export const NO_DECAY_NAME_PATTERNS: readonly RegExp[] = [/bias/, /layernorm/, /rmsnorm/, /(?:^|\.)norm(?:$|\.)/, /_norm(?:$|\.)/];
/** Spec module types that stand for nn.LayerNorm (the Trainer's ALL_LAYERNORM_LAYERS). */
export const NO_DECAY_MODULES: readonly string[] = ['LayerNorm'];

/**
 * Whether AdamW's weight decay applies to this parameter, as the Hugging Face Trainer decides
 * (see the file comment): not for names matching NO_DECAY_NAME_PATTERNS, nor inside a module
 * of a NO_DECAY_MODULES type.
 */
export function decays(p: Pick<ParamInfo, 'name' | 'modules'>): boolean {
  const name = p.name.toLowerCase();
  if (NO_DECAY_NAME_PATTERNS.some((r) => r.test(name))) return false;
  return !(p.modules ?? []).some((m) => NO_DECAY_MODULES.includes(m));
}

export function withAdamW(graph: Graph, hyper: AdamWHyper): Graph {
  if (graph.gradients.length === 0) throw new Error('withAdamW: differentiate the graph first');
  const b = new GraphBuilder(graph);
  b.scope = OPTIMIZER_SCOPE;
  const scalarInput = (name: string) => {
    const id = b.add('input', [], { name, dtype: 'f32', shape: [] }, { label: name });
    b.inputs.push({ name, node: id });
    return id;
  };
  const lr = scalarInput(STEP_INPUTS.lr);
  const bc1 = scalarInput(STEP_INPUTS.bc1);
  const sqrtBc2 = scalarInput(STEP_INPUTS.sqrtBc2);
  const maxNorm = scalarInput(STEP_INPUTS.maxGradNorm);
  const c = (value: number) => b.add('fill', [], { value, shape: [], dtype: 'f32' });
  const decay = b.add('sub', [c(1), b.add('mul', [lr, c(hyper.weightDecay)])]);
  const stepSize = b.add('div', [lr, bc1]);

  // clip_grad_norm_: per-tensor 2-norms, then the 2-norm of those.
  let sumSquares = c(0);
  for (const g of graph.gradients) {
    const norm = b.add('sqrt', [b.add('sum', [b.add('mul', [g.node, g.node])], { axes: null, keepdims: false })], {}, { label: `norm grad ${g.name}` });
    sumSquares = b.add('add', [sumSquares, b.add('mul', [norm, norm])]);
  }
  const total = b.add('sqrt', [sumSquares], {}, { label: GRAD_NORM });
  b.outputs.push({ name: GRAD_NORM, node: total });
  const clipped = b.add('minimum', [b.add('div', [maxNorm, b.add('add', [total, c(1e-6)])]), c(1)]);
  const coef = b.add('where', [b.add('gt', [maxNorm, c(0)]), clipped, c(1)], {}, { label: 'clip coefficient' });
  // A graph without a loss (gradients from accumulators, compiler/train/accumulate.ts) is
  // guarded on the norm alone: the loss was checked when its micro-batches ran.
  const normFinite = b.add('isfinite', [total]);
  const lossFinite = graph.totalLoss === null ? null : b.add('isfinite', [graph.totalLoss]);
  const ok = lossFinite === null ? normFinite : b.add('where', [lossFinite, normFinite, lossFinite], {}, { label: 'step is finite' });

  for (const g of graph.gradients) {
    const param = graph.params.find((p) => p.name === g.name)!;
    const state = (which: 'm' | 'v') => {
      const name = momentName(which, g.name);
      const id = b.add('input', [], { name, dtype: 'f32', shape: param.type.shape }, { label: name });
      b.inputs.push({ name, node: id });
      return id;
    };
    const m = state('m');
    const v = state('v');
    const grad = b.add('mul', [g.node, coef]);
    const m2 = b.add('add', [b.add('mul', [m, c(hyper.beta1)]), b.add('mul', [grad, c(1 - hyper.beta1)])]);
    const v2 = b.add('add', [b.add('mul', [v, c(hyper.beta2)]), b.add('mul', [b.add('mul', [grad, grad]), c(1 - hyper.beta2)])]);
    const denom = b.add('add', [b.add('div', [b.add('sqrt', [v2]), sqrtBc2]), c(hyper.eps)]);
    const decayed = hyper.weightDecay === 0 || !decays(param) ? param.node : b.add('mul', [param.node, decay]);
    const p2 = b.add('sub', [decayed, b.add('mul', [stepSize, b.add('div', [m2, denom])])]);
    const keep = (next: number, old: number, label: string) => b.add('where', [ok, next, old], {}, { label });
    b.updates.push(
      { name: g.name, node: keep(p2, param.node, `new ${g.name}`) },
      { name: momentName('m', g.name), node: keep(m2, m, `new ${momentName('m', g.name)}`) },
      { name: momentName('v', g.name), node: keep(v2, v, `new ${momentName('v', g.name)}`) },
    );
  }
  return b.build();
}
