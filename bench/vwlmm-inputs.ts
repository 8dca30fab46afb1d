// Inputs shared by the train_speed and decode sections: the checked VW-LMM at a config (the
// finetune stage: projector, decoder and both heads train, the tower is frozen), seeded weights,
// batches of mixed lengths bucketed as `kiln train` buckets them, and a generation prompt.
import { readFileSync } from 'node:fs';
import { loadSpec } from '../compiler/syntax/load.js';
import { checkModel, type CheckedModel } from '../compiler/check/index.js';
import { initParams, seededRandom } from '../compiler/exec/init.js';
import { configNumber } from '../compiler/cli/data-source.js';
import { bucketLength } from '../compiler/train/data.js';
import type { HostTensor } from '../runtime/tensor.js';

export function loadVwlmm(config: string): CheckedModel {
  const files = loadSpec('models/vwlmm.kiln', (p: string) => readFileSync(p, 'utf8')).files;
  return checkModel(files, { config, stage: 'finetune' });
}

/** The spec's initialisers from seed 0 (what `kiln train` starts from without --checkpoint). */
export const vwlmmParams = (model: CheckedModel): Map<string, HostTensor> => initParams(model.graph.params, 0);

export interface BenchBatch {
  readonly inputs: Map<string, HostTensor>;
  /** decoder positions that are not padding: each row's ids, the placeholder counted as the image's patches. */
  readonly tokens: number;
  /** T after bucketing. */
  readonly T: number;
}

/**
 * `count` batches of `B` rows of mixed lengths: row = BOS, the image placeholder, then text ids
 * (the first two labelled -100 as a prompt, the rest their own ids), right-padded with id 0 and
 * label -100 to the bucket of the batch's longest row (compiler/train/data.ts bucketLength, as
 * `kiln train` pads). Batch k draws its row lengths from [4, caps[k % caps.length]], so the run
 * visits every bucket.
 */
export function mixedBatches(model: CheckedModel, B: number, count: number, caps: readonly number[], seed = 1): BenchBatch[] {
  const r = seededRandom(seed);
  const vocab = configNumber(model, 'text.vocab');
  const size = configNumber(model, 'vision.image_size');
  const patches = configNumber(model, 'vision.patches');
  const longest = Math.max(...caps);
  const out: BenchBatch[] = [];
  for (let k = 0; k < count; k++) {
    const cap = caps[k % caps.length]!;
    const rows = Array.from({ length: B }, () => {
      const n = 4 + Math.floor(r() * (cap - 3));
      return Array.from({ length: n }, (_, t) => (t === 0 ? 1 : t === 1 ? -200 : 2 + Math.floor(r() * (vocab - 2))));
    });
    const T = bucketLength(Math.max(...rows.map((x) => x.length)), longest);
    const ids = new Int32Array(B * T);
    const labels = new Int32Array(B * T).fill(-100);
    let tokens = 0;
    rows.forEach((row, b) => {
      row.forEach((id, t) => {
        ids[b * T + t] = id;
        if (t >= 4) labels[b * T + t] = id;
      });
      tokens += row.length - 1 + patches;
    });
    const pixels = Float32Array.from({ length: B * 3 * size * size }, () => 2 * r() - 1);
    out.push({
      inputs: new Map<string, HostTensor>([
        ['pixel_values', { dtype: 'f32', shape: [B, 3, size, size], data: pixels }],
        ['input_ids', { dtype: 'i32', shape: [B, T], data: ids }],
        ['labels', { dtype: 'i32', shape: [B, T], data: labels }],
      ]),
      tokens,
      T,
    });
  }
  return out;
}

/** A generation prompt: BOS, the image, `text` random ids; pixel_values [1, 3, S, S]. */
export function benchPrompt(model: CheckedModel, text: number, seed = 3): Map<string, HostTensor> {
  const r = seededRandom(seed);
  const vocab = configNumber(model, 'text.vocab');
  const size = configNumber(model, 'vision.image_size');
  const ids = [1, -200, ...Array.from({ length: text }, () => 2 + Math.floor(r() * (vocab - 2)))];
  return new Map<string, HostTensor>([
    ['input_ids', { dtype: 'i32', shape: [1, ids.length], data: Int32Array.from(ids) }],
    ['pixel_values', { dtype: 'f32', shape: [1, 3, size, size], data: Float32Array.from({ length: 3 * size * size }, () => 2 * r() - 1) }],
  ]);
}

export const round = (x: number, digits = 2): number => Number(x.toFixed(digits));
export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
