// The `eval` entry: the loss terms and the logits of the tiny VW-LMM on the llama_b2 golden case,
// compiled as an artefact and run on WebGPU, against the reference executor. Tolerances: loss
// terms within 2e-4 relative (the golden loss tolerance); logits within 1e-4 absolute (their
// scale is ~1e-1 here; f32 sums of 64-wide dot products in another order differ by ~1e-6), and
// the argmax at every position the same (what answer accuracy reads).
import { describe, expect, it } from 'vitest';
import { checkpointOverrides } from '../../../compiler/cli/loss.js';
import { loadModelInputs } from '../../../compiler/cli/model-inputs.js';
import { Output } from '../../../compiler/cli/output.js';
import { loadAndCheck } from '../../../compiler/cli/spec.js';
import { DEFAULT_TRAITS } from '../../../compiler/codegen/kernel.js';
import { compileArtefact } from '../../../compiler/emit/artefact.js';
import { defaultEntries, evalOutputs } from '../../../compiler/emit/entries.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { deviceTraits } from '../../../compiler/exec/webgpu.js';
import { getDevice } from '../../../runtime/node/device.js';
import { ArtefactProgram } from '../../../runtime/webgpu/program.js';
import { expectKilnError } from '../../helpers/errors.js';
import { miniModel } from '../../helpers/mini-model.js';

const G = 'test/golden/llama_b2';

function tiny() {
  const model = loadAndCheck('models/vwlmm.kiln', { config: 'tiny', overrides: [...checkpointOverrides(`${G}/llava`), ...checkpointOverrides(`${G}/clip`)] }, new Output(true));
  const feeds = loadModelInputs(model, { checkpoint: `${G}/llava`, visionTower: `${G}/clip`, batch: `${G}/batch.safetensors` });
  return { model, feeds };
}

describe('the eval entry', () => {
  it('declares the loss, its terms and logits [B, L, vocab]; only on request', () => {
    const { model, feeds } = tiny();
    const [B, T] = feeds.get('input_ids')!.shape as [number, number];
    const { artefact } = compileArtefact(defaultEntries(model, ['eval']), { bindings: new Map([['B', B], ['T', T]]), traits: DEFAULT_TRAITS });
    const e = artefact.manifest.entries['eval']!;
    expect(e.outputs.map((o) => o.name)).toEqual(['loss', 'loss:lm', 'loss:vm', 'logits']);
    const logits = e.outputs.find((o) => o.name === 'logits')!;
    expect(logits.shape[0]).toBe(B);
    expect(logits.shape[1]).toBeGreaterThan(T);
    expect(e.updates).toEqual([]);
    // The default artefact stays loss, grads, train_step.
    expect(defaultEntries(model).map((s) => s.name)).toEqual(['loss', 'grads', 'train_step']);
  });

  it('is refused, naming the outputs there are, for a model without logits', () => {
    const m = miniModel();
    expectKilnError(() => evalOutputs(m), "no output named 'logits'");
    expectKilnError(() => defaultEntries(m, ['decode']), "no entry 'decode'", 'eval');
  });

  it('gives the reference executor loss terms and logits on WebGPU', async () => {
    const { model, feeds } = tiny();
    const g = model.graph;
    const kd = await getDevice();
    const bindings = new Map(['B', 'T'].map((k, i) => [k, feeds.get('input_ids')!.shape[i]!]));
    const { artefact } = compileArtefact(defaultEntries(model, ['eval']), { bindings, traits: deviceTraits(kd), maxBindings: kd.limits.maxStorageBuffersPerShaderStage });
    const program = await ArtefactProgram.load(kd, artefact, {});
    try {
      // The tower's last layer and post-LN are parameters no output reads: the artefact omits them.
      program.store.write(new Map(g.params.filter((p) => program.store.has(p.name)).map((p) => [p.name, feeds.get(p.name)!])));
      const batch = new Map(['pixel_values', 'input_ids', 'labels'].map((k) => [k, feeds.get(k)!]));
      const got = await program.run('eval', batch);
      const logitsNode = g.outputs.find((o) => o.name === 'logits')!.node;
      const want = runReference(g, feeds, [logitsNode, ...g.losses.map((l) => l.node)], { precision: 'f32' });
      for (const l of g.losses) {
        const w = want.get(l.node)!.data[0]!;
        expect(Math.abs(got.get(`loss:${l.name}`)!.data[0]! - w) / Math.abs(w), l.name).toBeLessThan(2e-4);
      }
      const a = got.get('logits')!;
      const b = want.get(logitsNode)!;
      expect(a.shape).toEqual(b.shape);
      let maxDiff = 0;
      for (let i = 0; i < a.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a.data[i]! - b.data[i]!));
      expect(maxDiff).toBeLessThan(1e-4);
      const V = a.shape[2]!;
      const argmax = (d: ArrayLike<number>, o: number) => {
        let best = 0;
        for (let v = 1; v < V; v++) if (d[o + v]! > d[o + best]!) best = v;
        return best;
      };
      for (let o = 0; o < a.data.length; o += V) expect(argmax(a.data, o)).toBe(argmax(b.data, o));
    } finally {
      program.destroy();
      program.store.destroy();
    }
  }, 300_000);
});
