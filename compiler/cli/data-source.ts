// The data pipeline from `--data` to training samples, shared by `kiln data` (which shows what it
// sees) and `kiln train` (which trains on it): the records and their images, the tokenizer (the
// checkpoint's, --tokenizer's, or a word-level vocabulary built from the data), the template,
// and the encoded, preprocessed samples with an account of every record left out.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError, type CheckedModel } from '../check/index.js';
import { configGet } from '../check/config.js';
import type { ConfigRecord, Value } from '../check/values.js';
import { KilnError } from '../../runtime/errors.js';
import { openBuiltin, isBuiltin, type BuiltinData } from '../../data/builtin.js';
import { emptySummary, prepareSamples, type DataSummary, type Sample } from '../../data/dataset.js';
import { IMAGE_PLACEHOLDER, renderConversation } from '../../data/encode.js';
import { parseJsonText, type LlavaRecord, type RecordIssue } from '../../data/llava-json.js';
import { folderImageLoader, readConversations, readTokenizerDir } from '../../data/node.js';
import type { TemplateName } from '../../data/template.js';
import { loadTokenizer, type TextTokenizer } from '../../data/tokenizer.js';
import { buildWordLevel, type WordLevelFiles } from '../../data/wordlevel.js';
import type { RgbImage } from '../../data/image.js';

const NO_SPAN = { file: '<kiln data>', start: 0, end: 0, line: 0, col: 0 };

/** A numeric value of the checked config by dotted path (`vision.patches`). */
export function configNumber(model: CheckedModel, path: string): number {
  let cur: Value | ConfigRecord = model.config;
  for (const part of path.split('.')) {
    if (!('entries' in cur)) throw new UsageError(`config ${model.configName}: ${path} is not a record path`);
    cur = configGet(cur, part, NO_SPAN);
  }
  if (!('kind' in cur) || cur.kind !== 'num' || typeof cur.value !== 'number') throw new UsageError(`config ${model.configName}: ${path} is not a number`);
  return cur.value;
}

/** --template auto: the checkpoint's model type, else the tokenizer's chat_template, else the spec config's name. */
export function chooseTemplate(flag: string | undefined, checkpoint: string | undefined, tok: TextTokenizer | null, configName: string): TemplateName {
  if (flag === 'vicuna_v1' || flag === 'mistral') return flag;
  if (flag !== undefined && flag !== 'auto') throw new UsageError(`--template ${flag}: expected vicuna_v1, mistral or auto`);
  if (checkpoint && existsSync(join(checkpoint, 'config.json'))) {
    const type = (parseJsonText(readFileSync(join(checkpoint, 'config.json'), 'utf8'), join(checkpoint, 'config.json')) as Record<string, unknown>)['model_type'];
    if (typeof type === 'string' && /mistral/i.test(type)) return 'mistral';
    // The VW-LMM release's Vicuna config says model_type "llava" (LLaVA-1.5's own Llama class).
    if (typeof type === 'string' && /llama|vicuna|^llava$/i.test(type)) return 'vicuna_v1';
  }
  if (tok?.chatTemplate) return 'chat_template';
  return /mistral/i.test(configName) ? 'mistral' : 'vicuna_v1';
}

/** Where the data comes from and how it is encoded (the flags of `kiln data` and `kiln train`). */
export interface DataSourceOptions {
  /** a LLaVA JSON file, a folder holding one and its images, or builtin:shapes[?...]. */
  readonly data: string;
  readonly imageFolder?: string | undefined;
  /** checkpoint folder: its tokenizer.json and its config's model_type are used. */
  readonly checkpoint?: string | undefined;
  /** folder with tokenizer.json (overrides the checkpoint's). */
  readonly tokenizer?: string | undefined;
  /** vicuna_v1, mistral or auto (undefined: auto). */
  readonly template?: string | undefined;
  /**
   * The tokenizer and template of another read of the data, used as they are (held-out data is
   * read with the training run's, so the ids and the prompt format agree); then `tokenizer`,
   * `checkpoint` and `template` are not consulted.
   */
  readonly reuse?: { readonly tokenizer: TextTokenizer; readonly template: TemplateName } | undefined;
  /** only records with index < limit. */
  readonly limit?: number;
  readonly maxLength: number;
  readonly onBadImage: 'skip' | 'fail';
  readonly imagePlacement: 'front' | 'inplace';
}

/** Samples ready for collate, and everything about how they were made. */
export interface PreparedData {
  readonly samples: Sample[];
  readonly summary: DataSummary;
  readonly malformed: RecordIssue[];
  readonly tokenizer: TextTokenizer;
  readonly template: TemplateName;
  /** the word-level vocabulary's files when one was built from the data (else null). */
  readonly built: WordLevelFiles | null;
  readonly builtin: BuiltinData | null;
  /** side of the model's square image input, and the positions one image takes. */
  readonly imageSize: number;
  readonly imageTokens: number;
}

/**
 * Reads, tokenizes and preprocesses `opts.data` for `model`. Without a tokenizer folder the
 * vocabulary is built from every record of the data (both splits and stages of builtin:shapes),
 * so --limit and ?split= never change the ids. Throws UsageError for bad flags, KilnError
 * naming the file for bad data and for a tokenizer larger than the model's vocabulary.
 */
export async function prepareData(model: CheckedModel, opts: DataSourceOptions): Promise<PreparedData> {
  const imageSize = configNumber(model, 'vision.image_size');
  const imageTokens = configNumber(model, 'vision.patches');
  const vocab = configNumber(model, 'text.vocab');

  let records: LlavaRecord[];
  let malformed: RecordIssue[];
  let loadImage: (name: string) => Promise<RgbImage>;
  let builtin: BuiltinData | null = null;
  if (isBuiltin(opts.data)) {
    builtin = openBuiltin(opts.data);
    records = builtin.records;
    malformed = [];
    loadImage = builtin.loadImage;
  } else {
    const src = readConversations(opts.data, opts.imageFolder);
    records = src.parsed.records;
    malformed = src.parsed.malformed;
    loadImage = folderImageLoader(src.imageFolder);
  }
  const vocabRecords: { turns: LlavaRecord['turns'] }[] = builtin ? builtin.all.flatMap((s) => [{ turns: s.caption }, { turns: s.qa }]) : records;
  const limit = opts.limit ?? Infinity;
  records = records.filter((r) => r.index < limit);
  malformed = malformed.filter((r) => r.index < limit);

  const tokDir = opts.tokenizer ?? (opts.checkpoint && existsSync(join(opts.checkpoint, 'tokenizer.json')) ? opts.checkpoint : undefined);
  let tok: TextTokenizer | null = opts.reuse ? opts.reuse.tokenizer : tokDir ? readTokenizerDir(tokDir) : null;
  const template = opts.reuse ? opts.reuse.template : chooseTemplate(opts.template, opts.checkpoint, tok, model.configName);
  let built: WordLevelFiles | null = null;
  if (!tok) {
    if (template === 'chat_template') throw new UsageError('a chat_template needs a tokenizer folder (--tokenizer DIR)');
    // Texts as the template renders them, so the template's own words are in the vocabulary.
    const eosOnly = { eosToken: '</s>' } as TextTokenizer;
    const texts = vocabRecords.map((r) => renderConversation(r.turns, eosOnly, template).text.replaceAll(IMAGE_PLACEHOLDER, ' '));
    built = buildWordLevel(texts);
    tok = loadTokenizer(built.tokenizerJson, built.tokenizerConfig, 'word-level vocabulary of the data');
  }
  if (tok.vocabSize > vocab) {
    throw new KilnError(`the tokenizer has ${tok.vocabSize} ids but the model's vocabulary (text.vocab) is ${vocab}`, { file: tok.source });
  }
  const { samples, summary } = await prepareSamples(
    records,
    { tokenizer: tok, encode: { template, maxLength: opts.maxLength, imageTokens, imagePlacement: opts.imagePlacement }, imageSize, loadImage, onBadImage: opts.onBadImage },
    emptySummary(malformed),
  );
  return { samples, summary, malformed, tokenizer: tok, template, built, builtin, imageSize, imageTokens };
}
