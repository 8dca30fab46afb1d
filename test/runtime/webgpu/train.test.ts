// Training steps on WebGPU: AdamW as graph ops, its updates written back on the device (moments
// resident, parameters never re-uploaded), against the same steps on the reference executor.
// Tolerances: losses within 2e-4 relative at every step (the golden loss tolerance); parameters
// after three steps within 1e-3 relative (Frobenius): Adam's first steps move each weight by
// about lr * sign(g), so a gradient entry near zero whose sign differs between the two f32
// summation orders moves one weight by 2 lr; that is rare and small against the weights' norm.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { loadSpec } from '../../../compiler/syntax/load.js';
import { checkModel } from '../../../compiler/check/index.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { withAdamW } from '../../../compiler/passes/optimizer.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { TrainState } from '../../../compiler/exec/train.js';
import { adamwStepInputs } from '../../../runtime/optim/schedule.js';
import { loadModelInputs } from '../../../compiler/cli/model-inputs.js';
import { checkpointOverrides } from '../../../compiler/cli/loss.js';
import { getDevice } from '../../../runtime/node/device.js';
import { WebGpuExecutor } from '../../../compiler/exec/webgpu.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { numel } from '../../../runtime/tensor.js';
import { momentName } from '../../../compiler/passes/optimizer.js';

const HYPER = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.0 };
const G = 'test/golden/mistral_gqa';

describe('AdamW training steps on WebGPU', () => {
  it('three steps match the reference executor', async () => {
    const files = loadSpec('models/vwlmm.kiln', (p: string) => readFileSync(p, 'utf8')).files;
    const m = checkModel(files, { config: 'tiny', overrides: [...checkpointOverrides(`${G}/llava`), ...checkpointOverrides(`${G}/clip`)] });
    const train = withAdamW(differentiate(m.graph), HYPER);
    const feeds = loadModelInputs(m, { checkpoint: `${G}/llava`, visionTower: `${G}/clip`, batch: `${G}/batch.safetensors` });
    const params = new Map([...feeds].filter(([k]) => m.graph.params.some((p) => p.name === k)));
    const batch = new Map([...feeds].filter(([k]) => !params.has(k)));

    const ref = new TrainState(train, HYPER, params);
    const run = (g: typeof train, f: ReadonlyMap<string, HostTensor>, w: readonly number[]) => runReference(g, f, [...w], { precision: 'f32' });

    const exec = new WebGpuExecutor((await getDevice()), train);
    const moments = new Map<string, HostTensor>();
    for (const g of train.gradients) {
      const p = params.get(g.name)!;
      for (const which of ['m', 'v'] as const) moments.set(momentName(which, g.name), { dtype: 'f32', shape: p.shape, data: new Float32Array(numel(p.shape)) });
    }
    const lr = 1e-3;
    for (let step = 1; step <= 3; step++) {
      const want = await ref.run(run, batch, lr);
      const got = await exec.run(new Map([...params, ...moments, ...batch, ...adamwStepInputs(lr, step, HYPER.beta1, HYPER.beta2)]), [train.totalLoss!], { applyUpdates: true });
      const loss = got.get(train.totalLoss!)!.data[0]!;
      expect(Math.abs(loss - want.loss) / want.loss, `step ${step}`).toBeLessThan(2e-4);
    }
    // Every update ends in the elementwise select of the non-finite guard (where(ok, new, old)),
    // so each writes its parameter or moment in place; the copy path is in-place.test.ts's.
    expect(exec.lastStats!.inPlaceUpdates).toBe(train.updates!.length);
    const names = train.gradients.map((g) => g.name);
    const onDevice = await exec.readSources(names);
    for (const name of names) {
      const a = onDevice.get(name)!.data;
      const b = ref.values.get(name)!.data;
      let d = 0;
      let n = 0;
      for (let i = 0; i < a.length; i++) {
        d += (a[i]! - b[i]!) ** 2;
        n += b[i]! ** 2;
      }
      expect(Math.sqrt(d / n), name).toBeLessThan(1e-3);
      // The parameters moved: the device really applied the updates.
      expect(a).not.toEqual(params.get(name)!.data);
    }
    exec.destroy();
  }, 300_000);
});
