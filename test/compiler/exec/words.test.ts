// Visual words (compiler/exec/words.ts) against PyTorch and across backends. The golden case
// llama_b2 (test/golden/make_golden.py) records vm_logits = vm_head(spliced inputs) [2, 24, 97]
// and is_image; at row 0's image positions those are vm_head(projector(tower(pixel_values[0]))),
// so their softmax is row 0's visual words as torch computes them. Tolerances: probabilities
// are in [0, 1] and both sides compute in f32 from O(1) logits, so a probability differs by a
// few f32 ulps of the logits (about 1e-7 relative) times p; 1e-5 absolute is 100x that margin
// and far below any gap between neighbouring probabilities that matters to the picture.
import { describe, expect, it } from 'vitest';
import { checkOptions } from '../../../compiler/cli/args.js';
import { checkpointOverrides } from '../../../compiler/cli/loss.js';
import { loadBatch, loadModelParams } from '../../../compiler/cli/model-inputs.js';
import { Output } from '../../../compiler/cli/output.js';
import { loadAndCheck } from '../../../compiler/cli/spec.js';
import { IMAGE_WORDS, imageWordsGraph, imageWordsParams, topWords, visualWords, type VisualWords } from '../../../compiler/exec/words.js';
import { readSafetensors } from '../../../runtime/node/safetensors-file.js';
import type { HostTensor } from '../../../runtime/tensor.js';

const G = 'test/golden/llama_b2';
const TOL = 1e-5;

function setup() {
  const model = loadAndCheck('models/vwlmm.kiln', checkOptions({ config: 'tiny' }, [...checkpointOverrides(`${G}/llava`), ...checkpointOverrides(`${G}/clip`, '--vision-tower')]), new Output(true));
  const params = loadModelParams(model, { checkpoint: `${G}/llava`, visionTower: `${G}/clip` }, () => {}, imageWordsParams(model.graph));
  const px = loadBatch(model, `${G}/batch.safetensors`).get('pixel_values')!;
  const per = px.shape.slice(1).reduce((a, x) => a * x, 1);
  const pixels: HostTensor = { dtype: 'f32', shape: [1, ...px.shape.slice(1)], data: Float32Array.from(px.data.subarray(0, per)) };
  return { model, params, pixels };
}

/** softmax (in f64) of torch's vm_logits at row 0's image positions: [patches][vocab]. */
function torchWords(): number[][] {
  const a = readSafetensors(`${G}/activations.safetensors`);
  const z = a.get('vm_logits')!;
  const isImage = a.get('is_image')!;
  const [, L, V] = z.shape as [number, number, number];
  const rows: number[][] = [];
  for (let t = 0; t < L; t++) {
    if (isImage.data[t] === 0) continue;
    const row = Array.from(z.data.subarray(t * V, (t + 1) * V));
    const m = Math.max(...row);
    const e = row.map((x) => Math.exp(x - m));
    const s = e.reduce((x, y) => x + y, 0);
    rows.push(e.map((x) => x / s));
  }
  return rows;
}

function worst(w: VisualWords, want: readonly (readonly number[])[]): number {
  let err = 0;
  want.forEach((row, patch) => row.forEach((p, v) => (err = Math.max(err, Math.abs(w.probs[patch * w.vocab + v]! - p)))));
  return err;
}

describe('visual words', () => {
  it('the words graph is the tower, projector and VM head alone: pixel_values in, no T', () => {
    const { model } = setup();
    const g = imageWordsGraph(model.graph);
    expect(g.inputs.map((i) => i.name)).toEqual(['pixel_values']);
    expect(g.outputs.map((o) => o.name)).toEqual([IMAGE_WORDS]);
    expect(g.symbols).toEqual(['B']);
    const names = g.params.map((p) => p.name);
    expect(names).toContain('vm_head.weight');
    expect(names.some((n) => n.startsWith('model.mm_projector.'))).toBe(true);
    expect(names.some((n) => n.startsWith('model.layers.') || n === 'lm_head.weight' || n === 'model.embed_tokens.weight')).toBe(false);
  });

  it('reference: softmax(vm_head(projector(tower(image)))) equals torch within 1e-5', async () => {
    const { model, params, pixels } = setup();
    const want = torchWords();
    const w = await visualWords(model.graph, params, pixels, 'cpu');
    expect(w.grid).toEqual([4, 4]);
    expect(want.length).toBe(16);
    const err = worst(w, want);
    expect(err).toBeLessThan(TOL);
    console.log(`visual words, reference vs torch: worst |dp| ${err.toExponential(2)}`);
  });

  it('WebGPU (compiled) equals the reference within 1e-5, with the same top-3 tokens', async () => {
    const { model, params, pixels } = setup();
    const ref = await visualWords(model.graph, params, pixels, 'cpu');
    const gpu = await visualWords(model.graph, params, pixels, 'webgpu');
    expect(gpu.grid).toEqual(ref.grid);
    const want = Array.from({ length: 16 }, (_, p) => Array.from(ref.probs.subarray(p * ref.vocab, (p + 1) * ref.vocab)));
    const err = worst(gpu, want);
    expect(err).toBeLessThan(TOL);
    // Ids only where the reference's neighbours are apart by more than the tolerance (no near-tie).
    const r = topWords(ref, 3);
    const g = topWords(gpu, 3);
    r.forEach((choices, patch) => choices.forEach((c, j) => {
      const next = choices[j + 1];
      if (next === undefined || c.p - next.p > 2 * TOL) expect(g[patch]![j]!.id, `patch ${patch} rank ${j}`).toBe(c.id);
    }));
    console.log(`visual words, WebGPU vs reference: worst |dp| ${err.toExponential(2)}`);
  });
});

describe('topWords', () => {
  const w: VisualWords = { grid: [1, 2], vocab: 4, probs: Float32Array.from([0.1, 0.4, 0.4, 0.1, 0.7, 0.1, 0.05, 0.15]) };
  it('most probable first, equal probabilities by the lower id, k capped at the vocabulary', () => {
    expect(topWords(w, 2)).toEqual([
      [{ id: 1, p: Math.fround(0.4) }, { id: 2, p: Math.fround(0.4) }],
      [{ id: 0, p: Math.fround(0.7) }, { id: 3, p: Math.fround(0.15) }],
    ]);
    expect(topWords(w, 10)[1]!.map((c) => c.id)).toEqual([0, 3, 1, 2]);
  });
  it('k must be a whole number >= 1; a NaN probability is an error, not a label', () => {
    expect(() => topWords(w, 0)).toThrow(/k must be/);
    const bad: VisualWords = { ...w, probs: Float32Array.from([NaN, 0, 0, 0, 1, 0, 0, 0]) };
    expect(() => topWords(bad, 1)).toThrow(/NaN probability at token 0/);
  });
});
