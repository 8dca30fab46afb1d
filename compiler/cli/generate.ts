// `kiln generate`: greedy decoding or sampling from a checkpoint, with the model's prefill and
// decode step compiled as two entries over one KV cache (compiler/passes/kv-cache.ts).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../check/index.js';
import { KilnError } from '../../runtime/errors.js';
import { getDevice } from '../../runtime/node/device.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { generateRows, generateTokens, generationGraphs, leftPadPrompts, referenceRunner, TextStream, webgpuRunner, type StepRunner } from '../exec/generate.js';
import { IMAGE_PLACEHOLDER, IMAGE_TOKEN_ID } from '../../data/encode.js';
import { readTokenizerDir } from '../../data/node.js';
import { CLIP_MEAN, CLIP_STD, loadImageFile, preprocessLlava } from '../../data/image-node.js';
import { renderChatTemplate, renderMistral, renderVicunaV1, type TemplateName } from '../../data/template.js';
import type { TextTokenizer } from '../../data/tokenizer.js';
import type { CheckedModel } from '../check/index.js';
import { chooseTemplate, configNumber } from './data-source.js';
import { checkOptions, defineCommand, specArg, specOptions, type Args, type OptionValues } from './args.js';
import { checkFolderRoles, checkpointOverrides } from './loss.js';
import { loadBatch, loadModelParams } from './model-inputs.js';
import type { Output } from './output.js';
import { loadAndCheck } from './spec.js';
import { numel } from '../../runtime/tensor.js';
import { KernelProfiler } from '../../runtime/webgpu/profile.js';
import { profileReport } from './profile.js';

const generateOptions = {
  checkpoint: { type: 'string', arg: 'DIR', help: "Hugging Face folder (LLaVA-1.5 layout); its config.json's eos_token_id stops" },
  'vision-tower': { type: 'string', arg: 'DIR', help: 'Hugging Face CLIP folder (CLIPVisionModel or CLIPModel)' },
  image: { type: 'string', multiple: true, arg: 'FILE', help: 'PNG or JPEG, preprocessed as LLaVA-1.5 does (pad to square, resize, crop); repeatable: one per --prompt, or one for them all' },
  prompt: {
    type: 'string',
    multiple: true,
    arg: 'TEXT',
    help: 'the question: templated as one user turn with the image in front, up to where the answer starts ("ASSISTANT:" for vicuna_v1, "[/INST]" for mistral, add_generation_prompt for a chat_template); repeatable: several prompts',
  },
  tokenizer: { type: 'string', arg: 'DIR', help: "tokenizer.json (+ tokenizer_config.json); default: the checkpoint folder's" },
  template: {
    type: 'string',
    arg: 'NAME',
    help: "vicuna_v1, mistral, chat_template or auto; default: the tokenizer's chat_template when its tokenizer_config.json has one, else auto (as kiln data chooses: the checkpoint's model type, else the spec config's name)",
  },
  batch: {
    type: 'string',
    arg: 'FILE',
    help: 'safetensors batch: the prompt is row 0 of input_ids (with the image placeholder) through its last token (the last attention_mask == 1 position when the batch has attention_mask, else the whole row), with pixel_values[0]',
  },
  rows: { type: 'string', arg: 'LIST', help: 'with --batch: the rows to generate from, e.g. 0,2 or all (default 0)' },
  'max-tokens': { type: 'string', arg: 'N', help: 'tokens to generate at most (default 32); the end-of-sequence token stops earlier and is included' },
  cache: { type: 'string', arg: 'N', help: 'KV cache capacity in positions (default: prompt length + max tokens)' },
  temperature: { type: 'string', arg: 'T', help: 'sample with logits / T (0: greedy, the default)' },
  'top-k': { type: 'string', arg: 'K', help: 'sample from the K most probable tokens' },
  'top-p': { type: 'string', arg: 'P', help: 'sample from the smallest set of most probable tokens reaching probability P' },
  seed: { type: 'string', arg: 'S', help: "the sampler's seed (default 0): the same seed gives the same tokens" },
  backend: { type: 'string', arg: 'NAME', help: 'webgpu (default when an adapter exists) or cpu (the reference executor); webgpu runs the prompt and one step once untimed first (shader compilation)' },
  profile: {
    type: 'boolean',
    help: 'time every kernel of the prefill and the decode steps with WebGPU timestamp queries (not the untimed first run) and print kiln profile\'s table at the end, on stderr (--json: under "profile"); needs WebGPU',
  },
  ...specOptions,
  json: {
    type: 'boolean',
    help: '{"tokens": [...], "text": "..." (null without a tokenizer), "prefill_ms": x, "decode_tokens_per_s": y, "stop": why, "backend": name}; several prompts: {"rows": [{"tokens", "text", "stop"}], "prefill_ms", "decode_tokens_per_s" (tokens of all rows together), "backend"}',
  },
} as const;

export const generateCommand = defineCommand({
  summary: 'generate tokens after a prompt (greedy or sampled) with a KV cache: prefill once, one decode step per token',
  usage: 'SPEC --checkpoint DIR [--vision-tower DIR] (--image FILE --prompt TEXT | --batch FILE) [options]',
  description:
    'Generates tokens after a prompt: the prompt runs once (prefill) and fills a KV cache per layer, then one compiled decode step per token reads it (the prefix is never recomputed). Several prompts run together, left-padded to one length with their padding masked, each giving the tokens it gives alone.\n\nText streams to stdout as it comes (token ids without a tokenizer); several prompts print one line per prompt when all are done, "[i] text". Sampling: each prompt draws from its own stream seeded with --seed, so it samples what it samples alone.',
  args: [specArg],
  options: generateOptions,
  examples: [
    {
      run: 'kiln generate models/vwlmm.kiln --config tiny --checkpoint test/golden/llama_b2/llava --vision-tower test/golden/llama_b2/clip --batch test/golden/llama_b2/batch.safetensors --max-tokens 8',
      does: "greedy tokens after row 0 of a batch; stops at config.json's eos_token_id or --max-tokens",
    },
    {
      run: "kiln generate models/vwlmm.kiln --config tiny --checkpoint CKPT --vision-tower CLIP --image photo.png --prompt 'What is in the picture?' --temperature 0.7 --top-p 0.9 --seed 1",
      does: 'sample an answer about an image, reproducibly by seed',
    },
  ],
  run: runGenerate,
});

function number(flag: string, v: string | undefined, kind: 'int' | 'positive-int' | 'float'): number | undefined {
  if (v === undefined) return undefined;
  const x = Number(v);
  const ok = v.trim() !== '' && Number.isFinite(x) && (kind === 'float' || (Number.isSafeInteger(x) && (kind === 'int' ? x >= 0 : x > 0)));
  if (!ok) throw new UsageError(`--${flag} ${v}: expected ${kind === 'float' ? 'a number' : kind === 'int' ? 'a whole number >= 0' : 'a whole number > 0'}`);
  return x;
}

/** eos_token_id of the checkpoint's config.json (a number or a list), [] when it names none. */
export function eosTokenIds(dir: string): number[] {
  try {
    const json = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { eos_token_id?: unknown; text_config?: { eos_token_id?: unknown } };
    const v = json.eos_token_id ?? json.text_config?.eos_token_id;
    if (typeof v === 'number') return [v];
    if (Array.isArray(v)) return v.filter((x): x is number => typeof x === 'number');
  } catch {
    // checkpointOverrides has already refused a folder without a readable config.json.
  }
  return [];
}

/**
 * The prompt of a batch file: row `row` (default 0) of input_ids through its last token
 * (attention_mask's last 1 when present, else the whole row) as input_ids [1, T], and
 * pixel_values[row] as [1, ...].
 */
export function promptFromBatch(batch: ReadonlyMap<string, HostTensor>, file: string, row = 0): Map<string, HostTensor> {
  const ids = batch.get('input_ids');
  if (!ids) throw new KilnError('the batch has no input_ids', { file });
  const [B, T] = ids.shape as [number, number];
  if (row >= B) throw new KilnError(`the batch has ${B} rows; row ${row} was asked for (--rows)`, { file, tensor: 'input_ids' });
  let n = T;
  const mask = batch.get('attention_mask');
  if (mask) {
    n = 0;
    for (let t = 0; t < T; t++) if (mask.data[row * T + t] !== 0) n = t + 1;
    if (n === 0) throw new KilnError(`row ${row} of attention_mask is all 0: the prompt is empty`, { file, tensor: 'attention_mask' });
  }
  const out = new Map<string, HostTensor>([['input_ids', { dtype: 'i32', shape: [1, n], data: Int32Array.from(ids.data.slice(row * T, row * T + n)) }]]);
  const px = batch.get('pixel_values');
  if (px) {
    const per = numel(px.shape.slice(1));
    out.set('pixel_values', { dtype: 'f32', shape: [1, ...px.shape.slice(1)], data: Float32Array.from(px.data.slice(row * per, (row + 1) * per)) });
  }
  return out;
}

/** --rows: "all", or comma-separated row indices (default 0). */
export function parseRows(flag: string | undefined, rows: number): number[] {
  if (flag === undefined) return [0];
  if (flag.trim() === 'all') return Array.from({ length: rows }, (_, i) => i);
  const list = flag.split(',').map((x) => x.trim());
  const out = list.map(Number);
  if (list.some((x) => x === '') || out.some((x) => !Number.isSafeInteger(x) || x < 0)) throw new UsageError(`--rows ${flag}: expected all or row numbers such as 0,2`);
  return out;
}

/**
 * The template a generation prompt is made with: the flag when given (auto: as kiln data
 * chooses), else the tokenizer's chat_template when its tokenizer_config.json has one (the
 * checkpoint's own conversation format), else as kiln data chooses.
 */
export function generationTemplate(flag: string | undefined, checkpoint: string, tok: TextTokenizer, configName: string): TemplateName {
  if (flag === 'chat_template') {
    if (!tok.chatTemplate) throw new UsageError(`--template chat_template: the tokenizer (${tok.source}) has no chat_template in its tokenizer_config.json`);
    return 'chat_template';
  }
  if (flag === undefined && tok.chatTemplate) return 'chat_template';
  return chooseTemplate(flag, checkpoint, tok, configName);
}

/**
 * The prompt of --image/--prompt: one user turn "<image>\n" + the question (an "<image>" in the
 * question moves to the front, as LLaVA's preprocess_multimodal does), rendered with the template
 * up to where the answer starts, tokenised as LLaVA's tokenizer_image_token (BOS, the text before
 * the image, -200, the text after); pixel_values [1, 3, S, S] from LLaVA-1.5's preprocessing.
 */
export async function promptFromImage(model: CheckedModel, tok: TextTokenizer, template: string, image: string, prompt: string): Promise<Map<string, HostTensor>> {
  const question = `${IMAGE_PLACEHOLDER}\n${prompt.replaceAll(IMAGE_PLACEHOLDER, '').trim()}`.trim();
  let text: string;
  // A chat_template writes its own BOS (tokenised without special tokens, as in kiln data).
  let prefix: readonly number[] = tok.prefixIds;
  if (template === 'vicuna_v1') text = `${renderVicunaV1([{ from: 'human', value: question }], tok.eosToken).text}ASSISTANT:`;
  else if (template === 'mistral') text = renderMistral([{ from: 'human', value: question }], tok.eosToken).text;
  else if (template === 'chat_template' && tok.chatTemplate) {
    text = renderChatTemplate([{ from: 'human', value: question }], tok.chatTemplate, tok.bosToken, tok.eosToken, tok.source, { addGenerationPrompt: true }).text;
    prefix = [];
  } else throw new UsageError(`--template ${template}: generation prompts are made for vicuna_v1, mistral and a tokenizer's chat_template`);
  const ids: number[] = [...prefix];
  text.split(IMAGE_PLACEHOLDER).forEach((chunk, k) => {
    if (k > 0) ids.push(IMAGE_TOKEN_ID);
    ids.push(...tok.encode(chunk).ids);
  });
  const size = configNumber(model, 'vision.image_size');
  const pixels = preprocessLlava(await loadImageFile(image), { size, mean: CLIP_MEAN, std: CLIP_STD, padToSquare: true });
  return new Map<string, HostTensor>([
    ['input_ids', { dtype: 'i32', shape: [1, ids.length], data: Int32Array.from(ids) }],
    ['pixel_values', { dtype: 'f32', shape: [1, 3, size, size], data: pixels }],
  ]);
}

/**
 * `runner` with `start` called just before the timed prefill: generateRows' warmup (with `warmup`)
 * runs one prefill and at most one decode step first, so the timed prefill is the second prefill.
 */
function profileAfterWarmup(runner: StepRunner, warmup: boolean, start: () => void): StepRunner {
  let prefills = 0;
  return {
    prefill: (feeds) => {
      if (++prefills === (warmup ? 2 : 1)) start();
      return runner.prefill(feeds);
    },
    decode: (token, position) => runner.decode(token, position),
    destroy: () => runner.destroy(),
  };
}

async function runGenerate(values: OptionValues<typeof generateOptions>, args: Args, out: Output): Promise<number> {
  const spec = args[0]!;
  if (!values.checkpoint) throw new UsageError('--checkpoint DIR is required');
  const images = values.image ?? [];
  const questions = values.prompt ?? [];
  const fromImage = images.length > 0 || questions.length > 0;
  if (fromImage && values.batch) throw new UsageError('give either --image FILE --prompt TEXT or --batch FILE, not both');
  if (fromImage && (images.length === 0 || questions.length === 0)) throw new UsageError(images.length === 0 ? '--prompt needs --image FILE' : '--image needs --prompt TEXT');
  if (images.length > 1 && images.length !== questions.length) throw new UsageError(`${images.length} --image and ${questions.length} --prompt: give one image for all prompts, or one per prompt`);
  if (!fromImage && !values.batch) throw new UsageError('a prompt is required: --image FILE --prompt TEXT, or --batch FILE (its row 0)');
  if (values.rows !== undefined && !values.batch) throw new UsageError('--rows chooses rows of --batch FILE');
  if (values.backend !== undefined && values.backend !== 'cpu' && values.backend !== 'webgpu') throw new UsageError(`--backend ${values.backend}: expected webgpu or cpu`);
  const maxTokens = number('max-tokens', values['max-tokens'], 'positive-int') ?? 32;
  const cacheFlag = number('cache', values.cache, 'positive-int');
  const temperature = number('temperature', values.temperature, 'float');
  if (temperature !== undefined && temperature < 0) throw new UsageError(`--temperature ${values.temperature}: expected a number >= 0 (0: greedy)`);
  const topK = number('top-k', values['top-k'], 'positive-int');
  const topP = number('top-p', values['top-p'], 'float');
  if (topP !== undefined && !(topP > 0 && topP <= 1)) throw new UsageError(`--top-p ${values['top-p']}: expected a probability in (0, 1]`);
  const seed = number('seed', values.seed, 'int') ?? 0;
  if (values.profile && values.backend === 'cpu') throw new UsageError('--profile times WebGPU kernels: it does not apply to --backend cpu');
  if (values.backend === 'webgpu' || values.profile) await getDevice();

  const overrides = [...checkpointOverrides(values.checkpoint), ...checkpointOverrides(values['vision-tower'], '--vision-tower')];
  checkFolderRoles(values.checkpoint, values['vision-tower']);
  const model = loadAndCheck(spec, checkOptions(values, overrides), out);
  // The tokenizer: needed for --prompt, used for text when the checkpoint has one.
  const tokDir = values.tokenizer ?? (existsSync(join(values.checkpoint, 'tokenizer.json')) ? values.checkpoint : undefined);
  if (fromImage && !tokDir) throw new KilnError('no tokenizer.json in the checkpoint folder, and --prompt needs one to make input ids (pass --tokenizer DIR, or give the prompt as --batch FILE)', { file: values.checkpoint });
  const tok = tokDir ? readTokenizerDir(tokDir) : null;
  const origin = values.batch ?? images[0]!;
  const prompts: Map<string, HostTensor>[] = [];
  if (fromImage) {
    const template = generationTemplate(values.template, values.checkpoint, tok!, model.configName);
    for (const [i, q] of questions.entries()) prompts.push(await promptFromImage(model, tok!, template, images.length === 1 ? images[0]! : images[i]!, q));
  } else {
    const batch = loadBatch(model, values.batch!);
    for (const r of parseRows(values.rows, batch.get('input_ids')?.shape[0] ?? 0)) prompts.push(promptFromBatch(batch, values.batch!, r));
  }
  const rows = prompts.length;
  // Several prompts: one left-padded batch (the pad id is masked; the tokenizer's when there is one).
  const prompt = rows === 1 ? prompts[0]! : leftPadPrompts(prompts, tok?.padId ?? 0, IMAGE_TOKEN_ID);
  const T = prompt.get('input_ids')!.shape[1]!;
  // The decoder's prompt length (T with the image spliced in) comes from the graphs; build once
  // with a probe capacity when the flag does not fix it.
  const probe = generationGraphs(model.graph, { T, capacity: Number.MAX_SAFE_INTEGER, rows });
  const capacity = cacheFlag ?? probe.promptLength + maxTokens;
  if (probe.promptLength > capacity) throw new KilnError(`the prompt is ${probe.promptLength} positions long (with the image), longer than the KV cache (--cache ${capacity})`, { file: origin });
  const graphs = generationGraphs(model.graph, { T, capacity, rows });
  const params = loadModelParams(model, { checkpoint: values.checkpoint, visionTower: values['vision-tower'] }, (w) => out.stderr(`warning: ${w}`));
  let backend = values.backend ?? (values.profile ? 'webgpu' : undefined);
  if (backend === undefined) {
    try {
      await getDevice();
      backend = 'webgpu';
    } catch {
      backend = 'cpu';
    }
  }
  // --profile: the runner reads the profiler at each run; it is set from the timed prefill on.
  const profiler = values.profile ? new KernelProfiler() : undefined;
  let timing = false;
  let runner: StepRunner;
  try {
    runner = backend === 'cpu' ? referenceRunner(graphs, params) : await webgpuRunner(graphs, params, await getDevice(), { get profiler() { return timing ? profiler : undefined; } });
  } catch (e) {
    if (e instanceof KilnError) throw e;
    throw new KilnError((e as Error).message, { file: origin });
  }
  if (profiler) runner = profileAfterWarmup(runner, backend === 'webgpu', () => (timing = true));
  const profile = async () => (profiler ? profileReport(profiler, (await getDevice()).adapterName) : undefined);
  try {
    if (rows > 1) {
      const result = await generateRows(runner, graphs, prompt, {
        maxTokens,
        eos: eosTokenIds(values.checkpoint),
        ...(temperature !== undefined ? { temperature } : {}),
        ...(topK !== undefined ? { topK } : {}),
        ...(topP !== undefined ? { topP } : {}),
        seed,
        warmup: backend === 'webgpu',
      });
      const perS = Number.isFinite(result.decodeStepsPerS) ? Number((result.decodeStepsPerS * rows).toFixed(2)) : null;
      const prefillMs = Number(result.prefillMs.toFixed(1));
      const textOf = (ids: readonly number[]) => (tok ? tok.decode(ids) : null);
      const p = await profile();
      if (values.json) out.stdout(JSON.stringify({ rows: result.rows.map((r) => ({ tokens: r.tokens, text: textOf(r.tokens), stop: r.stop })), prefill_ms: prefillMs, decode_tokens_per_s: perS, backend, ...(p ? { profile: p.json } : {}) }));
      else {
        result.rows.forEach((r, i) => out.stdout(`[${i}] ${textOf(r.tokens) ?? r.tokens.join(' ')}`));
        out.stderr(`${rows} prompts: ${result.rows.map((r) => `${r.tokens.length} tokens (${r.stop})`).join(', ')}; prefill ${prefillMs} ms over ${rows} x ${graphs.promptLength} positions; decode ${perS ?? '-'} tokens/s; backend ${backend}`);
        if (p) out.stderr(p.text);
      }
      return 0;
    }
    const stream = !values.json;
    const text = tok ? new TextStream((ids) => tok.decode(ids)) : null;
    const result = await generateTokens(runner, graphs, prompt, {
      maxTokens,
      eos: eosTokenIds(values.checkpoint),
      ...(temperature !== undefined ? { temperature } : {}),
      ...(topK !== undefined ? { topK } : {}),
      ...(topP !== undefined ? { topP } : {}),
      seed,
      warmup: backend === 'webgpu',
      ...(stream ? { onToken: (t: number) => out.write(text ? text.push(t) : `${t} `) } : {}),
    });
    const perS = Number.isFinite(result.decodeTokensPerS) ? Number(result.decodeTokensPerS.toFixed(2)) : null;
    const prefillMs = Number(result.prefillMs.toFixed(1));
    const p = await profile();
    if (values.json) out.stdout(JSON.stringify({ tokens: result.tokens, text: tok ? tok.decode(result.tokens) : null, prefill_ms: prefillMs, decode_tokens_per_s: perS, stop: result.stop, backend, ...(p ? { profile: p.json } : {}) }));
    else {
      out.write(`${text ? text.flush() : ''}\n`);
      out.stderr(`${result.tokens.length} tokens (${result.stop}); prefill ${prefillMs} ms over ${graphs.promptLength} positions; decode ${perS ?? '-'} tokens/s; backend ${backend}`);
      if (p) out.stderr(p.text);
    }
  } finally {
    runner.destroy();
  }
  return 0;
}
