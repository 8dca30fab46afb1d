// The decode mechanism: one compiled entry runs at every position of a fixed-capacity KV cache.
// The cache is state (capacity in the manifest), written at a position fed at run time
// (where(eq(iota(C), pos), k, cache), in place), and attention masks the positions past it
// (le(iota(C), pos)). Run at several positions with no new WGSL, pipeline or storage buffer,
// each step equals the reference executor fed the same caches. Tolerance: 1e-5 absolute plus
// 1e-4 relative per element (f32 softmax and dot products in another summation order).
// Then issue 9 §3's per-call symbol: the decode step as the generation graphs write it
// (write_at in place, flash-decoding split + merge), the position declared per-call: kernels
// read it from the symbols uniform, the split's workgroups follow it, and one compiled entry
// runs at positions across several blocks equal to the reference; a position outside the
// declared range is refused before anything runs.
import { describe, expect, it, vi } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { compileArtefact } from '../../../compiler/emit/artefact.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { deviceTraits } from '../../../compiler/exec/webgpu.js';
import { getDevice } from '../../../runtime/node/device.js';
import { ArtefactProgram } from '../../../runtime/webgpu/program.js';
import { DECODE_BLOCK } from '../../../compiler/ops/decode_attention.js';
import { evalExtent, parseManifest, perCallSymbols, workgroupsAt } from '../../../runtime/artefact.js';
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

const Hq = 4;
const Hkv = 2;
const CAP = 200;

/** One token attending to a cache of CAP positions as kv-cache.ts writes the decode step. */
function flashDecodeGraph() {
  const b = new GraphBuilder();
  const input = (name: string, dtype: 'f32' | 'i32', shape: number[]) => {
    const id = b.add('input', [], { name, dtype, shape });
    b.inputs.push({ name, node: id });
    return id;
  };
  const q = input('q', 'f32', [1, Hq, 1, D]);
  const k = input('k', 'f32', [1, Hkv, 1, D]);
  const v = input('v', 'f32', [1, Hkv, 1, D]);
  const pos = input('position', 'i32', []);
  const K = b.add('write_at', [input('cache.k', 'f32', [1, Hkv, CAP, D]), k, pos], { axis: 2 });
  const V = b.add('write_at', [input('cache.v', 'f32', [1, Hkv, CAP, D]), v, pos], { axis: 2 });
  const split = b.add('decode_attention_split', [q, K, V, pos], { block: DECODE_BLOCK, window: 0, scale: 1 / Math.sqrt(D) });
  const out = b.add('decode_attention_merge', [split, pos], { block: DECODE_BLOCK });
  b.outputs.push({ name: 'out', node: out });
  b.updates.push({ name: 'cache.k', node: K }, { name: 'cache.v', node: V });
  return { graph: b.build(), out, K, V };
}

describe('a per-call symbol: the KV position', () => {
  it('kernels read it from a uniform, the split follows it, and one entry serves positions across blocks, equal to the reference', async () => {
    const kd = await getDevice();
    const { graph, out, K, V } = flashDecodeGraph();
    const { artefact } = compileArtefact([{ name: 'decode', graph, outputs: [{ name: 'out', node: out }], applyUpdates: true }], {
      bindings: new Map(),
      traits: deviceTraits(kd),
      kvCaches: new Map([
        ['cache.k', 2],
        ['cache.v', 2],
      ]),
      perCall: [{ name: 'position', input: 'position', min: 0, max: CAP - 1 }],
    });
    const m = artefact.manifest;
    expect(m.symbols).toEqual([{ name: 'position', kind: 'per-call', value: CAP - 1, min: 0, max: CAP - 1, input: 'position' }]);
    const e = m.entries['decode']!;
    const posBuffer = e.buffers.findIndex((x) => x.kind === 'input' && x.name === 'position');
    // No kernel binds the position's storage buffer: every reader takes the uniform.
    for (const d of e.dispatches) expect(d.bindings.map((x) => x.buffer), d.label).not.toContain(posBuffer);
    const reading = e.dispatches.filter((d) => d.symbols);
    expect(reading.map((d) => d.label.split(' ')[0]).sort()).toEqual(['decode_attention_merge', 'decode_attention_split', 'write_at', 'write_at']);
    for (const d of reading) expect(artefact.kernels.get(d.kernel)).toContain('var<uniform> kiln_symbols: KilnSymbols;');
    const split = e.dispatches.find((d) => d.label.startsWith('decode_attention_split'))!;
    const blocks = Math.ceil(CAP / DECODE_BLOCK);
    expect(split.workgroups[0]).toBe(blocks);
    expect(split.perCall).toEqual([{ symbol: 'position', scale: 1, offset: DECODE_BLOCK, divisor: DECODE_BLOCK }, null, null]);
    const syms = perCallSymbols(m);
    for (const [p, want] of [[0, 1], [63, 1], [64, 2], [130, 3], [199, 4]] as const) expect(workgroupsAt(split, syms, Int32Array.of(p))[0], `position ${p}`).toBe(want);
    // The manifest survives its own parser.
    expect(parseManifest(JSON.stringify(m))).toEqual(m);

    const program = await ArtefactProgram.load(kd, artefact);
    const device = kd.device;
    const pipelines = vi.spyOn(device, 'createComputePipelineAsync');
    const modules = vi.spyOn(device, 'createShaderModule');
    const buffers = vi.spyOn(device, 'createBuffer');
    try {
      // A cache filled as a prompt would leave it, so every position attends over real keys.
      let caches = new Map<string, HostTensor>([
        ['cache.k', rand([1, Hkv, CAP, D], 91)],
        ['cache.v', rand([1, Hkv, CAP, D], 92)],
      ]);
      program.store.write(caches);
      for (const p of [0, 1, 63, 64, 130, 199]) {
        const feeds = new Map<string, HostTensor>([
          ['q', rand([1, Hq, 1, D], 3 * p + 1)],
          ['k', rand([1, Hkv, 1, D], 3 * p + 2)],
          ['v', rand([1, Hkv, 1, D], 3 * p + 3)],
          ['position', { dtype: 'i32', shape: [], data: Int32Array.of(p) }],
        ]);
        const got = (await program.run('decode', feeds)).get('out')!;
        const ref = runReference(graph, new Map([...feeds, ...caches]), [out, K, V], { precision: 'f32' });
        const want = ref.get(out)!;
        for (let i = 0; i < want.data.length; i++) expect(Math.abs(got.data[i]! - want.data[i]!), `position ${p} element ${i}`).toBeLessThanOrEqual(1e-5 + 1e-4 * Math.abs(want.data[i]!));
        caches = new Map([
          ['cache.k', ref.get(K)!],
          ['cache.v', ref.get(V)!],
        ]);
      }
      const onDevice = await program.store.read(['cache.k', 'cache.v']);
      for (const name of ['cache.k', 'cache.v']) expect([...onDevice.get(name)!.data]).toEqual([...caches.get(name)!.data]);
      // Outside [min, max]: refused with the input named, and nothing is written.
      for (const bad of [CAP, -1]) {
        const feeds = new Map<string, HostTensor>([
          ['q', rand([1, Hq, 1, D], 1)],
          ['k', rand([1, Hkv, 1, D], 2)],
          ['v', rand([1, Hkv, 1, D], 3)],
          ['position', { dtype: 'i32', shape: [], data: Int32Array.of(bad) }],
        ]);
        await expect(program.run('decode', feeds)).rejects.toThrow(`input position is ${bad}; this compiled program serves position from 0 to ${CAP - 1}`);
      }
      const after = await program.store.read(['cache.k']);
      expect([...after.get('cache.k')!.data]).toEqual([...caches.get('cache.k')!.data]);
      expect(pipelines).not.toHaveBeenCalled();
      expect(modules).not.toHaveBeenCalled();
      for (const call of buffers.mock.calls) expect(call[0].usage & 0x80).toBe(0);
    } finally {
      pipelines.mockRestore();
      modules.mockRestore();
      buffers.mockRestore();
      program.destroy();
      program.store.destroy();
    }
  });

  it('the manifest parser checks per-call symbols and formulas; extents clamp to [1, compiled]', () => {
    const base = { format: 'kiln-artefact', version: 2, source: {}, floatStorage: 'f32', requires: { features: [], limits: {} }, params: [], state: [] };
    const dispatch = { kernel: 'k.wgsl', label: 'split', workgroups: [4, 1, 1], bindings: [], perCall: [{ symbol: 'position', scale: 1, offset: 64, divisor: 64 }, null, null], symbols: true };
    const entry = { inputs: [{ name: 'position', dtype: 'i32', shape: [] }], outputs: [], updates: [], buffers: [], dispatches: [dispatch] };
    const sym = { name: 'position', kind: 'per-call', value: 199, min: 0, max: 199, input: 'position' };
    const text = (symbols: unknown[], e: unknown = entry) => JSON.stringify({ ...base, symbols, entries: { decode: e } });
    expect(parseManifest(text([sym])).symbols).toEqual([sym]);
    expect(() => parseManifest(text([]))).toThrow(/dispatch 0 \(split\) has perCall that is not three formulas/);
    expect(() => parseManifest(text([{ ...sym, input: undefined }]))).toThrow('per-call symbol position names no input');
    expect(() => parseManifest(text([{ ...sym, min: 5, max: 1 }]))).toThrow('symbol position: min 5 is above max 1');
    expect(() => parseManifest(text([sym], { ...entry, dispatches: [{ ...dispatch, perCall: [{ symbol: 'position', scale: 1, offset: 0, divisor: 0 }, null, null] }] }))).toThrow(/perCall that is not three formulas/);
    expect(() => parseManifest(text([sym], { ...entry, inputs: [] }))).toThrow("entry 'decode' reads the per-call symbol position, but does not take its input position");
    const f = { symbol: 'position', scale: 1, offset: 64, divisor: 64 };
    expect([-500, 0, 63, 64, 199, 10_000].map((v) => evalExtent(f, v, 4))).toEqual([1, 1, 1, 2, 4, 4]);
  });
});
