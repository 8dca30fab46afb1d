// Training batches (compiler/train/data.ts): the pipeline's samples in seeded epochs, rows padded
// to a length bucket, the last short batch dropped; and why the bucket padding is exact: the same
// batch padded further gives the same loss terms and gradients on the reference.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadSpec } from '../../../compiler/syntax/load.js';
import { checkModel } from '../../../compiler/check/index.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { checkpointOverrides } from '../../../compiler/cli/loss.js';
import { loadModelInputs } from '../../../compiler/cli/model-inputs.js';
import { prepareData } from '../../../compiler/cli/data-source.js';
import { SampleBatches, bucketLength } from '../../../compiler/train/data.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { relFrobenius } from '../../golden/compare.js';

const spec = () => loadSpec('models/vwlmm.kiln', (p: string) => readFileSync(p, 'utf8')).files;

describe('SampleBatches', () => {
  it('seeded epochs of whole batches, each padded to its bucket with the pad id and -100', async () => {
    const model = checkModel(spec(), { config: 'tiny' });
    const data = await prepareData(model, { data: 'builtin:shapes?size=24', maxLength: 2048, onBadImage: 'fail', imagePlacement: 'front' });
    const n = data.samples.length;
    const B = 3;
    const src = new SampleBatches(data.samples, { batchSize: B, seed: 5, padId: data.tokenizer.padId, imageSize: data.imageSize, imageTokens: data.imageTokens });
    // The last short batch is dropped.
    expect(src.stepsPerEpoch).toBe(Math.floor(n / B));
    const longest = Math.max(...data.samples.map((s) => s.encoded.inputIds.length));
    const shapes = src.shapes().map(([, t]) => t);
    const seen = new Set<string>();
    for (let t = 0; t < 2 * src.stepsPerEpoch; t++) {
      const b = src.batchAt(t);
      expect(b.epoch).toBe(Math.floor(t / src.stepsPerEpoch));
      const ids = b.inputs.get('input_ids')!;
      const labels = b.inputs.get('labels')!;
      const [rows, T] = ids.shape as [number, number];
      expect(rows).toBe(B);
      expect(shapes).toContain(T);
      expect(T).toBe(bucketLength(T, longest));
      // Each row: its sample's ids and labels, then pad ids with -100 labels to T.
      const byIds = new Map(data.samples.map((s) => [s.encoded.inputIds.join(','), s]));
      for (let r = 0; r < rows; r++) {
        const rowIds = [...ids.data.subarray(r * T, (r + 1) * T)];
        const rowLabels = [...labels.data.subarray(r * T, (r + 1) * T)];
        const s = [...byIds.entries()].find(([k]) => rowIds.join(',').startsWith(k) && (rowIds.length === k.split(',').length || rowIds[k.split(',').length] === data.tokenizer.padId))?.[1];
        expect(s, `step ${t} row ${r}`).toBeDefined();
        const len = s!.encoded.inputIds.length;
        expect(rowLabels.slice(0, len)).toEqual([...s!.encoded.labels]);
        expect(rowIds.slice(len).every((v) => v === data.tokenizer.padId)).toBe(true);
        expect(rowLabels.slice(len).every((v) => v === -100)).toBe(true);
        if (b.epoch === 0) seen.add(s!.id);
      }
      // Deterministic: the same step gives the same batch.
      expect(src.batchAt(t).inputs.get('input_ids')!.data).toEqual(ids.data);
    }
    // One epoch visits distinct samples only.
    expect(seen.size).toBe(src.stepsPerEpoch * B);
  });

  it('refuses data smaller than one batch, naming the flag', async () => {
    const model = checkModel(spec(), { config: 'tiny' });
    const data = await prepareData(model, { data: 'builtin:shapes?size=4', maxLength: 2048, onBadImage: 'fail', imagePlacement: 'front' });
    expect(() => new SampleBatches(data.samples, { batchSize: 100, seed: 0, padId: 0, imageSize: data.imageSize, imageTokens: data.imageTokens })).toThrow(/fewer than one batch of 100 \(--batch-size\)/);
  });
});

describe('padding to a bucket is exact', () => {
  // Tolerance: 1e-6 relative. The padded batch sums the same terms plus exact zeros (ignored
  // targets, positions no earlier position attends to), in a different order in places.
  it('the golden batch padded by 7 positions: the same loss terms and gradients (reference)', () => {
    const G = 'test/golden/llama_b2';
    const m = checkModel(spec(), { config: 'tiny', overrides: [...checkpointOverrides(`${G}/llava`), ...checkpointOverrides(`${G}/clip`)] });
    const feeds = loadModelInputs(m, { checkpoint: `${G}/llava`, visionTower: `${G}/clip`, batch: `${G}/batch.safetensors` });
    const ids = feeds.get('input_ids')!;
    const labels = feeds.get('labels')!;
    const [B, T] = ids.shape as [number, number];
    const to = T + 7;
    const pad = (t: HostTensor, v: number): HostTensor => {
      const data = new Int32Array(B * to).fill(v);
      for (let r = 0; r < B; r++) data.set(t.data.subarray(r * T, (r + 1) * T) as Int32Array, r * to);
      return { dtype: 'i32', shape: [B, to], data };
    };
    const padded = new Map([...feeds, ['input_ids', pad(ids, 0)], ['labels', pad(labels, -100)]]);
    const g = differentiate(m.graph);
    const wanted = [...g.losses.map((l) => l.node), ...g.gradients.map((x) => x.node)];
    const a = runReference(g, feeds, wanted, { precision: 'f32' });
    const b = runReference(g, padded, wanted, { precision: 'f32' });
    for (const l of g.losses) expect(Math.abs(b.get(l.node)!.data[0]! - a.get(l.node)!.data[0]!) / a.get(l.node)!.data[0]!, l.name).toBeLessThan(1e-6);
    for (const x of g.gradients) expect(relFrobenius(b.get(x.node)!.data, a.get(x.node)!.data), x.name).toBeLessThan(1e-6);
  });
});
