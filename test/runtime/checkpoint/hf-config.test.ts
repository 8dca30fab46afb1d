import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { clipConfigOverrides, llavaConfigOverrides, parseHfConfig, readHfConfig } from '../../../compiler/checkpoint/hf-config.js';
import { expectKilnError } from '../../helpers/errors.js';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-cfg-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

// The fields of liuhaotian/llava-v1.5-7b's config.json that matter (VW-LMM Vicuna has the same).
const vicuna = {
  architectures: ['LlavaLlamaForCausalLM'],
  hidden_act: 'silu',
  hidden_size: 4096,
  intermediate_size: 11008,
  mm_hidden_size: 1024,
  mm_projector_type: 'mlp2x_gelu',
  mm_vision_select_feature: 'patch',
  mm_vision_select_layer: -2,
  mm_vision_tower: 'openai/clip-vit-large-patch14-336',
  model_type: 'llava_llama',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  tie_word_embeddings: false,
  vocab_size: 32000,
};

describe('LLaVA configs', () => {
  it('maps a LLaVA-1.5 Vicuna config', () => {
    expect(Object.fromEntries(llavaConfigOverrides(vicuna, 'config.json'))).toEqual({
      'text.vocab': 32000,
      'text.hidden': 4096,
      'text.layers': 32,
      'text.heads': 32,
      'text.kv_heads': 32,
      'text.head_dim': 128,
      'text.ffn': 11008,
      'text.eps': 1e-5,
      'text.rope_theta': 10000,
      'text.tie_word_embeddings': false,
      'text.sliding_window': 0,
      projector_hidden: 4096,
      pif: false,
      'vision.width': 1024,
      'vision.select_layer': -2,
    });
  });

  it('architectures vwPifLlamaForCausalLM sets pif, which a spec must have; the other known classes unset it', () => {
    const pif = llavaConfigOverrides({ ...vicuna, architectures: ['vwPifLlamaForCausalLM'], model_type: 'llava' }, 'c.json');
    expect(pif.get('pif')).toBe(true);
    expect(pif.fields.get('pif')).toBe('architectures');
    expect(pif.needed.has('pif')).toBe(true);
    for (const a of ['LlavaLlamaForCausalLM', 'vwLlamaForCausalLM', 'LlamaForCausalLM']) {
      const plain = llavaConfigOverrides({ ...vicuna, architectures: [a] }, 'c.json');
      expect([a, plain.get('pif'), plain.needed.has('pif')]).toEqual([a, false, false]);
    }
    // No architectures: the spec's value stands.
    expect(llavaConfigOverrides({ ...vicuna, architectures: undefined }, 'c.json').has('pif')).toBe(false);
  });

  const sizes = { vocab_size: 97, hidden_size: 64, intermediate_size: 80, num_hidden_layers: 2, num_attention_heads: 8 };

  it('fills absent and null fields with the LlamaConfig defaults, except the sizes', () => {
    const m = llavaConfigOverrides({ model_type: 'llama', ...sizes, num_key_value_heads: null }, 'c.json');
    expect(m.get('text.vocab')).toBe(97);
    expect(m.get('text.kv_heads')).toBe(8);
    expect(m.get('text.head_dim')).toBe(8);
    expect(m.get('text.ffn')).toBe(80);
    expect(m.get('text.eps')).toBe(1e-6);
    expect(m.get('text.rope_theta')).toBe(10000);
    expect(m.get('text.tie_word_embeddings')).toBe(false);
    expect(m.has('vision.width')).toBe(false);
    expect(m.has('vision.select_layer')).toBe(false);
  });

  it('uses the MistralConfig defaults for mistral model types', () => {
    const m = llavaConfigOverrides({ model_type: 'llava_mistral', ...sizes, num_attention_heads: 32, rope_theta: 1e6, rms_norm_eps: 1e-5 }, 'c.json');
    expect(m.get('text.kv_heads')).toBe(8);
    expect(m.get('text.heads')).toBe(32);
    expect(m.get('text.rope_theta')).toBe(1e6);
    expect(llavaConfigOverrides({ model_type: 'mistral', ...sizes }, 'c.json').get('text.eps')).toBe(1e-6);
  });

  it.each(Object.keys(sizes))('a config.json without %s names the field (no default size is guessed)', (field) => {
    const json: Record<string, unknown> = { model_type: 'llava_llama', ...sizes };
    delete json[field];
    expectKilnError(() => llavaConfigOverrides(json, '/ckpt/config.json'), '/ckpt/config.json', `field "${field}" is missing`, 'no default');
  });

  it('maps Mistral sliding_window: absent is MistralConfig\'s 4096, null is none (0); LLaMA ignores it (no window)', () => {
    const sw = (json: object) => llavaConfigOverrides({ ...sizes, ...json }, 'c.json').get('text.sliding_window');
    expect(sw({ model_type: 'llava_mistral' })).toBe(4096);
    expect(sw({ model_type: 'llava_mistral', sliding_window: null })).toBe(0);
    expect(sw({ model_type: 'mistral', sliding_window: 4 })).toBe(4);
    expect(sw({ model_type: 'llava_llama', sliding_window: 4 })).toBe(0);
    expect(() => sw({ model_type: 'mistral', sliding_window: 0 })).toThrow('field "sliding_window" must be a positive integer, got 0');
    expect(() => sw({ model_type: 'mistral', sliding_window: 'wide' })).toThrow('field "sliding_window" must be a positive integer');
  });

  it('takes an explicit head_dim over hidden / heads, and tied embeddings', () => {
    const m = llavaConfigOverrides({ model_type: 'mistral', ...sizes, hidden_size: 5120, num_attention_heads: 32, head_dim: 128, tie_word_embeddings: true }, 'c.json');
    expect(m.get('text.head_dim')).toBe(128);
    expect(m.get('text.tie_word_embeddings')).toBe(true);
  });

  it('reads rope_theta from transformers 5 rope_parameters, and accepts default-type scaling', () => {
    const v5 = { model_type: 'mistral', ...sizes, rope_parameters: { rope_theta: 1e6, rope_type: 'default' } };
    expect(llavaConfigOverrides(v5, 'c.json').get('text.rope_theta')).toBe(1e6);
    const legacy = { ...vicuna, rope_theta: 5e5, rope_scaling: { rope_type: 'default' } };
    expect(llavaConfigOverrides(legacy, 'c.json').get('text.rope_theta')).toBe(5e5);
  });

  it.each<[unknown, ...string[]]>([
    [{ ...vicuna, rope_parameters: { rope_theta: 1e6, rope_type: 'yarn' } }, 'rope_parameters', 'yarn'],
    [{ ...vicuna, rope_parameters: { rope_theta: 'big' } }, 'rope_parameters.rope_theta'],
    [{ ...vicuna, mm_projector_type: 'linear' }, 'mm_projector_type', '"linear"'],
    [{ ...vicuna, mm_vision_select_feature: 'cls_patch' }, 'mm_vision_select_feature', 'cls_patch'],
    [{ ...vicuna, mm_patch_merge_type: 'spatial_unpad' }, 'mm_patch_merge_type'],
    [{ ...vicuna, hidden_act: 'gelu' }, 'hidden_act'],
    [{ ...vicuna, rope_scaling: { type: 'linear', factor: 2 } }, 'rope_scaling'],
    [{ ...vicuna, attention_bias: true }, 'attention_bias'],
    [{ ...vicuna, hidden_size: '4096' }, 'hidden_size', 'positive integer', '"4096"'],
    [{ ...vicuna, num_hidden_layers: 2.5 }, 'num_hidden_layers'],
    [{ ...vicuna, vocab_size: 0 }, 'vocab_size'],
    [{ ...vicuna, rms_norm_eps: -1 }, 'rms_norm_eps', 'positive number'],
    [{ ...vicuna, tie_word_embeddings: 'false' }, 'tie_word_embeddings', 'true or false'],
    [{ ...vicuna, mm_vision_select_layer: '-2' }, 'mm_vision_select_layer'],
    [{ ...vicuna, num_key_value_heads: 5 }, 'num_key_value_heads', 'divide'],
    [{ ...vicuna, hidden_size: 100, num_attention_heads: 32 }, 'hidden_size', 'head_dim'],
    [{ ...vicuna, model_type: 'gpt2' }, 'model_type', 'gpt2'],
    [{ ...vicuna, model_type: undefined }, 'model_type'],
    [{ model_type: 'llava', text_config: {}, vision_config: {} }, 'text_config'],
    [[1, 2], 'not a JSON object'],
    [{ ...vicuna, architectures: ['LlavaQwenForCausalLM'] }, 'architectures', 'LlavaQwenForCausalLM', 'vwPifLlamaForCausalLM'],
    [{ ...vicuna, architectures: 'vwPifLlamaForCausalLM' }, 'architectures', 'list of class names'],
    [{ ...vicuna, architectures: [] }, 'architectures', 'list of class names'],
    [{ ...vicuna, architectures: ['vwPifLlamaForCausalLM', 'vwLlamaForCausalLM'] }, 'architectures', 'mixes'],
    [{ ...vicuna, model_type: 'llava_mistral', architectures: ['vwPifLlamaForCausalLM'] }, 'architectures', 'LLaMA class', 'llava_mistral'],
  ])('rejects %j naming the file and the field', (json, ...parts) => {
    expectKilnError(() => llavaConfigOverrides(json, '/ckpt/config.json'), '/ckpt/config.json', ...parts);
  });
});

const clipVision = {
  model_type: 'clip_vision_model',
  hidden_act: 'quick_gelu',
  hidden_size: 1024,
  image_size: 336,
  intermediate_size: 4096,
  layer_norm_eps: 1e-5,
  num_attention_heads: 16,
  num_channels: 3,
  num_hidden_layers: 24,
  patch_size: 14,
  projection_dim: 768,
};
const l14: Record<string, number> = {
  'vision.width': 1024,
  'vision.mlp': 4096,
  'vision.layers': 24,
  'vision.heads': 16,
  'vision.image_size': 336,
  'vision.patch': 14,
  'vision.channels': 3,
  'vision.eps': 1e-5,
};

describe('CLIP configs', () => {
  it('maps a CLIPVisionModel config', () => {
    expect(Object.fromEntries(clipConfigOverrides(clipVision, 'c.json'))).toEqual(l14);
  });

  it('maps a CLIPModel config through vision_config, defaults included', () => {
    const { model_type: _t, num_channels: _c, layer_norm_eps: _e, ...vision } = clipVision;
    const clipModel = { model_type: 'clip', text_config: { hidden_size: 768 }, vision_config: vision, projection_dim: 768 };
    expect(Object.fromEntries(parseHfConfig(JSON.stringify(clipModel), 'c.json'))).toEqual(l14);
  });

  it('uses CLIPVisionConfig defaults for num_channels and layer_norm_eps; a size field is required', () => {
    const { num_channels: _c, layer_norm_eps: _e, ...sized } = clipVision;
    expect(Object.fromEntries(clipConfigOverrides(sized, 'c.json'))).toEqual(l14);
    for (const field of ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'image_size', 'patch_size']) {
      const json: Record<string, unknown> = { ...clipVision };
      delete json[field];
      expectKilnError(() => clipConfigOverrides(json, '/clip/config.json'), '/clip/config.json', `field "${field}" is missing`);
    }
  });

  it.each<[unknown, ...string[]]>([
    [{ ...clipVision, hidden_act: 'gelu' }, 'hidden_act', 'quick_gelu'],
    [{ model_type: 'clip', vision_config: { ...clipVision, model_type: undefined, hidden_act: 'gelu' } }, 'vision_config.hidden_act'],
    [{ model_type: 'clip', vision_config: 3 }, 'vision_config'],
    [{ ...clipVision, patch_size: 0 }, 'patch_size'],
    [{ ...clipVision, image_size: 330 }, 'image_size', 'patch_size'],
    [{ ...clipVision, num_attention_heads: 7 }, 'hidden_size', 'num_attention_heads'],
    [{ ...clipVision, layer_norm_eps: 'small' }, 'layer_norm_eps'],
  ])('rejects %j naming the file and the field', (json, ...parts) => {
    expectKilnError(() => clipConfigOverrides(json, '/clip/config.json'), '/clip/config.json', ...parts);
  });
});

describe('config.json files', () => {
  it('reads and dispatches by kind', () => {
    const a = path.join(dir, 'llava.json');
    const b = path.join(dir, 'clip.json');
    fs.writeFileSync(a, JSON.stringify(vicuna));
    fs.writeFileSync(b, JSON.stringify(clipVision));
    expect(readHfConfig(a).get('text.hidden')).toBe(4096);
    expect(readHfConfig(b).get('vision.layers')).toBe(24);
  });

  it('names the file for malformed JSON and missing files', () => {
    const p = path.join(dir, 'broken.json');
    fs.writeFileSync(p, '{"hidden_size": 4096,');
    expectKilnError(() => readHfConfig(p), p, 'not valid JSON');
    expectKilnError(() => readHfConfig(path.join(dir, 'nope.json')), 'nope.json', 'no such file');
    expectKilnError(() => parseHfConfig('42', 'n.json'), 'n.json', 'not a JSON object');
  });
});
