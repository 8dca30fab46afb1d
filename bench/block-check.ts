// Checks that the tfjs peer computes the same block as bench/block.kiln: same loss and gradients
// as Kiln's reference executor on the same random weights. Run: node bin/run-ts.js bench/block-check.ts
import { differentiate } from '../compiler/passes/autodiff.js';
import { runReference } from '../compiler/exec/reference.js';
import { tfjsBlock } from './block-tfjs.js';
import { blockSetup } from './block-setup.js';

const seq = 128;
const { model, params, x } = blockSetup(seq);
const g = differentiate(model.graph);
const feeds = new Map([...params, ['x', x]]);
const t0 = performance.now();
const res = runReference(g, feeds, [g.totalLoss!, ...g.gradients.map((q) => q.node)], { precision: 'f32' });
console.error(`reference: ${(performance.now() - t0).toFixed(0)} ms`);
const tf = await tfjsBlock({ T: seq, d: 256, heads: 4, ffn: 1024, eps: 1e-5, theta: 10000 }, new Map([...params].map(([k, v]) => [k, { shape: v.shape, data: v.data as Float32Array }])), x.data as Float32Array);
const out = await tf.step();
const refLoss = res.get(g.totalLoss!)!.data[0]!;
console.log(`loss: kiln reference ${refLoss}, tfjs ${out.loss}`);
for (const q of g.gradients) {
  const a = res.get(q.node)!.data;
  const b = out.grads.get(q.name)!;
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += a[i]! ** 2;
  }
  console.log(`${q.name}: rel ${(Math.sqrt(num) / Math.sqrt(den)).toExponential(2)}`);
}
process.exit(0);
