import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { reachable, type Graph } from '../../../compiler/ir/graph.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { runReference } from '../../../compiler/exec/reference.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { host, input, param } from '../ops/harness.js';

function scalarSum(b: GraphBuilder, x: number): number {
  return b.add('sum', [x], { axis: null });
}

function backwardNodes(before: number, g: Graph): number[] {
  return g.nodes.filter((n) => n.id >= before).map((n) => n.id);
}

function grads(g: Graph, feeds: Record<string, HostTensor>): Record<string, number[]> {
  const res = runReference(g, new Map(Object.entries(feeds)), g.gradients.map((x) => x.node), { precision: 'f64' });
  return Object.fromEntries(g.gradients.map((x) => [x.name, [...res.get(x.node)!.data]]));
}

describe('differentiate', () => {
  it('accumulates cotangents over repeated uses with add', () => {
    const b = new GraphBuilder();
    const x = param(b, 'x', [3]);
    // loss = sum(x * x + exp(x)): d/dx = 2x + exp(x), three uses of x.
    b.totalLoss = scalarSum(b, b.add('add', [b.add('mul', [x, x]), b.add('exp', [x])]));
    const before = b.nodes.length;
    const g = differentiate(b.build());
    expect(g.gradients.map((v) => v.name)).toEqual(['x']);
    expect(g.nodes[g.gradients[0]!.node]!.op).toBe('add');
    expect(g.nodes[g.gradients[0]!.node]!.label).toBe('grad(x)');
    const xs = [0.5, -1, 2];
    expect(grads(g, { x: host('f32', [3], xs) })['x']).toEqual(xs.map((v) => 2 * v + Math.exp(v)));
    expect(backwardNodes(before, g).length).toBeGreaterThan(0);
  });

  it('sends nothing through stop_gradient', () => {
    const b = new GraphBuilder();
    const x = param(b, 'x', [2]);
    const y = param(b, 'y', [2]);
    // loss = sum(stop(x) * y + x): dx = 1, dy = x.
    b.totalLoss = scalarSum(b, b.add('add', [b.add('mul', [b.add('stop_gradient', [x]), y]), x]));
    const g = differentiate(b.build());
    const r = grads(g, { x: host('f32', [2], [3, 4]), y: host('f32', [2], [5, 6]) });
    expect(r).toEqual({ x: [1, 1], y: [3, 4] });
  });

  it('gives frozen params no gradient and no backward nodes', () => {
    const b = new GraphBuilder();
    const frozen = param(b, 'tower.weight', [4, 3], false);
    const w = param(b, 'head.weight', [2, 4]);
    const x = input(b, 'x', 'f32', [5, 3]);
    const feats = b.add('gelu', [b.add('linear', [x, frozen])]);
    b.totalLoss = scalarSum(b, b.add('linear', [feats, w]));
    const before = b.nodes.length;
    const g = differentiate(b.build());
    expect(g.gradients.map((v) => v.name)).toEqual(['head.weight']);
    const back = backwardNodes(before, g);
    for (const id of back) {
      const n = g.nodes[id]!;
      expect(n.inputs).not.toContain(frozen);
      expect(n.op).not.toBe('unary_grad');
      expect(n.op).not.toBe('linear');
    }
  });

  it('keeps only the backward nodes some gradient reads', () => {
    const b = new GraphBuilder();
    const w = param(b, 'w', [2, 3]);
    const x = input(b, 'x', 'f32', [4, 3]);
    b.totalLoss = scalarSum(b, b.add('tanh', [b.add('linear', [x, w])]));
    const before = b.nodes.length;
    const g = differentiate(b.build());
    const live = new Set(reachable(g, g.gradients.map((v) => v.node)));
    for (const id of backwardNodes(before, g)) expect(live.has(id)).toBe(true);
    // dx = linear(g, W^T) is built by the linear VJP but x is an input: it must be gone.
    expect(g.nodes.filter((n) => n.op === 'linear')).toHaveLength(1);
    g.nodes.forEach((n, i) => expect(n.id).toBe(i));
  });

  it('builds the total loss from weighted loss terms when the graph has none', () => {
    const b = new GraphBuilder();
    const x = param(b, 'x', [2]);
    const l1 = scalarSum(b, b.add('mul', [x, x]));
    const l2 = scalarSum(b, x);
    b.losses.push({ name: 'a', node: l1, weight: 1 }, { name: 'b', node: l2, weight: 0.5 });
    const g = differentiate(b.build());
    expect(g.totalLoss).not.toBeNull();
    const feedsX = { x: host('f32', [2], [1, -2]) };
    const total = runReference(g, new Map(Object.entries(feedsX)), [g.totalLoss!], { precision: 'f64' }).get(g.totalLoss!)!.data[0];
    expect(total).toBe(5 + 0.5 * -1);
    expect(grads(g, feedsX)['x']).toEqual([2.5, -3.5]);
  });

  it('gives unreached trainable params a zero gradient and integers no cotangent', () => {
    const b = new GraphBuilder();
    const w = param(b, 'emb', [4, 2]);
    const unused = param(b, 'unused', [3]);
    const ids = input(b, 'ids', 'i32', [3]);
    const shifted = b.add('add', [ids, b.add('fill', [], { value: 1, shape: [], dtype: 'i32' })]);
    b.totalLoss = scalarSum(b, b.add('embedding', [shifted, w]));
    const g = differentiate(b.build());
    const gu = g.gradients.find((v) => v.name === 'unused')!;
    expect(g.nodes[gu.node]!.op).toBe('fill');
    const r = grads(g, { emb: host('f32', [4, 2], [0, 0, 0, 0, 0, 0, 0, 0]), ids: host('i32', [3], [0, 2, 0]) });
    expect(r['emb']).toEqual([0, 0, 2, 2, 0, 0, 1, 1]);
    expect(r['unused']).toEqual([0, 0, 0]);
    void unused;
  });

  it('rejects graphs without a scalar float loss', () => {
    const b = new GraphBuilder();
    const x = param(b, 'x', [2]);
    expect(() => differentiate(b.build())).toThrow('differentiate: the graph has no loss to differentiate');
    b.totalLoss = b.add('exp', [x]);
    expect(() => differentiate(b.build())).toThrow('differentiate: the loss must be a float scalar, got f32[2]');
  });

  it('says which node has no gradient rule', () => {
    const b = new GraphBuilder();
    const x = param(b, 'x', [2]);
    b.totalLoss = scalarSum(b, b.add('unary_grad', [x, x], { fn: 'exp' }));
    expect(() => differentiate(b.build())).toThrow(/differentiate: unary_grad node \d+ has no gradient rule/);
  });
});
