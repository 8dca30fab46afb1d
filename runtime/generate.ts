// Token generation with a KV cache, on nothing but the runtime: the sampling rules of
// transformers' generate(), the loop over a prefill and decode steps, left padding for several
// prompts, streamed text, and a step runner over an artefact whose `prefill` and `decode` entries
// share the parameters and the caches (compiled by compiler/exec/generate.ts from
// compiler/passes/kv-cache.ts). `kiln generate`, the typed bindings, the browser page and the Node
// service all run this one loop.
import type { GenerationDecl } from './artefact.js';
import { KilnError } from './errors.js';
import { seededRandom } from './random.js';
import type { HostTensor } from './tensor.js';
import type { ArtefactProgram, RunOptions } from './webgpu/program.js';

/** The input of left-padded generation entries: each row's first real position [rows] i32. */
export const PROMPT_START = 'prompt_start';

/**
 * Runs the two entries: logits [rows * vocab] (row-major) of the last prompt position of each
 * row, then of each row's fed token.
 */
export interface StepRunner {
  /**
   * `feeds`: the prompt's inputs (input_ids [rows, T], pixel_values [rows, ...], and for
   * left-padded graphs prompt_start [rows]); fills the cache.
   */
  prefill(feeds: ReadonlyMap<string, HostTensor>): Promise<Float32Array>;
  /** one token per row at cache position `position` (the prompt fills 0 .. promptLength - 1). */
  decode(token: number | readonly number[], position: number): Promise<Float32Array>;
  destroy(): void;
}

/** What the loop needs to know of the entries: rows per call, the prompt's decoder length, the cache's positions. */
export interface GenerationShape {
  /** prompts per call (the batch dim of both entries). */
  readonly rows: number;
  /** the decoder's length of the prompt (input_ids' T with the image spliced in): the first decode position. */
  readonly promptLength: number;
  /** KV cache positions: decoding stops when they are full. */
  readonly capacity: number;
  /** whether both entries take PROMPT_START (prompts left-padded). */
  readonly leftPadded: boolean;
}

const tokenFeed = (t: number | readonly number[]): HostTensor => {
  const ids = typeof t === 'number' ? [t] : t;
  return { dtype: 'i32', shape: [ids.length, 1], data: Int32Array.from(ids) };
};

/**
 * The decode step's feeds: input_ids [rows, 1] (i32), position [] (i32, the cache position the
 * tokens are written at), and for left-padded entries the prefill's PROMPT_START again.
 * @throws KilnError for left-padded entries when the prefill was fed no PROMPT_START.
 */
export function decodeFeeds(g: Pick<GenerationShape, 'leftPadded'>, token: number | readonly number[], position: number, start: HostTensor | undefined): Map<string, HostTensor> {
  const feeds = new Map<string, HostTensor>([
    ['input_ids', tokenFeed(token)],
    ['position', { dtype: 'i32', shape: [], data: Int32Array.of(position) }],
  ]);
  if (g.leftPadded) {
    if (!start) throw new KilnError(`left-padded generation: the prefill was fed no ${PROMPT_START}`);
    feeds.set(PROMPT_START, start);
  }
  return feeds;
}

/**
 * The generation entries of a loaded artefact (`kiln compile --entries prefill,decode`), as
 * compiled: the manifest's `generation` block gives rows, prompt length and capacity.
 * @throws KilnError when the artefact has no prefill/decode entries or no generation block.
 */
export function generationOf(program: ArtefactProgram): GenerationDecl {
  const g = program.manifest.generation;
  if (!g || !program.manifest.entries['prefill'] || !program.manifest.entries['decode'])
    throw new KilnError(`the artefact has no generation entries (entries: ${Object.keys(program.manifest.entries).join(', ')}); compile it with --entries prefill,decode`);
  return g;
}

/**
 * A StepRunner over an artefact's `prefill` and `decode` entries: the weights and the KV caches
 * stay in `program.store`; each step reads back only the logits [rows, 1, vocab] (f32).
 * `runOptions` goes to every run as it is at that run (a profiler getter can start timing later).
 */
export function artefactStepRunner(program: ArtefactProgram, runOptions: RunOptions = {}): StepRunner {
  const g = generationOf(program);
  const logits = async (entry: string, feeds: ReadonlyMap<string, HostTensor>): Promise<Float32Array> => {
    const t = (await program.run(entry, feeds, ['logits'], runOptions)).get('logits')!;
    return t.data instanceof Float32Array ? t.data : Float32Array.from(t.data);
  };
  let start: HostTensor | undefined;
  return {
    prefill: (feeds) => {
      start = feeds.get(PROMPT_START);
      return logits('prefill', feeds);
    },
    decode: (token, position) => logits('decode', decodeFeeds(g, token, position, start)),
    destroy: () => undefined,
  };
}

export interface SamplingOptions {
  /** 0 or undefined with no top-k/top-p: greedy. */
  readonly temperature?: number;
  readonly topK?: number;
  readonly topP?: number;
  readonly seed?: number;
}

/** The first index of the largest logit (torch.argmax's tie rule). A NaN logit is an error. */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 0; i < logits.length; i++) {
    if (Number.isNaN(logits[i]!)) throw new KilnError(`logit ${i} is NaN: the model's output is not a number, so no token can be chosen`);
    if (logits[i]! > logits[best]!) best = i;
  }
  return best;
}

/** Whether these options sample (any of temperature > 0, top-k, top-p) rather than take the argmax. */
export function isSampling(o: SamplingOptions): boolean {
  if (o.temperature === 0) return false;
  return o.temperature !== undefined || o.topK !== undefined || o.topP !== undefined;
}

/**
 * The next token as transformers' sampling picks it: logits / temperature, then top-k (the k
 * largest; ties at the k-th value kept, as TopKLogitsWarper's `< kth value` filter keeps them),
 * then top-p (TopPLogitsWarper: the smallest set of the most probable tokens whose probability
 * reaches p, never fewer than one), then one draw from the renormalised distribution.
 */
export function sampleToken(logits: ArrayLike<number>, o: SamplingOptions, random: () => number): number {
  if (!isSampling(o)) return argmax(logits);
  const temperature = o.temperature ?? 1;
  const n = logits.length;
  const z = Float64Array.from({ length: n }, (_, i) => logits[i]! / temperature);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => z[b]! - z[a]! || a - b);
  let keep = n;
  if (o.topK !== undefined && o.topK > 0 && o.topK < n) {
    const kth = z[order[o.topK - 1]!]!;
    keep = o.topK;
    while (keep < n && z[order[keep]!]! >= kth) keep++;
  }
  const max = z[order[0]!]!;
  const w = order.slice(0, keep).map((i) => Math.exp(z[i]! - max));
  let total = w.reduce((a, x) => a + x, 0);
  if (o.topP !== undefined && o.topP < 1) {
    let acc = 0;
    let m = 0;
    while (m < w.length) {
      acc += w[m]! / total;
      m++;
      if (acc >= o.topP) break;
    }
    w.length = Math.max(1, m);
    total = w.reduce((a, x) => a + x, 0);
  }
  let r = random() * total;
  for (let j = 0; j < w.length; j++) {
    r -= w[j]!;
    if (r < 0) return order[j]!;
  }
  return order[w.length - 1]!;
}

export interface GenerateOptions extends SamplingOptions {
  readonly maxTokens: number;
  /** stop after emitting one of these (it is included in the tokens). */
  readonly eos: readonly number[];
  /**
   * run the prefill and one decode step once before the timed run, so the figures leave out what
   * the first dispatch of each kernel costs (lavapipe compiles shaders then). The decode writes
   * cache position promptLength, which the timed run overwrites before reading it.
   */
  readonly warmup?: boolean;
  /** called with each token as it is chosen (streaming). */
  readonly onToken?: (token: number) => void;
}

export type StopReason = 'eos' | 'max-tokens' | 'cache-full';

export interface GenerateResult {
  readonly tokens: number[];
  readonly prefillMs: number;
  /** decode steps per second over the steps after the prefill (NaN when there were none). */
  readonly decodeTokensPerS: number;
  /** why it stopped. */
  readonly stop: StopReason;
}

export interface BatchGenerateResult {
  /** per prompt: its tokens (through its end-of-sequence token) and why it stopped. */
  readonly rows: { tokens: number[]; stop: StopReason }[];
  readonly prefillMs: number;
  /** decode steps per second (each step decodes one token of every row). */
  readonly decodeStepsPerS: number;
}

/**
 * Generates up to `maxTokens` tokens after the prompt. The cache holds `g.capacity` positions:
 * the prompt takes `g.promptLength`, each decoded token one more.
 */
export async function generateTokens(runner: StepRunner, g: GenerationShape, prompt: ReadonlyMap<string, HostTensor>, o: GenerateOptions): Promise<GenerateResult> {
  const r = await generateRows(runner, g, prompt, { ...o, ...(o.onToken ? { onToken: (t: number) => o.onToken!(t) } : {}) });
  return { tokens: r.rows[0]!.tokens, stop: r.rows[0]!.stop, prefillMs: r.prefillMs, decodeTokensPerS: r.decodeStepsPerS };
}

/**
 * Generates for each of `g.rows` prompts (left-padded when several) until every row has emitted
 * an end-of-sequence token or `maxTokens`, or the cache is full. Each row samples from its own
 * stream seeded with `seed`, so a row gets the tokens it gets alone. A finished row keeps being
 * fed its last token (its logits are no longer read), as transformers feeds a finished row padding.
 */
export async function generateRows(
  runner: StepRunner,
  g: GenerationShape,
  prompt: ReadonlyMap<string, HostTensor>,
  o: Omit<GenerateOptions, 'onToken'> & { readonly onToken?: (token: number, row: number) => void },
): Promise<BatchGenerateResult> {
  const R = g.rows;
  const randoms = Array.from({ length: R }, () => seededRandom(o.seed ?? 0));
  if (o.warmup) {
    await runner.prefill(prompt);
    if (g.capacity > g.promptLength) await runner.decode(new Array<number>(R).fill(0), g.promptLength);
  }
  const t0 = performance.now();
  let logits = await runner.prefill(prompt);
  const prefillMs = performance.now() - t0;
  const V = logits.length / R;
  const rows = Array.from({ length: R }, () => ({ tokens: [] as number[], stop: 'max-tokens' as StopReason }));
  const done = new Array<boolean>(R).fill(false);
  const last = new Array<number>(R).fill(0);
  let position = g.promptLength;
  const t1 = performance.now();
  let steps = 0;
  for (;;) {
    for (let r = 0; r < R; r++) {
      if (done[r]) continue;
      const token = sampleToken(logits.subarray(r * V, (r + 1) * V), o, randoms[r]!);
      rows[r]!.tokens.push(token);
      last[r] = token;
      o.onToken?.(token, r);
      if (o.eos.includes(token)) {
        rows[r]!.stop = 'eos';
        done[r] = true;
      } else if (rows[r]!.tokens.length >= o.maxTokens) done[r] = true;
    }
    if (done.every(Boolean)) break;
    if (position >= g.capacity) {
      for (let r = 0; r < R; r++) if (!done[r]) rows[r]!.stop = 'cache-full';
      break;
    }
    logits = await runner.decode(R === 1 ? last[0]! : last, position++);
    steps++;
  }
  const decodeS = (performance.now() - t1) / 1000;
  return { rows, prefillMs, decodeStepsPerS: steps > 0 ? steps / decodeS : NaN };
}

/**
 * Several prompts as one left-padded batch: input_ids [rows, T] with `padId` in front of the
 * shorter prompts, pixel_values stacked [rows, ...], and prompt_start [rows] (each row's number of
 * padding positions). Each prompt is input_ids [1, n] and, when any has one, pixel_values [1, ...].
 * `length`: pad every row to it (a compiled prefill's input_ids length) rather than to the longest.
 * @throws KilnError when the prompts hold different numbers of image placeholders (their spliced
 *   lengths would differ) or only some have pixel_values.
 */
export function leftPadPrompts(prompts: readonly ReadonlyMap<string, HostTensor>[], padId: number, imageToken: number, length?: number): Map<string, HostTensor> {
  const ids = prompts.map((p) => Array.from(p.get('input_ids')!.data));
  const images = ids.map((row) => row.filter((t) => t === imageToken).length);
  if (images.some((n) => n !== images[0])) throw new KilnError(`the prompts hold ${images.join(', ')} images; prompts generated together must hold the same number (each has its image in front)`);
  const longest = Math.max(...ids.map((r) => r.length));
  if (length !== undefined && longest > length) throw new KilnError(`a prompt of ${longest} tokens does not fit the ${length} the prefill was compiled for`);
  const T = length ?? longest;
  const data = new Int32Array(prompts.length * T);
  const start = new Int32Array(prompts.length);
  ids.forEach((row, r) => {
    start[r] = T - row.length;
    data.fill(padId, r * T, r * T + start[r]!);
    data.set(row, r * T + start[r]!);
  });
  const out = new Map<string, HostTensor>([
    ['input_ids', { dtype: 'i32', shape: [prompts.length, T], data }],
    [PROMPT_START, { dtype: 'i32', shape: [prompts.length], data: start }],
  ]);
  const px = prompts.map((p) => p.get('pixel_values'));
  if (px.some((p) => p !== undefined)) {
    if (px.some((p) => p === undefined)) throw new KilnError('only some of the prompts have an image');
    const per = px[0]!.data.length;
    const all = new Float32Array(per * px.length);
    px.forEach((p, r) => all.set(p!.data, r * per));
    out.set('pixel_values', { dtype: 'f32', shape: [px.length, ...px[0]!.shape.slice(1)], data: all });
  }
  return out;
}

/**
 * Text of the tokens so far as it comes, as a whole-sequence decode gives it: each call decodes
 * every token seen and returns what is new past the text already returned. A decode ending in
 * U+FFFD (an incomplete UTF-8 character from byte-fallback or ByteLevel tokens) is held back
 * until later tokens complete it; `flush()` returns whatever remains.
 */
export class TextStream {
  private readonly ids: number[] = [];
  private shown = 0;

  constructor(private readonly decode: (ids: readonly number[]) => string) {}

  push(token: number): string {
    this.ids.push(token);
    const text = this.decode(this.ids);
    if (text.endsWith('\uFFFD')) return '';
    return this.take(text);
  }

  flush(): string {
    return this.take(this.decode(this.ids));
  }

  private take(text: string): string {
    const fresh = text.length > this.shown ? text.slice(this.shown) : '';
    this.shown = Math.max(this.shown, text.length);
    return fresh;
  }
}

/** One prompt for `generate`: token ids (the image placeholder included) and, when the model takes one, its image. */
export interface GenerationPrompt {
  /** at most the manifest's `generation.promptTokens` ids (exactly that many when the entries are not left-padded). */
  readonly input_ids: ArrayLike<number>;
  /** the preprocessed image, f32 [1, channels, height, width] (or without the leading 1). */
  readonly pixel_values?: HostTensor;
}

/**
 * Generates for up to `generation.rows` prompts at once over an artefact's `prefill` and `decode`
 * entries (`kiln compile --entries prefill,decode`), as `kiln generate` does: left-padded to the
 * compiled prompt length with `padId` (default 0; the padding is masked), each row sampled from
 * its own stream seeded with `seed` so that a prompt gets the tokens it gets alone. Fewer prompts
 * than rows fill the remaining rows with the first prompt; their results are dropped.
 * @throws KilnError when there are no prompts or more than the rows, a prompt is longer than the
 *   compiled prompt (or, without left padding, of another length), or only some have an image.
 */
export async function generate(
  program: ArtefactProgram,
  prompts: readonly GenerationPrompt[],
  o: Omit<GenerateOptions, 'onToken'> & { readonly padId?: number; readonly onToken?: (token: number, row: number) => void },
): Promise<BatchGenerateResult> {
  const g = generationOf(program);
  if (prompts.length === 0 || prompts.length > g.rows) throw new KilnError(`${prompts.length} prompts given; the artefact generates for 1 to ${g.rows} at once`);
  const maps = prompts.map((p, r) => {
    if (p.input_ids.length > g.promptTokens || (!g.leftPadded && p.input_ids.length !== g.promptTokens))
      throw new KilnError(`prompt ${r} has ${p.input_ids.length} tokens; the prefill was compiled for ${g.leftPadded ? 'at most ' : ''}${g.promptTokens}`);
    const m = new Map<string, HostTensor>([['input_ids', { dtype: 'i32', shape: [1, p.input_ids.length], data: Int32Array.from(p.input_ids) }]]);
    if (p.pixel_values) {
      const px = p.pixel_values;
      m.set('pixel_values', { dtype: 'f32', shape: px.shape.length === 3 ? [1, ...px.shape] : px.shape, data: px.data instanceof Float32Array ? px.data : Float32Array.from(px.data) });
    }
    return m;
  });
  while (maps.length < g.rows) maps.push(maps[0]!);
  const feeds = g.leftPadded ? leftPadPrompts(maps, o.padId ?? 0, g.imageToken ?? Number.NaN, g.promptTokens) : maps[0]!;
  const runner = artefactStepRunner(program);
  const { onToken } = o;
  const r = await generateRows(runner, g, feeds, { ...o, ...(onToken ? { onToken: (t: number, row: number) => row < prompts.length && onToken(t, row) } : {}) });
  return { ...r, rows: r.rows.slice(0, prompts.length) };
}
