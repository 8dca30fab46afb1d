// Held-out evaluation: loss terms combined by their counts do not depend on how the split is
// batched (batches of 3 against one batch of all 8 samples, padded differently; the reference
// executor in f32: agreement to 1e-5 relative, f32 sums over a different number of rows), answer
// accuracy is counted per answer and per question type, and a non-finite term is an error.
import { beforeAll, describe, expect, it } from 'vitest';
import { Output } from '../../../compiler/cli/output.js';
import { loadAndCheck } from '../../../compiler/cli/spec.js';
import type { CheckedModel } from '../../../compiler/check/index.js';
import { evalOutputs } from '../../../compiler/emit/entries.js';
import { initParams } from '../../../compiler/exec/init.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { evalBatchSize, evaluateHeldout, termKinds, type ForwardPass, type HeldoutOptions } from '../../../compiler/train/heldout.js';
import { openBuiltin } from '../../../data/builtin.js';
import { prepareSamples, type Sample } from '../../../data/dataset.js';
import { IMAGE_PLACEHOLDER, renderConversation } from '../../../data/encode.js';
import { loadTokenizer, type TextTokenizer } from '../../../data/tokenizer.js';
import { buildWordLevel } from '../../../data/wordlevel.js';
import type { HostTensor } from '../../../runtime/tensor.js';

let model: CheckedModel;
let params: Map<string, HostTensor>;
let samples: Sample[];
let tok: TextTokenizer;
let types: Map<string, string[]>;

beforeAll(async () => {
  model = loadAndCheck('models/vwlmm.kiln', { config: 'tiny' }, new Output(true));
  params = initParams(model.graph.params, 1);
  const data = openBuiltin('builtin:shapes?split=heldout&size=48');
  const texts = data.all.flatMap((s) => [s.caption, s.qa]).map((turns) => renderConversation(turns, { eosToken: '</s>' } as TextTokenizer, 'vicuna_v1').text.replaceAll(IMAGE_PLACEHOLDER, ' '));
  const built = buildWordLevel(texts);
  tok = loadTokenizer(built.tokenizerJson, built.tokenizerConfig, 'word-level');
  ({ samples } = await prepareSamples(data.records, { tokenizer: tok, encode: { template: 'vicuna_v1', maxLength: 2048, imageTokens: 16 }, imageSize: 28, loadImage: data.loadImage }));
  types = new Map(data.all.map((s) => [s.id, s.questions.map((q) => q.type)]));
});

const forward: ForwardPass = (batch) => {
  const g = model.graph;
  const out = evalOutputs(model);
  const r = runReference(g, new Map([...params, ...batch]), out.map((o) => o.node), { precision: 'f32' });
  const terms = Object.fromEntries(g.losses.map((l) => [l.name, r.get(l.node)!.data[0]!]));
  return Promise.resolve({ terms, logits: r.get(out.find((o) => o.name === 'logits')!.node)! });
};

describe('held-out evaluation', () => {
  it('picks a batch size that divides the split when one is near the cap', () => {
    expect(evalBatchSize(200, 32)).toBe(25);
    expect(evalBatchSize(7, 32)).toBe(7);
    expect(evalBatchSize(97, 32)).toBe(32);
    expect(evalBatchSize(96, 32)).toBe(32);
  });

  it('combines loss terms by their counts: batches of 3 give what one batch of 8 gives', async () => {
    expect(samples).toHaveLength(8);
    expect(termKinds(model.graph)).toEqual({ lm: 'tokens', vm: 'image-rows' });
    const opts = (batchSize: number): HeldoutOptions => ({ batchSize, padId: tok.padId, imageSize: 28, imageTokens: 16, termKinds: termKinds(model.graph), answerTypes: types });
    const one = await evaluateHeldout(samples, opts(8), forward);
    const three = await evaluateHeldout(samples, opts(3), forward);
    for (const k of ['lm', 'vm']) expect(Math.abs(three.terms[k]! - one.terms[k]!) / one.terms[k]!, k).toBeLessThan(1e-5);
    // Each conversation asks two or three questions: every answer is counted once.
    const questions = samples.reduce((a, s) => a + types.get(s.id)!.length, 0);
    expect(one.total).toBe(questions);
    expect([three.correct, three.total]).toEqual([one.correct, one.total]);
    expect(Object.values(one.perType!).reduce((a, t) => a + t.total, 0)).toBe(questions);
    expect(Object.keys(one.perType!).every((t) => ['shape', 'colour', 'count', 'size', 'position'].includes(t))).toBe(true);
  }, 120_000);

  it('refuses a non-finite loss term, naming the rows and the term', async () => {
    const bad: ForwardPass = async (batch) => {
      const r = await forward(batch);
      return { ...r, terms: { ...r.terms, vm: NaN } };
    };
    await expect(evaluateHeldout(samples.slice(0, 2), { batchSize: 2, padId: tok.padId, imageSize: 28, imageTokens: 16, termKinds: termKinds(model.graph) }, bad)).rejects.toThrow(
      /held-out rows 0\.\.1 .*loss term 'vm' is NaN/,
    );
  }, 60_000);
});
