// A word-level vocabulary built from the data, for the tiny model: a standard Hugging Face
// `tokenizer.json` (WordLevel model, Whitespace pre-tokenizer, "<s> $A" post-processor) and its
// `tokenizer_config.json`, which Hugging Face tokenizers and transformers load as they are.

const WORDS = /[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\u200c\u200d]+|[^\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\u200c\u200d\s]+/gu;

export const WORDLEVEL_SPECIALS = ['<unk>', '<s>', '</s>'] as const;

export interface WordLevelFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
}

/**
 * The vocabulary of `texts` (special tokens removed first): <unk>=0, <s>=1, </s>=2, then the words
 * by falling frequency, ties in code-point order, so the same texts always give the same ids.
 * Words are what Hugging Face's Whitespace pre-tokenizer splits (`\w+|[^\w\s]+`).
 */
export function buildWordLevel(texts: Iterable<string>): WordLevelFiles {
  const counts = new Map<string, number>();
  for (const text of texts) {
    let t = text;
    for (const s of WORDLEVEL_SPECIALS) t = t.replaceAll(s, ' ');
    for (const m of t.matchAll(WORDS)) counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
  }
  const words = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([w]) => w);
  const vocab: Record<string, number> = {};
  WORDLEVEL_SPECIALS.forEach((s, i) => (vocab[s] = i));
  for (const w of words) vocab[w] = Object.keys(vocab).length;
  const bos = { SpecialToken: { id: '<s>', type_id: 0 } };
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: WORDLEVEL_SPECIALS.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: 'Whitespace' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [bos, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [bos, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: null,
    model: { type: 'WordLevel', vocab, unk_token: '<unk>' },
  };
  const tokenizerConfig = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: '<s>',
    eos_token: '</s>',
    unk_token: '<unk>',
    // LLaVA pads Vicuna batches with the unk token.
    pad_token: '<unk>',
    clean_up_tokenization_spaces: false,
    model_max_length: 2048,
  };
  return { tokenizerJson, tokenizerConfig };
}
