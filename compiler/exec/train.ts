// A training loop's state on the host: parameters, AdamW moments and the step counter, advanced
// by any executor that can run a graph with `updates` (the reference executor or WebGPU).
import type { Graph } from '../ir/graph.js';
import { gradNormNode, momentName, type AdamWHyper } from '../passes/optimizer.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { numel } from '../../runtime/tensor.js';
import { adamwStepInputs } from '../../runtime/optim/schedule.js';

export type RunGraph = (graph: Graph, feeds: ReadonlyMap<string, HostTensor>, wanted: readonly number[]) => Promise<Map<number, HostTensor>> | Map<number, HostTensor>;

export class TrainState {
  step = 0;
  readonly values: Map<string, HostTensor>;

  /** `params` by checkpoint name; moments start at zero for every parameter the graph updates. */
  constructor(
    readonly graph: Graph,
    readonly hyper: AdamWHyper,
    params: ReadonlyMap<string, HostTensor>,
  ) {
    this.values = new Map(params);
    for (const g of graph.gradients) {
      const p = params.get(g.name);
      if (!p) throw new Error(`TrainState: no value for parameter ${g.name}`);
      for (const which of ['m', 'v'] as const) this.values.set(momentName(which, g.name), { dtype: 'f32', shape: p.shape, data: new Float32Array(numel(p.shape)) });
    }
  }

  /**
   * One step on `batch` at learning rate `lr`, gradients clipped to a global norm of
   * `maxGradNorm` (0: no clipping); returns the loss terms before the update and the pre-clip
   * gradient norm. A step with a non-finite loss or norm leaves the values as they were.
   */
  async run(run: RunGraph, batch: ReadonlyMap<string, HostTensor>, lr: number, maxGradNorm = 0): Promise<{ loss: number; terms: Record<string, number>; gradNorm: number }> {
    this.step++;
    const feeds = new Map([...this.values, ...batch, ...adamwStepInputs(lr, this.step, this.hyper.beta1, this.hyper.beta2, maxGradNorm)]);
    const updates = this.graph.updates ?? [];
    const g = this.graph;
    const norm = gradNormNode(g);
    const results = await run(g, feeds, [g.totalLoss!, ...g.losses.map((l) => l.node), norm, ...updates.map((u) => u.node)]);
    for (const u of updates) this.values.set(u.name, results.get(u.node)!);
    const scalar = (id: number) => results.get(id)!.data[0]!;
    return { loss: scalar(g.totalLoss!), terms: Object.fromEntries(g.losses.map((l) => [l.name, scalar(l.node)])), gradNorm: scalar(norm) };
  }
}
