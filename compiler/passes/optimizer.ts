// The optimiser as graph ops: a pass that appends AdamW's update to a differentiated graph, so
// that the update fuses and runs like any other part of the step (one elementwise kernel per
// parameter, reading the gradient where the backward left it). The moments are new inputs, and
// `updates` tells the executor to write the new parameter and moments back after the step.
//
// The arithmetic is torch.optim.AdamW's (decoupled weight decay, bias corrections):
//   p <- p * (1 - lr * wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),   bc_i = 1 - b_i^t
// The step-dependent scalars (lr after the schedule, bc1, sqrt(bc2)) are inputs, so one compiled
// step serves every step.
import { GraphBuilder } from '../ir/builder.js';
import type { Graph } from '../ir/graph.js';
import { STEP_INPUTS, momentName } from '../../runtime/optim/schedule.js';

export interface AdamWHyper {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export { STEP_INPUTS, momentName };

export function withAdamW(graph: Graph, hyper: AdamWHyper): Graph {
  if (graph.gradients.length === 0) throw new Error('withAdamW: differentiate the graph first');
  const b = new GraphBuilder(graph);
  const scalarInput = (name: string) => {
    const id = b.add('input', [], { name, dtype: 'f32', shape: [] }, { label: name });
    b.inputs.push({ name, node: id });
    return id;
  };
  const lr = scalarInput(STEP_INPUTS.lr);
  const bc1 = scalarInput(STEP_INPUTS.bc1);
  const sqrtBc2 = scalarInput(STEP_INPUTS.sqrtBc2);
  const c = (value: number) => b.add('fill', [], { value, shape: [], dtype: 'f32' });
  const decay = b.add('sub', [c(1), b.add('mul', [lr, c(hyper.weightDecay)])]);
  const stepSize = b.add('div', [lr, bc1]);

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
    const m2 = b.add('add', [b.add('mul', [m, c(hyper.beta1)]), b.add('mul', [g.node, c(1 - hyper.beta1)])]);
    const v2 = b.add('add', [b.add('mul', [v, c(hyper.beta2)]), b.add('mul', [b.add('mul', [g.node, g.node]), c(1 - hyper.beta2)])]);
    const denom = b.add('add', [b.add('div', [b.add('sqrt', [v2]), sqrtBc2]), c(hyper.eps)]);
    const decayed = hyper.weightDecay === 0 ? param.node : b.add('mul', [param.node, decay]);
    const p2 = b.add('sub', [decayed, b.add('mul', [stepSize, b.add('div', [m2, denom])])], {}, { label: `new ${g.name}` });
    b.updates.push({ name: g.name, node: p2 }, { name: momentName('m', g.name), node: m2 }, { name: momentName('v', g.name), node: v2 });
  }
  return b.build();
}
