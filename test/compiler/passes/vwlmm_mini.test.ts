import { describe, expect, it } from 'vitest';
import type { Graph } from '../../../compiler/ir/graph.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { runReference } from '../../../compiler/exec/reference.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { host } from '../ops/harness.js';
import { IMAGE_TOKEN, TINY, buildMiniVwlmm, type MiniConfig } from './mini_vwlmm.js';

const MICRO: MiniConfig = { image: 4, patch: 2, width: 4, vLayers: 2, vHeads: 2, vMlp: 8, hidden: 8, layers: 1, heads: 2, kvHeads: 1, ffn: 8, vocab: 11 };

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function feedsFor(g: Graph, c: MiniConfig, batch: number, tokens: number, scale: number, seed: number): Map<string, HostTensor> {
  const r = rng(seed);
  const feeds = new Map<string, HostTensor>();
  for (const p of g.params) {
    const shape = p.type.shape as number[];
    const n = shape.reduce((a, d) => a * d, 1);
    const norm = /norm|layrnorm/.test(p.name) && p.name.endsWith('weight');
    feeds.set(p.name, host('f32', shape, Array.from({ length: n }, () => (norm ? 1 : 0) + scale * (2 * r() - 1))));
  }
  const ids: number[] = [];
  const labels: number[] = [];
  for (let b = 0; b < batch; b++)
    for (let t = 0; t < tokens; t++) {
      const id = t === 1 + b ? IMAGE_TOKEN : Math.floor(r() * c.vocab);
      ids.push(id);
      labels.push(t < 2 + b ? -100 : Math.floor(r() * c.vocab));
    }
  feeds.set('input_ids', host('i32', [batch, tokens], ids));
  feeds.set('labels', host('i32', [batch, tokens], labels));
  const px = batch * 3 * c.image * c.image;
  feeds.set('pixel_values', host('f32', [batch, 3, c.image, c.image], Array.from({ length: px }, () => 2 * r() - 1)));
  return feeds;
}

const pretrain = (name: string): boolean => name.startsWith('mm_projector.') || name.startsWith('vm_head.');
const finetune = (name: string): boolean => !name.startsWith('vision_tower.');

describe('autodiff on the VW-LMM graph', () => {
  it('pretrain stage: no backward work for the frozen tower or the frozen decoder weights', () => {
    const g = differentiate(buildMiniVwlmm(TINY, pretrain).build());
    const forwardEnd = g.totalLoss! + 1;
    expect(g.gradients.map((x) => x.name).sort()).toEqual(['mm_projector.0.bias', 'mm_projector.0.weight', 'mm_projector.2.bias', 'mm_projector.2.weight', 'vm_head.weight']);
    const frozen = new Set(g.params.filter((p) => !p.trainable).map((p) => p.node));
    const back = g.nodes.slice(forwardEnd);
    const ops = new Set(back.map((n) => n.op));
    for (const op of ['patch_embed_grad', 'layer_norm_grad', 'embedding_grad']) expect(ops.has(op)).toBe(false);
    // The cotangent crosses the decoder on its way to the projector, through x only.
    for (const op of ['attention_grad', 'rms_norm_grad', 'splice_grad', 'kl_div_grad', 'cross_entropy_grad']) expect(ops.has(op)).toBe(true);
    expect(back.filter((n) => n.op === 'rms_norm_grad').every((n) => n.attrs['wrt'] === 'x')).toBe(true);
    expect(back.filter((n) => n.op === 'splice_grad').every((n) => n.attrs['part'] === 'insert')).toBe(true);
    // A linear weight's gradient is the one matmul in the backward graph: one per trainable weight.
    expect(back.filter((n) => n.op === 'matmul')).toHaveLength(3);
    expect(back.some((n) => n.inputs.some((i) => frozen.has(i)) && n.op !== 'transpose' && n.op !== 'rms_norm_grad')).toBe(false);
  });

  it('finetune stage: gradients match finite differences on a micro config (f64)', () => {
    const g = differentiate(buildMiniVwlmm(MICRO, finetune).build());
    const feeds = feedsFor(g, MICRO, 2, 5, 0.5, 7);
    const res = runReference(g, feeds, [g.totalLoss!, ...g.gradients.map((x) => x.node)], { precision: 'f64' });
    const loss = (): number => runReference(g, feeds, [g.totalLoss!], { precision: 'f64' }).get(g.totalLoss!)!.data[0]!;
    expect(loss()).toBeGreaterThan(0);
    const r = rng(3);
    const h = 1e-6;
    expect(g.gradients.length).toBe(g.params.filter((p) => finetune(p.name)).length);
    for (const grad of g.gradients) {
      const base = feeds.get(grad.name)!;
      const analytic = res.get(grad.node)!.data;
      for (let k = 0; k < 2; k++) {
        const i = Math.floor(r() * base.data.length);
        const at = (d: number): number => {
          const data = Float64Array.from(base.data);
          data[i]! += d;
          feeds.set(grad.name, { ...base, data });
          return loss();
        };
        const numeric = (at(h) - at(-h)) / (2 * h);
        feeds.set(grad.name, base);
        // Same f64 tolerance reasoning as the per-op checks (see harness.gradCheck).
        expect(Math.abs(numeric - analytic[i]!), `${grad.name}[${i}]: ${numeric} vs ${analytic[i]}`).toBeLessThan(1e-6 * Math.max(1, Math.abs(analytic[i]!)));
      }
    }
  });

  it('tiny config: forward and backward on the f32 reference take seconds', () => {
    const g = differentiate(buildMiniVwlmm(TINY, finetune).build());
    const feeds = feedsFor(g, TINY, 2, 12, 0.02, 11);
    const started = performance.now();
    const res = runReference(g, feeds, [g.totalLoss!, ...g.gradients.map((x) => x.node)], { precision: 'f32' });
    const seconds = (performance.now() - started) / 1000;
    const loss = res.get(g.totalLoss!)!.data[0]!;
    // Near-uniform logits: the LM loss is about log(vocab), the VM loss about 0.
    expect(loss).toBeGreaterThan(Math.log(TINY.vocab) - 0.5);
    expect(loss).toBeLessThan(Math.log(TINY.vocab) + 0.5);
    for (const grad of g.gradients) expect(res.get(grad.node)!.data.every(Number.isFinite)).toBe(true);
    console.log(`tiny VW-LMM forward + backward on the f32 reference: ${seconds.toFixed(2)} s, ${g.nodes.length} nodes`);
    expect(seconds).toBeLessThan(10);
  });
});
