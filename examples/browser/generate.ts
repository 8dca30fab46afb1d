// Greedy generation over an artefact with `prefill` and `decode` entries (what
// compiler/exec/generate.ts compiles from compiler/passes/kv-cache.ts's graphs; the KV caches are
// the artefact's kv-cache state), with `kiln/runtime` alone, so the page and Node run the same
// loop. torch.argmax's tie rule (the first largest logit), as `kiln generate` picks greedily.
import { KilnError, type ArtefactProgram, type HostTensor } from 'kiln/runtime';

export interface GreedyOptions {
  /** the decoder's prompt length (input_ids' T with the image spliced in): the first decode position. */
  readonly promptLength: number;
  /** KV cache positions: decoding stops when they are full. */
  readonly capacity: number;
  readonly maxTokens: number;
  readonly onToken?: (token: number) => void;
}

/** The first index of the largest logit; a NaN logit is an error (no token can be chosen). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 0; i < logits.length; i++) {
    if (Number.isNaN(logits[i]!)) throw new KilnError(`logit ${i} is NaN: no token can be chosen`);
    if (logits[i]! > logits[best]!) best = i;
  }
  return best;
}

/** Runs `prefill` on `prompt` (input_ids [1, T], pixel_values [1, ...]), then greedy `decode` steps; the tokens chosen. */
export async function greedyTokens(program: ArtefactProgram, prompt: ReadonlyMap<string, HostTensor>, o: GreedyOptions): Promise<number[]> {
  const logits = async (entry: string, feeds: ReadonlyMap<string, HostTensor>) => (await program.run(entry, feeds, ['logits'])).get('logits')!.data;
  let next = await logits('prefill', prompt);
  const tokens: number[] = [];
  for (let position = o.promptLength; ; position++) {
    const token = argmax(next);
    tokens.push(token);
    o.onToken?.(token);
    if (tokens.length >= o.maxTokens || position >= o.capacity) return tokens;
    next = await logits(
      'decode',
      new Map<string, HostTensor>([
        ['input_ids', { dtype: 'i32', shape: [1, 1], data: Int32Array.of(token) }],
        ['position', { dtype: 'i32', shape: [], data: Int32Array.of(position) }],
      ]),
    );
  }
}

/**
 * Each patch's most probable visual word (argmax over `image_words` [1, patches, vocab], the first
 * id on ties) and its probability, patches in row-major order; `words` is an artefact entry
 * reading pixel_values [1, ...] and outputting image_words.
 */
export async function topVisualWords(program: ArtefactProgram, pixelValues: HostTensor, entry = 'words'): Promise<{ id: number; p: number }[]> {
  const w = (await program.run(entry, new Map([['pixel_values', pixelValues]]), ['image_words'])).get('image_words')!;
  const [, patches, vocab] = w.shape as [number, number, number];
  return Array.from({ length: patches }, (_, k) => {
    const row = w.data.subarray(k * vocab, (k + 1) * vocab);
    const id = argmax(row);
    return { id, p: row[id]! };
  });
}
