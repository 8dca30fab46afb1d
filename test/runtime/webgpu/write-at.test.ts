// write_at through compile -> artefact -> runtime on WebGPU, both ways it can run:
//   in place  the update is written over the cache's own state buffer (nothing reads the old
//             cache after it): one dispatch over x's elements only, binding the state buffer once
//             (read_write), never as a separate read binding;
//   epilogue  in place, but the kernel also stores a value computed from the update element for
//             element (an epilogue): the copy kernel over every element, reading each cache
//             element through the same read_write binding just before storing it;
//   fallback  a later kernel reads the old cache, so the update gets its own buffer: the copy
//             kernel over every element, then the update copied into the state after the step.
// Each runs at positions inside, across the end of and past the capacity, and its outputs and the
// cache left in the state equal the reference step by step (exact for the cache, a copy; 1e-5
// absolute plus 1e-4 relative for the matmul/softmax outputs, summed in another order in f32).
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { compileArtefact } from '../../../compiler/emit/artefact.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { deviceTraits } from '../../../compiler/exec/webgpu.js';
import { getDevice } from '../../../runtime/node/device.js';
import { ArtefactProgram } from '../../../runtime/webgpu/program.js';
import type { HostTensor } from '../../../runtime/tensor.js';

const H = 2;
const C = 16;
const D = 8;
const N = 2;

type Mode = 'sparse' | 'epilogue' | 'fallback';

/**
 * x [1, H, N, D] written into cache [1, H, C, D] at `pos`; out = matmul(q, written^T), then for
 * 'fallback' matmul(softmax(that), old cache): a reader of the old cache after the write; for
 * 'epilogue' also the output twice = 2 * written, which the write's kernel stores.
 */
function graph(mode: Mode) {
  const b = new GraphBuilder();
  const input = (name: string, dtype: 'f32' | 'i32', shape: number[]) => {
    const id = b.add('input', [], { name, dtype, shape });
    b.inputs.push({ name, node: id });
    return id;
  };
  const q = input('q', 'f32', [1, H, 1, D]);
  const x = input('x', 'f32', [1, H, N, D]);
  const pos = input('pos', 'i32', []);
  const cache = input('cache', 'f32', [1, H, C, D]);
  const w = b.add('write_at', [cache, x, pos], { axis: 2 });
  let out = b.add('matmul', [q, b.add('transpose', [w], { perm: [0, 1, 3, 2] })]);
  if (mode === 'fallback') out = b.add('matmul', [b.add('softmax', [out], { axis: -1 }), cache]);
  b.outputs.push({ name: 'out', node: out });
  if (mode === 'epilogue') b.outputs.push({ name: 'twice', node: b.add('mul', [w, b.add('fill', [], { value: 2, shape: [], dtype: 'f32' })]) });
  b.updates.push({ name: 'cache', node: w });
  return { graph: b.build(), w };
}

const rand = (shape: number[], seed: number): HostTensor => ({
  dtype: 'f32',
  shape,
  data: Float32Array.from({ length: shape.reduce((a, x) => a * x, 1) }, (_, i) => Math.sin(seed * 12.9898 + i * 78.233) * 2),
});

async function check(mode: Mode): Promise<void> {
  const kd = await getDevice();
  const { graph: g, w } = graph(mode);
  const { artefact, entries } = compileArtefact([{ name: 'step', graph: g, outputs: g.outputs, applyUpdates: true }], {
    bindings: new Map(),
    traits: deviceTraits(kd),
    kvCaches: new Map([['cache', 2]]),
  });
  const entry = entries.get('step')!;
  const m = entry.manifest;
  const writes = m.dispatches.filter((d) => d.label.startsWith('write_at'));
  expect(writes).toHaveLength(1);
  const write = writes[0]!;
  const code = artefact.kernels.get(write.kernel)!;
  const state = m.buffers.findIndex((b) => b.kind === 'state' && b.name === 'cache');
  if (mode !== 'fallback') {
    expect(entry.inPlace.get(w)).toBe(g.nodes.findIndex((n) => n.op === 'input' && n.attrs['name'] === 'cache'));
    expect(m.updates).toEqual([{ name: 'cache', buffer: state, inPlace: true }]);
    // The state buffer bound once, writable (WebGPU refuses it also bound read-only).
    expect(write.bindings.filter((b) => b.buffer === state)).toEqual([{ buffer: state, access: 'read_write', offset: 0, length: H * C * D, elementBytes: 4 }]);
    // sparse: over x's elements only (64 per workgroup); epilogue: over every element, storing both.
    const n = mode === 'sparse' ? H * N * D : H * C * D;
    expect(code).toContain(`if (i >= ${n}u) { return; }`);
    expect(write.workgroups).toEqual([Math.ceil(n / 64), 1, 1]);
    expect(write.bindings).toHaveLength(mode === 'sparse' ? 3 : 4);
  } else {
    expect(entry.inPlace.size).toBe(0);
    expect(m.updates[0]!.inPlace).toBe(false);
    expect(code).toContain(`if (i >= ${H * C * D}u) { return; }`);
    // The old cache is read here and by the later matmul; the new one goes to a buffer of its own.
    expect(write.bindings.filter((b) => b.buffer === state)).toEqual([{ buffer: state, access: 'read', offset: 0, length: H * C * D, elementBytes: 4 }]);
  }
  const program = await ArtefactProgram.load(kd, artefact);
  try {
    let cache: HostTensor = rand([1, H, C, D], 99);
    program.store.write([['cache', cache]]);
    for (const [step, p] of [0, 5, C - N, C - 1, C, C + 7, 3].entries()) {
      const feeds = new Map<string, HostTensor>([
        ['q', rand([1, H, 1, D], 3 * step + 1)],
        ['x', rand([1, H, N, D], 3 * step + 2)],
        ['pos', { dtype: 'i32', shape: [], data: Int32Array.of(p) }],
      ]);
      const outs = await program.run('step', feeds);
      const ref = runReference(g, new Map([...feeds, ['cache', cache]]), [...g.outputs.map((o) => o.node), w], { precision: 'f32' });
      for (const o of g.outputs) {
        const got = outs.get(o.name)!;
        const want = ref.get(o.node)!;
        for (let i = 0; i < want.data.length; i++) expect(Math.abs(got.data[i]! - want.data[i]!), `${o.name} at pos ${p}, element ${i}`).toBeLessThanOrEqual(1e-5 + 1e-4 * Math.abs(want.data[i]!));
      }
      cache = ref.get(w)!;
      const onDevice = (await program.store.read(['cache'])).get('cache')!;
      expect([...onDevice.data], `cache after pos ${p}`).toEqual([...cache.data]);
    }
  } finally {
    program.destroy();
    program.store.destroy();
  }
}

describe('write_at on WebGPU', () => {
  it('in place: a kernel over the new rows only, into the cache state buffer bound once', async () => {
    await check('sparse');
  });
  it('in place with an epilogue: the copy kernel, reading the cache through its one read_write binding', async () => {
    await check('epilogue');
  });
  it('fallback: the old cache read after the write, so a copy kernel over the whole cache', async () => {
    await check('fallback');
  });
});
