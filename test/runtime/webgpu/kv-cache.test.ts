// The decode mechanism: one compiled entry runs at every position of a fixed-capacity KV cache.
// The cache is state (capacity in the manifest), written at a position fed at run time
// (where(eq(iota(C), pos), k, cache), in place), and attention masks the positions past it
// (le(iota(C), pos)). Run at several positions with no new WGSL, pipeline or storage buffer,
// each step equals the reference executor fed the same caches. Tolerance: 1e-5 absolute plus
// 1e-4 relative per element (f32 softmax and dot products in another summation order).
import { describe, expect, it, vi } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { compileArtefact } from '../../../compiler/emit/artefact.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { deviceTraits } from '../../../compiler/exec/webgpu.js';
import { getDevice } from '../../../runtime/node/device.js';
import { ArtefactProgram } from '../../../runtime/webgpu/program.js';
import type { HostTensor } from '../../../runtime/tensor.js';

const H = 2;
const C = 8;
const D = 4;

function decodeGraph() {
  const b = new GraphBuilder();
  const input = (name: string, dtype: 'f32' | 'i32', shape: number[]) => {
    const id = b.add('input', [], { name, dtype, shape });
    b.inputs.push({ name, node: id });
    return id;
  };
  const q = input('q', 'f32', [1, H, 1, D]);
  const k = input('k', 'f32', [1, H, 1, D]);
  const v = input('v', 'f32', [1, H, 1, D]);
  const pos = input('pos', 'i32', []);
  const K = input('cache.k', 'f32', [1, H, C, D]);
  const V = input('cache.v', 'f32', [1, H, C, D]);
  const at = b.add('reshape', [b.add('iota', [], { n: C })], { shape: [1, 1, C, 1] });
  const hit = b.add('eq', [at, pos]);
  const kw = b.add('where', [hit, k, K]);
  const vw = b.add('where', [hit, v, V]);
  const scores = b.add('mul', [b.add('matmul', [q, b.add('transpose', [kw], { perm: [0, 1, 3, 2] })]), b.add('fill', [], { value: 1 / Math.sqrt(D), shape: [], dtype: 'f32' })]);
  const seen = b.add('le', [b.add('reshape', [b.add('iota', [], { n: C })], { shape: [1, 1, 1, C] }), pos]);
  const masked = b.add('where', [seen, scores, b.add('fill', [], { value: -1e30, shape: [], dtype: 'f32' })]);
  const out = b.add('matmul', [b.add('softmax', [masked], { axis: -1 }), vw]);
  b.outputs.push({ name: 'out', node: out });
  b.updates.push({ name: 'cache.k', node: kw }, { name: 'cache.v', node: vw });
  return { graph: b.build(), out, kw, vw };
}

const rand = (shape: number[], seed: number): HostTensor => ({
  dtype: 'f32',
  shape,
  data: Float32Array.from({ length: shape.reduce((a, x) => a * x, 1) }, (_, i) => Math.sin(seed * 12.9898 + i * 78.233) * 2),
});

describe('KV cache at run-time positions', () => {
  it('one decode entry serves every position without new kernels or buffers, equal to the reference', async () => {
    const kd = await getDevice();
    const { graph, out, kw, vw } = decodeGraph();
    const { artefact, entries } = compileArtefact([{ name: 'decode', graph, outputs: [{ name: 'out', node: out }], applyUpdates: true }], {
      bindings: new Map(),
      traits: deviceTraits(kd),
      kvCaches: new Map([
        ['cache.k', 2],
        ['cache.v', 2],
      ]),
    });
    expect(artefact.manifest.state).toEqual([
      { name: 'cache.k', dtype: 'f32', shape: [1, H, C, D], kind: 'kv-cache', capacity: { axis: 2, size: C } },
      { name: 'cache.v', dtype: 'f32', shape: [1, H, C, D], kind: 'kv-cache', capacity: { axis: 2, size: C } },
    ]);
    // The cache writes are fused into the attention matmuls' operand loads, which may read any
    // element, so they are not written in place: each call copies the new caches into the state.
    expect(entries.get('decode')!.manifest.updates.map((u) => u.name)).toEqual(['cache.k', 'cache.v']);
    const program = await ArtefactProgram.load(kd, artefact);
    const device = kd.device;
    const pipelines = vi.spyOn(device, 'createComputePipelineAsync');
    const modules = vi.spyOn(device, 'createShaderModule');
    const buffers = vi.spyOn(device, 'createBuffer');
    try {
      let caches = new Map<string, HostTensor>([
        ['cache.k', { dtype: 'f32', shape: [1, H, C, D], data: new Float32Array(H * C * D) }],
        ['cache.v', { dtype: 'f32', shape: [1, H, C, D], data: new Float32Array(H * C * D) }],
      ]);
      for (let p = 0; p < 6; p++) {
        const feeds = new Map<string, HostTensor>([
          ['q', rand([1, H, 1, D], 3 * p + 1)],
          ['k', rand([1, H, 1, D], 3 * p + 2)],
          ['v', rand([1, H, 1, D], 3 * p + 3)],
          ['pos', { dtype: 'i32', shape: [], data: Int32Array.of(p) }],
        ]);
        const got = (await program.run('decode', feeds)).get('out')!;
        const ref = runReference(graph, new Map([...feeds, ...caches]), [out, kw, vw], { precision: 'f32' });
        const want = ref.get(out)!;
        expect(got.shape).toEqual([1, H, 1, D]);
        for (let i = 0; i < want.data.length; i++) expect(Math.abs(got.data[i]! - want.data[i]!), `pos ${p} element ${i}`).toBeLessThanOrEqual(1e-5 + 1e-4 * Math.abs(want.data[i]!));
        caches = new Map([
          ['cache.k', ref.get(kw)!],
          ['cache.v', ref.get(vw)!],
        ]);
      }
      const onDevice = await program.store.read(['cache.k', 'cache.v']);
      for (const name of ['cache.k', 'cache.v']) expect([...onDevice.get(name)!.data]).toEqual([...caches.get(name)!.data]);
      // Positions past the last one written are still zero: the cache keeps its capacity.
      expect(onDevice.get('cache.k')!.data.slice(6 * D, 8 * D).every((x) => x === 0)).toBe(true);
      expect(pipelines).not.toHaveBeenCalled();
      expect(modules).not.toHaveBeenCalled();
      // Only read-back staging buffers (MAP_READ) are made per call; no storage buffer.
      expect(buffers).toHaveBeenCalled();
      for (const call of buffers.mock.calls) expect(call[0].usage & 0x80).toBe(0);
    } finally {
      pipelines.mockRestore();
      modules.mockRestore();
      buffers.mockRestore();
      program.destroy();
      program.store.destroy();
    }
  });
});
