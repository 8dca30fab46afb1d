// Answer accuracy under teacher forcing, and the host splice it reads labels through. The splice
// is checked against the model's own graph: cross-entropy and KL recomputed on the host from the
// reference executor's logits and visual words, over spliceTargets' targets and image positions,
// must give the graph's lm and vm terms (f64 host sums against the reference's f32 kernels on
// the llama_b2 golden case: agreement to 1e-5 relative, the reference's own golden tolerance).
import { beforeAll, describe, expect, it } from 'vitest';
import { checkpointOverrides } from '../../../compiler/cli/loss.js';
import { loadModelInputs } from '../../../compiler/cli/model-inputs.js';
import { Output } from '../../../compiler/cli/output.js';
import { loadAndCheck } from '../../../compiler/cli/spec.js';
import type { CheckedModel } from '../../../compiler/check/index.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { scoreAnswers, spliceTargets, termCounts } from '../../../runtime/eval/answers.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { expectKilnError } from '../../helpers/errors.js';

const i32 = (shape: number[], data: number[]): HostTensor => ({ dtype: 'i32', shape, data: Int32Array.from(data) });

/** Logits [B, L, V] whose argmax at each position is `argmax[b][j]` (one-hot of height 1). */
function peaked(argmax: number[][], V: number): HostTensor {
  const B = argmax.length;
  const L = argmax[0]!.length;
  const data = new Float32Array(B * L * V);
  argmax.forEach((row, b) => row.forEach((v, j) => (data[(b * L + j) * V + v] = 1)));
  return { dtype: 'f32', shape: [B, L, V], data };
}

describe('spliceTargets', () => {
  it('puts imageTokens ignored positions where the placeholder was, labels around them', () => {
    const s = spliceTargets(i32([2, 4], [1, -200, 5, 6, 1, 7, -200, 8]), i32([2, 4], [-100, -100, 5, 6, -100, 7, -100, 8]), 3);
    expect(s.length).toBe(6);
    expect([...s.targets]).toEqual([-100, -100, -100, -100, 5, 6, -100, 7, -100, -100, -100, 8]);
    expect([...s.isImage]).toEqual([0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0]);
    // lm: scored targets at j >= 1; vm: image positions at j >= 1.
    expect(termCounts(s)).toEqual({ lm: 4, vm: 6 });
  });

  it('refuses rows with different numbers of images, naming them', () => {
    expectKilnError(() => spliceTargets(i32([2, 2], [-200, 1, 1, 1]), i32([2, 2], [-100, 1, -100, 1]), 4), 'row 1 holds 0', 'row 0 holds 1');
    expectKilnError(() => spliceTargets(i32([1, 2], [1, 1]), i32([2, 1], [1, 1]), 4), 'one [B, T] shape');
  });
});

describe('scoreAnswers', () => {
  // Row: positions 0..5, answers at j = 2..3 and j = 5; prediction for j comes from j - 1.
  const targets = Int32Array.from([-100, -100, 4, 2, -100, 3]);

  it('counts a span right only when every token is the argmax at the previous position', () => {
    expect(scoreAnswers(peaked([[0, 4, 2, 0, 3, 0]], 5), targets)).toEqual({ rows: [[true, true]], correct: 2, total: 2 });
    // Second token of the first answer wrong: that whole answer is wrong, the other stays right.
    expect(scoreAnswers(peaked([[0, 4, 1, 0, 3, 0]], 5), targets)).toEqual({ rows: [[false, true]], correct: 1, total: 2 });
    // Reading the logits at j instead of j - 1 would score this one right: it must not.
    expect(scoreAnswers(peaked([[0, 0, 4, 2, 0, 3]], 5), targets).correct).toBe(0);
  });

  it('breaks ties to the first index, as torch.argmax', () => {
    const z = peaked([[0, 4, 2, 0, 3, 0]], 5);
    z.data[1 * 5 + 1] = 1; // position 1: indices 1 and 4 both 1; argmax is 1, target 4
    expect(scoreAnswers(z, targets).rows).toEqual([[false, true]]);
  });

  it('refuses a NaN logit, a target outside the vocabulary and mismatched shapes', () => {
    const z = peaked([[0, 4, 2, 0, 3, 0]], 5);
    // A NaN where no answer is read is no matter (position 3 predicts the ignored j = 4).
    z.data[3 * 5 + 2] = NaN;
    expect(scoreAnswers(z, targets).correct).toBe(2);
    z.data[2 * 5 + 1] = NaN;
    expectKilnError(() => scoreAnswers(z, targets), 'row 0 position 2', 'NaN');
    expectKilnError(() => scoreAnswers(peaked([[0, 0, 0, 0, 0, 0]], 5), Int32Array.from([-100, 9, -100, -100, -100, -100])), 'target 9 is outside the vocabulary of 5');
    expectKilnError(() => scoreAnswers(peaked([[0, 0]], 5), targets), 'targets hold 6 positions');
  });
});

describe('the host splice agrees with the model graph', () => {
  const G = 'test/golden/llama_b2';
  let model: CheckedModel;
  let feeds: Map<string, HostTensor>;
  beforeAll(() => {
    model = loadAndCheck('models/vwlmm.kiln', { config: 'tiny', overrides: [...checkpointOverrides(`${G}/llava`), ...checkpointOverrides(`${G}/clip`)] }, new Output(true));
    feeds = loadModelInputs(model, { checkpoint: `${G}/llava`, visionTower: `${G}/clip`, batch: `${G}/batch.safetensors` });
  });

  it('cross-entropy and KL from logits over spliceTargets equal the lm and vm terms', () => {
    const g = model.graph;
    const out = (name: string) => g.outputs.find((o) => o.name === name)!.node;
    const term = (name: string) => g.losses.find((l) => l.name === name)!.node;
    const r = runReference(g, feeds, [out('logits'), out('visual_words'), term('lm'), term('vm')], { precision: 'f32' });
    const z = r.get(out('logits'))!;
    const w = r.get(out('visual_words'))!;
    const [B, L, V] = z.shape as [number, number, number];
    const imageTokens = L - feeds.get('input_ids')!.shape[1]! + 1;
    const s = spliceTargets(feeds.get('input_ids')!, feeds.get('labels')!, imageTokens);
    expect(s.length).toBe(L);
    let ce = 0;
    let kl = 0;
    for (let b = 0; b < B; b++)
      for (let j = 1; j < L; j++) {
        const o = (b * L + j - 1) * V;
        let max = -Infinity;
        for (let v = 0; v < V; v++) max = Math.max(max, z.data[o + v]!);
        let sum = 0;
        for (let v = 0; v < V; v++) sum += Math.exp(z.data[o + v]! - max);
        const logSoftmax = (v: number) => z.data[o + v]! - max - Math.log(sum);
        const y = s.targets[b * L + j]!;
        if (y !== -100) ce -= logSoftmax(y);
        if (s.isImage[b * L + j])
          for (let v = 0; v < V; v++) {
            const p = w.data[(b * L + j) * V + v]!;
            if (p > 0) kl += p * (Math.log(p) - logSoftmax(v));
          }
      }
    const n = termCounts(s);
    expect(n.lm).toBeGreaterThan(0);
    expect(n.vm).toBe(B * (imageTokens - (s.isImage[0] ? 1 : 0)));
    const lm = r.get(term('lm'))!.data[0]!;
    const vm = r.get(term('vm'))!.data[0]!;
    expect(Math.abs(ce / n.lm - lm) / lm).toBeLessThan(1e-5);
    expect(Math.abs(kl / n.vm - vm) / vm).toBeLessThan(1e-5);
    // And the scorer runs over the real shapes: every answer counted once.
    expect(scoreAnswers(z, s.targets).total).toBeGreaterThan(0);
  });
});
