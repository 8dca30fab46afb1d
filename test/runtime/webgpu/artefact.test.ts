// Artefacts on WebGPU: what `kiln compile` writes, read back from a folder and run by the
// runtime alone. The entries share one store: after train_step, loss reads the updated weights
// from the same buffers. Checked against the reference executor. Tolerances: losses within
// 2e-4 relative (the golden loss tolerance); parameters after two AdamW steps within 1e-3
// relative (Frobenius), as in train.test.ts (a near-zero gradient entry whose sign differs
// between two f32 summation orders moves one weight by 2 lr).
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { artefactFiles, compileArtefact } from '../../../compiler/emit/artefact.js';
import { adamwHyper, defaultEntries } from '../../../compiler/emit/entries.js';
import { DEFAULT_TRAITS } from '../../../compiler/codegen/kernel.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { initParams } from '../../../compiler/exec/init.js';
import { TrainState } from '../../../compiler/exec/train.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { withAdamW } from '../../../compiler/passes/optimizer.js';
import { getDevice } from '../../../runtime/node/device.js';
import { readArtefact, writeArtefact } from '../../../runtime/node/artefact-files.js';
import { ArtefactProgram } from '../../../runtime/webgpu/program.js';
import { adamwStepInputs } from '../../../runtime/optim/schedule.js';
import { serializeSafetensors } from '../../../runtime/safetensors.js';
import { KilnError } from '../../../runtime/errors.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { relFrobenius } from '../../golden/compare.js';
import { miniModel } from '../../helpers/mini-model.js';

const f32 = (shape: number[], seed: number): HostTensor => {
  const n = shape.reduce((a, b) => a * b, 1);
  return { dtype: 'f32', shape, data: Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 7.1 + i * 0.37)) };
};
const bytesOf = (chunks: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
};

describe('artefacts on WebGPU', () => {
  it('train_step then loss: one store shared by the entries, equal to the reference', async () => {
    const model = miniModel();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-artefact-gpu-'));
    const bindings = new Map([
      ['B', 2],
      ['T', 3],
    ]);
    writeArtefact(dir, artefactFiles(compileArtefact(defaultEntries(model), { bindings, traits: DEFAULT_TRAITS }).artefact));
    const kd = await getDevice();
    const program = await ArtefactProgram.load(kd, readArtefact(dir), { origin: dir });
    try {
      const params = initParams(model.graph.params, 3);
      const names = [...params.keys()];
      program.store.loadSafetensors(bytesOf(serializeSafetensors(params)), { file: 'init.safetensors', required: names });
      const batch = new Map([
        ['x', f32([2, 3, 8], 1)],
        ['y', f32([2, 3, 8], 2)],
      ]);
      const refLoss = (p: ReadonlyMap<string, HostTensor>): number =>
        runReference(model.graph, new Map([...p, ...batch]), [model.graph.totalLoss!], { precision: 'f32' }).get(model.graph.totalLoss!)!.data[0]!;
      const rel = (a: number, b: number): number => Math.abs(a - b) / Math.abs(b);

      const before = (await program.run('loss', batch)).get('loss')!.data[0]!;
      expect(rel(before, refLoss(params))).toBeLessThan(2e-4);

      const hyper = adamwHyper(model);
      const train = withAdamW(differentiate(model.graph), hyper);
      const ref = new TrainState(train, hyper, params);
      const run = (g: typeof train, f: ReadonlyMap<string, HostTensor>, w: readonly number[]) => runReference(g, f, [...w], { precision: 'f32' });
      const lr = 1e-2;
      for (let step = 1; step <= 2; step++) {
        const want = await ref.run(run, batch, lr);
        const got = await program.run('train_step', new Map([...batch, ...adamwStepInputs(lr, step, hyper.beta1, hyper.beta2)]), ['loss']);
        expect(rel(got.get('loss')!.data[0]!, want.loss), `step ${step}`).toBeLessThan(2e-4);
      }
      // The loss entry reads the weights train_step left in the store: no upload in between.
      const updated = new Map(names.map((n) => [n, ref.values.get(n)!]));
      const after = (await program.run('loss', batch)).get('loss')!.data[0]!;
      expect(rel(after, refLoss(updated))).toBeLessThan(2e-4);
      expect(after).toBeLessThan(before);
      const onDevice = await program.store.read(names);
      for (const n of names) expect(relFrobenius(onDevice.get(n)!.data, updated.get(n)!.data), n).toBeLessThan(1e-3);
      // grads reads the same store too.
      const g = await program.run('grads', batch, ['grad:up.weight']);
      expect(g.get('grad:up.weight')!.shape).toEqual([16, 8]);
    } finally {
      program.destroy();
      program.store.destroy();
    }
  });

  it('each run reads back its own outputs, one after another or overlapping (the kept read-back buffer and a spare)', async () => {
    const model = miniModel();
    const { artefact } = compileArtefact(defaultEntries(model, ['loss']), { bindings: new Map([['B', 1], ['T', 2]]), traits: DEFAULT_TRAITS });
    const program = await ArtefactProgram.load(await getDevice(), artefact);
    try {
      const params = initParams(model.graph.params, 5);
      program.store.write(params);
      const batch = (seed: number) => new Map([['x', f32([1, 2, 8], seed)], ['y', f32([1, 2, 8], seed + 1)]]);
      const want = [1, 3, 5].map((seed) => runReference(model.graph, new Map([...params, ...batch(seed)]), [model.graph.totalLoss!], { precision: 'f32' }).get(model.graph.totalLoss!)!.data[0]!);
      const one = async (seed: number) => (await program.run('loss', batch(seed))).get('loss')!.data[0]!;
      const sequential = [await one(1), await one(3), await one(5)];
      const overlapping = await Promise.all([one(1), one(3), one(5)]);
      // The same kernels on the same inputs: the same bits, whichever staging buffer carried them.
      expect(overlapping).toEqual(sequential);
      sequential.forEach((v, k) => expect(Math.abs(v - want[k]!) / Math.abs(want[k]!)).toBeLessThan(2e-4));
      expect(new Set(sequential).size).toBe(3);
    } finally {
      program.destroy();
      program.store.destroy();
    }
  });

  it('weights that do not match the manifest name the tensor and the difference', async () => {
    const model = miniModel();
    const { artefact } = compileArtefact(defaultEntries(model, ['loss']), { bindings: new Map([['B', 1], ['T', 2]]), traits: DEFAULT_TRAITS });
    const program = await ArtefactProgram.load(await getDevice(), artefact);
    try {
      const bad = new Map([['up.weight', f32([8, 16], 1)]]);
      expect(() => program.store.loadSafetensors(bytesOf(serializeSafetensors(bad)), { file: 'w.safetensors' })).toThrow(
        "w.safetensors: tensor 'up.weight': the program expects f32[16, 8], got f32[8, 16]",
      );
      const stray = new Map([['lm_head.weight', f32([2], 1)]]);
      expect(() => program.store.loadSafetensors(bytesOf(serializeSafetensors(stray)), { file: 'w.safetensors' })).toThrow(/tensor 'lm_head.weight': is not a parameter/);
      expect(() => program.store.loadSafetensors(bytesOf(serializeSafetensors(new Map())), { file: 'w.safetensors', required: ['up.weight'] })).toThrow(
        /w.safetensors: tensor 'up.weight': the compiled program needs this tensor; the file lacks it/,
      );
      await expect(program.run('loss', new Map([['x', f32([1, 2, 8], 1)]]))).rejects.toThrow(/input y: no value was fed/);
    } finally {
      program.destroy();
      program.store.destroy();
    }
  });

  it('refuses an artefact that needs a feature or a limit the adapter lacks, naming it', async () => {
    const kd = await getDevice();
    const { artefact } = compileArtefact(defaultEntries(miniModel(), ['loss']), { bindings: new Map([['B', 1], ['T', 2]]), traits: DEFAULT_TRAITS });
    const needs = (requires: typeof artefact.manifest.requires) => ({ ...artefact, manifest: { ...artefact.manifest, requires } });
    const err = await ArtefactProgram.load(kd, needs({ features: ['no-such-feature'], limits: {} }), { origin: 'out/a' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KilnError);
    expect((err as Error).message).toMatch(/^out\/a: this artefact needs feature no-such-feature, which .* lacks/);
    const huge = kd.limits.maxStorageBuffersPerShaderStage + 1;
    await expect(ArtefactProgram.load(kd, needs({ features: [], limits: { maxStorageBuffersPerShaderStage: huge } }))).rejects.toThrow(
      `limit maxStorageBuffersPerShaderStage >= ${huge} (the device has ${huge - 1})`,
    );
  });
});
