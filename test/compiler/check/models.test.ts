import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { loadSpec } from '../../../compiler/syntax/load.js';
import { checkModel } from '../../../compiler/check/index.js';
import { evalDim } from '../../../compiler/ir/dims.js';

const load = () => loadSpec('models/vwlmm.kiln', (p: string) => readFileSync(p, 'utf8')).files;

function totals(config: string) {
  const m = checkModel(load(), { config });
  const by = new Map<string, number>();
  let trainable = 0;
  for (const p of m.graph.params) {
    const n = p.type.shape.reduce<number>((a, d) => a * evalDim(d, new Map()), 1);
    by.set(p.component, (by.get(p.component) ?? 0) + n);
    if (p.trainable) trainable += n;
  }
  return { by, trainable, model: m };
}

describe('models/vwlmm.kiln parameter counts equal the released checkpoints', () => {
  it('vicuna7b: Vicuna-7B v1.5 decoder, CLIP ViT-L/14-336, mlp2x_gelu projector, VM head', () => {
    const { by } = totals('vicuna7b');
    expect(by.get('model')! + by.get('lm_head')!).toBe(6_738_415_616);
    expect(by.get('vision_tower')).toBe(303_507_456);
    expect(by.get('mm_projector')).toBe(20_979_712);
    expect(by.get('vm_head')).toBe(131_072_000);
  });

  it('mistral7b: Mistral-7B decoder with grouped KV heads', () => {
    const { by, model } = totals('mistral7b');
    expect(by.get('model')! + by.get('lm_head')!).toBe(7_241_732_096);
    expect(by.get('vision_tower')).toBe(303_507_456);
    expect(by.get('mm_projector')).toBe(20_979_712);
    expect(by.get('vm_head')).toBe(131_072_000);
    const k = model.graph.params.find((p) => p.name === 'model.layers.0.self_attn.k_proj.weight')!;
    expect(k.type.shape).toEqual([1024, 4096]);
  });

  it('tiny: the same graph at a few hundred thousand parameters; the tower is frozen', () => {
    const { by, model } = totals('tiny');
    const total = [...by.values()].reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThan(200_000);
    expect(total).toBeLessThan(1_000_000);
    for (const p of model.graph.params) expect(p.trainable).toBe(p.component !== 'vision_tower');
    expect(model.graph.losses.map((l) => l.name)).toEqual(['lm', 'vm']);
    expect(model.graph.symbols).toEqual(['B', 'T']);
  });

  it('stage pretrain trains only the projector and the VM head', () => {
    const m = checkModel(load(), { config: 'tiny', stage: 'pretrain' });
    const comps = new Set(m.graph.params.filter((p) => p.trainable).map((p) => p.component));
    expect([...comps].sort()).toEqual(['mm_projector', 'vm_head']);
    expect(m.stage?.optimizer).toEqual({ name: 'adamw', args: { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0 } });
  });

  it('layer checkpoint names carry the layer index', () => {
    const m = checkModel(load(), { config: 'tiny' });
    const names = m.graph.params.map((p) => p.name);
    expect(names).toContain('model.layers.1.self_attn.q_proj.weight');
    expect(names).toContain('model.vision_tower.vision_tower.vision_model.encoder.layers.2.mlp.fc2.bias');
    expect(names).toContain('model.mm_projector.2.bias');
    expect(m.checkpointSources).toEqual([{ path: 'vision_tower', ckptPrefix: 'model.vision_tower.vision_tower.vision_model.', filePrefix: 'vision_model.' }]);
  });

  it('the decoder sequence is T - 1 + patches long (the LLaVA splice)', () => {
    const m = checkModel(load(), { config: 'tiny' });
    const logits = m.graph.outputs.find((o) => o.name === 'logits')!;
    const shape = m.graph.nodes[logits.node]!.type.shape;
    expect(evalDim(shape[1]!, new Map([['T', 10]]))).toBe(10 - 1 + 16);
    expect(shape[2]).toBe(1000);
  });

  it('--set overrides reach derived values', () => {
    const m = checkModel(load(), { config: 'tiny', overrides: [{ key: 'text.hidden', value: 96, origin: '--set' }, { key: 'vision.layers', value: 2, origin: '--set' }] });
    const q = m.graph.params.find((p) => p.name === 'model.layers.0.self_attn.q_proj.weight')!;
    expect(q.type.shape).toEqual([96, 96]);
    expect(m.graph.params.find((p) => p.name === 'model.mm_projector.2.weight')!.type.shape).toEqual([96, 96]);
    expect(m.graph.params.some((p) => p.name.includes('encoder.layers.2.'))).toBe(false);
  });
});
