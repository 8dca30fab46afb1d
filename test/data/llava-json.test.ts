// The LLaVA conversation reader and sample preparation: malformed records named, missing and
// broken images named with their record, skip/fail, text-only records, truncation and all-masked
// samples counted, never dropped silently.
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encode as encodePng } from 'fast-png';
import { describe, expect, it } from 'vitest';
import { parseLlavaJson, parseJsonText } from '../../data/llava-json.js';
import { emptySummary, prepareSamples } from '../../data/dataset.js';
import { folderImageLoader, readConversations } from '../../data/node.js';
import { loadTokenizer } from '../../data/tokenizer.js';
import { buildWordLevel } from '../../data/wordlevel.js';
import { KilnError } from '../../runtime/errors.js';

const good = (id: string, image?: string) => ({
  id,
  ...(image ? { image } : {}),
  conversations: [
    { from: 'human', value: `${image ? '<image>\n' : ''}what colour is it ?` },
    { from: 'gpt', value: 'red' },
    { from: 'human', value: 'and the size ?' },
    { from: 'gpt', value: 'small' },
  ],
});

function folder(records: unknown[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-llava-'));
  mkdirSync(join(dir, 'img'));
  const px = new Uint8Array(6 * 4 * 3).fill(200);
  writeFileSync(join(dir, 'img', 'ok.png'), encodePng({ width: 6, height: 4, data: px, channels: 3, depth: 8 }));
  writeFileSync(join(dir, 'img', 'text.png'), 'this is not a picture');
  writeFileSync(join(dir, 'data.json'), JSON.stringify(records));
  return dir;
}

const words = buildWordLevel(['a chat between a curious user and an artificial intelligence assistant . the assistant gives helpful , detailed , and polite answers to the user \' s questions . USER : ASSISTANT : what colour is it ? red and the size ? small']);
const tok = loadTokenizer(words.tokenizerJson, words.tokenizerConfig, 'test vocabulary');
const encode = { template: 'vicuna_v1' as const, maxLength: 2048, imageTokens: 16 };

describe('LLaVA conversation JSON', () => {
  it('names each malformed record by index and id, keeps the good ones', () => {
    const parsed = parseLlavaJson(
      [
        good('a', 'img/ok.png'),
        { id: 'no-conv' },
        { id: 'bad-role', conversations: [{ from: 'user', value: 'hi' }, { from: 'gpt', value: 'x' }] },
        { id: 'two-humans', conversations: [{ from: 'human', value: 'hi' }, { from: 'human', value: 'x' }] },
        { id: 'late-image', image: 'x.png', conversations: [{ from: 'human', value: 'hi' }, { from: 'gpt', value: 'x' }, { from: 'human', value: '<image>' }, { from: 'gpt', value: 'y' }] },
        { id: 'image-no-placeholder', image: 'x.png', conversations: [{ from: 'human', value: 'hi' }, { from: 'gpt', value: 'x' }] },
        { id: 'placeholder-no-image', conversations: [{ from: 'human', value: '<image>\nhi' }, { from: 'gpt', value: 'x' }] },
        'not an object',
        { id: 7, conversations: [{ from: 'human', value: 'no answer' }] },
        good('text-only'),
      ],
      'data.json',
    );
    expect(parsed.records.map((r) => r.id)).toEqual(['a', 'text-only']);
    expect(parsed.malformed.map((m) => `${m.index}:${m.id}`)).toEqual(['1:no-conv', '2:bad-role', '3:two-humans', '4:late-image', '5:image-no-placeholder', '6:placeholder-no-image', '7:#7', '8:7']);
    expect(parsed.malformed[1]!.reason).toMatch(/"from" must be "human" or "gpt", not "user"/);
    expect(parsed.malformed[3]!.reason).toMatch(/not in the first turn/);
    expect(() => parseLlavaJson({ records: [] }, 'data.json')).toThrow(/data.json: expected a JSON list/);
    expect(() => parseJsonText('[{"id": 1,]', 'f.json')).toThrow(/f.json: not valid JSON/);
  });

  it('reads a folder holding one JSON and its images; a bad image fails naming file and record', async () => {
    const dir = folder([good('ok', 'img/ok.png'), good('missing', 'img/nope.png'), good('text', 'img/text.png'), good('t-only')]);
    const src = readConversations(dir);
    expect(src.file).toBe(join(dir, 'data.json'));
    const opts = { tokenizer: tok, encode, imageSize: 8, loadImage: folderImageLoader(src.imageFolder) };
    const err = await prepareSamples(src.parsed.records, opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KilnError);
    expect((err as Error).message).toMatch(/record 1 \(id missing\): image img\/nope\.png: .*nope\.png.*no such file/);
  });

  it('with skip, counts each skipped record with the file and the reason', async () => {
    const dir = folder([good('ok', 'img/ok.png'), good('missing', 'img/nope.png'), good('text', 'img/text.png'), good('t-only')]);
    const src = readConversations(dir);
    const { samples, summary } = await prepareSamples(src.parsed.records, { tokenizer: tok, encode, imageSize: 8, loadImage: folderImageLoader(src.imageFolder), onBadImage: 'skip' });
    expect(samples.map((s) => s.id)).toEqual(['ok', 't-only']);
    expect(samples[0]!.pixelValues).toHaveLength(3 * 8 * 8);
    expect(samples[1]!.pixelValues).toBeNull();
    expect(summary.used).toBe(2);
    expect(summary.badImage.map((b) => b.id)).toEqual(['missing', 'text']);
    expect(summary.badImage[0]!.reason).toMatch(/nope\.png/);
    expect(summary.badImage[1]!.reason).toMatch(/text\.png/);
  });

  it('truncates to the maximum length after the splice and counts it; all-masked samples are left out and reported', async () => {
    const parsed = parseLlavaJson([good('long', 'img/ok.png'), { id: 'empty-answer', conversations: [{ from: 'human', value: 'hi' }, { from: 'gpt', value: '' }] }], 'd.json');
    const dir = folder([]);
    const full = await prepareSamples(parsed.records.slice(0, 1), { tokenizer: tok, encode, imageSize: 8, loadImage: folderImageLoader(dir) });
    const n = full.samples[0]!.encoded.inputIds.length;
    // cut just after the first answer's first token: the sample keeps labels, and is counted truncated
    const firstScored = [...full.samples[0]!.encoded.labels].findIndex((l) => l !== -100);
    const maxLength = firstScored + 1 + 15;
    const cut = await prepareSamples(parsed.records, { tokenizer: tok, encode: { ...encode, maxLength }, imageSize: 8, loadImage: folderImageLoader(dir) }, emptySummary());
    expect(cut.samples[0]!.encoded.inputIds.length).toBe(firstScored + 1);
    expect(cut.samples[0]!.encoded.fullLength).toBe(n + 15);
    expect(cut.summary.truncated.map((t) => t.id)).toEqual(['long']);
    // the empty answer still scores its </s>; a cut before every answer masks all labels
    const tiny = await prepareSamples(parsed.records, { tokenizer: tok, encode: { ...encode, maxLength: firstScored + 15 }, imageSize: 8, loadImage: folderImageLoader(dir) });
    expect(tiny.summary.allMasked.map((t) => t.id)).toEqual(['long']);
    expect(tiny.summary.allMasked[0]!.reason).toMatch(/beyond the maximum length/);
    const tooShort = await prepareSamples(parsed.records, { tokenizer: tok, encode: { ...encode, maxLength: 20 }, imageSize: 8, loadImage: folderImageLoader(dir) });
    expect(tooShort.summary.tooLong.map((t) => t.id)).toEqual(['long']);
  });
});
