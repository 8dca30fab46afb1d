// Which parameters AdamW's weight decay applies to (compiler/passes/optimizer.ts `decays`): the
// Hugging Face Trainer's split (transformers 5.18 get_decay_parameter_names), on VW-LMM's real
// parameter names. The trajectory golden (test/golden/trajectory.test.ts, trajectory_wd.json)
// checks the arithmetic against the Trainer itself; this names the split.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { loadSpec } from '../../../compiler/syntax/load.js';
import { checkModel } from '../../../compiler/check/index.js';
import { decays } from '../../../compiler/passes/optimizer.js';

describe('weight decay follows the Hugging Face Trainer', () => {
  const files = loadSpec('models/vwlmm.kiln', (p: string) => readFileSync(p, 'utf8')).files;
  const params = checkModel(files, { config: 'tiny' }).graph.params;
  const decayed = (name: string) => decays(params.find((p) => p.name === name) ?? { name });

  it('no decay on biases, LayerNorms (by module: CLIP layer_norm1, pre_layrnorm) and RMSNorm weights (by name)', () => {
    const tower = 'model.vision_tower.vision_tower.vision_model';
    for (const name of [
      'model.mm_projector.0.bias',
      `${tower}.encoder.layers.0.self_attn.q_proj.bias`,
      `${tower}.encoder.layers.0.layer_norm1.weight`,
      `${tower}.encoder.layers.0.layer_norm2.weight`,
      `${tower}.pre_layrnorm.weight`,
      'model.layers.0.input_layernorm.weight',
      'model.layers.1.post_attention_layernorm.weight',
      'model.norm.weight',
    ]) {
      expect(params.some((p) => p.name === name), `${name} is a parameter`).toBe(true);
      expect(decayed(name), name).toBe(false);
    }
  });

  it('decay on matrices and embeddings', () => {
    for (const name of ['model.mm_projector.0.weight', 'model.layers.0.self_attn.q_proj.weight', 'model.layers.0.mlp.down_proj.weight', 'model.embed_tokens.weight', 'lm_head.weight', 'vm_head.weight', 'model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight'])
      expect(decayed(name), name).toBe(true);
  });

  it('the Trainer\'s name patterns on their own (no module types)', () => {
    expect(decays({ name: 'encoder.norm.weight' })).toBe(false);
    expect(decays({ name: 'blocks.0.attn_norm.weight' })).toBe(false);
    expect(decays({ name: 'final_rmsnorm.weight' })).toBe(false);
    expect(decays({ name: 'normalizer.weight' })).toBe(true);
    expect(decays({ name: 'layer_norm1.weight' })).toBe(true);
    expect(decays({ name: 'layer_norm1.weight', modules: ['Clip', 'LayerNorm'] })).toBe(false);
  });
});
