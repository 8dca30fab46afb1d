// Kiln config -> Hugging Face config.json, the inverse of hf-config.ts: the file a training
// checkpoint carries so that `kiln loss --checkpoint` (reading it with hf-config.ts) builds the
// same model, and PyTorch builds it too (LLaVA-1.5's LlavaLlamaConfig / LlavaMistralConfig are
// LlamaConfig / MistralConfig with the mm_* keys).
//
// Layout: LLaVA-1.5's release config.json (liuhaotian/llava-v1.5-7b), every size written
// explicitly (transformers writes them; hf-config.ts requires them), plus `vision_config`: the
// tower's CLIPVisionConfig, because Kiln's checkpoints hold the tower's tensors
// (model.vision_tower.vision_tower.vision_model.*) where LLaVA's name a hub id in
// mm_vision_tower. When the run started from a checkpoint, its config.json is the base: fields
// Kiln does not model (token ids, _name_or_path, mm_vision_tower, tokenizer settings) are kept,
// and every field Kiln does model is overwritten with the trained model's value.
import type { CheckedModel } from '../check/index.js';
import { configGet } from '../check/config.js';
import type { ConfigRecord, Value } from '../check/values.js';
import { KilnError } from '../../runtime/errors.js';

/** The config values a LLaVA config.json carries, by the spec keys hf-config.ts maps them to. */
export interface LlavaConfigValues {
  readonly text: {
    readonly vocab: number;
    readonly hidden: number;
    readonly layers: number;
    readonly heads: number;
    readonly kv_heads: number;
    readonly head_dim: number;
    readonly ffn: number;
    readonly eps: number;
    readonly rope_theta: number;
    readonly tie_word_embeddings: boolean;
    /** 0: no window. */
    readonly sliding_window: number;
  };
  readonly vision: {
    readonly width: number;
    readonly mlp: number;
    readonly layers: number;
    readonly heads: number;
    readonly image_size: number;
    readonly patch: number;
    readonly channels: number;
    readonly eps: number;
    readonly select_layer: number;
  };
  readonly projector_hidden: number;
  /** pseudo image features (config value `pif`; false when the spec has none): architectures vwPifLlamaForCausalLM. */
  readonly pif: boolean;
}

const NO_SPAN = { file: '<config.json writer>', start: 0, end: 0, line: 0, col: 0 };

function lookup(model: CheckedModel, path: string): Value {
  let cur: Value | ConfigRecord = model.config;
  for (const part of path.split('.')) {
    if (!('entries' in cur)) throw new KilnError(`config ${model.configName}: ${path} is not a record path`);
    cur = configGet(cur, part, NO_SPAN);
  }
  return cur;
}

function num(model: CheckedModel, path: string): number {
  const v = lookup(model, path);
  if (v.kind !== 'num' || typeof v.value !== 'number') throw new KilnError(`config ${model.configName}: ${path} is not a number, so it cannot be written to config.json`);
  return v.value;
}

function bool(model: CheckedModel, path: string): boolean {
  const v = lookup(model, path);
  if (v.kind !== 'bool') throw new KilnError(`config ${model.configName}: ${path} is not true or false, so it cannot be written to config.json`);
  return v.value;
}

/** The values of a checked VW-LMM / LLaVA model's config that config.json records. */
export function llavaConfigValues(model: CheckedModel): LlavaConfigValues {
  const t = (k: string) => num(model, `text.${k}`);
  const v = (k: string) => num(model, `vision.${k}`);
  return {
    text: {
      vocab: t('vocab'),
      hidden: t('hidden'),
      layers: t('layers'),
      heads: t('heads'),
      kv_heads: t('kv_heads'),
      head_dim: t('head_dim'),
      ffn: t('ffn'),
      eps: t('eps'),
      rope_theta: t('rope_theta'),
      tie_word_embeddings: bool(model, 'text.tie_word_embeddings'),
      sliding_window: t('sliding_window'),
    },
    vision: {
      width: v('width'),
      mlp: v('mlp'),
      layers: v('layers'),
      heads: v('heads'),
      image_size: v('image_size'),
      patch: v('patch'),
      channels: v('channels'),
      eps: v('eps'),
      select_layer: v('select_layer'),
    },
    projector_hidden: num(model, 'projector_hidden'),
    pif: model.config.entries.has('pif') ? bool(model, 'pif') : false,
  };
}

export type LlavaModelType = 'llava_llama' | 'llava_mistral';

export interface LlavaConfigOptions {
  /** model_type; default: the base's when it is one of these, else llava_mistral when the decoder has a sliding window, else llava_llama. */
  readonly modelType?: LlavaModelType;
  /** the config.json the run started from, whose other fields are kept. */
  readonly base?: Readonly<Record<string, unknown>>;
  /** torch_dtype to record (the dtype model.safetensors stores floats in); default float32. */
  readonly torchDtype?: 'float32' | 'float16' | 'bfloat16';
}

/**
 * config.json for a model with `values`: hf-config.ts's llavaConfigOverrides reads back exactly
 * these values. Throws KilnError for what the layout cannot say: a projector width other than
 * the decoder's (LLaVA's mlp2x_gelu maps to hidden_size), a sliding window on a llava_llama
 * model (LLaMA has none), pif on a llava_mistral model (the release has no such class), a
 * non-integer size.
 */
export function llavaConfigJson(values: LlavaConfigValues, opts: LlavaConfigOptions = {}): Record<string, unknown> {
  const { text: t, vision: v } = values;
  for (const [k, x] of Object.entries({ ...prefixed('text', t), ...prefixed('vision', v), projector_hidden: values.projector_hidden })) {
    if (typeof x === 'number' && !Number.isFinite(x)) throw new KilnError(`config value ${k} is ${x}; config.json needs a finite number`);
  }
  if (values.projector_hidden !== t.hidden) {
    throw new KilnError(`projector_hidden (${values.projector_hidden}) differs from text.hidden (${t.hidden}); LLaVA's config.json has no field for that (its projector maps to hidden_size)`);
  }
  const baseType = opts.base?.['model_type'];
  const modelType: LlavaModelType =
    opts.modelType ?? (baseType === 'llava_llama' || baseType === 'llava_mistral' ? baseType : t.sliding_window > 0 ? 'llava_mistral' : 'llava_llama');
  if (modelType === 'llava_llama' && t.sliding_window > 0) {
    throw new KilnError(`text.sliding_window is ${t.sliding_window}, but a llava_llama config has no sliding window (LLaMA's attention ignores the key); write it as llava_mistral`);
  }
  const llama = modelType === 'llava_llama';
  if (values.pif && !llama) {
    throw new KilnError('pif is true, but the VW-LMM release has pseudo image features for LLaMA only (vwPifLlamaForCausalLM); a llava_mistral config cannot say pif');
  }
  const out: Record<string, unknown> = { ...(opts.base ?? {}) };
  // Keys that would contradict the values below if kept from the base.
  for (const k of ['text_config', 'rope_parameters', 'rope_scaling', 'sliding_window']) delete out[k];
  Object.assign(out, {
    // hf-config.ts reads pif back from this name (the release's class for it).
    architectures: [values.pif ? 'vwPifLlamaForCausalLM' : llama ? 'LlavaLlamaForCausalLM' : 'LlavaMistralForCausalLM'],
    model_type: modelType,
    vocab_size: t.vocab,
    hidden_size: t.hidden,
    intermediate_size: t.ffn,
    num_hidden_layers: t.layers,
    num_attention_heads: t.heads,
    num_key_value_heads: t.kv_heads,
    head_dim: t.head_dim,
    hidden_act: 'silu',
    rms_norm_eps: t.eps,
    rope_theta: t.rope_theta,
    rope_scaling: null,
    tie_word_embeddings: t.tie_word_embeddings,
    attention_bias: false,
    ...(llama ? { mlp_bias: false } : { sliding_window: t.sliding_window > 0 ? t.sliding_window : null }),
    mm_hidden_size: v.width,
    mm_projector_type: 'mlp2x_gelu',
    mm_vision_select_layer: v.select_layer,
    mm_vision_select_feature: 'patch',
    mm_patch_merge_type: 'flat',
    vision_config: {
      model_type: 'clip_vision_model',
      hidden_size: v.width,
      intermediate_size: v.mlp,
      num_hidden_layers: v.layers,
      num_attention_heads: v.heads,
      image_size: v.image_size,
      patch_size: v.patch,
      num_channels: v.channels,
      layer_norm_eps: v.eps,
      hidden_act: 'quick_gelu',
    },
    torch_dtype: opts.torchDtype ?? 'float32',
  });
  out['use_mm_proj'] ??= true;
  out['image_aspect_ratio'] ??= 'pad';
  return out;
}

function prefixed(prefix: string, obj: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(obj).map(([k, x]) => [`${prefix}.${k}`, x]));
}
