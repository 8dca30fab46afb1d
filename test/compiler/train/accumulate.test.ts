// Gradient accumulation (issue 11 §1): two micro-batches with unequal token counts (the golden
// llama_b2 rows score 6 and 4 LM targets; 16 image rows each) against the same examples as one
// batch, on the reference and on WebGPU; and --accum-mean-of-means against the Trainer's
// average of the per-micro-batch losses and gradients.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadSpec } from '../../../compiler/syntax/load.js';
import { checkModel, type CheckedModel } from '../../../compiler/check/index.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { checkpointOverrides } from '../../../compiler/cli/loss.js';
import { loadModelInputs } from '../../../compiler/cli/model-inputs.js';
import { ReferenceBackend, WebGpuBackend, type TrainBackend } from '../../../compiler/train/backend.js';
import { TermCounter } from '../../../compiler/train/accumulate.js';
import type { BatchSource, TrainBatch } from '../../../compiler/train/data.js';
import { Trainer, type StepRecord } from '../../../compiler/train/trainer.js';
import { getDevice } from '../../../runtime/node/device.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { relFrobenius } from '../../golden/compare.js';

const G = 'test/golden/llama_b2';
const HYPER = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };

function setup(): { m: CheckedModel; params: Map<string, HostTensor>; batch: Map<string, HostTensor>; rows: Map<string, HostTensor>[] } {
  const files = loadSpec('models/vwlmm.kiln', (p: string) => readFileSync(p, 'utf8')).files;
  const m = checkModel(files, { config: 'tiny', overrides: [...checkpointOverrides(`${G}/llava`), ...checkpointOverrides(`${G}/clip`)] });
  const feeds = loadModelInputs(m, { checkpoint: `${G}/llava`, visionTower: `${G}/clip`, batch: `${G}/batch.safetensors` });
  const params = new Map([...feeds].filter(([k]) => m.graph.params.some((p) => p.name === k)));
  const batch = new Map([...feeds].filter(([k]) => !params.has(k)));
  const row = (r: number) =>
    new Map(
      [...batch].map(([k, t]) => {
        const per = t.data.length / t.shape[0]!;
        const data = t.data.slice(r * per, (r + 1) * per);
        return [k, { ...t, shape: [1, ...t.shape.slice(1)], data } as HostTensor];
      }),
    );
  return { m, params, batch, rows: [row(0), row(1)] };
}

/** The batches in order, one per index (an epoch is all of them). */
function source(batches: Map<string, HostTensor>[]): BatchSource {
  return {
    stepsPerEpoch: batches.length,
    repeats: false,
    batchSize: batches[0]!.get('input_ids')!.shape[0]!,
    batchAt: (t: number): TrainBatch => ({ inputs: batches[t % batches.length]!, epoch: Math.floor(t / batches.length), positions: 1 }),
    shapes: () => [],
  };
}

async function oneStep(backend: TrainBackend, batches: Map<string, HostTensor>[], opts: { gradAccum: number; meanOfMeans?: boolean; counter?: TermCounter }): Promise<StepRecord> {
  const records: StepRecord[] = [];
  const trainer = new Trainer(
    backend,
    source(batches),
    {
      totalSteps: 1,
      lr: 1e-3,
      schedule: { kind: 'constant', warmup: 0, total: 1 },
      maxGradNorm: 1.0,
      gradAccum: opts.gradAccum,
      ...(opts.meanOfMeans ? { meanOfMeans: true } : {}),
      ...(opts.counter ? { countItems: (b: ReadonlyMap<string, HostTensor>) => opts.counter!.count(b) } : {}),
    },
    [{ afterStep: (r) => void records.push(r) }],
  );
  await trainer.run();
  return records[0]!;
}

const rel = (a: number, b: number): number => Math.abs(a - b) / Math.abs(b);

describe('gradient accumulation by item counts equals one batch of the same examples', () => {
  it('counts come from the loss ops: LM targets 6 and 4, image rows 16 and 16', () => {
    const { m, rows } = setup();
    const c = new TermCounter(m);
    expect(rows.map((r) => c.count(r))).toEqual([
      { lm: 6, vm: 16 },
      { lm: 4, vm: 16 },
    ]);
  });

  // Tolerances: the logged terms and the gradient norm within 1e-5 relative (the same f32
  // per-example sums, added in another order); parameters after the step within 1e-4 relative
  // (Frobenius): Adam's first step moves each weight by about lr * sign(g), so a gradient entry
  // near zero whose sign differs between summation orders moves one weight by 2 lr.
  it.each(['cpu', 'webgpu'] as const)('one step, two unequal micro-batches (%s)', async (name) => {
    const { m, params, batch, rows } = setup();
    const make = async (): Promise<TrainBackend> => (name === 'cpu' ? new ReferenceBackend(m, HYPER, params) : new WebGpuBackend(await getDevice(), m, HYPER, params));
    const whole = await make();
    const parts = await make();
    try {
      const want = await oneStep(whole, [batch], { gradAccum: 1 });
      const got = await oneStep(parts, rows, { gradAccum: 2, counter: new TermCounter(m) });
      for (const t of ['lm', 'vm']) expect(rel(got.terms[t]!, want.terms[t]!), t).toBeLessThan(1e-5);
      expect(rel(got.loss, want.loss)).toBeLessThan(1e-5);
      expect(rel(got.gradNorm, want.gradNorm)).toBeLessThan(1e-5);
      const names = whole.trainable;
      const a = await whole.read(names);
      const b = await parts.read(names);
      for (const n of names) expect(relFrobenius(b.get(n)!.data, a.get(n)!.data), n).toBeLessThan(1e-4);
      // The accumulators are zero again after the step.
      const acc = await parts.read(names.map((n) => `grad_accum:${n}`));
      for (const t of acc.values()) expect(t.data.every((x) => x === 0)).toBe(true);
      // The eval entry (held-out scoring): the same terms as evaluate, and logits [B, L, vocab].
      const fwd = await parts.forward(batch);
      const ev = await parts.evaluate(batch);
      for (const t of ['lm', 'vm']) expect(rel(fwd.terms[t]!, ev.terms[t]!), `forward ${t}`).toBeLessThan(1e-6);
      expect(fwd.logits.shape).toEqual([2, 9 - 1 + 16, params.get('lm_head.weight')!.shape[0]]);
      // The two rows' own means differ, so a plain average would not match: the test can fail.
      const own = await Promise.all(rows.map((r) => whole.evaluate(r)));
      expect(rel((own[0]!.terms['lm']! + own[1]!.terms['lm']!) / 2, want.terms['lm']!)).toBeGreaterThan(1e-3);
    } finally {
      whole.destroy();
      parts.destroy();
    }
  }, 600_000);
});

describe('--accum-mean-of-means: the Trainer for models without an item count', () => {
  it('logs the average of the micro-batch losses and steps with the average of their gradients (reference)', async () => {
    const { m, params, rows } = setup();
    const backend = new ReferenceBackend(m, HYPER, params);
    const own = await Promise.all(rows.map((r) => backend.evaluate(r)));
    const got = await oneStep(backend, rows, { gradAccum: 2, meanOfMeans: true });
    for (const t of ['lm', 'vm']) expect(rel(got.terms[t]!, (own[0]!.terms[t]! + own[1]!.terms[t]!) / 2), t).toBeLessThan(1e-6);
    expect(rel(got.loss, (own[0]!.loss + own[1]!.loss) / 2)).toBeLessThan(1e-6);
    // The gradient: the mean of the two rows' gradients (loss / gradient_accumulation_steps each).
    const diff = differentiate(m.graph);
    const grads = rows.map((r) => runReference(diff, new Map([...params, ...r]), diff.gradients.map((g) => g.node), { precision: 'f32' }));
    let sq = 0;
    for (const g of diff.gradients) {
      const a = grads[0]!.get(g.node)!.data;
      const b = grads[1]!.get(g.node)!.data;
      for (let i = 0; i < a.length; i++) sq += ((a[i]! + b[i]!) / 2) ** 2;
    }
    expect(rel(got.gradNorm, Math.sqrt(sq))).toBeLessThan(1e-5);
  }, 120_000);
});
