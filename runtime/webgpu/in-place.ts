// Which optimiser updates may write straight into the buffer of the value they replace, instead
// of a buffer of their own plus a copy after the step. That saves, for AdamW, three copies of
// every trainable parameter's bytes (new weights, new moments). An update u of target s is
// written in place when:
//   1. no kernel after the one writing u reads s (everyone else saw the old value already), and
//   2. that kernel is an elementwise loop or a matmul, which store each element exactly once
//      and compute every value of a store before writing any (fused.ts: the lets, then the
//      writes), and s is read in it only by elementwise members at s's own shape, at the
//      element being stored. Custom kernels may store one element from several lanes, so
//      their updates keep a buffer of their own and a copy.
import type { Graph } from '../../compiler/ir/graph.js';
import { shapesEqual } from '../../compiler/ir/dims.js';
import type { FusedProgram } from '../../compiler/passes/fuse.js';
import { categoryOf } from '../../compiler/passes/fusion-rules.js';

export interface UpdateRef {
  readonly node: number;
  readonly target: number;
}

/** Update node -> target node, for the updates that can be written in place. */
export function inPlaceUpdates(program: FusedProgram, updates: readonly UpdateRef[], readBack: ReadonlySet<number>): Map<number, number> {
  const graph: Graph = program.graph;
  const out = new Map<number, number>();
  for (const u of updates) {
    if (readBack.has(u.node)) continue;
    const step = program.groups.findIndex((g) => g.outputs.includes(u.node));
    if (step < 0) continue;
    if (program.groups.slice(step + 1).some((g) => g.inputs.includes(u.target))) continue;
    const group = program.groups[step]!;
    if (group.kind !== 'elementwise' && group.kind !== 'matmul') continue;
    const target = graph.nodes[u.target]!;
    const safe = group.members.every((m) => {
      const n = graph.nodes[m.node]!;
      if (!n.inputs.includes(u.target)) return true;
      return m.node !== group.anchor && categoryOf(n) === 'elementwise' && shapesEqual(n.type.shape, target.type.shape);
    });
    if (safe) out.set(u.node, u.target);
  }
  return out;
}
