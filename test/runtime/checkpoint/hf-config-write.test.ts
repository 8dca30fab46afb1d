// config.json written for a trained model reads back (hf-config.ts) as the same config values,
// and the model rebuilt from it has the same parameters, for the spec's configs.
import { describe, expect, it } from 'vitest';
import { llavaConfigJson, llavaConfigValues, type LlavaConfigValues } from '../../../compiler/checkpoint/hf-config-write.js';
import { llavaConfigOverrides, parseHfConfig } from '../../../compiler/checkpoint/hf-config.js';
import { loadAndCheck } from '../../../compiler/cli/spec.js';
import { Output } from '../../../compiler/cli/output.js';
import type { Override } from '../../../compiler/check/index.js';

const SPEC = 'models/vwlmm.kiln';
const check = (config: string, overrides: Override[] = []) => loadAndCheck(SPEC, { config, overrides }, new Output(true));
const params = (m: ReturnType<typeof check>) => m.graph.params.map((p) => `${p.name} ${p.type.dtype}[${p.type.shape.join(',')}]`);
const asOverrides = (json: object): Override[] =>
  [...parseHfConfig(JSON.stringify(json), 'config.json')].map(([key, value]) => ({ key, value, origin: 'config.json', optional: true }));

function flat(v: LlavaConfigValues): Record<string, unknown> {
  return {
    ...Object.fromEntries(Object.entries(v.text).map(([k, x]) => [`text.${k}`, x])),
    ...Object.fromEntries(Object.entries(v.vision).map(([k, x]) => [`vision.${k}`, x])),
    projector_hidden: v.projector_hidden,
    pif: v.pif,
  };
}

describe('config.json writer', () => {
  it.each([
    ['tiny', [] as Override[], 'llava_llama'],
    ['vicuna7b', [], 'llava_llama'],
    ['mistral7b', [], 'llava_mistral'],
    // Values differing from every spec default, so a field the writer forgot cannot pass by luck.
    ['tiny', [
      { key: 'text.kv_heads', value: 1, origin: '--set' }, { key: 'text.eps', value: 3e-6, origin: '--set' },
      { key: 'text.rope_theta', value: 5e5, origin: '--set' }, { key: 'text.tie_word_embeddings', value: true, origin: '--set' },
      { key: 'text.sliding_window', value: 5, origin: '--set' }, { key: 'vision.select_layer', value: 1, origin: '--set' },
      { key: 'vision.eps', value: 2e-6, origin: '--set' }, { key: 'vision.layers', value: 2, origin: '--set' },
    ], 'llava_mistral'],
    ['tiny', [{ key: 'pif', value: true, origin: '--set' }], 'llava_llama'],
  ] as const)('%s %j: every value reads back, and the rebuilt model has the same parameters', (config, sets, type) => {
    const model = check(config, [...sets]);
    const values = llavaConfigValues(model);
    const json = llavaConfigJson(values);
    expect(json['model_type']).toBe(type);
    expect(json['architectures']).toEqual([values.pif ? 'vwPifLlamaForCausalLM' : type === 'llava_llama' ? 'LlavaLlamaForCausalLM' : 'LlavaMistralForCausalLM']);
    const read = Object.fromEntries(llavaConfigOverrides(JSON.parse(JSON.stringify(json)), 'config.json'));
    const want = flat(values);
    for (const [k, v] of Object.entries(want)) expect([k, read[k]]).toEqual([k, v]);
    // Read on top of a different spec config (tiny's sizes are not vicuna7b's), as kiln loss does.
    const other = config === 'tiny' ? 'vicuna7b' : 'tiny';
    expect(params(check(other, asOverrides(json)))).toEqual(params(model));
  });

  it('keeps the base config.json\'s other fields and overwrites the modelled ones', () => {
    const values = llavaConfigValues(check('tiny'));
    const base = { model_type: 'llava_llama', _name_or_path: 'me/my-llava', bos_token_id: 1, mm_vision_tower: 'openai/clip-vit-large-patch14-336', hidden_size: 4096, rope_parameters: { rope_theta: 1e6, rope_type: 'default' } };
    const json = llavaConfigJson(values, { base });
    expect(json).toMatchObject({ _name_or_path: 'me/my-llava', bos_token_id: 1, mm_vision_tower: 'openai/clip-vit-large-patch14-336', hidden_size: 64, rope_theta: 10000 });
    expect(json['rope_parameters']).toBeUndefined();
    expect(llavaConfigOverrides(json, 'c.json').get('text.rope_theta')).toBe(10000);
  });

  it('refuses what the layout cannot say', () => {
    const values = llavaConfigValues(check('tiny'));
    expect(() => llavaConfigJson({ ...values, projector_hidden: 32 })).toThrow('projector_hidden (32) differs from text.hidden (64)');
    expect(() => llavaConfigJson({ ...values, text: { ...values.text, sliding_window: 4 } }, { modelType: 'llava_llama' })).toThrow('a llava_llama config has no sliding window');
    expect(() => llavaConfigJson({ ...values, pif: true }, { modelType: 'llava_mistral' })).toThrow('pseudo image features for LLaMA only');
  });

  it('a vision_config that contradicts mm_hidden_size is an error naming both fields', () => {
    const json = llavaConfigJson(llavaConfigValues(check('tiny')));
    expect(() => llavaConfigOverrides({ ...json, mm_hidden_size: 48 }, 'c.json')).toThrow(
      'c.json: field "vision_config.hidden_size" is 32 but "mm_hidden_size" is 48; they must agree',
    );
  });
});
