// Checks that the tfjs peer computes the same block as bench/block.kiln: same loss and gradients
// as Kiln's reference executor on the same random weights. Run: node bin/run-ts.js bench/block-check.ts
import { readFileSync } from 'node:fs';
import { loadSpec } from '../compiler/syntax/load.js';
import { checkModel } from '../compiler/check/index.js';
import { differentiate } from '../compiler/passes/autodiff.js';
import { runReference } from '../runtime/reference.js';
import { evalShape } from '../compiler/ir/dims.js';
import type { HostTensor } from '../runtime/tensor.js';
import { tfjsBlock } from './block-tfjs.js';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

export function blockSetup(seq: number) {
  const files = loadSpec('bench/block.kiln', (p: string) => readFileSync(p, 'utf8')).files;
  const model = checkModel(files, {});
  const r = rng(7);
  const params = new Map<string, HostTensor>();
  for (const p of model.graph.params) {
    const shape = evalShape(p.type.shape, new Map());
    const n = shape.reduce((a, b) => a * b, 1);
    const scale = p.init.kind === 'ones' ? 0 : 0.1;
    params.set(p.name, { dtype: 'f32', shape, data: Float32Array.from({ length: n }, () => (p.init.kind === 'ones' ? 1 + 0.1 * r() : scale * r())) });
  }
  const x: HostTensor = { dtype: 'f32', shape: [1, seq, 256], data: Float32Array.from({ length: seq * 256 }, () => 2 * r()) };
  return { model, params, x };
}

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
