// The fused loss heads (compiler/ops/linear_loss.ts) and the two passes that build and chunk them
// (compiler/passes/loss-heads.ts), on the reference executor:
// - the fused ops' gradients against central differences (harness gradCheck, f64, 1e-6);
// - fuseLossHeads on the spec's natural form gives the same loss and gradients as the unfused
//   graph, bit for bit in f64 up to summation order (1e-12 relative: both sum the same terms);
// - chunkLossHeads with chunks of a few rows gives them too (1e-12 relative in f64: the chunks
//   only regroup the sums), including ignored rows, empty masks and a last chunk shorter than
//   the others, and leaves no [rows, vocab] value whole in the graph;
// - chunkLossHeads projects each head once per chunk for both losses, and with one chunk the
//   gradients read the forward's logits: lm_head and vm_head are each projected once per step;
// - a KL target that is a splice's inserted rows (VW-LMM's vm_head over the image positions)
//   projects only those rows in one chunk, with the same loss and gradients (1e-12, f64),
//   including a placeholder at position 0 (its first image row is not counted).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import type { Graph } from '../../../compiler/ir/graph.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { chunkLossHeads, fuseLossHeads } from '../../../compiler/passes/loss-heads.js';
import { runReference } from '../../../compiler/exec/reference.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { cotangent, gradCheck, host, input, param, RUNS, values } from '../ops/harness.js';

describe('fused loss heads: gradients', () => {
  it('linear_cross_entropy into x and weight, with ignored labels', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: -1, max: 3 }), { minLength: 3, maxLength: 3 }), values(6, -2, 2), values(8, -2, 2), cotangent, (ls, xs, ws, c) =>
        gradCheck(
          {
            params: { x: [[3, 2], xs], w: [[4, 2], ws] },
            inputs: { y: host('i32', [3], ls.map((l) => (l < 0 ? -100 : l))) },
            build: (b, v) => b.add('linear_cross_entropy', [v['x']!, v['w']!, v['y']!], { ignore_index: -100 }),
          },
          c,
        ),
      ),
      RUNS,
    );
  });

  it('linear_kl_div into both projections and both inputs', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 1 }), { minLength: 3, maxLength: 3 }), values(6, -2, 2), values(8, -2, 2), values(9, -2, 2), values(12, -2, 2), cotangent, (ms, xs, ws, txs, tws, c) =>
        gradCheck(
          {
            params: { x: [[3, 2], xs], w: [[4, 2], ws], tx: [[3, 3], txs], tw: [[4, 3], tws] },
            inputs: { m: host('i32', [3], ms) },
            build: (b, v) => b.add('linear_kl_div', [v['x']!, v['w']!, v['tx']!, v['tw']!, v['m']!]),
          },
          c,
        ),
      ),
      RUNS,
    );
  });
});

/** The VW-LMM heads as a spec writes them: z = h W^T, CE on z[:, :-1], KL against (x Wv^T)[:, 1:]. */
function heads(): Graph {
  const b = new GraphBuilder();
  const h = param(b, 'h', [2, 5, 3]);
  const x = param(b, 'x', [2, 5, 4]);
  const w = param(b, 'lm', [6, 3]);
  const wv = param(b, 'vm', [6, 4]);
  const labels = input(b, 'labels', 'i32', [2, 5]);
  const mask = input(b, 'mask', 'i32', [2, 5]);
  const z = b.add('linear', [h, w], {}, { label: 'logits' });
  const zs = b.add('slice', [z], { axis: 1, start: 0, stop: 4 });
  const ts = b.add('slice', [b.add('linear', [x, wv])], { axis: 1, start: 1, stop: 5 });
  const lm = b.add('cross_entropy', [zs, b.add('slice', [labels], { axis: 1, start: 1, stop: 5 })], { ignore_index: -100 });
  const vm = b.add('kl_div', [zs, ts, b.add('slice', [mask], { axis: 1, start: 1, stop: 5 })]);
  b.outputs.push({ name: 'logits', node: z });
  b.losses.push({ name: 'lm', node: lm, weight: 1 }, { name: 'vm', node: vm, weight: 0.5 });
  return b.build();
}

function feeds(labels: number[], mask: number[], seed: number): Map<string, HostTensor> {
  let s = seed;
  const r = (n: number): number[] => Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 4 - 2);
  return new Map<string, HostTensor>([
    ['h', host('f32', [2, 5, 3], r(30))],
    ['x', host('f32', [2, 5, 4], r(40))],
    ['lm', host('f32', [6, 3], r(18))],
    ['vm', host('f32', [6, 4], r(24))],
    ['labels', host('i32', [2, 5], labels)],
    ['mask', host('i32', [2, 5], mask)],
  ]);
}

/** Loss terms and gradients of a differentiated graph, by name. */
function results(g: Graph, f: Map<string, HostTensor>): Map<string, number[]> {
  const named = [...g.losses, { name: 'loss', node: g.totalLoss! }, ...g.gradients];
  const got = runReference(g, f, named.map((v) => v.node), { precision: 'f64' });
  return new Map(named.map((v) => [v.name, [...got.get(v.node)!.data]]));
}

function expectSame(got: Map<string, number[]>, want: Map<string, number[]>): void {
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [name, w] of want) {
    const g = got.get(name)!;
    const scale = Math.max(1, ...w.map(Math.abs));
    w.forEach((v, i) => expect(Math.abs(g[i]! - v) / scale, `${name}[${i}]: ${g[i]} vs ${v}`).toBeLessThan(1e-12));
  }
}

const bindings = new Map<string, number>();

/** linear nodes projecting by the parameter `name`, the one labelled 'logits' (an output) aside. */
function projections(g: Graph, name: string): number {
  const w = g.nodes.find((n) => n.op === 'param' && n.attrs['name'] === name)!.id;
  return g.nodes.filter((n) => n.op === 'linear' && n.inputs[1] === w && n.label !== 'logits').length;
}

describe('fuseLossHeads and chunkLossHeads', () => {
  it('fuses both heads, keeps the logits output, and drops nothing a loss reads', () => {
    const g = fuseLossHeads(heads());
    const ops = g.nodes.map((n) => n.op);
    expect(ops.filter((o) => o === 'linear_cross_entropy')).toHaveLength(1);
    expect(ops.filter((o) => o === 'linear_kl_div')).toHaveLength(1);
    expect(ops).not.toContain('cross_entropy');
    expect(ops).not.toContain('kl_div');
    expect(g.nodes[g.outputs[0]!.node]!.op).toBe('linear');
    // Without the pattern (a biased head), the graph comes back as it was.
    const b = new GraphBuilder();
    const z = b.add('linear', [param(b, 'h', [3, 2]), param(b, 'w', [4, 2]), param(b, 'bias', [4])]);
    b.losses.push({ name: 'lm', node: b.add('cross_entropy', [z, input(b, 'y', 'i32', [3])]), weight: 1 });
    const plain = b.build();
    expect(fuseLossHeads(plain)).toBe(plain);
  });

  const cases: [string, number[], number[]][] = [
    ['ignored labels, some image rows', [0, 1, -100, 5, 2, 3, -100, 4, 0, 1], [0, 0, 1, 1, 0, 1, 1, 0, 0, 1]],
    ['every label ignored, no image row', new Array(10).fill(-100), new Array(10).fill(0)],
  ];
  it.each(cases)('the fused and chunked graphs give the unfused loss and gradients: %s', (_what, labels, mask) => {
    const f = feeds(labels, mask, 7);
    const want = results(differentiate(heads()), f);
    const fused = differentiate(fuseLossHeads(heads()));
    expectSame(results(fused, f), want);
    // 8 rows of 6 classes; 2 rows (48 bytes) per chunk: four chunks. 3 rows: a short last chunk.
    for (const rows of [1, 2, 3, 8]) {
      const chunked = chunkLossHeads(fused, bindings, rows * 6 * 4).graph;
      expectSame(results(chunked, f), want);
      const biggest = Math.max(...chunked.nodes.filter((n) => (n.op === 'linear' && n.label !== 'logits') || n.op.endsWith('_grad')).map((n) => n.type.shape.reduce<number>((a, d) => a * (d as number), 1)));
      if (rows < 8) expect(biggest).toBeLessThanOrEqual(rows * 6);
      // Projections of the rows by each head (the logits output's own linear aside): per chunk
      // one forward (CE and KL share it) and one for the gradients; one chunk: the forward's.
      const chunks = Math.ceil(8 / rows);
      for (const head of ['lm', 'vm']) expect(projections(chunked, head), `${head}, ${chunks} chunks`).toBe(chunks === 1 ? 1 : 2 * chunks);
    }
  });

  it('gradients of inputs the loss heads read flow on through the chunked graph', () => {
    // h as a function of a parameter: the chunked dx reaches it through concat + reshape.
    const b = new GraphBuilder();
    const p = param(b, 'p', [2, 5, 3]);
    const h = b.add('tanh', [p]);
    const w = param(b, 'lm', [6, 3]);
    const labels = input(b, 'labels', 'i32', [2, 5]);
    b.losses.push({ name: 'lm', node: b.add('cross_entropy', [b.add('linear', [h, w]), labels], { ignore_index: -100 }), weight: 1 });
    const f = feeds([0, 1, -100, 5, 2, 3, -100, 4, 0, 1], new Array(10).fill(0), 3);
    f.set('p', f.get('h')!);
    const want = results(differentiate(b.build()), f);
    expectSame(results(chunkLossHeads(differentiate(fuseLossHeads(b.build())), bindings, 3 * 6 * 4).graph, f), want);
  });

  it('a KL target spliced from inserted rows projects only those rows (one chunk), with the same numbers', () => {
    const [B, T, P, F, H, V, token] = [2, 4, 3, 4, 3, 6, -200];
    const L = T - 1 + P;
    const build = (): Graph => {
      const b = new GraphBuilder();
      const ids = input(b, 'ids', 'i32', [B, T]);
      const words = b.add('splice', [param(b, 'seq', [B, T, F]), param(b, 'ins', [B, P, F]), ids], { token });
      const isImage = b.add('splice', [b.add('fill', [], { value: 0, shape: [B, T], dtype: 'i32' }), b.add('fill', [], { value: 1, shape: [B, P], dtype: 'i32' }), ids], { token });
      const z = b.add('linear', [param(b, 'h', [B, L, H]), param(b, 'lm', [V, H])]);
      const zs = b.add('slice', [z], { axis: 1, start: 0, stop: L - 1 });
      const ts = b.add('slice', [b.add('linear', [words, param(b, 'vm', [V, F])])], { axis: 1, start: 1, stop: L });
      const lm = b.add('cross_entropy', [zs, b.add('slice', [input(b, 'labels', 'i32', [B, L])], { axis: 1, start: 1, stop: L })], { ignore_index: -100 });
      const vm = b.add('kl_div', [zs, ts, b.add('slice', [isImage], { axis: 1, start: 1, stop: L })]);
      b.losses.push({ name: 'lm', node: lm, weight: 1 }, { name: 'vm', node: vm, weight: 0.5 });
      return b.build();
    };
    let s = 11;
    const r = (n: number): number[] => Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 4 - 2);
    const f = new Map<string, HostTensor>([
      // Row 0's placeholder at 1; row 1's at 0, so its first image row falls outside the shift.
      ['ids', host('i32', [B, T], [1, token, 2, 3, token, 4, 5, 1])],
      ['seq', host('f32', [B, T, F], r(B * T * F))],
      ['ins', host('f32', [B, P, F], r(B * P * F))],
      ['h', host('f32', [B, L, H], r(B * L * H))],
      ['lm', host('f32', [V, H], r(V * H))],
      ['vm', host('f32', [V, F], r(V * F))],
      ['labels', host('i32', [B, L], [-100, 1, 2, -100, 4, 5, 0, -100, 3, 3, 2, 1])],
    ]);
    const want = results(differentiate(build()), f);
    const fused = differentiate(fuseLossHeads(build()));
    const rows = B * (L - 1);
    const one = chunkLossHeads(fused, bindings, rows * V * 4).graph;
    expectSame(results(one, f), want);
    // vm_head projects the inserted rows alone, once: [B, P, V], not [rows, V].
    const insId = one.nodes.find((n) => n.op === 'param' && n.attrs['name'] === 'ins')!.id;
    const vmId = one.nodes.find((n) => n.op === 'param' && n.attrs['name'] === 'vm')!.id;
    const vmLinears = one.nodes.filter((n) => n.op === 'linear' && n.inputs[1] === vmId);
    expect(vmLinears.map((n) => [n.inputs[0], n.type.shape])).toEqual([[insId, [B, P, V]]]);
    // In two chunks every row is projected, as before: same numbers.
    const two = chunkLossHeads(fused, bindings, (rows / 2) * V * 4).graph;
    expectSame(results(two, f), want);
    expect(projections(two, 'vm')).toBe(4);
  });
});
