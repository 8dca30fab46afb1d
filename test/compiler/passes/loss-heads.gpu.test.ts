// The chunked loss heads on WebGPU (compiler/passes/loss-heads.ts): the VW-LMM heads in several
// row chunks (the 'sum' loss kernels, the scale g / count, gradients summed over both losses,
// weight gradients accumulated in place over the chunks) against the f64 reference of the
// unfused graph; and a KL target spliced from inserted rows (VW-LMM's vm_head over the image
// positions), whose target side projects only those rows in one chunk.
//
// Tolerances: f32 logits from K = 24 products err by ~K·u·|x||w| (u = 6e-8), the loss kernels
// by ~1e-6 relative per row (test/compiler/ops/kernels/loss.test.ts), and a weight gradient sums
// 80 rows of such terms: 2e-5 absolute plus 1e-4 relative covers it many times over, while a row
// dropped, counted twice or scaled by the wrong count is off by a whole term (~1e-2 here).
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import type { Graph } from '../../../compiler/ir/graph.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { fuseLossHeads } from '../../../compiler/passes/loss-heads.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { WebGpuExecutor } from '../../../compiler/exec/webgpu.js';
import { getDevice } from '../../../runtime/node/device.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { f32, i32, uniform, worst } from '../../runtime/webgpu/compare.js';
import { input, param } from '../ops/harness.js';

const [BATCH, L, K, KV, V] = [2, 41, 24, 16, 300];

function heads(): Graph {
  const b = new GraphBuilder();
  const h = param(b, 'h', [BATCH, L, K]);
  const x = param(b, 'x', [BATCH, L, KV]);
  const w = param(b, 'lm', [V, K]);
  const wv = param(b, 'vm', [V, KV]);
  const labels = input(b, 'labels', 'i32', [BATCH, L]);
  const mask = input(b, 'mask', 'i32', [BATCH, L]);
  const z = b.add('linear', [h, w]);
  const zs = b.add('slice', [z], { axis: 1, start: 0, stop: L - 1 });
  const ts = b.add('slice', [b.add('linear', [x, wv])], { axis: 1, start: 1, stop: L });
  const lm = b.add('cross_entropy', [zs, b.add('slice', [labels], { axis: 1, start: 1, stop: L })], { ignore_index: -100 });
  const vm = b.add('kl_div', [zs, ts, b.add('slice', [mask], { axis: 1, start: 1, stop: L })]);
  b.losses.push({ name: 'lm', node: lm, weight: 1 }, { name: 'vm', node: vm, weight: 1 });
  return b.build();
}

describe('chunked loss heads on WebGPU', () => {
  it('equal the unfused reference in 3 chunks of 30 rows, and in one', async () => {
    const rows = BATCH * L;
    const labels = Array.from({ length: rows }, (_x, i) => (i % 5 === 0 ? -100 : (i * 37) % V));
    const mask = Array.from({ length: rows }, (_x, i) => (i % 41 > 3 && i % 41 < 30 ? 1 : 0));
    const feeds = new Map<string, HostTensor>([
      ['h', f32([BATCH, L, K], uniform(rows * K, 1))],
      ['x', f32([BATCH, L, KV], uniform(rows * KV, 2))],
      ['lm', f32([V, K], uniform(V * K, 3, -0.5, 0.5))],
      ['vm', f32([V, KV], uniform(V * KV, 4, -0.5, 0.5))],
      ['labels', i32([BATCH, L], labels)],
      ['mask', i32([BATCH, L], mask)],
    ]);
    const plain = differentiate(heads());
    const named = (g: Graph) => [...g.losses, ...g.gradients];
    const want = runReference(plain, feeds, named(plain).map((v) => v.node), { precision: 'f64' });
    const fused = differentiate(fuseLossHeads(heads()));
    for (const chunkRows of [30, rows]) {
      const executor = new WebGpuExecutor(await getDevice(), fused, { lossChunkBytes: chunkRows * V * 4 });
      try {
        const got = await executor.run(feeds, named(fused).map((v) => v.node));
        const entry = await executor.entry(feeds, named(fused).map((v) => v.node));
        // Several chunks: the weight gradients are running sums in their own buffers.
        if (chunkRows < rows) expect(entry.compiled.plan.sharedWith.size).toBeGreaterThan(0);
        named(plain).forEach((v, k) => {
          const g = got.get(named(fused)[k]!.node)!.data;
          const wv = want.get(v.node)!.data;
          const r = worst(g, wv, 2e-5, 1e-4);
          expect(r.ratio, `${v.name} at ${r.at}: ${g[r.at]} vs ${wv[r.at]} (${chunkRows} rows per chunk)`).toBeLessThanOrEqual(1);
        });
      } finally {
        executor.destroy();
      }
    }
  });

  it('equal the unfused reference when the KL target is a splice of inserted rows (one chunk: the image rows alone)', async () => {
    const [T, P, token] = [20, 16, -200];
    const LS = T - 1 + P;
    const b = new GraphBuilder();
    const ids = input(b, 'ids', 'i32', [BATCH, T]);
    const words = b.add('splice', [param(b, 'seq', [BATCH, T, KV]), param(b, 'ins', [BATCH, P, KV]), ids], { token });
    const isImage = b.add('splice', [b.add('fill', [], { value: 0, shape: [BATCH, T], dtype: 'i32' }), b.add('fill', [], { value: 1, shape: [BATCH, P], dtype: 'i32' }), ids], { token });
    const zs = b.add('slice', [b.add('linear', [param(b, 'h', [BATCH, LS, K]), param(b, 'lm', [V, K])])], { axis: 1, start: 0, stop: LS - 1 });
    const ts = b.add('slice', [b.add('linear', [words, param(b, 'vm', [V, KV])])], { axis: 1, start: 1, stop: LS });
    const lm = b.add('cross_entropy', [zs, b.add('slice', [input(b, 'labels', 'i32', [BATCH, LS])], { axis: 1, start: 1, stop: LS })], { ignore_index: -100 });
    const vm = b.add('kl_div', [zs, ts, b.add('slice', [isImage], { axis: 1, start: 1, stop: LS })]);
    b.losses.push({ name: 'lm', node: lm, weight: 1 }, { name: 'vm', node: vm, weight: 1 });
    const graph = b.build();
    const rows = BATCH * LS;
    const idRows = Array.from({ length: BATCH * T }, (_x, i) => (i % T === (i < T ? 1 : 0) ? token : (i * 7) % V));
    const feeds = new Map<string, HostTensor>([
      ['ids', i32([BATCH, T], idRows)],
      ['seq', f32([BATCH, T, KV], uniform(BATCH * T * KV, 5))],
      ['ins', f32([BATCH, P, KV], uniform(BATCH * P * KV, 6))],
      ['h', f32([BATCH, LS, K], uniform(rows * K, 7))],
      ['lm', f32([V, K], uniform(V * K, 8, -0.5, 0.5))],
      ['vm', f32([V, KV], uniform(V * KV, 9, -0.5, 0.5))],
      ['labels', i32([BATCH, LS], Array.from({ length: rows }, (_x, i) => (i % 5 === 0 ? -100 : (i * 37) % V)))],
    ]);
    const plain = differentiate(graph);
    const named = (g: Graph) => [...g.losses, ...g.gradients];
    const want = runReference(plain, feeds, named(plain).map((v) => v.node), { precision: 'f64' });
    const fused = differentiate(fuseLossHeads(graph));
    const executor = new WebGpuExecutor(await getDevice(), fused, { lossChunkBytes: rows * V * 4 });
    try {
      const got = await executor.run(feeds, named(fused).map((v) => v.node));
      const entry = await executor.entry(feeds, named(fused).map((v) => v.node));
      // The VM head's products run over the BATCH x P image rows: no [rows, V] projection by vm.
      const vmId = entry.compiled.program.graph.nodes.find((n) => n.op === 'param' && n.attrs['name'] === 'vm')!.id;
      expect(entry.compiled.program.graph.nodes.filter((n) => n.op === 'linear' && n.inputs[1] === vmId).map((n) => n.type.shape)).toEqual([[BATCH, P, V]]);
      named(plain).forEach((v, k) => {
        const g = got.get(named(fused)[k]!.node)!.data;
        const wv = want.get(v.node)!.data;
        const r = worst(g, wv, 2e-5, 1e-4);
        expect(r.ratio, `${v.name} at ${r.at}: ${g[r.at]} vs ${wv[r.at]}`).toBeLessThanOrEqual(1);
      });
    } finally {
      executor.destroy();
    }
  });
});
