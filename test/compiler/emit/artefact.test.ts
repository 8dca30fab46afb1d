// The artefact as data (CPU only): deterministic output, the manifest's contents, and the
// refusals the runtime makes before touching a device (format version, corruption, missing
// kernel files, missing features and limits).
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { artefactFiles, compileArtefact } from '../../../compiler/emit/artefact.js';
import { defaultEntries } from '../../../compiler/emit/entries.js';
import type { EntrySpec } from '../../../compiler/emit/artefact.js';
import { loadAndCheck } from '../../../compiler/cli/spec.js';
import { Output } from '../../../compiler/cli/output.js';
import { DEFAULT_TRAITS } from '../../../compiler/codegen/kernel.js';
import { ARTEFACT_VERSION, MANIFEST_FILE, missingCapabilities, parseManifest, type Manifest } from '../../../runtime/artefact.js';
import { readArtefact, writeArtefact } from '../../../runtime/node/artefact-files.js';
import { expectKilnError } from '../../helpers/errors.js';
import { miniModel } from '../../helpers/mini-model.js';

const BINDINGS = new Map([
  ['B', 2],
  ['T', 3],
]);

function compileMini() {
  return compileArtefact(defaultEntries(miniModel()), { bindings: BINDINGS, traits: DEFAULT_TRAITS });
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-artefact-'));
}

describe('compiled artefact', () => {
  it('is byte-identical when compiled twice', () => {
    const a = artefactFiles(compileMini().artefact);
    const b = artefactFiles(compileMini().artefact);
    expect([...a.keys()]).toEqual([...b.keys()]);
    for (const [k, v] of a) expect(b.get(k), k).toBe(v);
  });

  it('names parameters by checkpoint name, AdamW moments as state, and three entries over them', () => {
    const m = compileMini().artefact.manifest;
    expect(m.format).toBe('kiln-artefact');
    expect(m.version).toBe(ARTEFACT_VERSION);
    expect(m.params.map((p) => [p.name, p.shape, p.trainable])).toEqual([
      ['up.weight', [16, 8], true],
      ['down.weight', [8, 16], true],
    ]);
    expect(m.state.map((s) => s.name).sort()).toEqual(['adamw.m:down.weight', 'adamw.m:up.weight', 'adamw.v:down.weight', 'adamw.v:up.weight']);
    expect(m.symbols).toEqual([
      { name: 'B', kind: 'fixed', value: 2, min: 2, max: 2 },
      { name: 'T', kind: 'fixed', value: 3, min: 3, max: 3 },
    ]);
    expect(Object.keys(m.entries)).toEqual(['loss', 'grads', 'train_step']);
    expect(m.entries['loss']!.inputs.map((i) => i.name)).toEqual(['x', 'y']);
    expect(m.entries['loss']!.updates).toEqual([]);
    expect(m.entries['grads']!.outputs.map((o) => o.name)).toEqual(['loss', 'loss:mse', 'grad:up.weight', 'grad:down.weight']);
    const step = m.entries['train_step']!;
    expect(step.updates.map((u) => u.name).sort()).toEqual([...m.params.map((p) => p.name), ...m.state.map((s) => s.name)].sort());
    // An in-place update binds its target's store buffer read_write: that is what runs.
    for (const u of step.updates.filter((x) => x.inPlace)) {
      const b = step.buffers[u.buffer]!;
      expect(b.kind === 'param' || b.kind === 'state').toBe(true);
      expect(step.dispatches.some((d) => d.bindings.some((bd) => bd.buffer === u.buffer && bd.access === 'read_write'))).toBe(true);
    }
    for (const e of Object.values(m.entries)) for (const d of e.dispatches) expect(compileMini().artefact.kernels.has(d.kernel)).toBe(true);
  });

  describe("AdamW within WebGPU's default 8 bindings (tiny VW-LMM, finetune stage)", () => {
    // An update written in place shares its target's read_write binding, so the fusion counts the
    // pair once; counted apart, AdamW's kernel (parameter, both moments, gradient, step scalars,
    // clipping factor and finite flag) needs 11 and splits into three kernels per parameter.
    const model = loadAndCheck('models/vwlmm.kiln', { config: 'tiny' }, new Output(true));
    const trainStep = defaultEntries(model).find((e) => e.name === 'train_step')!;
    const bindings = new Map([
      ['B', 2],
      ['T', 8],
    ]);
    const compileStep = (spec: EntrySpec) => compileArtefact([spec], { bindings, traits: DEFAULT_TRAITS }).artefact.manifest.entries['train_step']!;
    const trainable = model.graph.params.filter((p) => trainStep.graph.updates!.some((u) => u.name === p.name)).map((p) => p.name);

    it('writes each parameter and both its moments in place in one kernel, every kernel within 8 bindings', () => {
      const step = compileStep(trainStep);
      for (const d of step.dispatches) expect(d.bindings.length, d.label).toBeLessThanOrEqual(8);
      expect(step.updates.every((u) => u.inPlace)).toBe(true);
      for (const p of trainable) {
        const names = [p, `adamw.m:${p}`, `adamw.v:${p}`];
        const writers = step.dispatches.filter((d) => d.bindings.some((b) => b.access === 'read_write' && names.includes(String((step.buffers[b.buffer] as { name?: string }).name))));
        expect(writers.map((d) => d.label), p).toHaveLength(1);
        const written = writers[0]!.bindings.filter((b) => b.access === 'read_write').map((b) => String((step.buffers[b.buffer] as { name?: string }).name));
        expect(written.sort(), p).toEqual([...names].sort());
      }
    });

    it('fuses apart again when an update is not written in place (read back) and its kernel would pass 8 bindings', () => {
      const shared = compileStep(trainStep);
      const name = trainable[0]!;
      const update = trainStep.graph.updates!.find((u) => u.name === name)!;
      const step = compileStep({ ...trainStep, outputs: [...trainStep.outputs, { name: 'new_weight', node: update.node }] });
      for (const d of step.dispatches) expect(d.bindings.length, d.label).toBeLessThanOrEqual(8);
      expect(step.updates.find((u) => u.name === name)!.inPlace).toBe(false);
      expect(step.dispatches.length).toBeGreaterThan(shared.dispatches.length);
    });
  });

  it('round-trips through a folder, and names a missing kernel file', () => {
    const dir = tmpDir();
    const { artefact } = compileMini();
    writeArtefact(dir, artefactFiles(artefact));
    const back = readArtefact(dir);
    expect(back.manifest).toEqual(JSON.parse(JSON.stringify(artefact.manifest)));
    expect(back.kernels.size).toBe(artefact.kernels.size);
    const victim = [...artefact.kernels.keys()][1]!;
    fs.rmSync(path.join(dir, victim));
    expect(expectKilnError(() => readArtefact(dir), path.join(dir, victim)).file).toBe(path.join(dir, victim));
    expect(() => readArtefact(dir)).toThrow(/kernel file missing/);
  });

  it('refuses another format version, naming both', () => {
    const text = JSON.stringify({ ...compileMini().artefact.manifest, version: 1 });
    expect(() => parseManifest(text, 'a/manifest.json')).toThrow(/a\/manifest.json: artefact format version 1; this runtime reads version 2/);
  });

  it('refuses a corrupted manifest, naming the file and what is wrong', () => {
    const dir = tmpDir();
    writeArtefact(dir, artefactFiles(compileMini().artefact));
    const file = path.join(dir, MANIFEST_FILE);
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').slice(0, 500));
    expect(expectKilnError(() => readArtefact(dir), file).file).toBe(file);
    expect(() => readArtefact(dir)).toThrow(/corrupted manifest: not valid JSON/);
    const m = JSON.parse(JSON.stringify(compileMini().artefact.manifest)) as { entries: Record<string, { dispatches: { bindings: { buffer: number }[] }[] }> };
    m.entries['loss']!.dispatches[0]!.bindings[0]!.buffer = 999;
    expect(() => parseManifest(JSON.stringify(m), 'm.json')).toThrow(/m.json: corrupted manifest: entry 'loss': dispatch 0 .* names buffer 999, which does not exist/);
    expect(() => parseManifest('[]', 'm.json')).toThrow(/corrupted manifest: not a JSON object/);
  });

  it('lists the features and limits a device lacks', () => {
    const m: Manifest = { ...compileMini().artefact.manifest, requires: { features: ['shader-f16'], limits: { maxBufferSize: 1000, maxStorageBuffersPerShaderStage: 12 }, subgroupSize: 8 } };
    const missing = missingCapabilities(m, { features: new Set<string>(), limits: { maxBufferSize: 4096, maxStorageBuffersPerShaderStage: 8 }, subgroupSize: undefined });
    expect(missing).toEqual(['feature shader-f16', 'limit maxStorageBuffersPerShaderStage >= 12 (the device has 8)', 'subgroup size 8 (the device has no fixed size)']);
  });
});

describe('kiln compile and kiln plan DIR', () => {
  it('writes the artefact, and plan reads back what it will run', async () => {
    const { main } = await import('../../../compiler/cli/main.js');
    const { Output } = await import('../../../compiler/cli/output.js');
    const dir = tmpDir();
    const spec = path.join(dir, 'mini.kiln');
    fs.writeFileSync(spec, (await import('../../helpers/mini-model.js')).MINI_SPEC);
    const out = new Output(true);
    expect(await main(['compile', spec, '--out', path.join(dir, 'a'), '--batch-size', '2', '--seq', '3', '--entries', 'loss,train_step'], out), out.err.join('\n')).toBe(0);
    expect(out.out.join('\n')).toMatch(/train_step +\d+ dispatches/);
    const plan = new Output(true);
    expect(await main(['plan', path.join(dir, 'a'), '--json'], plan)).toBe(0);
    const p = JSON.parse(plan.out[0]!) as { symbols: Record<string, number>; entries: { name: string; dispatches: number; inPlaceUpdates: number; copiedUpdates: number }[] };
    expect(p.symbols).toEqual({ B: 2, T: 3 });
    const m = readArtefact(path.join(dir, 'a')).manifest;
    expect(p.entries.map((e) => [e.name, e.dispatches])).toEqual(Object.entries(m.entries).map(([n, e]) => [n, e.dispatches.length]));
    expect(p.entries[1]!.inPlaceUpdates + p.entries[1]!.copiedUpdates).toBe(6);
    const bad = new Output(true);
    expect(await main(['compile', spec, '--out', path.join(dir, 'b'), '--entries', 'sample'], bad)).toBe(2);
    expect(bad.err.join('\n')).toContain("--entries: no entry 'sample' (entries: loss, grads, train_step, eval, prefill, decode)");
    const alone = new Output(true);
    expect(await main(['compile', spec, '--out', path.join(dir, 'b'), '--entries', 'decode'], alone)).toBe(2);
    expect(alone.err.join('\n')).toContain('--entries: prefill and decode go together');
  });
});
