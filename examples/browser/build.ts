// Builds what examples/browser serves, under out/browser-example/ (or `outDir`):
//   artefact/          `kiln compile models/vwlmm.kiln --config tiny --ts` (entries loss, train_step)
//   weights.safetensors the tiny model's initialised parameters (initParams, seed WEIGHT_SEED)
//   batch.safetensors   one synthetic batch (data/synthetic.ts, seed BATCH_SEED) the page trains on
//   words/              the visual-words entry (`kiln words`' graph): image_words of the prompt's image
//   generate/           prefill + decode entries (compiler/passes/kv-cache.ts) for greedy tokens
//                       after row 0's first PROMPT_IDS ids and image (prompt.safetensors;
//                       generate/generation.json: prompt length, cache capacity, tokens)
//   index.html, main.js the page, main.ts bundled by esbuild with `kiln/runtime` (runtime/index.ts)
// Everything is deterministic, so the Node run in test/examples/browser.test.ts can start from the
// same bytes. examples/browser/model.ts is the typed bindings `kiln compile --ts` writes for this
// artefact, checked in so that the page typechecks without a build; run as a script (or through
// `npm run example:browser`) this rewrites it when the compiler's output changed, while tests only
// report it (test/examples/browser.e2e.ts fails until the new one is committed).
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from '../../compiler/cli/main.js';
import { Output } from '../../compiler/cli/output.js';
import { loadSpec } from '../../compiler/syntax/load.js';
import { checkModel } from '../../compiler/check/index.js';
import { initParams } from '../../compiler/exec/init.js';
import { inputContract } from '../../compiler/passes/input-contract.js';
import { syntheticBatch } from '../../data/synthetic.js';
import { readArtefact, writeArtefact } from '../../runtime/node/artefact-files.js';
import { artefactFiles, compileArtefact } from '../../compiler/emit/artefact.js';
import { DEFAULT_TRAITS } from '../../compiler/codegen/kernel.js';
import { generationGraphs } from '../../compiler/passes/kv-cache.js';
import { generationEntries } from '../../compiler/emit/entries.js';
import { IMAGE_WORDS, imageWordsGraph } from '../../compiler/exec/words.js';
import { serializeSafetensors } from '../../runtime/safetensors.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { GENERATION_FILE, type GenerationInfo } from './result.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const HERE = join(ROOT, 'examples/browser');

/** The compiled shape of the page's batch: B rows of T tokens. */
export const SYMBOLS = { B: 2, T: 12 } as const;
export const WEIGHT_SEED = 1;
export const BATCH_SEED = 3;
/** The generation prompt: the first ids of the batch's row 0 (its image placeholder is at column 1), and its image. */
export const PROMPT_IDS = 8;
export const MAX_NEW_TOKENS = 8;


export interface BrowserExample {
  readonly dir: string;
  /** the initialised parameters the artefact reads, as written to weights.safetensors. */
  readonly weights: Uint8Array;
  readonly batch: Map<string, HostTensor>;
  /** input_ids [1, PROMPT_IDS] and pixel_values [1, ...] of the generation prompt. */
  readonly prompt: Map<string, HostTensor>;
  readonly generation: GenerationInfo;
  /** true when examples/browser/model.ts differs from what the compiler writes now (rewritten with `updateBindings`). */
  readonly bindingsChanged: boolean;
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  chunks.reduce((o, c) => (out.set(c, o), o + c.length), 0);
  return out;
}

/**
 * Compiles, initialises and bundles the example into `outDir`; with `updateBindings`, rewrites a
 * stale examples/browser/model.ts (else the page is bundled with the checked-in one). Throws with
 * the compiler's message when compiling fails.
 */
export async function buildBrowserExample(outDir = join(ROOT, 'out/browser-example'), opts: { updateBindings?: boolean } = {}): Promise<BrowserExample> {
  const artefactDir = join(outDir, 'artefact');
  const out = new Output(true);
  const args = ['compile', join(ROOT, 'models/vwlmm.kiln'), '--config', 'tiny', '--batch-size', String(SYMBOLS.B), '--seq', String(SYMBOLS.T), '--entries', 'loss,train_step', '--out', artefactDir, '--ts'];
  if ((await main(args, out)) !== 0) throw new Error(`kiln compile failed:\n${out.err.join('\n')}`);

  const model = checkModel(loadSpec(join(ROOT, 'models/vwlmm.kiln'), (p) => readFileSync(p, 'utf8')).files, { config: 'tiny' });
  // Only what the artefact reads: the tower's last layer is declared by the spec but never used.
  const used = new Set(readArtefact(artefactDir).manifest.params.map((p) => p.name));
  const params = new Map([...initParams(model.graph.params, WEIGHT_SEED)].filter(([n]) => used.has(n)));
  const weights = concat(serializeSafetensors(params));
  writeFileSync(join(outDir, 'weights.safetensors'), weights);
  const batch = syntheticBatch(inputContract(model.graph), new Map(Object.entries(SYMBOLS)), BATCH_SEED);
  writeFileSync(join(outDir, 'batch.safetensors'), concat(serializeSafetensors(batch)));

  // Generation: compiled with the default kernel traits, not this adapter's, so that no kernel
  // assumes lavapipe's subgroup width (Chromium's SwiftShader has 4, lavapipe 8).
  const ids = batch.get('input_ids')!;
  const px = batch.get('pixel_values')!;
  const perImage = px.data.length / px.shape[0]!;
  const prompt = new Map<string, HostTensor>([
    ['input_ids', { dtype: 'i32', shape: [1, PROMPT_IDS], data: Int32Array.from(ids.data.slice(0, PROMPT_IDS)) }],
    ['pixel_values', { dtype: 'f32', shape: [1, ...px.shape.slice(1)], data: Float32Array.from(px.data.slice(0, perImage)) }],
  ]);
  const probe = generationGraphs(model.graph, { T: PROMPT_IDS, capacity: Number.MAX_SAFE_INTEGER });
  const g = generationGraphs(model.graph, { T: PROMPT_IDS, capacity: probe.promptLength + MAX_NEW_TOKENS });
  // What `kiln compile --entries prefill,decode` writes (rows 1, the prompt's exact length).
  const gen = generationEntries(g);
  const { artefact: genArtefact } = compileArtefact(gen.specs, { bindings: new Map(), traits: DEFAULT_TRAITS, kvCaches: gen.kvCaches, generation: gen.generation, perCall: gen.perCall });
  writeArtefact(join(outDir, 'generate'), artefactFiles(genArtefact));
  writeFileSync(join(outDir, 'prompt.safetensors'), concat(serializeSafetensors(prompt)));
  const generation: GenerationInfo = { promptLength: g.promptLength, capacity: g.capacity, maxTokens: MAX_NEW_TOKENS };
  writeFileSync(join(outDir, 'generate', GENERATION_FILE), JSON.stringify(generation) + '\n');

  // Visual words: the graph `kiln words` runs (tower, projector, VM head -> image_words [1, patches, vocab]), B = 1.
  const wg = imageWordsGraph(model.graph);
  const { artefact: wordsArtefact } = compileArtefact([{ name: 'words', graph: wg, outputs: wg.outputs.filter((o) => o.name === IMAGE_WORDS) }], { bindings: new Map([['B', 1]]), traits: DEFAULT_TRAITS });
  writeArtefact(join(outDir, 'words'), artefactFiles(wordsArtefact));

  const fresh = readFileSync(join(artefactDir, 'model.ts'), 'utf8');
  const committed = (() => {
    try {
      return readFileSync(join(HERE, 'model.ts'), 'utf8');
    } catch {
      return '';
    }
  })();
  if (fresh !== committed && opts.updateBindings) writeFileSync(join(HERE, 'model.ts'), fresh);

  await build({
    entryPoints: [join(HERE, 'main.ts')],
    bundle: true,
    minify: true,
    sourcemap: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    outfile: join(outDir, 'main.js'),
    alias: { 'kiln/runtime': join(ROOT, 'runtime/index.ts') },
    logLevel: 'warning',
  });
  mkdirSync(outDir, { recursive: true });
  copyFileSync(join(HERE, 'index.html'), join(outDir, 'index.html'));
  return { dir: outDir, weights, batch, prompt, generation, bindingsChanged: fresh !== committed };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = await buildBrowserExample(undefined, { updateBindings: true });
  process.stdout.write(`browser example built in ${r.dir}${r.bindingsChanged ? ' (examples/browser/model.ts rewritten: commit it)' : ''}\n`);
}
