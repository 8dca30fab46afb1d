// Reverse-mode autodiff: appends the backward graph to the forward one (same IR, same ops), so
// that fusion and planning treat both alike. Gradients are taken of graph.totalLoss; when the
// checker left it null but declared losses, it is built here as sum(weight * loss).
//
// Only values on a path from a trainable parameter to the loss get backward work: a frozen
// parameter, a stop_gradient or an integer/bool value cuts the path, so the frozen CLIP tower
// gets no backward nodes at all. VJP rules may build cotangents for inputs nobody needs (linear
// always builds dx and dW); a final sweep drops every new node no gradient reads.
import { shapesEqual, shapeToString } from '../ir/dims.js';
import { GraphBuilder } from '../ir/builder.js';
import { GRAD_SCOPE, reachable, type Graph, type NamedValue, type Node } from '../ir/graph.js';
import { getOp } from '../ops/registry.js';
import { isFloat } from '../../runtime/tensor.js';

const isFloatNode = (node: Node): boolean => isFloat(node.type.dtype);

function describe(node: Node): string {
  return `${node.op} node ${node.id}${node.label ? ` (${node.label})` : ''}`;
}

/** graph.totalLoss, or sum(weight * loss) over the loss terms built into b. */
function totalLoss(b: GraphBuilder, graph: Graph): number {
  if (graph.totalLoss !== null) return graph.totalLoss;
  if (graph.losses.length === 0) throw new Error('differentiate: the graph has no loss to differentiate');
  let total: number | null = null;
  for (const l of graph.losses) {
    const dtype = b.type(l.node).dtype;
    const term = l.weight === 1 ? l.node : b.add('mul', [l.node, b.add('fill', [], { value: l.weight, shape: [], dtype })]);
    total = total === null ? term : b.add('add', [total, term]);
  }
  b.totalLoss = total;
  return total!;
}

/** Which nodes receive a cotangent: they depend on a trainable param and reach the loss. */
function neededNodes(graph: Graph, nodes: readonly Node[], loss: number): Uint8Array {
  const trainable = new Set(graph.params.filter((p) => p.trainable).map((p) => p.node));
  const active = new Uint8Array(nodes.length);
  for (const n of nodes) {
    if (n.op === 'param') active[n.id] = trainable.has(n.id) && isFloatNode(n) ? 1 : 0;
    else if (n.op !== 'stop_gradient' && isFloatNode(n) && n.inputs.some((i) => active[i])) active[n.id] = 1;
  }
  const needed = new Uint8Array(nodes.length);
  needed[loss] = active[loss]!;
  for (let id = nodes.length - 1; id >= 0; id--) {
    if (!needed[id]) continue;
    for (const i of nodes[id]!.inputs) if (active[i]) needed[i] = 1;
  }
  return needed;
}

/** Drops nodes from `from` on that no root reads, renumbering the survivors. */
function prune(b: GraphBuilder, from: number, roots: readonly number[]): { nodes: Node[]; remap: (id: number) => number } {
  const live = new Set(reachable(b.build(), roots));
  const map = new Int32Array(b.nodes.length).fill(-1);
  const nodes: Node[] = [];
  for (const n of b.nodes) {
    if (n.id >= from && !live.has(n.id)) continue;
    map[n.id] = nodes.length;
    nodes.push({ ...n, id: nodes.length, inputs: n.inputs.map((i) => map[i]!) });
  }
  return { nodes, remap: (id) => map[id]! };
}

export function differentiate(graph: Graph): Graph {
  const b = new GraphBuilder(graph);
  const loss = totalLoss(b, graph);
  const lossNode = b.node(loss);
  if (lossNode.type.shape.length !== 0 || !isFloatNode(lossNode))
    throw new Error(`differentiate: the loss must be a float scalar, got ${lossNode.type.dtype}${shapeToString(lossNode.type.shape)}`);
  const forwardEnd = b.nodes.length;
  const forward = b.nodes.slice();
  const needed = neededNodes(graph, forward, loss);

  const cotangent = new Map<number, number>();
  if (needed[loss]) cotangent.set(loss, b.add('fill', [], { value: 1, shape: [], dtype: lossNode.type.dtype }));
  for (let id = forwardEnd - 1; id >= 0; id--) {
    const g = cotangent.get(id);
    if (g === undefined || !needed[id]) continue;
    const node = forward[id]!;
    if (node.op === 'param') continue;
    const def = getOp(node.op);
    if (!def.vjp) throw new Error(`differentiate: ${describe(node)} has no gradient rule`);
    b.scope = GRAD_SCOPE + (node.scope ?? '');
    const grads = def.vjp(b, node, g);
    node.inputs.forEach((input, k) => {
      const gi = grads[k];
      if (gi === null || gi === undefined || !needed[input]) return;
      const want = forward[input]!.type;
      const got = b.type(gi);
      if (!shapesEqual(got.shape, want.shape) || got.dtype !== want.dtype)
        throw new Error(
          `differentiate: the gradient rule of ${describe(node)} gave input ${k} a cotangent ` +
            `${got.dtype}${shapeToString(got.shape)}, expected ${want.dtype}${shapeToString(want.shape)}`,
        );
      const prev = cotangent.get(input);
      cotangent.set(input, prev === undefined ? gi : b.add('add', [prev, gi]));
    });
  }

  b.scope = undefined;
  const grads: NamedValue[] = [];
  for (const p of graph.params) {
    if (!p.trainable) continue;
    const g = cotangent.get(p.node) ?? b.add('fill', [], { value: 0, shape: [...p.type.shape], dtype: p.type.dtype });
    grads.push({ name: p.name, node: g });
  }
  const { nodes, remap } = prune(b, forwardEnd, grads.map((g) => g.node));
  const gradients = grads.map((g) => ({ name: g.name, node: remap(g.node) }));
  for (const g of gradients) {
    const n = nodes[g.node]!;
    if (n.id >= forwardEnd && !n.label) nodes[g.node] = { ...n, label: `grad(${g.name})` };
  }
  return { ...b.build(), nodes, totalLoss: loss, gradients };
}
