// `kiln words`: what the VM head "says" about each patch of an image (VW-LMM's qualitative
// figure): the image with each patch labelled by the top-1 token of its visual word, and the
// top-k tokens with their probabilities as JSON. The visual words are the model's `image_words`
// output (compiler/exec/words.ts), computed by the compiled graph on WebGPU or by the reference.
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../check/index.js';
import { KilnError } from '../../runtime/errors.js';
import { getDevice } from '../../runtime/node/device.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { CLIP_MEAN, CLIP_STD, loadImageFile, preprocessLlava } from '../../data/image-node.js';
import { readTokenizerDir } from '../../data/node.js';
import { imageWordsNode, imageWordsParams, topWords, visualWords } from '../exec/words.js';
import { webgpuAvailable } from '../exec/webgpu-run.js';
import { configNumber } from './data-source.js';
import { checkOptions, defineCommand, specArg, specOptions, type Args, type OptionValues } from './args.js';
import { checkFolderRoles, checkpointOverrides } from './loss.js';
import { plotFontsAvailable } from './loss-plot.js';
import { loadBatch, loadModelParams } from './model-inputs.js';
import { checkOutputPath } from './output-path.js';
import type { Output } from './output.js';
import { loadAndCheck } from './spec.js';
import { denormalise, drawWordsPicture, MIN_CELL_PX } from './words-plot.js';
import { numel } from '../../runtime/tensor.js';

const wordsOptions = {
  checkpoint: { type: 'string', arg: 'DIR', help: 'Hugging Face folder (LLaVA-1.5 layout) with vm_head.weight' },
  'vision-tower': { type: 'string', arg: 'DIR', help: 'Hugging Face CLIP folder (CLIPVisionModel or CLIPModel)' },
  image: { type: 'string', arg: 'FILE', help: 'PNG or JPEG, preprocessed as LLaVA-1.5 does (pad to square, resize, crop)' },
  batch: { type: 'string', arg: 'FILE', help: 'safetensors batch: its pixel_values[0]' },
  tokenizer: { type: 'string', arg: 'DIR', help: "tokenizer.json (+ tokenizer_config.json) for the tokens' text; default: the checkpoint folder's; without one, tokens are shown by id" },
  'top-k': { type: 'string', arg: 'K', help: 'tokens per patch in the JSON (default 5)' },
  out: {
    type: 'string',
    arg: 'FILE',
    help: `the picture (default words.png; with --json only when given): the image as the model saw it (after preprocessing), scaled up by a whole factor so a patch is at least ${MIN_CELL_PX} px wide, each patch labelled with its top-1 token and that token's probability`,
  },
  backend: { type: 'string', arg: 'NAME', help: 'webgpu (default when an adapter exists) or cpu (the reference executor)' },
  ...specOptions,
  json: {
    type: 'boolean',
    help: '{"grid": [rows, cols], "patches": [{"row", "col", "top": [{"id", "token", "p"}]}]}, patches in row-major order; token is the decoded text (null without a tokenizer)',
  },
} as const;

export const wordsCommand = defineCommand({
  summary: "draw each image patch's visual word (the VM head's top token) on the image; --json gives the top-k with probabilities",
  usage: 'SPEC --checkpoint DIR [--vision-tower DIR] (--image FILE | --batch FILE) [options]',
  description:
    "Shows each image patch's visual word, softmax(vm_head(projector(tower(image)))), the distribution over the vocabulary that VW-LMM's VM head gives the patch: a picture with the top-1 token written on each patch, and the top-k tokens with their probabilities as JSON.",
  args: [specArg],
  options: wordsOptions,
  examples: [
    {
      run: 'kiln words models/vwlmm.kiln --config tiny --checkpoint test/golden/llama_b2/llava --vision-tower test/golden/llama_b2/clip --image picture.png --out words.png',
      does: "words.png: the image with each patch labelled by its top-1 token, and a text grid on stdout",
    },
    {
      run: 'kiln words models/vwlmm.kiln --config tiny --checkpoint test/golden/llama_b2/llava --vision-tower test/golden/llama_b2/clip --batch test/golden/llama_b2/batch.safetensors --top-k 3 --json',
      does: 'the top-3 tokens per patch as JSON, from pixel_values[0] of a batch',
    },
  ],
  run: runWords,
});

/** Writes through a temporary file and a rename, so a reader never sees half a PNG. */
function writeAtomically(path: string, bytes: Uint8Array): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, bytes);
  renameSync(tmp, path);
}

async function runWords(values: OptionValues<typeof wordsOptions>, args: Args, out: Output): Promise<number> {
  const spec = args[0]!;
  if (!values.checkpoint) throw new UsageError('--checkpoint DIR is required');
  if (values.image !== undefined && values.batch !== undefined) throw new UsageError('give either --image FILE or --batch FILE, not both');
  if (values.image === undefined && values.batch === undefined) throw new UsageError('an image is required: --image FILE, or --batch FILE (its pixel_values[0])');
  if (values.backend !== undefined && values.backend !== 'cpu' && values.backend !== 'webgpu') throw new UsageError(`--backend ${values.backend}: expected webgpu or cpu`);
  const kText = values['top-k'] ?? '5';
  const k = Number(kText);
  if (kText.trim() === '' || !Number.isSafeInteger(k) || k < 1) throw new UsageError(`--top-k ${kText}: expected a whole number > 0`);
  const outPath = values.out ?? (values.json ? undefined : 'words.png');
  if (outPath !== undefined) checkOutputPath('--out', outPath);
  if (values.backend === 'webgpu') await getDevice();

  const overrides = [...checkpointOverrides(values.checkpoint), ...checkpointOverrides(values['vision-tower'], '--vision-tower')];
  checkFolderRoles(values.checkpoint, values['vision-tower']);
  const model = loadAndCheck(spec, checkOptions(values, overrides), out);
  const graph = model.graph;
  imageWordsNode(graph);
  const needed = imageWordsParams(graph);
  // A LLaVA checkpoint has no VM head: say that, rather than the loader's generic "missing".
  const vmHead = [...needed].filter((n) => n.startsWith('vm_head.'));
  const mainFiles = join(values.checkpoint, 'model.safetensors');
  const params = (() => {
    try {
      return loadModelParams(model, { checkpoint: values.checkpoint, visionTower: values['vision-tower'] }, (w) => out.stderr(`warning: ${w}`), needed);
    } catch (e) {
      if (e instanceof KilnError && e.detail.startsWith('missing from the checkpoint') && vmHead.some((n) => e.tensor === n || e.detail.includes(`'${n}'`)))
        throw new KilnError(`the checkpoint has no VM head (${vmHead.join(', ')}), so it has no visual words: kiln words needs a VW-LMM checkpoint, not a plain LLaVA one`, { file: existsSync(mainFiles) ? mainFiles : values.checkpoint });
      throw e;
    }
  })();

  const size = configNumber(model, 'vision.image_size');
  const origin = values.batch ?? values.image!;
  let pixels: HostTensor;
  if (values.batch !== undefined) {
    const px = loadBatch(model, values.batch).get('pixel_values');
    if (!px) throw new KilnError('the batch has no pixel_values', { file: values.batch });
    const per = numel(px.shape.slice(1));
    pixels = { dtype: 'f32', shape: [1, ...px.shape.slice(1)], data: Float32Array.from(px.data.subarray(0, per)) };
  } else {
    const data = preprocessLlava(await loadImageFile(values.image!), { size, mean: CLIP_MEAN, std: CLIP_STD, padToSquare: true });
    pixels = { dtype: 'f32', shape: [1, 3, size, size], data };
  }
  if (pixels.shape[1] !== 3) throw new KilnError(`pixel_values has ${pixels.shape[1]} channels; the picture needs RGB (3)`, { file: origin });

  const tokDir = values.tokenizer ?? (existsSync(join(values.checkpoint, 'tokenizer.json')) ? values.checkpoint : undefined);
  const tok = tokDir ? readTokenizerDir(tokDir) : null;
  let backend = values.backend as 'cpu' | 'webgpu' | undefined;
  backend ??= (await webgpuAvailable()) ? 'webgpu' : 'cpu';
  let words;
  try {
    words = await visualWords(graph, params, pixels, backend);
  } catch (e) {
    if (e instanceof KilnError) throw e;
    throw new KilnError((e as Error).message, { file: origin });
  }
  const top = topWords(words, k);
  const [rows, cols] = words.grid;
  const text = (id: number): string | null => (tok ? tok.decode([id]) : null);
  // A token that decodes to nothing visible (a special token, a lone space) shows as its vocabulary entry.
  const label = (id: number): string => {
    const t = text(id)?.trim();
    if (t) return t;
    return tok ? tok.idToToken(id) : String(id);
  };
  if (outPath !== undefined) {
    const image = denormalise(pixels.data, pixels.shape[2]!, CLIP_MEAN, CLIP_STD);
    const caption = `top-1 visual word per patch (${rows}x${cols}) and its probability; ${values.checkpoint} on ${origin}; ${backend}`;
    writeAtomically(outPath, drawWordsPicture(image, [rows, cols], top.map((t) => ({ text: label(t[0]!.id), p: t[0]!.p })), caption));
    if (!values.json && !plotFontsAvailable()) out.stderr(`note: no system font was found, so ${outPath} has no text (install fonts-dejavu-core)`);
  }
  if (values.json) {
    const patches = top.map((t, i) => ({ row: Math.floor(i / cols), col: i % cols, top: t.map((c) => ({ id: c.id, token: text(c.id), p: c.p })) }));
    out.stdout(JSON.stringify({ grid: [rows, cols], patches }));
  } else {
    const cells = top.map((t) => JSON.stringify(label(t[0]!.id)));
    const width = Math.max(...cells.map((c) => c.length));
    for (let r = 0; r < rows; r++) out.stdout(cells.slice(r * cols, (r + 1) * cols).map((c) => c.padEnd(width)).join(' ').trimEnd());
    out.stderr(`${rows}x${cols} patches; ${outPath} written; backend ${backend}`);
  }
  return 0;
}
