// `kiln data`: what training will see, record by record: the templated prompt with its scored
// spans marked, input_ids, labels, and every record left out or cut, with the reason.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { UsageError } from '../check/index.js';
import { KilnError } from '../../runtime/errors.js';
import { writeSafetensors } from '../../runtime/node/safetensors-file.js';
import { isBuiltin, type BuiltinData } from '../../data/builtin.js';
import { collate } from '../../data/batch.js';
import type { DataSummary, Sample } from '../../data/dataset.js';
import { IGNORE_INDEX } from '../../data/encode.js';
import type { RecordIssue } from '../../data/llava-json.js';
import { writeTokenizerDir } from '../../data/node.js';
import type { TextTokenizer } from '../../data/tokenizer.js';
import { prepareData } from './data-source.js';
import { checkOptions, defineCommand, specArg, specOptions, type Args, type OptionValues } from './args.js';
import { checkpointOverrides } from './loss.js';
import type { Output } from './output.js';
import { loadAndCheck } from './spec.js';

const dataOptions = {
  data: {
    type: 'string',
    arg: 'FILE|DIR',
    help: 'a LLaVA conversation JSON, or a folder holding one and its images; builtin:shapes[?stage=1|2|mix&split=train|heldout|all&seed=N&size=N] for the built-in dataset (default stage 2, train split, seed 0, 1200 pictures)',
  },
  'image-folder': { type: 'string', arg: 'DIR', help: "where record images are (default: the JSON file's folder)" },
  checkpoint: { type: 'string', arg: 'DIR', help: 'checkpoint folder: its config.json sets the dims, its tokenizer.json is used' },
  'vision-tower': { type: 'string', arg: 'DIR', help: 'Hugging Face CLIP folder: its config.json sets the image size' },
  tokenizer: { type: 'string', arg: 'DIR', help: "folder with tokenizer.json (and tokenizer_config.json); default: the checkpoint's; without either, a word-level vocabulary built from the data" },
  template: {
    type: 'string',
    arg: 'NAME',
    help: "vicuna_v1, mistral, or auto (default): the checkpoint config's model type (llama: vicuna_v1, mistral: mistral), else the tokenizer's chat_template, else by the spec config's name",
  },
  'image-placement': {
    type: 'string',
    arg: 'front|inplace',
    help: "front (default): <image> moved to the start of the first turn as LLaVA's preprocess_multimodal does in training; inplace: left where it is",
  },
  limit: { type: 'string', arg: 'N', help: 'only the first N records of the file' },
  'max-length': { type: 'string', arg: 'N', help: "longest sequence after the image splice (default 2048, LLaVA-1.5's); longer ones are truncated and counted" },
  'on-bad-image': {
    type: 'string',
    arg: 'skip|fail',
    help: 'a missing or unreadable image: leave the record out and count it, or stop with an error naming file and record (default fail)',
  },
  dump: { type: 'string', arg: 'FILE', help: 'write pixel_values, input_ids, labels of the used records as safetensors (right-padded; the layout kiln loss --batch reads)' },
  'save-tokenizer': { type: 'string', arg: 'DIR', help: 'write the tokenizer used (tokenizer.json, tokenizer_config.json)' },
  ...specOptions,
} as const;

export const dataCommand = defineCommand({
  summary: 'show what training sees: templated prompts with scored spans, input_ids, labels; --dump a batch',
  usage: 'SPEC --data FILE|DIR|builtin:shapes [options]',
  description: 'Shows what training sees, record by record: the templated prompt with the scored spans in ⟦ ⟧, input_ids, labels, and the records left out or truncated and why.',
  args: [specArg],
  options: dataOptions,
  examples: [
    { run: 'kiln data models/vwlmm.kiln --config tiny --data builtin:shapes --limit 3', does: 'the first three records of the built-in data, as training sees them' },
    {
      run: 'kiln data models/vwlmm.kiln --config tiny --checkpoint test/golden/llama_b2/llava --data builtin:shapes --limit 4 --json --dump out/shapes.safetensors',
      does: 'one JSON object per record, and a batch in the layout kiln loss --batch reads',
    },
  ],
  run: runData,
});

function positiveInt(flag: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} ${v}: expected a positive integer`);
  return n;
}

function escape(text: string): string {
  return text.replaceAll('\n', '\\n').replaceAll('\t', '\\t');
}

/** The prompt with the characters of scored tokens inside ⟦ ⟧ (the tokenizer's BOS shown in front). */
export function markScored(s: Sample, tok: TextTokenizer): string {
  const e = s.encoded;
  const scoredChar = new Uint8Array(e.prompt.length);
  e.spans.forEach((sp, i) => {
    if (e.labels[i] !== IGNORE_INDEX) scoredChar.fill(1, sp.start, sp.end);
  });
  let out = '';
  let open = false;
  for (let i = 0; i < e.prompt.length; i++) {
    if (scoredChar[i] && !open) {
      out += '⟦';
      open = true;
    } else if (!scoredChar[i] && open) {
      out += '⟧';
      open = false;
    }
    out += e.prompt[i];
  }
  if (open) out += '⟧';
  const prefix = e.spans.length > 0 && e.spans[0]!.end === 0 && e.inputIds[0] !== undefined && tok.prefixIds.includes(e.inputIds[0]) ? tok.idToToken(e.inputIds[0]) : '';
  return escape(prefix + out);
}

function issueLines(title: string, list: readonly RecordIssue[]): string[] {
  if (list.length === 0) return [];
  return [`${title} (${list.length}):`, ...list.map((i) => `  record ${i.index} (id ${i.id}): ${i.reason}`)];
}

function summaryLines(s: DataSummary, malformedTotal: number): string[] {
  const lines = [
    `${s.records + malformedTotal} records: ${s.used} used, ${malformedTotal} malformed, ${s.badImage.length} skipped for their image, ` +
      `${s.allMasked.length} with every label masked (left out), ${s.tooLong.length} too long (left out), ${s.truncated.length} truncated`,
  ];
  lines.push(...issueLines('malformed', s.malformed), ...issueLines('skipped: bad image', s.badImage), ...issueLines('left out: every label masked', s.allMasked));
  lines.push(...issueLines('left out: too long', s.tooLong), ...issueLines('truncated', s.truncated));
  return lines;
}

function baselineLines(b: BuiltinData): string[] {
  const train = b.all.filter((s) => s.split === 'train').length;
  const held = b.all.length - train;
  const q = b.baseline;
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  return [
    `${b.name}: ${b.all.length} pictures (${train} train, ${held} held-out), stage ${b.stage}, showing split ${b.split}`,
    `image-blind baseline (most frequent train answer per question type) on the ${q.total} held-out questions: ${pct(q.accuracy)}`,
    ...Object.entries(q.perType).map(([t, e]) => `  ${t.padEnd(8)} "${e.answer}" ${e.correct}/${e.total} = ${pct(e.accuracy)}`),
  ];
}

async function runData(values: OptionValues<typeof dataOptions>, args: Args, out: Output): Promise<number> {
  const spec = args[0]!;
  if (!values.data) throw new UsageError('--data FILE|DIR|builtin:shapes is required');
  const onBad = values['on-bad-image'] ?? 'fail';
  if (onBad !== 'skip' && onBad !== 'fail') throw new UsageError(`--on-bad-image ${onBad}: expected skip or fail`);
  const limit = values.limit === undefined ? Infinity : positiveInt('--limit', values.limit, 1);
  const maxLength = positiveInt('--max-length', values['max-length'], 2048);
  const placement = values['image-placement'] ?? 'front';
  if (placement !== 'front' && placement !== 'inplace') throw new UsageError(`--image-placement ${placement}: expected front or inplace`);
  if (values.template !== undefined && !['vicuna_v1', 'mistral', 'auto'].includes(values.template)) {
    throw new UsageError(`--template ${values.template}: expected vicuna_v1, mistral or auto`);
  }
  if (isBuiltin(values.data) && values['image-folder']) throw new UsageError('--image-folder does not apply to a built-in dataset');

  const overrides = [...checkpointOverrides(values.checkpoint), ...checkpointOverrides(values['vision-tower'])];
  const model = loadAndCheck(spec, checkOptions(values, overrides), out);
  const prepared = await prepareData(model, {
    data: values.data,
    imageFolder: values['image-folder'],
    checkpoint: values.checkpoint,
    tokenizer: values.tokenizer,
    template: values.template,
    limit,
    maxLength,
    onBadImage: onBad,
    imagePlacement: placement,
  });
  const { samples, summary, malformed, tokenizer: tok, template, built, builtin, imageSize, imageTokens } = prepared;
  if (values['save-tokenizer']) {
    if (!built) throw new UsageError('--save-tokenizer writes a vocabulary built from the data; this run uses an existing tokenizer.json');
    writeTokenizerDir(values['save-tokenizer'], built);
  }

  if (values.json) {
    for (const s of samples) out.stdout(JSON.stringify({ id: s.id, input_ids: [...s.encoded.inputIds], labels: [...s.encoded.labels], image: s.image }));
    const { records: n, used, malformed: m, badImage, allMasked, tooLong, truncated } = summary;
    out.stdout(JSON.stringify({ summary: { records: n + m.length, used, malformed: m, bad_image: badImage, all_masked: allMasked, too_long: tooLong, truncated } }));
  } else {
    const lines: string[] = [`template ${template}, tokenizer ${tok.source} (${tok.vocabSize} ids, pad ${tok.padId}), image ${imageSize}px = ${imageTokens} positions, max length ${maxLength}`];
    if (builtin) lines.push(...baselineLines(builtin));
    for (const s of samples) {
      const e = s.encoded;
      const nScored = e.labels.filter((l) => l !== IGNORE_INDEX).length;
      lines.push('', `record ${s.index} (id ${s.id}${s.image ? `, image ${s.image}` : ', text only'}): ${e.inputIds.length} ids, ${nScored} scored${e.truncated ? `, truncated from ${e.fullLength}` : ''}`);
      lines.push(`  ${markScored(s, tok)}`, `  input_ids ${JSON.stringify([...e.inputIds])}`, `  labels    ${JSON.stringify([...e.labels])}`);
    }
    lines.push('', ...summaryLines(summary, malformed.length));
    out.stdout(lines.join('\n'));
  }
  if (values.dump) {
    if (samples.length === 0) throw new KilnError('no record is usable, so there is nothing to dump', { file: values.dump });
    const batch = collate(samples, { padId: tok.padId, imageSize });
    mkdirSync(dirname(values.dump), { recursive: true });
    writeSafetensors(values.dump, new Map([['pixel_values', batch.pixelValues], ['input_ids', batch.inputIds], ['labels', batch.labels]]));
    if (!values.json) {
      out.stdout(`wrote ${samples.length} rows (${batch.inputIds.shape.join('x')} ids) to ${values.dump}`);
      // LLaVA feeds text-only rows with a zero image; the VW-LMM spec's splice needs the placeholder once per row.
      const textOnly = samples.filter((s) => s.pixelValues === null).length;
      if (textOnly > 0) out.stdout(`note: ${textOnly} text-only rows (zero pixels, no -200): kiln loss's splice takes rows with one image each`);
    }
  }
  return 0;
}
