// The batches a training run sees, by optimiser step: one batch file repeated (`--batch`, the
// standard overfitting check), or the data pipeline's samples shuffled per epoch from the seed
// (`--data`). A batch is a pure function of the step number, so a resumed run sees the same
// batches as an uninterrupted one without replaying the data.
import { collate, epochOrder } from '../../data/batch.js';
import type { Sample } from '../../data/dataset.js';
import { IGNORE_INDEX, IMAGE_TOKEN_ID } from '../../data/encode.js';
import { KilnError } from '../../runtime/errors.js';
import type { HostTensor } from '../../runtime/tensor.js';

/** One step's batch: the model's inputs by name, and what the step processes. */
export interface TrainBatch {
  readonly inputs: Map<string, HostTensor>;
  /** 0-based epoch of the step. */
  readonly epoch: number;
  /** sequence positions the decoder processes: input_ids' elements, each image placeholder counted as the image's positions (padding included). */
  readonly positions: number;
}

export interface BatchSource {
  /** batches in one epoch (optimiser steps without gradient accumulation). */
  readonly stepsPerEpoch: number;
  /** every batch is the same one (`--batch`): micro-batches repeat it too. */
  readonly repeats: boolean;
  /** rows per batch. */
  readonly batchSize: number;
  /** The batch of optimiser step `t` (0-based). Deterministic. */
  batchAt(t: number): TrainBatch;
  /** Distinct batch shapes the source produces, as `[B, T]` (what the WebGPU backend compiles). */
  shapes(): [number, number][];
}

/** input_ids' elements, with each image placeholder counted as `imageTokens` positions. */
export function splicedPositions(inputIds: HostTensor, imageTokens: number): number {
  let images = 0;
  for (const v of inputIds.data) if (v === IMAGE_TOKEN_ID) images++;
  return inputIds.data.length + images * (imageTokens - 1);
}

/** `--batch FILE`: the same batch at every step (an epoch is one step). */
export class RepeatedBatch implements BatchSource {
  readonly stepsPerEpoch = 1;
  readonly repeats = true;
  readonly batchSize: number;
  private readonly positions: number;

  constructor(
    private readonly inputs: Map<string, HostTensor>,
    imageTokens: number,
  ) {
    const ids = inputs.get('input_ids');
    this.batchSize = ids?.shape[0] ?? 1;
    this.positions = ids ? splicedPositions(ids, imageTokens) : 0;
  }

  batchAt(t: number): TrainBatch {
    return { inputs: this.inputs, epoch: t, positions: this.positions };
  }

  shapes(): [number, number][] {
    const ids = this.inputs.get('input_ids');
    return ids ? [[ids.shape[0]!, ids.shape[1]!]] : [];
  }
}

/**
 * The sequence length a batch whose longest row has `length` ids is padded to: the next power
 * of two (at least 16), but never past `longest`, the longest row in the data. So a run compiles
 * at most log2(longest / 16) + 2 step programs, and data whose lengths are close together (the
 * built-in shapes) gets one.
 *
 * Why padding further is exact: rows are right-padded with the pad id and labels -100. Attention
 * is causal, so no position before the pads reads them; the LM loss ignores -100 targets and
 * divides by the count of the others, which padding does not change; the VM loss selects image
 * positions only, and pads are none. Every loss term and every gradient is the same sum over
 * the same terms (the summation order of the extra zeros aside).
 */
export function bucketLength(length: number, longest: number): number {
  let b = 16;
  while (b < length) b *= 2;
  return Math.max(length, Math.min(b, longest));
}

/** Right-pads input_ids (with padId) and labels (with -100) of a collated batch to T = `to`. */
function padTo(ids: HostTensor, labels: HostTensor, to: number, padId: number): [HostTensor, HostTensor] {
  const [B, T] = ids.shape as [number, number];
  if (to === T) return [ids, labels];
  const newIds = new Int32Array(B * to).fill(padId);
  const newLabels = new Int32Array(B * to).fill(IGNORE_INDEX);
  for (let b = 0; b < B; b++) {
    newIds.set(ids.data.subarray(b * T, (b + 1) * T) as Int32Array, b * to);
    newLabels.set(labels.data.subarray(b * T, (b + 1) * T) as Int32Array, b * to);
  }
  return [
    { dtype: 'i32', shape: [B, to], data: newIds },
    { dtype: 'i32', shape: [B, to], data: newLabels },
  ];
}

export interface SampleBatchOptions {
  readonly batchSize: number;
  readonly seed: number;
  readonly padId: number;
  readonly imageSize: number;
  readonly imageTokens: number;
  /** false: every batch is padded to the data's longest row (one shape). Default true. */
  readonly bucket?: boolean;
}

/**
 * The data pipeline's samples in batches: each epoch a fresh seeded permutation (data/batch.ts's
 * epochOrder), rows right-padded to the bucket of the batch's longest row. The last batch of an
 * epoch, when smaller than the batch size, is dropped (the Trainer's dataloader_drop_last): every
 * step then has the same B, so one compiled step per length bucket serves the whole run. The
 * Hugging Face Trainer keeps that short batch by default; with a dataset that the batch size
 * divides there is no difference.
 */
export class SampleBatches implements BatchSource {
  readonly stepsPerEpoch: number;
  readonly repeats = false;
  readonly batchSize: number;
  private readonly longest: number;
  private cached: { epoch: number; order: number[] } | null = null;

  constructor(
    private readonly samples: readonly Sample[],
    private readonly opts: SampleBatchOptions,
  ) {
    this.batchSize = opts.batchSize;
    this.stepsPerEpoch = Math.floor(samples.length / opts.batchSize);
    if (this.stepsPerEpoch === 0)
      throw new KilnError(`the data has ${samples.length} usable samples, fewer than one batch of ${opts.batchSize} (--batch-size)`);
    const textOnly = samples.filter((s) => s.pixelValues === null);
    if (textOnly.length > 0)
      throw new KilnError(
        `${textOnly.length} records have no image (record ${textOnly[0]!.index}, id ${textOnly[0]!.id}, is the first): the model's splice takes one image per row, and training on text-only rows is not supported yet`,
      );
    this.longest = Math.max(...samples.map((s) => s.encoded.inputIds.length));
  }

  private order(epoch: number): number[] {
    if (this.cached?.epoch !== epoch) this.cached = { epoch, order: epochOrder(this.samples.length, this.opts.seed, epoch) };
    return this.cached.order;
  }

  batchAt(t: number): TrainBatch {
    const epoch = Math.floor(t / this.stepsPerEpoch);
    const k = t % this.stepsPerEpoch;
    const B = this.opts.batchSize;
    const rows = this.order(epoch).slice(k * B, (k + 1) * B);
    const batch = collate(
      rows.map((r) => this.samples[r]!),
      { padId: this.opts.padId, imageSize: this.opts.imageSize },
    );
    const T = batch.inputIds.shape[1]!;
    const to = this.opts.bucket === false ? this.longest : bucketLength(T, this.longest);
    const [ids, labels] = padTo(batch.inputIds, batch.labels, to, this.opts.padId);
    const inputs = new Map<string, HostTensor>([
      ['pixel_values', batch.pixelValues],
      ['input_ids', ids],
      ['labels', labels],
    ]);
    return { inputs, epoch, positions: splicedPositions(ids, this.opts.imageTokens) };
  }

  shapes(): [number, number][] {
    const lengths = new Set(this.samples.map((s) => (this.opts.bucket === false ? this.longest : bucketLength(s.encoded.inputIds.length, this.longest))));
    return [...lengths].sort((a, b) => a - b).map((t) => [this.opts.batchSize, t]);
  }
}
