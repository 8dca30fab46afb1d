// The tiny model's word-level tokenizer: the tokenizer.json Kiln writes is what Hugging Face
// tokenizers/transformers load and encode identically (golden: test/golden/text/wordlevel.json).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadTokenizer } from '../../data/tokenizer.js';
import { buildWordLevel } from '../../data/wordlevel.js';
import { renderVicunaV1 } from '../../data/template.js';
import { generateShapes } from '../../data/shapes.js';

const DIR = 'test/golden/text/wordlevel';
const readJson = (p: string): unknown => JSON.parse(readFileSync(p, 'utf8'));

describe('word-level tokenizer.json', () => {
  const tok = loadTokenizer(readJson(`${DIR}/tokenizer.json`), readJson(`${DIR}/tokenizer_config.json`), DIR);
  const golden = readJson('test/golden/text/wordlevel.json') as { encodings: { text: string; ids: number[]; ids_no_special: number[]; auto_ids: number[] }[] };

  for (const g of golden.encodings) {
    it(`encodes ${JSON.stringify(g.text)} as Hugging Face tokenizers does`, () => {
      const enc = tok.encode(g.text);
      expect(enc.ids).toEqual(g.ids_no_special);
      expect([...tok.prefixIds, ...enc.ids]).toEqual(g.ids);
      expect(g.auto_ids).toEqual(g.ids);
      // each token's span spells the token (or is an unknown word)
      enc.spans.forEach((s, i) => {
        const word = g.text.slice(s.start, s.end);
        expect(enc.tokens[i] === '<unk>' || word === enc.tokens[i]).toBe(true);
      });
    });
  }

  it('is the builtin:shapes vocabulary, rebuilt identically from the seed', () => {
    const texts = generateShapes().flatMap((s) => [s.caption, s.qa]).map((t) => renderVicunaV1(t, '</s>').text.replaceAll('<image>', ' '));
    expect(buildWordLevel(texts).tokenizerJson).toEqual(readJson(`${DIR}/tokenizer.json`));
  });

  it('uses the unk token for words it has not seen and pads with it', () => {
    const enc = tok.encode('red zebra');
    expect(enc.ids[1]).toBe(0);
    expect(tok.padId).toBe(0);
    expect(tok.eosId).toBe(2);
  });
});
