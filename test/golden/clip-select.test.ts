// LLaVA's mm_vision_select_layer is a Python index into CLIPVisionModel's hidden_states =
// [embeddings, layer 1, ..., layer N]: Kiln's tower features against transformers' for every
// index of llama_b2's 3-layer CLIP (clip_select/features.safetensors, made by make_golden.py,
// indexed by Python), on the reference and on WebGPU; out-of-range indices are errors at check
// time that name where the value came from. Tolerance: 1e-5 relative Frobenius (f32 against a
// float64 run; a wrong layer count is O(1) off).
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { checkpointOverrides } from '../../compiler/cli/loss.js';
import { main } from '../../compiler/cli/main.js';
import { Output } from '../../compiler/cli/output.js';
import { loadAndCheck } from '../../compiler/cli/spec.js';
import { loadParams, paramRequests } from '../../compiler/checkpoint/load.js';
import { runReference } from '../../compiler/exec/reference.js';
import { runOnWebGpu } from '../../compiler/exec/webgpu-run.js';
import type { Override } from '../../compiler/check/index.js';
import { readSafetensors } from '../../runtime/node/safetensors-file.js';
import { relFrobenius } from './compare.js';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';

const CLIP = 'test/golden/llama_b2/clip';
const SPEC = 'test/golden/clip_select/tower.kiln';
const expected = readSafetensors('test/golden/clip_select/features.safetensors');
const pixels = readSafetensors('test/golden/llama_b2/batch.safetensors').get('pixel_values')!;

function tower(select: number) {
  const overrides: Override[] = [...checkpointOverrides(CLIP), { key: 'vision.select_layer', value: select, origin: 'the test' }];
  const model = loadAndCheck(SPEC, { config: 'tower', overrides }, new Output(true));
  const { tensors } = loadParams(paramRequests(model.graph.params), [{ dir: CLIP }]);
  const feeds = new Map([...tensors, ['pixel_values', pixels]]);
  return { graph: model.graph, feeds, out: model.graph.outputs[0]!.node };
}

const INDICES = [-4, -3, -2, -1, 0, 1, 2, 3];

describe('mm_vision_select_layer indexes hidden_states as Python does (HF CLIPVisionModel)', () => {
  it.each(INDICES)('select_layer %i on the reference', (i) => {
    const { graph, feeds, out } = tower(i);
    const got = runReference(graph, feeds, [out], { precision: 'f32' }).get(out)!;
    const want = expected.get(`select_${i}`)!;
    expect(got.shape).toEqual(want.shape);
    expect(relFrobenius(got.data, want.data)).toBeLessThan(1e-5);
  });

  // The embeddings alone (no layer), one layer from the front, the last layer.
  it('select_layer -4, 1 and -1 on WebGPU', async () => {
    for (const i of [-4, 1, -1]) {
      const { graph, feeds, out } = tower(i);
      const got = (await runOnWebGpu(graph, feeds, [out])).get(out)!;
      expect(relFrobenius(got.data, expected.get(`select_${i}`)!.data), `select_layer ${i}`).toBeLessThan(1e-5);
    }
  }, 600_000);

  it('out of range is an error at check time naming --set or the config.json field, and the range', async () => {
    for (const [i, range] of [[4, '-4 .. 3'], [-5, '-4 .. 3']] as const) {
      const out = new Output(true);
      const code = await main(['check', 'models/vwlmm.kiln', '--config', 'tiny', '--set', `vision.select_layer=${i}`], out);
      expect(code).toBe(1);
      const err = out.err.join('\n');
      expect(err).toContain(`c.select_layer = ${i} is out of range: a Python index into 4 entries must be in ${range}`);
      expect(err).toContain(`the value comes from --set vision.select_layer=${i}`);
      expect(err).not.toMatch(/\n\s+at /);
    }
    const dir = mkdtempSync(join(tmpdir(), 'kiln-select-'));
    mkdirSync(join(dir, 'llava'));
    const cfg = JSON.parse(readFileSync('test/golden/llama_b2/llava/config.json', 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'llava', 'config.json'), JSON.stringify({ ...cfg, mm_vision_select_layer: -5 }));
    copyFileSync('test/golden/llama_b2/llava/model.safetensors', join(dir, 'llava', 'model.safetensors'));
    for (const backend of ['cpu', 'webgpu']) {
      const out = new Output(true);
      const args = ['loss', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', join(dir, 'llava'), '--vision-tower', CLIP];
      const code = await main([...args, '--batch', 'test/golden/llama_b2/batch.safetensors', '--backend', backend], out);
      expect(code).toBe(1);
      expect(out.err.join('\n')).toContain(`c.select_layer = -5 is out of range: a Python index into 4 entries must be in -4 .. 3; the value comes from field "mm_vision_select_layer" of ${join(dir, 'llava', 'config.json')}`);
    }
  });
});
