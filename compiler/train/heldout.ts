// Held-out evaluation for `kiln train`: every loss term over the whole held-out split, and answer
// accuracy under teacher forcing (runtime/eval/answers.ts), per question type where the data
// says which question each answer belongs to (builtin:shapes), beside the image-blind baseline.
// The forward pass is a callback (the backend's `eval` entry), so this file runs no graph itself.
import { collate } from '../../data/batch.js';
import type { Sample } from '../../data/dataset.js';
import { IGNORE_INDEX } from '../../data/encode.js';
import { KilnError } from '../../runtime/errors.js';
import { scoreAnswers, spliceTargets, termCounts } from '../../runtime/eval/answers.js';
import type { HostTensor } from '../../runtime/tensor.js';
import type { Graph } from '../ir/graph.js';

/** One forward pass: each loss term's value on the batch and the logits [B, L, vocab]. */
export type ForwardPass = (batch: Map<string, HostTensor>) => Promise<{ terms: Record<string, number>; logits: HostTensor }>;

/**
 * What a loss term averages over, so that batch values combine into the split's value:
 * `tokens`, the scored label positions (cross-entropy's mean over non-ignored targets);
 * `image-rows`, the image positions (KLDivLoss batchmean over selected rows); `rows`, the batch
 * rows (any other term: a mean of batch means weighted by rows).
 */
export type TermKind = 'tokens' | 'image-rows' | 'rows';

/** Each loss term's kind, from the op that computes it. */
export function termKinds(graph: Graph): Record<string, TermKind> {
  return Object.fromEntries(
    graph.losses.map((l) => {
      const op = graph.nodes[l.node]!.op;
      // The checker fuses each loss head with its projection (compiler/passes/loss-heads.ts).
      const kind = op === 'cross_entropy' || op === 'linear_cross_entropy' ? 'tokens' : op === 'kl_div' || op === 'linear_kl_div' ? 'image-rows' : 'rows';
      return [l.name, kind];
    }),
  );
}

export interface HeldoutOptions {
  /** rows per forward pass (see evalBatchSize). */
  readonly batchSize: number;
  readonly padId: number;
  readonly imageSize: number;
  /** positions one image takes after the splice. */
  readonly imageTokens: number;
  readonly termKinds: Readonly<Record<string, TermKind>>;
  /** per sample id, the type of each of its answers in order (builtin:shapes' question types). */
  readonly answerTypes?: ReadonlyMap<string, readonly string[]>;
}

export interface Tally {
  correct: number;
  total: number;
  accuracy: number;
}

export interface HeldoutResult {
  /** held-out samples evaluated. */
  readonly samples: number;
  /** answers right (every token the argmax under teacher forcing) over answers scored. */
  readonly accuracy: number;
  readonly correct: number;
  readonly total: number;
  /** each loss term over the whole split, as one batch of all its rows would give it. */
  readonly terms: Record<string, number>;
  /** accuracy per answer type, when answerTypes was given. */
  readonly perType?: Record<string, Tally>;
}

/**
 * Rows per held-out forward pass: `cap` at most, and a divisor of `n` when one lies in
 * [cap / 2, cap], so every pass has one shape and compiles once (200 held-out samples, cap 32:
 * 25). Otherwise `cap`, and the last, smaller pass compiles its own shape.
 */
export function evalBatchSize(n: number, cap: number): number {
  if (n <= cap) return Math.max(1, n);
  for (let b = cap; b >= Math.ceil(cap / 2); b--) if (n % b === 0) return b;
  return cap;
}

/** Right-pads input_ids (padId) and labels (-100) to T = `to`: exact under causal attention. */
function padTo(t: HostTensor, to: number, fill: number): HostTensor {
  const [B, T] = t.shape as [number, number];
  if (T === to) return t;
  const data = new Int32Array(B * to).fill(fill);
  for (let b = 0; b < B; b++) data.set(t.data.subarray(b * T, (b + 1) * T) as Int32Array, b * to);
  return { dtype: 'i32', shape: [B, to], data };
}

/**
 * Evaluates `samples` in order, in passes of `batchSize` rows padded to the longest sample (one
 * sequence length for the whole split). Loss terms are combined by their counts (termKinds), so
 * the result does not depend on the batching.
 * @throws KilnError when a pass returns a non-finite term for a batch that has targets for it,
 *   or the logits hold a NaN where an answer is read.
 */
export async function evaluateHeldout(samples: readonly Sample[], opts: HeldoutOptions, forward: ForwardPass): Promise<HeldoutResult> {
  if (samples.length === 0) throw new KilnError('the held-out data has no usable sample');
  const longest = Math.max(...samples.map((s) => s.encoded.inputIds.length));
  const sums: Record<string, { sum: number; count: number }> = Object.fromEntries(Object.keys(opts.termKinds).map((k) => [k, { sum: 0, count: 0 }]));
  const perType: Record<string, Tally> = {};
  let correct = 0;
  let total = 0;
  for (let i = 0; i < samples.length; i += opts.batchSize) {
    const rows = samples.slice(i, i + opts.batchSize);
    const b = collate(rows, { padId: opts.padId, imageSize: opts.imageSize });
    const inputIds = padTo(b.inputIds, longest, opts.padId);
    const labels = padTo(b.labels, longest, IGNORE_INDEX);
    const { terms, logits } = await forward(new Map([['pixel_values', b.pixelValues], ['input_ids', inputIds], ['labels', labels]]));
    const spliced = spliceTargets(inputIds, labels, opts.imageTokens);
    const counts = termCounts(spliced);
    for (const [name, kind] of Object.entries(opts.termKinds)) {
      const n = kind === 'tokens' ? counts.lm : kind === 'image-rows' ? counts.vm : rows.length;
      if (n === 0) continue;
      const v = terms[name];
      if (v === undefined || !Number.isFinite(v)) throw new KilnError(`held-out rows ${i}..${i + rows.length - 1} (first id ${rows[0]!.id}): loss term '${name}' is ${v}`);
      sums[name]!.sum += v * n;
      sums[name]!.count += n;
    }
    const scores = scoreAnswers(logits, spliced.targets);
    correct += scores.correct;
    total += scores.total;
    if (opts.answerTypes)
      scores.rows.forEach((answers, r) => {
        const types = opts.answerTypes!.get(rows[r]!.id) ?? [];
        answers.forEach((ok, k) => {
          const t = (perType[types[k] ?? 'other'] ??= { correct: 0, total: 0, accuracy: 0 });
          t.total++;
          if (ok) t.correct++;
        });
      });
  }
  for (const t of Object.values(perType)) t.accuracy = t.correct / t.total;
  const termsOut = Object.fromEntries(Object.entries(sums).map(([k, s]) => [k, s.count > 0 ? s.sum / s.count : 0]));
  return { samples: samples.length, accuracy: total > 0 ? correct / total : 0, correct, total, terms: termsOut, ...(opts.answerTypes ? { perType } : {}) };
}
