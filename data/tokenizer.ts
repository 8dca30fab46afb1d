// Tokenizers for training data: a Hugging Face `tokenizer.json` (+ `tokenizer_config.json`) read the
// way transformers 5 reads it, encoding text to ids together with each token's character span, so
// that labels can be taken from the tokenisation of the whole conversation (data/encode.ts).
// Browser-safe: the caller hands in parsed JSON, no file system here.
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { KilnError } from '../runtime/errors.js';

/** A token's place in the text it came from: UTF-16 indices [start, end). */
export interface TokenSpan {
  start: number;
  end: number;
}

/** Text encoded without special tokens: ids, token strings and each token's span in the text. */
export interface Encoded {
  ids: number[];
  tokens: string[];
  spans: TokenSpan[];
}

export interface TextTokenizer {
  /** where it was read from, for messages. */
  readonly source: string;
  /** ids the post-processor puts before a sequence (the BOS for Llama/Mistral), and after it. */
  readonly prefixIds: readonly number[];
  readonly suffixIds: readonly number[];
  readonly eosToken: string;
  readonly eosId: number;
  /** the pad id of batches: tokenizer_config's pad_token, else the unk token (LLaVA's v1 choice), else 0. */
  readonly padId: number;
  /** ids run from 0 to vocabSize - 1 (added tokens included). */
  readonly vocabSize: number;
  /** the checkpoint's jinja chat template, when its tokenizer_config has one. */
  readonly chatTemplate: string | null;
  readonly bosToken: string | null;
  /** Encodes `text` without special tokens (no BOS/EOS from the post-processor). */
  encode(text: string): Encoded;
  /**
   * Decodes ids to text as transformers' `decode(ids, skip_special_tokens=True)`: the
   * tokenizer.json decoder (Metaspace spaces, byte fallback, ByteLevel bytes); a WordLevel
   * vocabulary without a decoder joins its tokens with spaces. An incomplete UTF-8 character at
   * the end comes out as U+FFFD.
   */
  decode(ids: readonly number[]): string;
  idToToken(id: number): string;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A special token in tokenizer_config.json: a string or an AddedToken object {content: ...}. */
function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v['content'] === 'string') return v['content'];
  return null;
}

const LLAMA_CLASSES = new Set(['LlamaTokenizer', 'LlamaTokenizerFast', 'CodeLlamaTokenizer', 'CodeLlamaTokenizerFast']);

/**
 * The tokenizer.json transformers 5.18 actually runs. Its `LlamaTokenizer` (which Llama, Vicuna and
 * Mistral checkpoints name in tokenizer_config.json) keeps only vocab, merges and post-processor
 * from the file and rebuilds the rest: normalizer none, pre-tokenizer Metaspace("▁",
 * prepend_scheme "always" when `legacy` is true, "first" when false or absent, "never" when
 * add_prefix_space is false), BPE with fuse_unk and byte_fallback and no unk token. So with
 * legacy false the text right after a special token (`</s>USER`) gets no "▁", with legacy true it
 * does. Other tokenizer classes use tokenizer.json as it is.
 */
export function effectiveTokenizerJson(tokenizerJson: Json, config: Json | null): Json {
  const cls = config ? config['tokenizer_class'] : undefined;
  if (typeof cls !== 'string' || !LLAMA_CLASSES.has(cls)) return tokenizerJson;
  const model = tokenizerJson['model'];
  if (!isObject(model) || model['type'] !== 'BPE') return tokenizerJson;
  const legacy = config!['legacy'] === true;
  const addPrefixSpace = config!['add_prefix_space'] === undefined || config!['add_prefix_space'] === null ? true : config!['add_prefix_space'] === true;
  const prependScheme = !addPrefixSpace ? 'never' : legacy ? 'always' : 'first';
  return {
    ...tokenizerJson,
    normalizer: null,
    pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: prependScheme, split: false },
    model: { ...model, fuse_unk: true, byte_fallback: true, dropout: null, unk_token: null, ignore_merges: false, continuing_subword_prefix: null, end_of_word_suffix: null },
  };
}

interface AddedTokenJson {
  id: number;
  content: string;
  special?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
}

function addedTokens(tj: Json): AddedTokenJson[] {
  const list = tj['added_tokens'];
  if (!Array.isArray(list)) return [];
  return list.filter((t): t is AddedTokenJson => isObject(t) && typeof t['id'] === 'number' && typeof t['content'] === 'string');
}

/**
 * The ids the post-processor adds around a single sequence. transformers rebuilds the template
 * from add_bos_token/add_eos_token when tokenizer_config.json names either (update_post_processor);
 * otherwise the file's TemplateProcessing (alone or inside a Sequence) decides.
 */
function specialIds(tj: Json, config: Json | null, idOf: (t: string) => number | undefined, source: string): { prefix: number[]; suffix: number[] } {
  if (config && ('add_bos_token' in config || 'add_eos_token' in config)) {
    const bos = tokenString(config['bos_token']);
    const eos = tokenString(config['eos_token']);
    const pick = (flag: unknown, tok: string | null, what: string): number[] => {
      if (flag !== true || tok === null) return [];
      const id = idOf(tok);
      if (id === undefined) throw new KilnError(`tokenizer_config.json: ${what} '${tok}' is not in the vocabulary`, { file: source });
      return [id];
    };
    return { prefix: pick(config['add_bos_token'], bos, 'bos_token'), suffix: pick(config['add_eos_token'], eos, 'eos_token') };
  }
  let pp = tj['post_processor'];
  if (isObject(pp) && pp['type'] === 'Sequence' && Array.isArray(pp['processors'])) {
    pp = (pp['processors'] as unknown[]).find((p) => isObject(p) && p['type'] === 'TemplateProcessing') ?? null;
  }
  if (!isObject(pp) || pp['type'] !== 'TemplateProcessing' || !Array.isArray(pp['single'])) return { prefix: [], suffix: [] };
  const prefix: number[] = [];
  const suffix: number[] = [];
  let seen = false;
  const specials = isObject(pp['special_tokens']) ? pp['special_tokens'] : {};
  for (const piece of pp['single'] as unknown[]) {
    if (!isObject(piece)) continue;
    if ('Sequence' in piece) {
      seen = true;
      continue;
    }
    const sp = piece['SpecialToken'];
    if (!isObject(sp) || typeof sp['id'] !== 'string') continue;
    const entry = specials[sp['id']];
    const ids = isObject(entry) && Array.isArray(entry['ids']) ? (entry['ids'] as number[]) : [idOf(sp['id']) ?? -1];
    if (ids.some((i) => i < 0)) throw new KilnError(`tokenizer.json: post-processor token '${sp['id']}' is not in the vocabulary`, { file: source });
    (seen ? suffix : prefix).push(...ids);
  }
  return { prefix, suffix };
}

const encoder = new TextEncoder();

/** GPT-2's byte <-> printable-character table (ByteLevel pre-tokenizer). */
function byteLevelDecoder(): Map<string, number> {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  return new Map(bs.map((b, i) => [String.fromCodePoint(cs[i]!), b]));
}

function usesType(node: unknown, type: string): boolean {
  if (!isObject(node)) return false;
  if (node['type'] === type) return true;
  for (const key of ['pretokenizers', 'normalizers', 'decoders', 'processors']) {
    const list = node[key];
    if (Array.isArray(list) && list.some((n) => usesType(n, type))) return true;
  }
  return false;
}

/**
 * Character spans of `tokens` in `text`, found by walking the text's UTF-8 bytes: each token's
 * surface bytes ("▁" as a space, `<0xNN>` as that byte, ByteLevel characters as their bytes,
 * added tokens as their content) must match where the previous token ended. A leading space the
 * pre-tokenizer prepended (Metaspace, ByteLevel add_prefix_space) matches nothing; whitespace
 * the tokenizer dropped (an added token's lstrip/rstrip) is stepped over. Anything else that does
 * not match throws: a span is never guessed.
 */
function alignSpans(text: string, tokens: readonly string[], isAdded: (t: string) => boolean, surface: (t: string) => Uint8Array, source: string): TokenSpan[] {
  const bytes = encoder.encode(text);
  // byte index -> UTF-16 index of the character it belongs to (and the index after it).
  const charStart = new Int32Array(bytes.length + 1);
  const charEnd = new Int32Array(bytes.length + 1);
  {
    let b = 0;
    let u = 0;
    for (const ch of text) {
      const nb = encoder.encode(ch).length;
      for (let k = 0; k < nb; k++) {
        charStart[b + k] = u;
        charEnd[b + k] = u + ch.length;
      }
      b += nb;
      u += ch.length;
    }
    charStart[bytes.length] = text.length;
    charEnd[bytes.length] = text.length;
  }
  const matchesAt = (s: Uint8Array, p: number) => {
    if (p + s.length > bytes.length) return false;
    for (let k = 0; k < s.length; k++) if (bytes[p + k] !== s[k]) return false;
    return true;
  };
  const isSpace = (b: number | undefined) => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
  const spans: TokenSpan[] = [];
  let p = 0;
  for (const tok of tokens) {
    let s = surface(tok);
    if (!isAdded(tok) && s[0] === 0x20 && bytes[p] !== 0x20) s = s.subarray(1);
    let q = p;
    while (!matchesAt(s, q) && isSpace(bytes[q])) q++;
    if (!matchesAt(s, q)) {
      const near = new TextDecoder().decode(bytes.subarray(p, p + 20));
      throw new KilnError(`cannot place token ${JSON.stringify(tok)} in the text at ${JSON.stringify(near)}: this tokenizer's normalisation is not supported for label spans`, { file: source });
    }
    const start = s.length === 0 ? charStart[q]! : charStart[q]!;
    const end = s.length === 0 ? charStart[q]! : charEnd[q + s.length - 1]!;
    spans.push({ start, end });
    p = q + s.length;
  }
  return spans;
}

/** A tokenizer.json through @huggingface/tokenizers, with spans from `alignSpans`. */
function libraryTokenizer(tj: Json, config: Json | null, source: string): TextTokenizer {
  let lib: HfTokenizer;
  try {
    lib = new HfTokenizer(tj, config ?? {});
  } catch (e) {
    throw new KilnError(`tokenizer.json: ${(e as Error).message}`, { file: source, cause: e });
  }
  const added = new Map(addedTokens(tj).map((t) => [t.content, t]));
  const model = tj['model'] as Json;
  const byteFallback = model['byte_fallback'] === true;
  const metaspace = usesType(tj['pre_tokenizer'], 'Metaspace') || usesType(tj['normalizer'], 'Replace') || usesType(tj['normalizer'], 'Prepend');
  const byteLevel = usesType(tj['pre_tokenizer'], 'ByteLevel');
  const byteMap = byteLevel ? byteLevelDecoder() : null;
  const wpPrefix = model['type'] === 'WordPiece' ? String(model['continuing_subword_prefix'] ?? '##') : null;
  if (tj['normalizer'] !== null && tj['normalizer'] !== undefined && !metaspace) {
    throw new KilnError(`tokenizer.json: normalizer ${JSON.stringify((tj['normalizer'] as Json)['type'])} changes the text; label spans need a tokenizer whose tokens spell the text (Llama/Mistral SentencePiece BPE, ByteLevel BPE)`, { file: source });
  }
  const surface = (t: string): Uint8Array => {
    const a = added.get(t);
    if (a) return encoder.encode(a.content);
    const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(t);
    if (m && byteFallback) return Uint8Array.of(parseInt(m[1]!, 16));
    if (byteMap) return Uint8Array.from([...t].map((c) => byteMap.get(c) ?? 0x3f));
    let s = t;
    if (metaspace) s = s.replaceAll('▁', ' ');
    if (wpPrefix && s.startsWith(wpPrefix)) s = s.slice(wpPrefix.length);
    return encoder.encode(s);
  };
  const idOf = (t: string) => lib.token_to_id(t);
  const { prefix, suffix } = specialIds(tj, config, idOf, source);
  const eosToken = tokenString(config?.['eos_token']) ?? '</s>';
  const eosId = idOf(eosToken);
  if (eosId === undefined) throw new KilnError(`the eos token '${eosToken}' is not in the vocabulary`, { file: source });
  const unk = tokenString(config?.['unk_token']) ?? (typeof model['unk_token'] === 'string' ? model['unk_token'] : null);
  const pad = tokenString(config?.['pad_token']);
  const padId = (pad !== null ? idOf(pad) : undefined) ?? (unk !== null ? idOf(unk) : undefined) ?? 0;
  const vocab = lib.get_vocab(true);
  let vocabSize = 0;
  for (const id of vocab.values()) vocabSize = Math.max(vocabSize, id + 1);
  const chat = config?.['chat_template'];
  return {
    source,
    prefixIds: prefix,
    suffixIds: suffix,
    eosToken,
    eosId,
    padId,
    vocabSize,
    chatTemplate: typeof chat === 'string' ? chat : null,
    bosToken: tokenString(config?.['bos_token']),
    encode(text: string): Encoded {
      if (text.length === 0) return { ids: [], tokens: [], spans: [] };
      const enc = lib.encode(text, { add_special_tokens: false });
      const spans = alignSpans(text, enc.tokens, (t) => added.has(t), surface, source);
      return { ids: enc.ids, tokens: enc.tokens, spans };
    },
    decode: (ids) => lib.decode([...ids], { skip_special_tokens: true }),
    idToToken: (id) => lib.id_to_token(id) ?? `<${id}>`,
  };
}

/**
 * The pre-tokenizer `Whitespace` of Hugging Face tokenizers: runs of word characters, or runs of
 * other non-space characters (`\w+|[^\w\s]+`, with the regex crate's Unicode \w).
 */
const WHITESPACE_SPLIT = /[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\u200c\u200d]+|[^\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\u200c\u200d\s]+/gu;

/** WordLevel + Whitespace (what data/wordlevel.ts writes for the tiny model), encoded here with exact spans. */
function wordLevelTokenizer(tj: Json, config: Json | null, source: string): TextTokenizer {
  const model = tj['model'] as Json;
  const vocab = model['vocab'];
  if (!isObject(vocab)) throw new KilnError('tokenizer.json: WordLevel model without a vocab object', { file: source });
  const pre = tj['pre_tokenizer'];
  if (!isObject(pre) || pre['type'] !== 'Whitespace' || (tj['normalizer'] !== null && tj['normalizer'] !== undefined)) {
    throw new KilnError('tokenizer.json: a WordLevel tokenizer is supported with the Whitespace pre-tokenizer and no normalizer', { file: source });
  }
  const ids = new Map<string, number>();
  for (const [k, v] of Object.entries(vocab)) if (typeof v === 'number') ids.set(k, v);
  const added = addedTokens(tj);
  for (const t of added) ids.set(t.content, t.id);
  const byId = new Map([...ids].map(([k, v]) => [v, k]));
  const unkName = typeof model['unk_token'] === 'string' ? model['unk_token'] : null;
  const unkId = unkName !== null ? ids.get(unkName) : undefined;
  const idOf = (t: string) => ids.get(t);
  const { prefix, suffix } = specialIds(tj, config, idOf, source);
  const eosToken = tokenString(config?.['eos_token']) ?? '</s>';
  const eosId = idOf(eosToken);
  if (eosId === undefined) throw new KilnError(`the eos token '${eosToken}' is not in the vocabulary`, { file: source });
  const pad = tokenString(config?.['pad_token']);
  const padId = (pad !== null ? idOf(pad) : undefined) ?? unkId ?? 0;
  // Added tokens split the text first (longest first), as tokenizers' AddedVocabulary does.
  const addedContents = added.map((t) => t.content).sort((a, b) => b.length - a.length);
  const special = new Set(added.filter((t) => (t as { special?: unknown }).special === true).map((t) => t.id));
  return {
    source,
    prefixIds: prefix,
    suffixIds: suffix,
    eosToken,
    eosId,
    padId,
    vocabSize: Math.max(...ids.values()) + 1,
    chatTemplate: typeof config?.['chat_template'] === 'string' ? config['chat_template'] : null,
    bosToken: tokenString(config?.['bos_token']),
    encode(text: string): Encoded {
      const out: Encoded = { ids: [], tokens: [], spans: [] };
      const words = (from: number, to: number) => {
        for (const m of text.slice(from, to).matchAll(WHITESPACE_SPLIT)) {
          const w = m[0];
          const id = ids.get(w) ?? unkId;
          if (id === undefined) throw new KilnError(`'${w}' is not in the vocabulary and the tokenizer has no unk token`, { file: source });
          out.ids.push(id);
          out.tokens.push(ids.has(w) ? w : unkName!);
          out.spans.push({ start: from + m.index, end: from + m.index + w.length });
        }
      };
      let p = 0;
      while (p < text.length) {
        let best = -1;
        let which = '';
        for (const c of addedContents) {
          const k = text.indexOf(c, p);
          if (k >= 0 && (best < 0 || k < best)) {
            best = k;
            which = c;
          }
        }
        if (best < 0) {
          words(p, text.length);
          break;
        }
        words(p, best);
        out.ids.push(ids.get(which)!);
        out.tokens.push(which);
        out.spans.push({ start: best, end: best + which.length });
        p = best + which.length;
      }
      return out;
    },
    // No decoder in the file: tokenizers' default joins the tokens with spaces; special tokens are
    // skipped. An id past the vocabulary (a model vocabulary larger than the tokenizer's) shows as
    // <id>, never as nothing.
    decode: (ids) =>
      ids
        .filter((id) => !special.has(id))
        .map((id) => byId.get(id) ?? `<${id}>`)
        .join(' '),
    idToToken: (id) => byId.get(id) ?? `<${id}>`,
  };
}

/**
 * A tokenizer from the parsed `tokenizer.json` and, when the folder has one, `tokenizer_config.json`.
 * `source` names the folder in errors. Throws KilnError for files it cannot use.
 */
export function loadTokenizer(tokenizerJson: unknown, tokenizerConfig: unknown, source: string): TextTokenizer {
  if (!isObject(tokenizerJson) || !isObject(tokenizerJson['model'])) throw new KilnError('tokenizer.json: expected an object with a "model"', { file: source });
  if (tokenizerConfig !== null && tokenizerConfig !== undefined && !isObject(tokenizerConfig)) throw new KilnError('tokenizer_config.json: expected an object', { file: source });
  const config = (tokenizerConfig ?? null) as Json | null;
  const tj = effectiveTokenizerJson(tokenizerJson, config);
  const type = (tj['model'] as Json)['type'];
  if (type === 'WordLevel') return wordLevelTokenizer(tj, config, source);
  if (type === 'BPE' || type === 'WordPiece') return libraryTokenizer(tj, config, source);
  throw new KilnError(`tokenizer.json: model type ${JSON.stringify(type)} is not supported for training data (BPE, WordPiece, WordLevel are)`, { file: source });
}
