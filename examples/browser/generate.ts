// Greedy generation over an artefact with `prefill` and `decode` entries (what
// compiler/exec/generate.ts compiles from compiler/passes/kv-cache.ts's graphs; the KV caches are
// the artefact's kv-cache state), with `kiln/runtime` alone, so the page and Node run the same
// loop. torch.argmax's tie rule (the first largest logit), as `kiln generate` picks greedily.
import { argmax, generate, KilnError, type ArtefactProgram, type HostTensor } from 'kiln/runtime';

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

/** One image's visual words as `kiln words --json` lists them (without the tokens' text). */
export interface TopWords {
  /** patches per column and per row: [rows, cols]. */
  readonly grid: readonly [number, number];
  /** row-major; `top` most probable first, equal probabilities lower id first (compiler/exec/words.ts topWords' order). */
  readonly patches: { row: number; col: number; top: { id: number; p: number }[] }[];
}

/**
 * Each patch's `k` most probable visual words with their probabilities (kiln words --json's
 * `patches`), from the `entry` of `program` (pixel_values [1, ...] -> image_words [1, P, vocab]);
 * the P patches form a square grid.
 * @throws KilnError when a probability is NaN or P is not a square.
 */
export async function topKVisualWords(program: ArtefactProgram, pixelValues: HostTensor, k: number, entry = 'words'): Promise<TopWords> {
  const w = (await program.run(entry, new Map([['pixel_values', pixelValues]]), ['image_words'])).get('image_words')!;
  const [, patches, vocab] = w.shape as [number, number, number];
  const side = Math.round(Math.sqrt(patches));
  if (side * side !== patches) throw new KilnError(`image_words has ${patches} patches, not a square grid`);
  const kk = Math.min(k, vocab);
  return {
    grid: [side, side],
    patches: Array.from({ length: patches }, (_, patch) => {
      const row = w.data.subarray(patch * vocab, (patch + 1) * vocab);
      const nan = row.findIndex((p) => Number.isNaN(p));
      if (nan >= 0) throw new KilnError(`the visual word of patch ${patch} has a NaN probability at token ${nan}`);
      // A stable sort by probability keeps equal ones in id order.
      const top = Array.from(row, (p, id) => ({ id, p }))
        .sort((a, b) => b.p - a.p)
        .slice(0, kk);
      return { row: Math.floor(patch / side), col: patch % side, top };
    }),
  };
}
