// The tiny VW-LMM with pseudo image features (models/vwlmm.kiln, --set pif=true): one training
// step's loss terms and every gradient on WebGPU against the reference executor, with the golden
// tolerances (terms within 2e-4, gradients within 2e-2 relative Frobenius). The PyTorch side of
// pif is golden.webgpu.test.ts's llama_pif case; this one covers the spec's own tiny config
// (GQA, another vocabulary) and random weights.
import { describe, expect, it } from 'vitest';
import { relFrobenius } from '../../golden/compare.js';
import { loadAndCheck } from '../../../compiler/cli/spec.js';
import { Output } from '../../../compiler/cli/output.js';
import type { Graph } from '../../../compiler/ir/graph.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { runReference } from '../../../compiler/exec/reference.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { f32, i32, uniform } from './compare.js';
import { getDevice } from '../../../runtime/node/device.js';
import { WebGpuExecutor } from '../../../compiler/exec/webgpu.js';

const IMAGE_TOKEN = -200;

function tinyGraph(pif: boolean): Graph {
  const m = loadAndCheck('models/vwlmm.kiln', { config: 'tiny', overrides: [{ key: 'pif', value: pif, origin: '--set pif' }] }, new Output(true));
  return differentiate(m.graph);
}

function feedsFor(g: Graph, batch: number, tokens: number): Map<string, HostTensor> {
  const feeds = new Map<string, HostTensor>();
  let seed = 1;
  for (const p of g.params) {
    const shape = p.type.shape as number[];
    const n = shape.reduce((a, d) => a * d, 1);
    const norm = /norm|layrnorm/.test(p.name) && p.name.endsWith('weight');
    // Wide enough that the visual words are far from uniform, so the pseudo features differ by patch.
    feeds.set(p.name, f32(shape, uniform(n, seed++, norm ? 0.8 : -0.5, norm ? 1.2 : 0.5)));
  }
  const ids: number[] = [];
  const labels: number[] = [];
  for (let b = 0; b < batch; b++)
    for (let t = 0; t < tokens; t++) {
      ids.push(t === 1 + b ? IMAGE_TOKEN : 3 + ((t * 37 + b * 11) % 900));
      labels.push(t < 2 + b ? -100 : 3 + ((t * 53 + b) % 900));
    }
  feeds.set('input_ids', i32([batch, tokens], ids));
  feeds.set('labels', i32([batch, tokens], labels));
  feeds.set('pixel_values', f32([batch, 3, 28, 28], uniform(batch * 3 * 28 * 28, 99)));
  return feeds;
}

describe('the tiny VW-LMM with pif on WebGPU', () => {
  it('equals the reference executor: loss terms and every gradient', async () => {
    const graph = tinyGraph(true);
    const wanted = [graph.totalLoss!, ...graph.losses.map((l) => l.node), ...graph.gradients.map((g) => g.node)];
    const feeds = feedsFor(graph, 2, 10);
    // pif changes the numbers (else this test could not tell a spec that ignores it).
    const plain = tinyGraph(false);
    const plainLoss = runReference(plain, feeds, [plain.totalLoss!], { precision: 'f32' }).get(plain.totalLoss!)!.data[0]!;
    const executor = new WebGpuExecutor(await getDevice(), graph);
    try {
      const gpu = await executor.run(feeds, wanted);
      const ref = runReference(graph, feeds, wanted, { precision: 'f32' });
      const refLoss = ref.get(graph.totalLoss!)!.data[0]!;
      expect(Math.abs(refLoss - plainLoss) / Math.abs(plainLoss)).toBeGreaterThan(1e-3);
      const rel = (id: number) => Math.abs(gpu.get(id)!.data[0]! - ref.get(id)!.data[0]!) / Math.abs(ref.get(id)!.data[0]!);
      let worstTerm = 0;
      for (const id of [graph.totalLoss!, ...graph.losses.map((l) => l.node)]) {
        expect(rel(id)).toBeLessThan(2e-4);
        worstTerm = Math.max(worstTerm, rel(id));
      }
      let worst = 0;
      for (const g of graph.gradients) {
        const r = relFrobenius(gpu.get(g.node)!.data, ref.get(g.node)!.data);
        expect(r, g.name).toBeLessThan(2e-2);
        worst = Math.max(worst, r);
      }
      console.log(`tiny VW-LMM pif step on WebGPU vs reference: loss ${refLoss.toFixed(6)} (without pif ${plainLoss.toFixed(6)}); worst term rel error ${worstTerm.toExponential(2)}, worst gradient ${worst.toExponential(2)}`);
    } finally {
      executor.destroy();
    }
  }, 600_000);
});
