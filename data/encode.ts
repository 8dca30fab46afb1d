// One conversation -> input_ids and labels, as LLaVA-1.5 prepares a training sample, with the
// labels taken from the spans of the whole prompt's tokenisation (never from per-turn counts).
import { KilnError } from '../runtime/errors.js';
import { renderChatTemplate, renderMistral, renderVicunaV1, type RenderedConversation, type TemplateName, type Turn } from './template.js';
import type { TextTokenizer, TokenSpan } from './tokenizer.js';

/** LLaVA's IMAGE_TOKEN_INDEX and IGNORE_INDEX. */
export const IMAGE_TOKEN_ID = -200;
export const IGNORE_INDEX = -100;
export const IMAGE_PLACEHOLDER = '<image>';

export interface EncodeOptions {
  template: TemplateName;
  /**
   * 'front' (default): LLaVA's preprocess_multimodal, which training applies: the placeholder is
   * taken out of its turn and the turn becomes "<image>\n" + the rest, stripped. 'inplace': the
   * placeholder stays where the text has it (tokenizer_image_token on the prompt as written).
   */
  imagePlacement?: 'front' | 'inplace';
  /** the longest sequence the model sees after the splice (each image counts imageTokens). */
  maxLength: number;
  /** positions one image takes after the splice (576 for CLIP ViT-L/14-336). */
  imageTokens: number;
}

export interface EncodedConversation {
  inputIds: Int32Array;
  labels: Int32Array;
  /** the rendered prompt, each token's span in it, and the scored answer spans. */
  prompt: string;
  tokens: string[];
  spans: TokenSpan[];
  answers: TokenSpan[];
  /** length after the splice, before truncation. */
  fullLength: number;
  truncated: boolean;
  /** true when no label survives (nothing to learn from this sample). */
  allMasked: boolean;
}

/** LLaVA's preprocess_multimodal for turns holding the placeholder. */
function moveImageToFront(turns: readonly Turn[]): Turn[] {
  return turns.map((t) => {
    if (!t.value.includes(IMAGE_PLACEHOLDER)) return t;
    const rest = t.value.replaceAll(IMAGE_PLACEHOLDER, '').trim();
    return { from: t.from, value: `${IMAGE_PLACEHOLDER}\n${rest}`.trim() };
  });
}

export function renderConversation(turns: readonly Turn[], tok: TextTokenizer, template: TemplateName): RenderedConversation {
  switch (template) {
    case 'vicuna_v1':
      return renderVicunaV1(turns, tok.eosToken);
    case 'mistral':
      return renderMistral(turns, tok.eosToken);
    case 'chat_template':
      if (tok.chatTemplate === null) throw new KilnError('the tokenizer has no chat_template in tokenizer_config.json', { file: tok.source });
      return renderChatTemplate(turns, tok.chatTemplate, tok.bosToken, tok.eosToken, tok.source);
  }
}

/** Scored iff the token's span overlaps an answer span (a zero-width token: lies inside one). */
function scored(s: TokenSpan, answers: readonly TokenSpan[]): boolean {
  if (s.start === s.end) return answers.some((a) => a.start <= s.start && s.start < a.end);
  return answers.some((a) => s.start < a.end && s.end > a.start);
}

/**
 * Encodes one conversation. The prompt is split at "<image>" and each piece tokenised on its own,
 * with -200 between the pieces and the tokenizer's BOS once at the front, as LLaVA's
 * tokenizer_image_token does; labels are the ids of tokens inside answer spans, -100 elsewhere.
 * A sequence longer than `maxLength` after the splice is cut at the end (`truncated`).
 * @throws KilnError when the prompt up to and including the image does not fit in `maxLength`.
 */
export function encodeConversation(turns: readonly Turn[], hasImage: boolean, tok: TextTokenizer, opts: EncodeOptions): EncodedConversation {
  const placed = hasImage && (opts.imagePlacement ?? 'front') === 'front' ? moveImageToFront(turns) : turns;
  const rendered = renderConversation(placed, tok, opts.template);
  const chunks = hasImage ? rendered.text.split(IMAGE_PLACEHOLDER) : [rendered.text];
  const ids: number[] = [];
  const tokens: string[] = [];
  const spans: TokenSpan[] = [];
  if (rendered.addSpecialTokens) {
    for (const id of tok.prefixIds) {
      ids.push(id);
      tokens.push(tok.idToToken(id));
      spans.push({ start: 0, end: 0 });
    }
  }
  let base = 0;
  chunks.forEach((chunk, k) => {
    if (k > 0) {
      ids.push(IMAGE_TOKEN_ID);
      tokens.push(IMAGE_PLACEHOLDER);
      spans.push({ start: base - IMAGE_PLACEHOLDER.length, end: base });
    }
    const enc = tok.encode(chunk);
    for (let i = 0; i < enc.ids.length; i++) {
      ids.push(enc.ids[i]!);
      tokens.push(enc.tokens[i]!);
      spans.push({ start: enc.spans[i]!.start + base, end: enc.spans[i]!.end + base });
    }
    base += chunk.length + IMAGE_PLACEHOLDER.length;
  });
  if (rendered.addSpecialTokens) {
    for (const id of tok.suffixIds) {
      ids.push(id);
      tokens.push(tok.idToToken(id));
      spans.push({ start: rendered.text.length, end: rendered.text.length });
    }
  }
  const labels = ids.map((id, i) => (id !== IMAGE_TOKEN_ID && scored(spans[i]!, rendered.answers) ? id : IGNORE_INDEX));

  const images = ids.filter((id) => id === IMAGE_TOKEN_ID).length;
  const extra = images * (opts.imageTokens - 1);
  const fullLength = ids.length + extra;
  let keep = ids.length;
  if (fullLength > opts.maxLength) {
    keep = opts.maxLength - extra;
    const lastImage = ids.lastIndexOf(IMAGE_TOKEN_ID);
    if (keep <= lastImage) {
      throw new KilnError(`the prompt up to its image is ${lastImage + 1 + extra} positions after the splice, more than the maximum length ${opts.maxLength}`);
    }
  }
  const kept = labels.slice(0, keep);
  return {
    inputIds: Int32Array.from(ids.slice(0, keep)),
    labels: Int32Array.from(kept),
    prompt: rendered.text,
    tokens: tokens.slice(0, keep),
    spans: spans.slice(0, keep),
    answers: rendered.answers,
    fullLength,
    truncated: keep < ids.length,
    allMasked: kept.every((l) => l === IGNORE_INDEX),
  };
}
