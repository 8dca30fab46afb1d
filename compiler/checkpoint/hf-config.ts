// Hugging Face config.json -> Kiln config overrides: dotted keys as the models/*.kiln configs name
// them (`text.hidden`, `vision.layers`, ...), applied on top of a spec config so that the graph
// matches the checkpoint it will load. A field the file leaves out (or sets to null) takes the
// default of the transformers config class, because that is what transformers itself would build
// from the same file; except the model's sizes (vocab, hidden, ffn, layers, heads; CLIP's image
// and patch size too), which transformers always writes (they are not PretrainedConfig keys, so
// to_diff_dict keeps them): a file without one was not written by transformers, and guessing 4096
// would only fail later as a shape mismatch far from the cause, so it is an error naming the field. Derived spec keys (vision.head_dim, vision.grid, vision.patches) are left to
// the spec; text.head_dim is set because HF allows it to differ from hidden / heads.
//
// Defaults (transformers LlamaConfig / MistralConfig / CLIPVisionConfig):
//   llama, llava, llava_llama: num_key_value_heads = num_attention_heads, rms_norm_eps 1e-6,
//     rope_theta 10000, tie_word_embeddings false, hidden_act silu.
//   mistral, llava_mistral: as llama but num_key_value_heads 8.
//   clip_vision_model (and CLIPModel's vision_config): num_channels 3, layer_norm_eps 1e-5,
//     hidden_act quick_gelu.
// Required (no default): vocab_size, hidden_size, intermediate_size, num_hidden_layers,
//   num_attention_heads; CLIP: hidden_size, intermediate_size, num_hidden_layers,
//   num_attention_heads, image_size, patch_size.
// Note the HF rms_norm_eps default (1e-6) differs from Vicuna's file (1e-5): real files set it.
// sliding_window (mistral, llava_mistral): MistralConfig's default is 4096 when the key is absent;
// null means no window (text.sliding_window 0). LlamaConfig has no sliding window and LLaMA's
// attention ignores the key, so for llama types it is not read, as transformers does, and the
// window is 0 (none).
// architectures: each name must be a class Kiln builds (ARCHITECTURES below); the VW-LMM
// release's vwPifLlamaForCausalLM sets the spec's `pif` (a key the spec must have), the others
// set it false. Absent: the spec's value stands.
import * as fs from 'node:fs';
import { KilnError, describeFsError } from '../../runtime/errors.js';

/** Spec config keys -> values, with (for messages) the config.json field each was read from. */
export class ConfigOverrides extends Map<string, number | boolean | string> {
  /** spec key -> the field's path in the file (`mm_vision_select_layer`, `vision_config.hidden_size`). */
  readonly fields = new Map<string, string>();

  /** keys a spec must have to build the file's model (a spec without them would build another). */
  readonly needed = new Set<string>();

  put(key: string, field: string, value: number | boolean | string, needed = false): this {
    this.fields.set(key, field);
    if (needed) this.needed.add(key);
    return this.set(key, value);
  }
}

/**
 * `architectures` names the Python class that builds the checkpoint: LLaVA-1.5's, the VW-LMM
 * release's (visual_words/model/language_model/*.py) and transformers' plain decoders. Only the
 * pif class changes Kiln's graph (config value `pif`); the others build the graph the spec has.
 */
const ARCHITECTURES: Record<string, { pif: boolean; llamaOnly: boolean }> = {
  LlavaLlamaForCausalLM: { pif: false, llamaOnly: false },
  LlavaMistralForCausalLM: { pif: false, llamaOnly: false },
  vwLlamaForCausalLM: { pif: false, llamaOnly: false },
  vwMistralForCausalLM: { pif: false, llamaOnly: false },
  // vw_pif_llama.py: LlamaForCausalLM + vwPifMetaForCausalLM; the release has no Mistral pif class.
  vwPifLlamaForCausalLM: { pif: true, llamaOnly: true },
  LlamaForCausalLM: { pif: false, llamaOnly: false },
  MistralForCausalLM: { pif: false, llamaOnly: false },
};

/** The pif flag `architectures` implies, or undefined when the file has no architectures. */
function pifOf(obj: Json, modelType: string, file: string): boolean | undefined {
  const v = obj.architectures;
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length === 0 || v.some((a) => typeof a !== 'string')) {
    throw new KilnError(`field "architectures" must be a non-empty list of class names, got ${JSON.stringify(v)}`, { file });
  }
  const known = (v as string[]).map((a) => {
    const arch = ARCHITECTURES[a];
    if (!arch) throw new KilnError(`field "architectures" names ${JSON.stringify(a)}, which Kiln cannot build; supported: ${Object.keys(ARCHITECTURES).join(', ')}`, { file });
    if (arch.llamaOnly && !LLAMA_TYPES.has(modelType)) {
      throw new KilnError(`field "architectures" names ${a}, a LLaMA class, but "model_type" is ${JSON.stringify(modelType)}`, { file });
    }
    return arch.pif;
  });
  if (new Set(known).size > 1) throw new KilnError(`field "architectures" mixes pseudo-image-feature and plain classes: ${JSON.stringify(v)}`, { file });
  return known[0];
}

type Json = Record<string, unknown>;

const LLAMA_DEFAULTS = {
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  tie_word_embeddings: false,
};
const MISTRAL_DEFAULTS = { ...LLAMA_DEFAULTS, num_key_value_heads: 8, sliding_window: 4096 };

const TEXT_MODEL_TYPES: Record<string, Json> = {
  llama: LLAMA_DEFAULTS,
  llava: LLAMA_DEFAULTS,
  llava_llama: LLAMA_DEFAULTS,
  mistral: MISTRAL_DEFAULTS,
  llava_mistral: MISTRAL_DEFAULTS,
};

const LLAMA_TYPES = new Set(['llama', 'llava', 'llava_llama']);

const CLIP_VISION_DEFAULTS: Json = {
  num_channels: 3,
  layer_norm_eps: 1e-5,
  hidden_act: 'quick_gelu',
};

/** Typed field access: the file's value (null counts as absent) or the default, else an error. */
class Fields {
  constructor(
    private readonly json: Json,
    private readonly defaults: Json,
    private readonly file: string,
    private readonly prefix = '',
  ) {}

  private fail(key: string, want: string, got: unknown): never {
    if (got === undefined) {
      throw new KilnError(`field "${this.prefix}${key}" is missing (or null); it must be ${want}, and it has no default: it sets the model's size`, { file: this.file });
    }
    throw new KilnError(`field "${this.prefix}${key}" must be ${want}, got ${JSON.stringify(got)}`, { file: this.file });
  }

  raw(key: string): unknown {
    const v = Object.hasOwn(this.json, key) ? this.json[key] : undefined;
    return v === undefined || v === null ? this.defaults[key] : v;
  }

  present(key: string): boolean {
    return this.raw(key) !== undefined;
  }

  int(key: string, min = 1): number {
    const v = this.raw(key);
    if (!Number.isSafeInteger(v) || (v as number) < min) this.fail(key, min === 1 ? 'a positive integer' : `an integer >= ${min}`, v);
    return v as number;
  }

  positive(key: string): number {
    const v = this.raw(key);
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(key, 'a positive number', v);
    return v;
  }

  bool(key: string): boolean {
    const v = this.raw(key);
    if (typeof v !== 'boolean') this.fail(key, 'true or false', v);
    return v;
  }

  str(key: string): string {
    const v = this.raw(key);
    if (typeof v !== 'string') this.fail(key, 'a string', v);
    return v;
  }

  /** The field must equal `want` (when present, or by default); Kiln's graph has no other variant. */
  expect(key: string, want: string | boolean, why: string): void {
    const v = this.raw(key);
    if (v !== undefined && v !== want) {
      throw new KilnError(`field "${this.prefix}${key}" is ${JSON.stringify(v)}, but ${why} (only ${JSON.stringify(want)} is supported)`, {
        file: this.file,
      });
    }
  }
}

/**
 * RoPE theta and the absence of scaling. transformers >= 5 writes `rope_parameters`
 * ({rope_theta, rope_type}) instead of a top-level rope_theta; older files may carry a legacy
 * `rope_scaling`. Anything but the default rope type changes the graph, which Kiln does not have.
 */
function ropeThetaOf(obj: Json, f: Fields, file: string): number {
  for (const key of ['rope_scaling', 'rope_parameters']) {
    const v = obj[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'object' || Array.isArray(v)) throw new KilnError(`field "${key}" must be an object or null, got ${JSON.stringify(v)}`, { file });
    const kind = (v as Json).rope_type ?? (v as Json).type ?? 'default';
    if (kind !== 'default') {
      throw new KilnError(`field "${key}" asks for ${JSON.stringify(kind)} RoPE scaling, but the spec's RoPE has none (only the default type is supported)`, { file });
    }
  }
  const params = obj.rope_parameters as Json | null | undefined;
  if (params?.rope_theta !== undefined && params.rope_theta !== null) {
    return new Fields(params, {}, file, 'rope_parameters.').positive('rope_theta');
  }
  return f.positive('rope_theta');
}

/** Overrides for a LLaVA (or plain LLaMA / Mistral) config.json. */
export function llavaConfigOverrides(json: unknown, file: string): ConfigOverrides {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new KilnError('config is not a JSON object', { file });
  const obj = json as Json;
  const modelType = obj.model_type;
  if (typeof modelType !== 'string' || !Object.hasOwn(TEXT_MODEL_TYPES, modelType)) {
    throw new KilnError(
      `field "model_type" is ${JSON.stringify(modelType)}; supported: ${Object.keys(TEXT_MODEL_TYPES).join(', ')}, clip_vision_model, clip`,
      { file },
    );
  }
  if (obj.text_config !== undefined) {
    throw new KilnError('field "text_config": the transformers-native LlavaForConditionalGeneration layout is not supported; use a LLaVA (liuhaotian-style) checkpoint', { file });
  }
  const f = new Fields(obj, TEXT_MODEL_TYPES[modelType]!, file);
  f.expect('hidden_act', 'silu', 'the LLaMA/Mistral MLP is SwiGLU');
  f.expect('attention_bias', false, 'the spec has no attention biases');
  f.expect('mlp_bias', false, 'the spec has no MLP biases');
  const ropeTheta = ropeThetaOf(obj, f, file);
  f.expect('mm_projector_type', 'mlp2x_gelu', 'VW-LMM\'s adapter is Linear-GELU-Linear');
  f.expect('mm_vision_select_feature', 'patch', 'the spec drops the class token');
  f.expect('mm_patch_merge_type', 'flat', 'the spec splices the patch features in order');

  const out = new ConfigOverrides();
  const hidden = f.int('hidden_size');
  const heads = f.int('num_attention_heads');
  const kvHeads = f.present('num_key_value_heads') ? f.int('num_key_value_heads') : heads;
  if (heads % kvHeads !== 0) {
    throw new KilnError(`field "num_key_value_heads" (${kvHeads}) must divide num_attention_heads (${heads})`, { file });
  }
  let headDim: number;
  if (f.present('head_dim')) headDim = f.int('head_dim');
  else if (hidden % heads === 0) headDim = hidden / heads;
  else throw new KilnError(`field "hidden_size" (${hidden}) is not a multiple of num_attention_heads (${heads}) and there is no head_dim`, { file });
  out.put('text.vocab', 'vocab_size', f.int('vocab_size'));
  out.put('text.hidden', 'hidden_size', hidden);
  out.put('text.layers', 'num_hidden_layers', f.int('num_hidden_layers'));
  out.put('text.heads', 'num_attention_heads', heads);
  out.put('text.kv_heads', 'num_key_value_heads', kvHeads);
  out.put('text.head_dim', 'head_dim', headDim);
  out.put('text.ffn', 'intermediate_size', f.int('intermediate_size'));
  out.put('text.eps', 'rms_norm_eps', f.positive('rms_norm_eps'));
  out.put('text.rope_theta', 'rope_theta', ropeTheta);
  out.put('text.tie_word_embeddings', 'tie_word_embeddings', f.bool('tie_word_embeddings'));
  if (modelType === 'mistral' || modelType === 'llava_mistral') {
    // null is "no window" here, not "the default": Fields.raw would read it as absent.
    out.put('text.sliding_window', 'sliding_window', obj.sliding_window === null ? 0 : f.int('sliding_window'));
  } else {
    // LLaMA's attention has no window whatever the file says: a Mistral spec config's default
    // window must not apply to a LLaMA checkpoint.
    out.put('text.sliding_window', 'model_type', 0);
  }
  out.put('projector_hidden', 'hidden_size', hidden);
  const pif = pifOf(obj, modelType, file);
  // A spec without `pif` must not build a pif checkpoint as a plain one.
  if (pif !== undefined) out.put('pif', 'architectures', pif, pif);
  if (f.present('mm_hidden_size')) out.put('vision.width', 'mm_hidden_size', f.int('mm_hidden_size'));
  if (f.present('mm_vision_select_layer')) {
    const v = f.raw('mm_vision_select_layer');
    if (!Number.isSafeInteger(v)) {
      throw new KilnError(`field "mm_vision_select_layer" must be an integer, got ${JSON.stringify(v)}`, { file });
    }
    out.put('vision.select_layer', 'mm_vision_select_layer', v as number);
  }
  // Kiln's training checkpoints carry the tower in model.safetensors and its config here, under
  // the name transformers' own LLaVA config gives it, so that the folder alone rebuilds the model
  // (compiler/checkpoint/hf-config-write.ts). LLaVA's loader ignores the key.
  if (obj.vision_config !== undefined && obj.vision_config !== null) {
    const vision = clipConfigOverrides({ vision_config: obj.vision_config }, file);
    for (const [key, value] of vision) {
      const field = vision.fields.get(key)!;
      if (out.has(key) && out.get(key) !== value) {
        throw new KilnError(`field "${field}" is ${JSON.stringify(value)} but "${out.fields.get(key)}" is ${JSON.stringify(out.get(key))}; they must agree`, { file });
      }
      out.put(key, out.has(key) ? out.fields.get(key)! : field, value);
    }
  }
  return out;
}


/** Overrides for a CLIPVisionModel config.json or a CLIPModel one (its `vision_config`). */
export function clipConfigOverrides(json: unknown, file: string): ConfigOverrides {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new KilnError('config is not a JSON object', { file });
  let obj = json as Json;
  let prefix = '';
  if (obj.model_type !== 'clip_vision_model') {
    const vc = obj.vision_config ?? {};
    if (typeof vc !== 'object' || vc === null || Array.isArray(vc)) {
      throw new KilnError(`field "vision_config" must be an object, got ${JSON.stringify(vc)}`, { file });
    }
    obj = vc as Json;
    prefix = 'vision_config.';
  }
  const f = new Fields(obj, CLIP_VISION_DEFAULTS, file, prefix);
  f.expect('hidden_act', 'quick_gelu', 'the spec\'s CLIP MLP uses quick_gelu as OpenAI CLIP does');
  const width = f.int('hidden_size');
  const heads = f.int('num_attention_heads');
  if (width % heads !== 0) {
    throw new KilnError(`field "${prefix}hidden_size" (${width}) is not a multiple of num_attention_heads (${heads})`, { file });
  }
  const imageSize = f.int('image_size');
  const patch = f.int('patch_size');
  if (imageSize % patch !== 0) {
    throw new KilnError(`field "${prefix}image_size" (${imageSize}) is not a multiple of patch_size (${patch})`, { file });
  }
  return new ConfigOverrides()
    .put('vision.width', `${prefix}hidden_size`, width)
    .put('vision.mlp', `${prefix}intermediate_size`, f.int('intermediate_size'))
    .put('vision.layers', `${prefix}num_hidden_layers`, f.int('num_hidden_layers'))
    .put('vision.heads', `${prefix}num_attention_heads`, heads)
    .put('vision.image_size', `${prefix}image_size`, imageSize)
    .put('vision.patch', `${prefix}patch_size`, patch)
    .put('vision.channels', `${prefix}num_channels`, f.int('num_channels'))
    .put('vision.eps', `${prefix}layer_norm_eps`, f.positive('layer_norm_eps'));
}

/** Parses config.json text and maps it by kind: CLIP when model_type says so or there is a vision_config. */
export function parseHfConfig(text: string, file: string): ConfigOverrides {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new KilnError(`not valid JSON: ${(e as Error).message}`, { file, cause: e });
  }
  const obj = (typeof json === 'object' && json !== null ? json : {}) as Json;
  // transformers-native LLaVA configs also nest a vision_config; their model_type says llava.
  const isClip = obj.model_type === 'clip_vision_model' || obj.model_type === 'clip' || (obj.model_type === undefined && obj.vision_config !== undefined);
  return isClip ? clipConfigOverrides(json, file) : llavaConfigOverrides(json, file);
}

export function readHfConfig(path: string): ConfigOverrides {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (e) {
    throw new KilnError(`cannot read: ${describeFsError(e)}`, { file: path, cause: e });
  }
  return parseHfConfig(text, path);
}
