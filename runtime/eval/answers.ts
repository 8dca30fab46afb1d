// Held-out answer accuracy as LLaVA-style evaluation under teacher forcing reads it: an answer
// (a maximal run of scored label positions, e.g. "square</s>") counts as right when every one of
// its tokens is the argmax of the logits at the position before it. Pure functions over host
// arrays, so the trainer, a page and the tests score alike. Browser-safe.
import { KilnError } from '../errors.js';
import type { HostTensor } from '../tensor.js';

/** LLaVA's IMAGE_TOKEN_INDEX and IGNORE_INDEX (data/encode.ts has the same constants). */
const IMAGE_TOKEN = -200;
const IGNORE = -100;

/** Labels on the decoder's sequence (after the image splice), and which positions hold image features. */
export interface SplicedTargets {
  /** rows of the batch. */
  readonly rows: number;
  /** positions per row after the splice: T + images * (imageTokens - 1). */
  readonly length: number;
  /** i32 [rows, length]: the row's labels, -100 at every image position. */
  readonly targets: Int32Array;
  /** u8 [rows, length]: 1 at image positions. */
  readonly isImage: Uint8Array;
}

/**
 * The splice of LLaVA's `prepare_inputs_labels_for_multimodal` applied to labels on the host:
 * each placeholder in `inputIds` becomes `imageTokens` positions labelled -100 (ignored), as the
 * model's graph does before its losses. Every row must hold the same number of placeholders (the
 * spliced rows then have one length, as the model's `logits` [B, L, vocab] has).
 * @param inputIds i32 [B, T], the placeholder -200 where an image goes.
 * @param labels i32 [B, T], -100 where nothing is scored.
 * @throws KilnError when shapes disagree or rows hold different numbers of images.
 */
export function spliceTargets(inputIds: HostTensor, labels: HostTensor, imageTokens: number, imageToken = IMAGE_TOKEN): SplicedTargets {
  if (inputIds.shape.length !== 2 || labels.shape.join(',') !== inputIds.shape.join(','))
    throw new KilnError(`input_ids [${inputIds.shape.join(', ')}] and labels [${labels.shape.join(', ')}] must be one [B, T] shape`);
  if (!Number.isInteger(imageTokens) || imageTokens < 1) throw new RangeError(`spliceTargets: imageTokens ${imageTokens} must be a positive integer`);
  const [B, T] = inputIds.shape as [number, number];
  let images = -1;
  for (let b = 0; b < B; b++) {
    let n = 0;
    for (let t = 0; t < T; t++) if (inputIds.data[b * T + t] === imageToken) n++;
    if (images >= 0 && n !== images) throw new KilnError(`row ${b} holds ${n} image placeholders and row 0 holds ${images}: the spliced rows would differ in length`);
    images = n;
  }
  const L = T + Math.max(images, 0) * (imageTokens - 1);
  const targets = new Int32Array(B * L).fill(IGNORE);
  const isImage = new Uint8Array(B * L);
  for (let b = 0; b < B; b++) {
    let j = b * L;
    for (let t = 0; t < T; t++) {
      if (inputIds.data[b * T + t] === imageToken) {
        isImage.fill(1, j, j + imageTokens);
        j += imageTokens;
      } else targets[j++] = labels.data[b * T + t]!;
    }
  }
  return { rows: B, length: L, targets, isImage };
}

/** Every answer of a batch, right or not, by row in order of appearance. */
export interface AnswerScores {
  /** per row, one entry per answer span: whether all its tokens were predicted. */
  readonly rows: boolean[][];
  readonly correct: number;
  readonly total: number;
}

/**
 * Scores each answer span under teacher forcing. A span is a maximal run of positions j >= 1 whose
 * target is not `ignoreIndex`; it is right when, for every j in it, the first index of the largest
 * logit at j - 1 (torch.argmax's tie rule) equals targets[j].
 * @param logits f32 [B, L, vocab] (the model's `logits` output).
 * @param targets i32 [B * L] from spliceTargets.
 * @throws KilnError when the shapes disagree, a target is outside the vocabulary, or a logit that
 *   decides an answer is NaN (no argmax is defined: never a silent wrong count).
 */
export function scoreAnswers(logits: HostTensor, targets: Int32Array, ignoreIndex = IGNORE): AnswerScores {
  if (logits.shape.length !== 3) throw new KilnError(`logits must be [B, L, vocab], got [${logits.shape.join(', ')}]`);
  const [B, L, V] = logits.shape as [number, number, number];
  if (targets.length !== B * L) throw new KilnError(`targets hold ${targets.length} positions, logits [${logits.shape.join(', ')}] have ${B * L}`);
  const z = logits.data;
  const rows: boolean[][] = [];
  let correct = 0;
  let total = 0;
  for (let b = 0; b < B; b++) {
    const spans: boolean[] = [];
    let open = false;
    for (let j = 1; j < L; j++) {
      const y = targets[b * L + j]!;
      if (y === ignoreIndex) {
        open = false;
        continue;
      }
      if (y < 0 || y >= V) throw new KilnError(`row ${b} position ${j}: target ${y} is outside the vocabulary of ${V}`);
      if (!open) {
        spans.push(true);
        open = true;
      }
      const o = (b * L + j - 1) * V;
      let best = 0;
      for (let v = 0; v < V; v++) {
        const x = z[o + v]!;
        if (Number.isNaN(x)) throw new KilnError(`row ${b} position ${j - 1}: logit ${v} is NaN, so the answer token at ${j} has no prediction`);
        if (x > z[o + best]!) best = v;
      }
      if (best !== y) spans[spans.length - 1] = false;
    }
    rows.push(spans);
    total += spans.length;
    correct += spans.filter(Boolean).length;
  }
  return { rows, correct, total };
}

/**
 * How many targets each loss term of a batch averages over: `lm`, the scored positions j >= 1
 * (CrossEntropyLoss's mean over non-ignored targets of z[:, :-1] against targets[:, 1:]); `vm`,
 * the positions j >= 1 that are image positions (KLDivLoss batchmean's rows). Weighting each
 * batch's term by its count and dividing by the total count gives the term over the whole split.
 */
export function termCounts(s: SplicedTargets, ignoreIndex = IGNORE): { lm: number; vm: number } {
  let lm = 0;
  let vm = 0;
  for (let b = 0; b < s.rows; b++)
    for (let j = 1; j < s.length; j++) {
      if (s.targets[b * s.length + j] !== ignoreIndex) lm++;
      if (s.isImage[b * s.length + j]) vm++;
    }
  return { lm, vm };
}
