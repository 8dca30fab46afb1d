// runtime/generate.ts over a compiled generation artefact, as a page or a service runs it with
// nothing but `kiln/runtime`: the artefact written to files and read back (the manifest's
// generation block survives), prompts shorter than the compiled prompt left-padded into it, and
// each prompt's greedy tokens equal to the reference executor's for that prompt alone (the
// PyTorch-checked llama_b2 checkpoint: its top-1/top-2 margins are >= 0.0195, far above the 1e-4
// the cached logits differ by). Bad prompts are refused before anything runs.
import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkOptions } from '../../compiler/cli/args.js';
import { promptFromBatch } from '../../compiler/cli/generate.js';
import { checkpointOverrides } from '../../compiler/cli/loss.js';
import { loadBatch, loadModelParams } from '../../compiler/cli/model-inputs.js';
import { Output } from '../../compiler/cli/output.js';
import { loadAndCheck } from '../../compiler/cli/spec.js';
import { artefactFiles } from '../../compiler/emit/artefact.js';
import { compileGeneration, generateTokens, generationGraphs, referenceRunner } from '../../compiler/exec/generate.js';
import { deviceTraits } from '../../compiler/exec/webgpu.js';
import { ARTEFACT_FORMAT, ARTEFACT_VERSION, parseManifest } from '../../runtime/artefact.js';
import { generate, generationOf } from '../../runtime/generate.js';
import { getDevice } from '../../runtime/node/device.js';
import { readArtefact, writeArtefact } from '../../runtime/node/artefact-files.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { ArtefactProgram } from '../../runtime/webgpu/program.js';

const G = 'test/golden/llama_b2';
const STEPS = 5;

function golden() {
  const model = loadAndCheck('models/vwlmm.kiln', checkOptions({ config: 'tiny' }, [...checkpointOverrides(`${G}/llava`), ...checkpointOverrides(`${G}/clip`, '--vision-tower')]), new Output(true));
  const prompt = promptFromBatch(loadBatch(model, `${G}/batch.safetensors`), 'batch');
  const params = loadModelParams(model, { checkpoint: `${G}/llava`, visionTower: `${G}/clip` });
  return { model, prompt, params };
}

describe('runtime generate over a compiled prefill/decode artefact', () => {
  it('left-pads shorter prompts into the compiled prompt and gives each the tokens it gets alone', async () => {
    const { model, prompt, params } = golden();
    const ids = Array.from(prompt.get('input_ids')!.data);
    const px = prompt.get('pixel_values')!;
    const T = ids.length;
    const lengths = [T, T - 3];
    const probe = generationGraphs(model.graph, { T, capacity: 1 << 20, rows: 2 });
    const g = generationGraphs(model.graph, { T, capacity: probe.promptLength + STEPS, rows: 2 });
    const kd = await getDevice();
    // Through files, as `kiln compile --entries prefill,decode` leaves them.
    const dir = mkdtempSync(join(tmpdir(), 'kiln-gen-'));
    writeArtefact(dir, artefactFiles(compileGeneration(g, deviceTraits(kd)).artefact));
    const artefact = readArtefact(dir);
    expect(artefact.manifest.generation).toEqual({ rows: 2, promptTokens: T, promptLength: g.promptLength, capacity: g.capacity, leftPadded: true, imageToken: -200 });
    const program = await ArtefactProgram.load(kd, artefact);
    try {
      program.store.write(new Map([...params].filter(([n]) => program.store.has(n))));
      const prompts = lengths.map((n) => ({ input_ids: ids.slice(0, n), pixel_values: px }));
      const streamed: [number, number][] = [];
      const res = await generate(program, prompts, { maxTokens: STEPS, eos: [], onToken: (t, r) => streamed.push([r, t]) });
      expect(res.rows.length).toBe(2);
      for (const [r, n] of lengths.entries()) {
        const alone = new Map<string, HostTensor>([
          ['input_ids', { dtype: 'i32', shape: [1, n], data: Int32Array.from(ids.slice(0, n)) }],
          ['pixel_values', px],
        ]);
        const p1 = generationGraphs(model.graph, { T: n, capacity: 1 << 20 });
        const g1 = generationGraphs(model.graph, { T: n, capacity: p1.promptLength + STEPS });
        const want = await generateTokens(referenceRunner(g1, params), g1, alone, { maxTokens: STEPS, eos: [] });
        console.log(`llama_b2 row ${r} (${n} ids, ${T - n} padding): ${res.rows[r]!.tokens.join(' ')}`);
        expect(res.rows[r]!.tokens, `row ${r}`).toEqual(want.tokens);
        expect(streamed.filter(([row]) => row === r).map(([, t]) => t)).toEqual(want.tokens);
      }
      // One prompt in a two-row artefact: the spare row is filled and its tokens dropped.
      const one = await generate(program, [prompts[1]!], { maxTokens: STEPS, eos: [] });
      expect(one.rows.map((r) => r.tokens)).toEqual([res.rows[1]!.tokens]);
      await expect(generate(program, [...prompts, prompts[0]!], { maxTokens: 1, eos: [] })).rejects.toThrow(/3 prompts given; the artefact generates for 1 to 2/);
      await expect(generate(program, [{ input_ids: [...ids, 1], pixel_values: px }], { maxTokens: 1, eos: [] })).rejects.toThrow(`prompt 0 has ${T + 1} tokens; the prefill was compiled for at most ${T}`);
    } finally {
      program.destroy();
      program.store.destroy();
    }
  }, 600_000);

  it('refuses an artefact without generation entries, and a manifest whose generation block is broken', async () => {
    const text = (g: unknown) => JSON.stringify({ ...readArtefactManifestStub(), generation: g });
    expect(() => parseManifest(text({ rows: 0, promptTokens: 4, promptLength: 4, capacity: 8, leftPadded: false }))).toThrow(/generation.rows is 0, expected a positive integer/);
    expect(() => parseManifest(text({ rows: 1, promptTokens: 4, promptLength: 4, capacity: 8, leftPadded: false }))).toThrow(/prefill and decode entries are not both there/);
    expect(() => generationOf({ manifest: parseManifest(JSON.stringify(readArtefactManifestStub())) } as unknown as ArtefactProgram)).toThrow(/no generation entries \(entries: \); compile it with --entries prefill,decode/);
  });
});

/** The smallest manifest parseManifest accepts: no entries. */
function readArtefactManifestStub() {
  return { format: ARTEFACT_FORMAT, version: ARTEFACT_VERSION, source: {}, floatStorage: 'f32', requires: { features: [], limits: {} }, symbols: [], params: [], state: [], entries: {} };
}
