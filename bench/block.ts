// One transformer block forward + backward (T=128, d=256, 4 heads, FFN 1024, batch 1, scalar
// loss, every gradient read back): Kiln compiling bench/block.kiln against tfjs-webgpu running
// the same block with tf.variableGrads, on the same dawn.node device, same weights.
import { differentiate } from '../compiler/passes/autodiff.js';
import type { KilnDevice } from '../runtime/node/device.js';
import { WebGpuExecutor } from '../compiler/exec/webgpu.js';
import { blockSetup } from './block-setup.js';
import { tfjsBlock } from './block-tfjs.js';
import { timeRuns } from './matmul.js';

export interface BlockResult {
  kiln_ms: number;
  tfjs_ms: number;
  /** tfjs / kiln: above 1 means Kiln is faster. */
  ratio: number;
  /** the two losses agree (a check that both ran the same block). */
  loss_rel_diff: number;
  dispatches: number;
}

export async function benchBlock(kd: KilnDevice, opts: { runs: number; log: (m: string) => void }): Promise<BlockResult> {
  const seq = 128;
  const { model, params, x } = blockSetup(seq);
  const graph = differentiate(model.graph);
  const wanted = [graph.totalLoss!, ...graph.gradients.map((g) => g.node)];
  const exec = new WebGpuExecutor(kd, graph);
  const feeds = new Map([...params, ['x', x]]);
  let kilnLoss = 0;
  const kiln = await timeRuns(opts.runs, async () => {
    const t0 = performance.now();
    const r = await exec.run(feeds, wanted);
    kilnLoss = r.get(graph.totalLoss!)!.data[0]!;
    return performance.now() - t0;
  });
  const dispatches = exec.program(wanted).groups.length;
  opts.log(`block: kiln ${kiln.toFixed(1)} ms/step (${dispatches} dispatches)`);
  exec.destroy();

  const peer = await tfjsBlock({ T: seq, d: 256, heads: 4, ffn: 1024, eps: 1e-5, theta: 10000 }, new Map([...params].map(([k, v]) => [k, { shape: v.shape, data: v.data as Float32Array }])), x.data as Float32Array);
  let tfLoss = 0;
  const tf = await timeRuns(opts.runs, async () => {
    const t0 = performance.now();
    tfLoss = (await peer.step()).loss;
    return performance.now() - t0;
  });
  peer.dispose();
  opts.log(`block: tfjs ${tf.toFixed(1)} ms/step`);
  const round = (v: number) => Math.round(v * 100) / 100;
  return { kiln_ms: round(kiln), tfjs_ms: round(tf), ratio: round(tf / kiln), loss_rel_diff: Math.abs(kilnLoss - tfLoss) / Math.abs(tfLoss), dispatches };
}
