// Kernel timing with timestamp queries: one timed call per dispatch, a profiled run computes the
// same bits as an unprofiled one, and the table and the Chrome trace account for every call.
import { describe, expect, it } from 'vitest';
import { compileArtefact } from '../../../compiler/emit/artefact.js';
import { defaultEntries } from '../../../compiler/emit/entries.js';
import { DEFAULT_TRAITS } from '../../../compiler/codegen/kernel.js';
import { initParams } from '../../../compiler/exec/init.js';
import { getDevice } from '../../../runtime/node/device.js';
import { ArtefactProgram } from '../../../runtime/webgpu/program.js';
import { KernelProfiler } from '../../../runtime/webgpu/profile.js';
import { serializeSafetensors } from '../../../runtime/safetensors.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { miniModel } from '../../helpers/mini-model.js';

const f32 = (shape: number[], seed: number): HostTensor => ({ dtype: 'f32', shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(seed * 7.1 + i * 0.37)) });

describe('KernelProfiler on WebGPU', () => {
  it('times every dispatch of a run, and profiling does not change the numbers', async () => {
    const model = miniModel();
    const { artefact } = compileArtefact(defaultEntries(model, ['grads']), { bindings: new Map([['B', 2], ['T', 3]]), traits: DEFAULT_TRAITS });
    const kd = await getDevice();
    if (!kd.features.timestampQuery) throw new Error(`${kd.adapterName} has no timestamp-query: this test needs it (lavapipe has it)`);
    const program = await ArtefactProgram.load(kd, artefact);
    try {
      const params = initParams(model.graph.params, 3);
      const bytes = serializeSafetensors(params);
      const all = new Uint8Array(bytes.reduce((a, c) => a + c.length, 0));
      bytes.reduce((o, c) => (all.set(c, o), o + c.length), 0);
      program.store.loadSafetensors(all, { file: 'init.safetensors', required: [...params.keys()] });
      const batch = new Map([['x', f32([2, 3, 8], 1)], ['y', f32([2, 3, 8], 2)]]);
      const plain = await program.run('grads', batch);
      const profiler = new KernelProfiler();
      const timed = await program.run('grads', batch, undefined, { profiler });
      await program.run('grads', batch, undefined, { profiler });
      for (const [name, t] of plain) expect([...timed.get(name)!.data], name).toEqual([...t.data]);

      const dispatches = artefact.manifest.entries['grads']!.dispatches;
      expect(profiler.runsOf('grads')).toBe(2);
      expect(profiler.calls.length).toBe(2 * dispatches.length);
      for (const c of profiler.calls) expect(c.end).toBeGreaterThanOrEqual(c.begin);
      // The GPU runs the dispatches in order: each starts no earlier than the one before ended.
      const run0 = profiler.calls.filter((c) => c.run === 0);
      for (let s = 1; s < run0.length; s++) expect(run0[s]!.begin).toBeGreaterThanOrEqual(run0[s - 1]!.end);
      expect(run0[run0.length - 1]!.end).toBeGreaterThan(run0[0]!.begin);

      const rows = profiler.table();
      expect(rows.reduce((a, r) => a + r.calls, 0)).toBe(profiler.calls.length);
      expect(rows.reduce((a, r) => a + r.share, 0)).toBeCloseTo(1, 9);
      expect(new Set(rows.map((r) => r.kernel))).toEqual(new Set(dispatches.map((d) => d.kernel)));
      const trace = profiler.chromeTrace();
      expect(trace.traceEvents.filter((e) => (e as { ph: string }).ph === 'X')).toHaveLength(profiler.calls.length);
    } finally {
      program.destroy();
    }
  });
});
