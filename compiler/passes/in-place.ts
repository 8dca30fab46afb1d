// Which optimiser updates may write straight into the buffer of the value they replace, instead
// of a buffer of their own plus a copy after the step. That saves, for AdamW, three copies of
// every trainable parameter's bytes (new weights, new moments). An update u of target s is
// written in place when:
//   1. no kernel after the one writing u reads s (everyone else saw the old value already), and
//   2. every kernel template stores each element once, and a store computes all its values
//      before writing any (fused.ts: the lets, then the writes); so s may be read in that
//      kernel only where the element being stored is: by elementwise members at s's own shape,
//      and in a matmul or custom kernel only in the epilogue (a prologue feeds the template's
//      loads, which may read any element, including ones already overwritten).
//      The exception is an anchor whose kernel declares an in-place body over that very input
//      (CustomKernel.inPlace: write_at reads the cache nowhere else); codegen runs that body,
//      which stores only the elements it replaces, or, with an epilogue, its copy kernel, which
//      reads and stores each element at the same index.
//   3. no other update already writes that value in place: one value updating several targets
//      (hash-consing makes `fill(0)` one node for every accumulator of a shape) lives in one
//      buffer, so it can alias one target; the others are copied from it after the step.
import type { Graph, Node } from '../ir/graph.js';
import { getOp } from '../ops/registry.js';
import { shapesEqual } from '../ir/dims.js';
import type { FusedProgram } from './fuse.js';
import { categoryOf } from './fusion-rules.js';

export interface UpdateRef {
  readonly node: number;
  readonly target: number;
}

/** Update node -> target node, for the updates that can be written in place. */
export function inPlaceUpdates(program: FusedProgram, updates: readonly UpdateRef[], readBack: ReadonlySet<number>): Map<number, number> {
  const graph: Graph = program.graph;
  const out = new Map<number, number>();
  for (const u of updates) {
    if (readBack.has(u.node) || out.has(u.node)) continue;
    const step = program.groups.findIndex((g) => g.outputs.includes(u.node));
    if (step < 0) continue;
    if (program.groups.slice(step + 1).some((g) => g.inputs.includes(u.target))) continue;
    const group = program.groups[step]!;
    const loop = group.kind === 'elementwise';
    const target = graph.nodes[u.target]!;
    // Members that feed the template's loads (the anchor's operands, through prologues).
    const members = new Set(group.members.map((m) => m.node));
    const feedsAnchor = new Set<number>();
    const stack = [...graph.nodes[group.anchor]!.inputs];
    while (stack.length) {
      const id = stack.pop()!;
      if (!members.has(id) || feedsAnchor.has(id)) continue;
      feedsAnchor.add(id);
      stack.push(...graph.nodes[id]!.inputs);
    }
    const safe = group.members.every((m) => {
      const n = graph.nodes[m.node]!;
      if (!n.inputs.includes(u.target)) return true;
      if (m.node === group.anchor && ownsTarget(n, u.target)) return true;
      if (!loop && feedsAnchor.has(m.node)) return false;
      return m.node !== group.anchor && categoryOf(n) === 'elementwise' && shapesEqual(n.type.shape, target.type.shape);
    });
    if (safe) out.set(u.node, u.target);
  }
  return out;
}

/** Whether `node` reads `target` only as the input its kernel's in-place body replaces. */
function ownsTarget(node: Node, target: number): boolean {
  const k = getOp(node.op).kernel;
  if (k?.kind !== 'custom' || !k.inPlace) return false;
  const slot = k.inPlace.input;
  return node.inputs[slot] === target && node.inputs.every((i, p) => p === slot || i !== target);
}
