// Node-only: reading what `kiln data` is pointed at (conversation files, image folders,
// tokenizer folders) from the file system. Everything else in data/ runs in browsers too.
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { KilnError, describeFsError } from '../runtime/errors.js';
import { loadImageFile } from './image-node.js';
import type { RgbImage } from './image.js';
import { parseJsonText, parseLlavaJson, type ParsedLlavaJson } from './llava-json.js';
import { loadTokenizer, type TextTokenizer } from './tokenizer.js';
import type { WordLevelFiles } from './wordlevel.js';

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new KilnError(`cannot read: ${describeFsError(e)}`, { file: path, cause: e });
  }
}

export interface ConversationSource {
  /** the JSON file read. */
  file: string;
  parsed: ParsedLlavaJson;
  /** where record image names are looked up: --image-folder, else the JSON's folder. */
  imageFolder: string;
}

/**
 * `--data FILE` or `--data DIR` (a folder holding exactly one .json and its images).
 * @throws KilnError for a missing path, a folder without exactly one JSON file, or bad JSON.
 */
export function readConversations(data: string, imageFolder?: string): ConversationSource {
  let stat;
  try {
    stat = statSync(data);
  } catch (e) {
    throw new KilnError(`cannot read: ${describeFsError(e)}`, { file: data, cause: e });
  }
  let file = data;
  if (stat.isDirectory()) {
    const jsons = readdirSync(data).filter((f) => f.toLowerCase().endsWith('.json')).sort();
    if (jsons.length !== 1) {
      throw new KilnError(jsons.length === 0 ? 'the folder holds no .json conversation file' : `the folder holds ${jsons.length} .json files (${jsons.join(', ')}); pass the one to use as --data FILE`, { file: data });
    }
    file = join(data, jsons[0]!);
  }
  const folder = imageFolder ?? dirname(file);
  if (imageFolder !== undefined && !(existsSync(imageFolder) && statSync(imageFolder).isDirectory())) {
    throw new KilnError('--image-folder is not a folder', { file: imageFolder });
  }
  return { file, parsed: parseLlavaJson(parseJsonText(readText(file), file), file), imageFolder: folder };
}

/** Loads `name` from `folder` (PNG or JPEG, decoded as PIL's convert("RGB")). */
export function folderImageLoader(folder: string): (name: string) => Promise<RgbImage> {
  return (name: string) => loadImageFile(resolve(folder, name));
}

/**
 * A tokenizer folder: tokenizer.json, with tokenizer_config.json when present.
 * @throws KilnError when tokenizer.json is missing or unusable.
 */
export function readTokenizerDir(dir: string): TextTokenizer {
  const tj = join(dir, 'tokenizer.json');
  if (!existsSync(tj)) throw new KilnError('no tokenizer.json in the folder', { file: dir });
  const cfgPath = join(dir, 'tokenizer_config.json');
  const cfg = existsSync(cfgPath) ? parseJsonText(readText(cfgPath), cfgPath) : null;
  return loadTokenizer(parseJsonText(readText(tj), tj), cfg, dir);
}

/** Writes tokenizer.json and tokenizer_config.json into `dir` (created). */
export function writeTokenizerDir(dir: string, files: WordLevelFiles): void {
  try {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'tokenizer.json'), `${JSON.stringify(files.tokenizerJson, null, 1)}\n`);
    writeFileSync(join(dir, 'tokenizer_config.json'), `${JSON.stringify(files.tokenizerConfig, null, 1)}\n`);
  } catch (e) {
    throw new KilnError(`cannot write the tokenizer: ${describeFsError(e)}`, { file: dir, cause: e });
  }
}
