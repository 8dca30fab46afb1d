// Samples -> batches: seeded shuffling per epoch, right padding, the tensors `kiln loss --batch`
// reads. Pure and deterministic, so every backend and the browser see the same batches.
import type { HostTensor } from '../runtime/tensor.js';
import { IGNORE_INDEX } from './encode.js';
import { Rng, deriveSeed } from './random.js';

/** What collate needs of a sample (data/dataset.ts's Sample has it). */
export interface BatchSample {
  id: string;
  encoded: { inputIds: Int32Array; labels: Int32Array };
  pixelValues: Float32Array | null;
}

/**
 * One batch, rows right-padded to the longest row:
 * pixel_values f32 [B, 3, S, S] (zeros for a text-only row, as LLaVA feeds a zero image),
 * input_ids i32 [B, T] (pad id after the row's end), labels i32 [B, T] (-100 on pads),
 * attention_mask i32 [B, T] (1 on the row's tokens, 0 on pads).
 */
export interface Batch {
  ids: string[];
  pixelValues: HostTensor;
  inputIds: HostTensor;
  labels: HostTensor;
  attentionMask: HostTensor;
}

export interface CollateOptions {
  padId: number;
  imageSize: number;
}

/** Right-pads `samples` into one batch. @throws RangeError for an empty list or a wrong pixel count. */
export function collate(samples: readonly BatchSample[], opts: CollateOptions): Batch {
  if (samples.length === 0) throw new RangeError('collate: no samples');
  const B = samples.length;
  const T = Math.max(...samples.map((s) => s.encoded.inputIds.length));
  const S = opts.imageSize;
  const plane = 3 * S * S;
  const pixels = new Float32Array(B * plane);
  const ids = new Int32Array(B * T).fill(opts.padId);
  const labels = new Int32Array(B * T).fill(IGNORE_INDEX);
  const mask = new Int32Array(B * T);
  samples.forEach((s, b) => {
    const n = s.encoded.inputIds.length;
    ids.set(s.encoded.inputIds, b * T);
    labels.set(s.encoded.labels, b * T);
    mask.fill(1, b * T, b * T + n);
    if (s.pixelValues) {
      if (s.pixelValues.length !== plane) throw new RangeError(`collate: sample ${s.id} has ${s.pixelValues.length} pixel values, expected 3*${S}*${S}`);
      pixels.set(s.pixelValues, b * plane);
    }
  });
  return {
    ids: samples.map((s) => s.id),
    pixelValues: { dtype: 'f32', shape: [B, 3, S, S], data: pixels },
    inputIds: { dtype: 'i32', shape: [B, T], data: ids },
    labels: { dtype: 'i32', shape: [B, T], data: labels },
    attentionMask: { dtype: 'i32', shape: [B, T], data: mask },
  };
}

/** The order of `n` samples in `epoch` (0-based) for `seed`: a seeded Fisher-Yates permutation. */
export function epochOrder(n: number, seed: number, epoch: number): number[] {
  return new Rng(deriveSeed(seed, epoch)).shuffle(Array.from({ length: n }, (_, i) => i));
}

export interface BatchOptions extends CollateOptions {
  batchSize: number;
  seed: number;
  epochs: number;
  /** shuffle each epoch (default true); false keeps the samples' order. */
  shuffle?: boolean;
  /** drop a last, smaller batch of an epoch (default false). */
  dropLast?: boolean;
}

/** Batches over `epochs` epochs, each epoch a fresh permutation. */
export function* batches<S extends BatchSample>(samples: readonly S[], opts: BatchOptions): Generator<{ epoch: number; step: number; batch: Batch }> {
  if (!(opts.batchSize >= 1)) throw new RangeError('batches: batchSize must be at least 1');
  let step = 0;
  for (let epoch = 0; epoch < opts.epochs; epoch++) {
    const order = opts.shuffle === false ? samples.map((_, i) => i) : epochOrder(samples.length, opts.seed, epoch);
    for (let i = 0; i < order.length; i += opts.batchSize) {
      const rows = order.slice(i, i + opts.batchSize);
      if (rows.length < opts.batchSize && opts.dropLast) break;
      yield { epoch, step: step++, batch: collate(rows.map((r) => samples[r]!), opts) };
    }
  }
}
