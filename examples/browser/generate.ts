// Greedy generation over an artefact with `prefill` and `decode` entries (what
// compiler/exec/generate.ts compiles from compiler/passes/kv-cache.ts's graphs; the KV caches are
// the artefact's kv-cache state), with `kiln/runtime` alone, so the page and Node run the same
// loop. torch.argmax's tie rule (the first largest logit), as `kiln generate` picks greedily.
import { argmax, generate, type ArtefactProgram, type HostTensor } from 'kiln/runtime';

export { argmax };

export interface GreedyOptions {
  /** new tokens at most (the cache's capacity, in the artefact's manifest, may stop it earlier). */
  readonly maxTokens: number;
  readonly onToken?: (token: number) => void;
}

/**
 * Runs `prefill` on `prompt` (input_ids [1, T], pixel_values [1, ...]), then greedy `decode` steps
 * (runtime/generate.ts, as `kiln generate` picks: the first largest logit); the tokens chosen.
 * Stops after `maxTokens` or when the cache is full.
 */
export async function greedyTokens(program: ArtefactProgram, prompt: ReadonlyMap<string, HostTensor>, o: GreedyOptions): Promise<number[]> {
  const px = prompt.get('pixel_values');
  const r = await generate(program, [{ input_ids: prompt.get('input_ids')!.data, ...(px ? { pixel_values: px } : {}) }], {
    maxTokens: o.maxTokens,
    eos: [],
    ...(o.onToken ? { onToken: (t: number) => o.onToken!(t) } : {}),
  });
  return r.rows[0]!.tokens;
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
