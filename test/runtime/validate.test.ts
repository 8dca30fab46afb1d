// One input validation for every backend (issue 8 §1). The WebGPU kernels cannot raise errors, so
// the host check must refuse everything the reference (and PyTorch) refuses, with one message.
// Batches are small variants of the llama_b2 golden batch (B=2, T=9, vocab 97, the image
// placeholder -200 at column 2 of both rows), built here rather than committed.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkpointOverrides, evaluateBatch } from '../../compiler/cli/loss.js';
import { loadModelParams } from '../../compiler/cli/model-inputs.js';
import { Output } from '../../compiler/cli/output.js';
import { loadAndCheck } from '../../compiler/cli/spec.js';
import type { CheckedModel } from '../../compiler/check/index.js';
import { inputContract } from '../../compiler/passes/input-contract.js';
import { differentiate } from '../../compiler/passes/autodiff.js';
import { KilnError } from '../../runtime/errors.js';
import { runReference } from '../../compiler/exec/reference.js';
import { readSafetensors, writeSafetensors } from '../../runtime/node/safetensors-file.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { validateBatch } from '../../runtime/validate.js';

const G = 'test/golden/llama_b2';
const FILE = 'batch.safetensors';
let model: CheckedModel;
let params: Map<string, HostTensor>;
let golden: Map<string, HostTensor>;

beforeAll(() => {
  const overrides = [...checkpointOverrides(`${G}/llava`), ...checkpointOverrides(`${G}/clip`)];
  model = loadAndCheck('models/vwlmm.kiln', { config: 'tiny', overrides }, new Output(true));
  params = loadModelParams(model, { checkpoint: `${G}/llava`, visionTower: `${G}/clip` });
  golden = readSafetensors(`${G}/batch.safetensors`);
});

/** The golden batch with some elements of input_ids / labels replaced: [tensor, row, column, value]. */
function edited(edits: readonly (readonly ['input_ids' | 'labels', number, number, number])[], base = golden): Map<string, HostTensor> {
  const out = new Map(base);
  for (const name of ['input_ids', 'labels'] as const) {
    const t = base.get(name)!;
    const data = Int32Array.from(t.data);
    for (const [n, r, c, v] of edits) if (n === name) data[r * t.shape[1]! + c] = v;
    out.set(name, { ...t, data });
  }
  return out;
}

async function errorOf(f: () => Promise<unknown> | unknown): Promise<string> {
  try {
    await f();
  } catch (e) {
    expect(e).toBeInstanceOf(KilnError);
    return (e as Error).message;
  }
  return '(no error)';
}

const wanted = () => [model.graph.totalLoss!, ...model.graph.losses.map((l) => l.node)];
const onBackend = (batch: Map<string, HostTensor>, backend: 'cpu' | 'webgpu') =>
  errorOf(() => evaluateBatch(model.graph, params, batch, wanted(), { backend, file: FILE }));

describe('the input contract derived from the graph', () => {
  it('vwlmm: ids index the vocabulary (the placeholder passes), labels the classes or -100, one placeholder per row', () => {
    const c = inputContract(model.graph);
    expect(c.inputs.map((i) => [i.name, i.dtype, i.shape])).toEqual([
      ['pixel_values', 'f32', ['B', 3, 28, 28]],
      ['input_ids', 'i32', ['B', 'T']],
      ['labels', 'i32', ['B', 'T']],
    ]);
    expect(c.rules).toEqual([
      { kind: 'index', input: 'input_ids', what: 'id', size: 97, also: [{ value: -200, means: 'the image placeholder' }] },
      { kind: 'once-per-row', input: 'input_ids', token: -200, means: 'the image placeholder' },
      { kind: 'index', input: 'labels', what: 'label', size: 97, also: [{ value: -100, means: 'the ignore index' }], skip: { ids: 'input_ids', token: -200 } },
    ]);
    // The backward graph reads the same ids and labels: no new rules.
    expect(inputContract(differentiate(model.graph)).rules).toEqual(c.rules);
  });
});

// Each class: the batch, and the message both backends must give.
const CLASSES: [string, () => Map<string, HostTensor>, string][] = [
  ['an id equal to the vocabulary size', () => edited([['input_ids', 1, 5, 97]]), "tensor 'input_ids': id 97 at row 1, column 5 is out of range for a vocabulary of 97; allowed: 0..96, -200 (the image placeholder)"],
  ['a negative id', () => edited([['input_ids', 0, 4, -3]]), "tensor 'input_ids': id -3 at row 0, column 4 is out of range"],
  ['the ignore index in input_ids', () => edited([['input_ids', 0, 6, -100]]), "id -100 at row 0, column 6 is out of range for a vocabulary of 97; allowed: 0..96, -200 (the image placeholder) (-100 is the ignore index, allowed in 'labels' only)"],
  ['a label past the classes', () => edited([['labels', 1, 7, 500]]), "tensor 'labels': label 500 at row 1, column 7 is out of range for 97 classes; allowed: 0..96, -100 (the ignore index)"],
  ['a negative label that is not the ignore index', () => edited([['labels', 0, 3, -1]]), "tensor 'labels': label -1 at row 0, column 3"],
  ['a row without the placeholder', () => edited([['input_ids', 1, 2, 5]]), "tensor 'input_ids': row 1 holds the image placeholder -200 nowhere; each row needs it exactly once"],
  ['a row with two placeholders', () => edited([['input_ids', 0, 7, -200]]), "tensor 'input_ids': row 0 holds the image placeholder -200 2 times"],
  [
    'a batch with zero rows',
    () => new Map([...golden].map(([k, t]) => [k, { ...t, shape: [0, ...t.shape.slice(1)], data: t.data.subarray(0, 0) }])),
    "tensor 'pixel_values': dim 0 (B) is 0: a batch needs at least one row",
  ],
  [
    'rows that disagree on B',
    () => new Map([...golden, ['labels', { ...golden.get('labels')!, shape: [1, 9], data: golden.get('labels')!.data.subarray(0, 9) }]]),
    "tensor 'labels': expected i32[B, T], got i32[1, 9] (B is 2 from 'pixel_values')",
  ],
  ['i64-free ids stored as f32', () => new Map([...golden, ['input_ids', { dtype: 'f32' as const, shape: [2, 9], data: Float32Array.from(golden.get('input_ids')!.data) }]]), "tensor 'input_ids': expected dtype i32, got f32"],
];

describe('each class of invalid batch: the same error on both backends, before any work', () => {
  it.each(CLASSES)('%s', async (_name, make, message) => {
    const batch = make();
    const cpu = await onBackend(batch, 'cpu');
    const gpu = await onBackend(batch, 'webgpu');
    expect(cpu).toContain(`${FILE}: `);
    expect(cpu).toContain(message);
    expect(gpu).toBe(cpu);
  });

  it('what LLaVA accepts passes: any label at the placeholder column (dropped by the splice), the golden batches', async () => {
    const batch = edited([['labels', 0, 2, -200], ['labels', 1, 2, 12345]]);
    expect(() => validateBatch(inputContract(model.graph), batch)).not.toThrow();
    const r = await evaluateBatch(model.graph, params, batch, wanted(), { backend: 'cpu' });
    const ref = await evaluateBatch(model.graph, params, golden, wanted(), { backend: 'cpu' });
    expect(r.results.get(model.graph.totalLoss!)!.data[0]).toBe(ref.results.get(model.graph.totalLoss!)!.data[0]);
    for (const c of ['mistral_gqa', 'llama_vmw']) {
      const overrides = [...checkpointOverrides(`test/golden/${c}/llava`), ...checkpointOverrides(`test/golden/${c}/clip`)];
      const m = loadAndCheck('models/vwlmm.kiln', { config: 'tiny', overrides }, new Output(true));
      expect(() => validateBatch(inputContract(m.graph), readSafetensors(`test/golden/${c}/batch.safetensors`))).not.toThrow();
    }
  });
});

// Invalid batches: one to three edits of the golden batch, each of which PyTorch refuses.
const T = 9;
const notPlaceholderCol = fc.integer({ min: 0, max: T - 1 }).filter((c) => c !== 2);
const badId = fc.oneof(fc.integer({ min: 97, max: 1 << 30 }), fc.integer({ min: -(1 << 30), max: -1 }).filter((v) => v !== -200));
const badLabel = fc.oneof(fc.integer({ min: 97, max: 100_000 }), fc.integer({ min: -100_000, max: -1 }).filter((v) => v !== -100));
const edit = fc.oneof(
  fc.tuple(fc.constant('input_ids' as const), fc.integer({ min: 0, max: 1 }), notPlaceholderCol, badId),
  // Labels the cross-entropy reads: every column but 0 (shifted away) and the placeholder's.
  fc.tuple(fc.constant('labels' as const), fc.integer({ min: 0, max: 1 }), notPlaceholderCol.filter((c) => c > 0), badLabel),
  fc.tuple(fc.constant('input_ids' as const), fc.integer({ min: 0, max: 1 }), fc.constant(2), fc.integer({ min: 0, max: 96 })),
  fc.tuple(fc.constant('input_ids' as const), fc.integer({ min: 0, max: 1 }), notPlaceholderCol, fc.constant(-200)),
);

describe('property: invalid batches', () => {
  it('both backends give the identical error, and the reference alone refuses the batch too', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(edit, { minLength: 1, maxLength: 3 }), async (edits) => {
        const batch = edited(edits);
        const cpu = await onBackend(batch, 'cpu');
        const gpu = await onBackend(batch, 'webgpu');
        expect(cpu).not.toBe('(no error)');
        expect(gpu).toBe(cpu);
        // The contract is never laxer than the oracle: without the host check, the reference throws.
        expect(() => runReference(model.graph, new Map([...params, ...batch]), wanted(), { precision: 'f32' })).toThrow();
      }),
      { numRuns: 25, seed: 8 },
    );
  }, 300_000);
});

describe('the real kiln process', () => {
  it('an id past the vocabulary: both backends exit 1 with the same message, --grads writes nothing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-validate-'));
    const bad = join(dir, 'batch.safetensors');
    writeSafetensors(bad, edited([['input_ids', 1, 5, 97]]));
    const run = (backend: string) => {
      const grads = join(dir, `grads-${backend}.safetensors`);
      const args = ['bin/kiln.js', 'loss', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', `${G}/llava`, '--vision-tower', `${G}/clip`, '--batch', bad, '--grads', grads, '--backend', backend];
      try {
        execFileSync('node', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
        return { code: 0, stderr: '', wrote: existsSync(grads) };
      } catch (e) {
        const err = e as { status: number; stderr: string };
        return { code: err.status, stderr: err.stderr, wrote: existsSync(grads) };
      }
    };
    const cpu = run('cpu');
    const gpu = run('webgpu');
    expect(cpu.code).toBe(1);
    expect(cpu.stderr).toBe(`error: ${bad}: tensor 'input_ids': id 97 at row 1, column 5 is out of range for a vocabulary of 97; allowed: 0..96, -200 (the image placeholder)\n`);
    // WebGPU was acquired first (explicit --backend webgpu): Dawn's two limit notices were filtered.
    expect(gpu).toEqual(cpu);
    expect(gpu.stderr).not.toContain('artificially reduced');
    expect(cpu.wrote).toBe(false);
  }, 120_000);
});

describe('a compiled artefact carries the rules', () => {
  it("ArtefactProgram.run refuses what the host check refuses, with the same message, before any upload", async () => {
    const { compileArtefact } = await import('../../compiler/emit/artefact.js');
    const { defaultEntries } = await import('../../compiler/emit/entries.js');
    const { DEFAULT_TRAITS } = await import('../../compiler/codegen/kernel.js');
    const { ArtefactProgram } = await import('../../runtime/webgpu/program.js');
    const { getDevice } = await import('../../runtime/node/device.js');
    const bindings = new Map([
      ['B', 2],
      ['T', 9],
    ]);
    const { artefact } = compileArtefact(defaultEntries(model, ['loss']), { bindings, traits: DEFAULT_TRAITS });
    const rules = artefact.manifest.entries['loss']!.rules ?? [];
    expect(rules.map((r) => `${r.kind}:${r.input}`).sort()).toEqual(['index:input_ids', 'index:labels', 'once-per-row:input_ids']);
    const program = await ArtefactProgram.load(await getDevice(), artefact, { origin: 'memory' });
    try {
      const contract = inputContract(model.graph);
      for (const bad of [
        edited([['input_ids', 1, 5, 97]]),
        edited([['input_ids', 0, 4, -100]]),
        edited([['labels', 1, 7, 97]]),
        edited([['input_ids', 1, 2, 3]]),
      ]) {
        const host = await errorOf(() => validateBatch(contract, bad));
        expect(host).not.toBe('(no error)');
        expect(await errorOf(() => program.run('loss', bad))).toBe(host);
      }
    } finally {
      program.destroy();
    }
  }, 300_000);
});
