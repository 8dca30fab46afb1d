// Tokenisation and label spans against golden files made by Hugging Face transformers/tokenizers
// and LLaVA's preprocessing (test/golden/text/make_text_golden.py): exact ids and labels.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadTokenizer, type TextTokenizer } from '../../data/tokenizer.js';
import { encodeConversation } from '../../data/encode.js';
import type { TemplateName, Turn } from '../../data/template.js';

const DIR = 'test/golden/text';
const readJson = (p: string): unknown => JSON.parse(readFileSync(p, 'utf8'));

interface Case {
  folder: string;
  template: TemplateName;
  placement: 'front' | 'inplace';
  id: string;
  prompt: string;
  input_ids: number[];
  labels: number[];
  llava_v1_equal?: boolean;
}
interface Rec {
  id: string;
  image?: string;
  conversations: Turn[];
}
const expected = readJson(join(DIR, 'expected.json')) as { cases: Case[]; records: Rec[] };
const tokenizers = new Map<string, TextTokenizer>();
function tokenizer(folder: string): TextTokenizer {
  let t = tokenizers.get(folder);
  if (!t) {
    t = loadTokenizer(readJson(join(DIR, folder, 'tokenizer.json')), readJson(join(DIR, folder, 'tokenizer_config.json')), join(DIR, folder));
    tokenizers.set(folder, t);
  }
  return t;
}

describe('tokenisation and labels match transformers + LLaVA (golden)', () => {
  it('covers both legacy values, byte fallback, text-only records and every placeholder position', () => {
    expect(new Set(expected.cases.map((c) => c.folder))).toEqual(new Set(['llama_legacy', 'llama_nolegacy', 'mistral', 'bytelevel']));
    expect(expected.cases.length).toBeGreaterThanOrEqual(100);
  });
  for (const c of expected.cases) {
    it(`${c.folder} ${c.template} ${c.placement} ${c.id}`, () => {
      const rec = expected.records.find((r) => r.id === c.id)!;
      const enc = encodeConversation(rec.conversations, rec.image !== undefined, tokenizer(c.folder), {
        template: c.template,
        imagePlacement: c.placement,
        maxLength: 4096,
        imageTokens: 576,
      });
      expect(enc.prompt).toBe(c.prompt);
      expect([...enc.inputIds]).toEqual(c.input_ids);
      expect([...enc.labels]).toEqual(c.labels);
    });
  }
});

describe('the legacy flag', () => {
  it('changes the ids after a special token (same tokenizer.json, different tokenizer_config.json)', () => {
    const pick = (folder: string) => expected.cases.find((c) => c.folder === folder && c.template === 'vicuna_v1' && c.placement === 'front' && c.id === 'multi-start')!;
    expect(pick('llama_legacy').input_ids).not.toEqual(pick('llama_nolegacy').input_ids);
    const legacy = tokenizer('llama_legacy').encode('</s>USER');
    const modern = tokenizer('llama_nolegacy').encode('</s>USER');
    expect(legacy.tokens[1]!.startsWith('▁')).toBe(true);
    expect(modern.tokens[1]!.startsWith('▁')).toBe(false);
  });
});

describe('tokenizers whose tokens do not spell the text', () => {
  it('are refused with a message instead of guessed spans', () => {
    const tj = readJson(join(DIR, 'bytelevel', 'tokenizer.json')) as Record<string, unknown>;
    const lowered = { ...tj, normalizer: { type: 'Lowercase' } };
    expect(() => loadTokenizer(lowered, null, 'lowercasing')).toThrow(/lowercasing: tokenizer.json: normalizer "Lowercase" changes the text/);
    expect(() => loadTokenizer({ model: { type: 'Unigram', vocab: [] } }, null, 'uni')).toThrow(/model type "Unigram" is not supported/);
    expect(() => loadTokenizer([], null, 'x')).toThrow(/expected an object with a "model"/);
  });
});
