// AdamW as graph ops, against a direct transcription of torch.optim.AdamW, and a few training
// steps of the tiny VW-LMM on the reference executor that must lower the loss.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { loadSpec } from '../../../compiler/syntax/load.js';
import { checkModel } from '../../../compiler/check/index.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { decays, withAdamW } from '../../../compiler/passes/optimizer.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { TrainState } from '../../../compiler/exec/train.js';
import { learningRate } from '../../../runtime/optim/schedule.js';
import { loadModelInputs } from '../../../compiler/cli/model-inputs.js';
import { checkpointOverrides } from '../../../compiler/cli/loss.js';
import type { HostTensor } from '../../../runtime/tensor.js';

const HYPER = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
const G = 'test/golden/llama_b2';

function model() {
  const files = loadSpec('models/vwlmm.kiln', (p: string) => readFileSync(p, 'utf8')).files;
  const overrides = [...checkpointOverrides(`${G}/llava`), ...checkpointOverrides(`${G}/clip`)];
  return checkModel(files, { config: 'tiny', overrides });
}

describe('AdamW as a graph pass', () => {
  it('two steps equal torch.optim.AdamW transcribed by hand', async () => {
    const m = model();
    const grad = differentiate(m.graph);
    const train = withAdamW(grad, HYPER);
    const feeds = loadModelInputs(m, { checkpoint: `${G}/llava`, visionTower: `${G}/clip`, batch: `${G}/batch.safetensors` });
    const params = new Map([...feeds].filter(([k]) => m.graph.params.some((p) => p.name === k)));
    const batch = new Map([...feeds].filter(([k]) => !params.has(k)));
    const state = new TrainState(train, HYPER, params);
    const run = (g: typeof train, f: ReadonlyMap<string, HostTensor>, w: readonly number[]) => runReference(g, f, [...w], { precision: 'f32' });

    // By hand: gradients from the differentiated graph, then AdamW's arithmetic in f64.
    let p = new Map([...params].map(([k, v]) => [k, Float64Array.from(v.data)]));
    const mm = new Map([...p].map(([k, v]) => [k, new Float64Array(v.length)]));
    const vv = new Map([...p].map(([k, v]) => [k, new Float64Array(v.length)]));
    const lr = 1e-2;
    for (let t = 1; t <= 2; t++) {
      const f = new Map([...batch, ...[...p].map(([k, v]) => [k, { ...params.get(k)!, data: Float32Array.from(v) }] as const)]);
      const r = runReference(grad, f, grad.gradients.map((g) => g.node), { precision: 'f32' });
      for (const g of grad.gradients) {
        const gd = r.get(g.node)!.data;
        const pv = p.get(g.name)!;
        const m1 = mm.get(g.name)!;
        const v1 = vv.get(g.name)!;
        // torch's AdamW in the Trainer's two groups: no decay on biases and norm weights.
        const wd = decays(m.graph.params.find((q) => q.name === g.name)!) ? HYPER.weightDecay : 0;
        for (let i = 0; i < pv.length; i++) {
          pv[i] = pv[i]! * (1 - lr * wd);
          m1[i] = HYPER.beta1 * m1[i]! + (1 - HYPER.beta1) * gd[i]!;
          v1[i] = HYPER.beta2 * v1[i]! + (1 - HYPER.beta2) * gd[i]! ** 2;
          const denom = Math.sqrt(v1[i]!) / Math.sqrt(1 - HYPER.beta2 ** t) + HYPER.eps;
          pv[i] = pv[i]! - (lr / (1 - HYPER.beta1 ** t)) * (m1[i]! / denom);
        }
      }
      await state.run(run, batch, lr);
      // f32 graph arithmetic vs f64 by hand, after the same gradients: agreement to ~1e-6 relative
      // of the update, i.e. well under 1e-5 of the parameter values here.
      for (const g of grad.gradients) {
        const got = state.values.get(g.name)!.data;
        const want = p.get(g.name)!;
        let worst = 0;
        for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
        expect(worst, g.name).toBeLessThan(2e-5);
      }
      p = new Map([...state.values].filter(([k]) => p.has(k)).map(([k, v]) => [k, Float64Array.from(v.data)]));
    }
  });

  it('ten steps on one batch lower the tiny model\'s loss', async () => {
    const m = model();
    const train = withAdamW(differentiate(m.graph), HYPER);
    const feeds = loadModelInputs(m, { checkpoint: `${G}/llava`, visionTower: `${G}/clip`, batch: `${G}/batch.safetensors` });
    const params = new Map([...feeds].filter(([k]) => m.graph.params.some((p) => p.name === k)));
    const batch = new Map([...feeds].filter(([k]) => !params.has(k)));
    const state = new TrainState(train, HYPER, params);
    const run = (g: typeof train, f: ReadonlyMap<string, HostTensor>, w: readonly number[]) => runReference(g, f, [...w], { precision: 'f32' });
    const losses: number[] = [];
    for (let t = 0; t < 10; t++) losses.push((await state.run(run, batch, learningRate(3e-3, { kind: 'cosine', warmup: 2, total: 10 }, t + 1))).loss);
    expect(losses[9]!).toBeLessThan(losses[0]! * 0.8);
    // The frozen tower never moves.
    const tower = m.graph.params.find((p) => p.component === 'vision_tower')!;
    expect(state.values.get(tower.name)).toBe(params.get(tower.name));
  });
});

describe('learning-rate schedules', () => {
  it('cosine with warmup as transformers computes it', () => {
    const s = { kind: 'cosine' as const, warmup: 3, total: 13 };
    expect(learningRate(1, s, 0)).toBe(0);
    expect(learningRate(1, s, 3)).toBe(1);
    expect(learningRate(1, s, 8)).toBeCloseTo(0.5, 12);
    expect(learningRate(1, s, 13)).toBeCloseTo(0, 12);
  });
});
