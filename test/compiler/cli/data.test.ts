// `kiln data` as a user meets it: what it prints, exit codes, and a dumped batch that
// `kiln loss` accepts.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';
import { readSafetensors } from '../../../runtime/node/safetensors-file.js';

async function kiln(...argv: string[]) {
  const out = new Output(true);
  const code = await main(argv, out);
  return { code, stdout: out.out.join('\n'), stderr: out.err.join('\n') };
}
const tmp = () => mkdtempSync(join(tmpdir(), 'kiln-data-'));
const G = 'test/golden/llama_b2';

describe('kiln data', () => {
  it('shows builtin:shapes records with scored spans, the dataset size and the image-blind baseline', async () => {
    const r = await kiln('data', 'models/vwlmm.kiln', '--config', 'tiny', '--data', 'builtin:shapes', '--limit', '2');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/builtin:shapes: 1200 pictures \(1000 train, 200 held-out\)/);
    expect(r.stdout).toMatch(/image-blind baseline .* on the \d+ held-out questions: \d+\.\d%/);
    expect(r.stdout).toMatch(/ASSISTANT: ⟦\w+<\/s>⟧USER:/);
    expect(r.stdout).toMatch(/2 records: 2 used, 0 malformed/);
  });

  it('dumps a batch that kiln loss --backend cpu accepts for the tiny config', async () => {
    const dump = join(tmp(), 'batch.safetensors');
    const d = await kiln('data', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', join(G, 'llava'), '--data', 'builtin:shapes?split=heldout', '--limit', '3', '--dump', dump, '--json');
    expect(d.stderr).toBe('');
    expect(d.code).toBe(0);
    const lines = d.stdout.split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(4);
    expect(Object.keys(lines[0]!)).toEqual(['id', 'input_ids', 'labels', 'image']);
    expect((lines[3]!['summary'] as { used: number }).used).toBe(3);
    const t = readSafetensors(dump);
    expect([...t.keys()].sort()).toEqual(['input_ids', 'labels', 'pixel_values']);
    expect(t.get('pixel_values')!.shape).toEqual([3, 3, 28, 28]);
    const T = t.get('input_ids')!.shape[1]!;
    expect(T).toBe(Math.max(...lines.slice(0, 3).map((l) => (l['input_ids'] as number[]).length)));
    const loss = await kiln('loss', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', join(G, 'llava'), '--vision-tower', join(G, 'clip'), '--batch', dump, '--backend', 'cpu', '--json');
    expect(loss.stderr).toBe('');
    expect(loss.code).toBe(0);
    const v = JSON.parse(loss.stdout) as { loss: number; terms: { lm: number; vm: number } };
    expect(Number.isFinite(v.loss) && v.terms.lm > 0 && v.terms.vm > 0).toBe(true);
  });

  it('reads a LLaVA JSON with a checkpoint tokenizer: multi-turn spans, malformed records named', async () => {
    const dir = tmp();
    writeFileSync(
      join(dir, 'chat.json'),
      JSON.stringify([
        { id: 'chat', conversations: [{ from: 'human', value: 'What is 2 + 2?' }, { from: 'gpt', value: '4' }, { from: 'human', value: 'And 10 + 32?' }, { from: 'gpt', value: '42, of course.' }] },
        { id: 'broken', conversations: [{ from: 'gpt', value: 'x' }] },
      ]),
    );
    const r = await kiln('data', 'models/vwlmm.kiln', '--config', 'tiny', '--tokenizer', 'test/golden/text/llama_legacy', '--data', dir);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('ASSISTANT:⟦ 4</s>⟧USER: And 10 + 32? ASSISTANT:⟦ 42, of course.</s>⟧');
    expect(r.stdout).toMatch(/record 1 \(id broken\): turn 0 is from "gpt"/);
    expect(r.stdout).toMatch(/2 records: 1 used, 1 malformed/);
  });

  it('bad usage exits 2, bad input exits 1, each with a message and no stack', async () => {
    const usage = [
      ['data', 'models/vwlmm.kiln', '--config', 'tiny'],
      ['data', 'models/vwlmm.kiln', '--data', 'builtin:shapes', '--template', 'chatml'],
      ['data', 'models/vwlmm.kiln', '--data', 'builtin:shapes', '--on-bad-image', 'ignore'],
      ['data', 'models/vwlmm.kiln', '--data', 'builtin:shapes', '--limit', '0'],
    ];
    for (const argv of usage) {
      const r = await kiln(...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/^kiln: /);
    }
    const dir = tmp();
    writeFileSync(join(dir, 'd.json'), JSON.stringify([{ id: 'x', image: 'gone.png', conversations: [{ from: 'human', value: '<image>\nhi' }, { from: 'gpt', value: 'red' }] }]));
    const inputs: [string[], RegExp][] = [
      [['--data', join(dir, 'nothing.json')], /nothing\.json: cannot read: no such file/],
      [['--data', dir], /record 0 \(id x\): image gone\.png: .*gone\.png/],
      [['--data', 'builtin:shapes', '--tokenizer', 'test/golden/text/llama_legacy'], /the tokenizer has \d+ ids but the model's vocabulary \(text\.vocab\) is \d+/],
    ];
    for (const [extra, msg] of inputs) {
      const r = await kiln('data', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', join(G, 'llava'), ...extra);
      expect(r.code, extra.join(' ')).toBe(1);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    const skip = await kiln('data', 'models/vwlmm.kiln', '--config', 'tiny', '--data', dir, '--on-bad-image', 'skip');
    expect(skip.code).toBe(0);
    expect(skip.stdout).toMatch(/1 records: 0 used, 0 malformed, 1 skipped for their image/);
    expect(skip.stdout).toMatch(/record 0 \(id x\): image gone\.png/);
  });
});

describe('kiln data --template auto', () => {
  it("uses the tokenizer's chat_template when no checkpoint config names the model type", async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'c.json'), JSON.stringify([{ id: 'q', conversations: [{ from: 'human', value: 'Count the objects.' }, { from: 'gpt', value: 'There are four.' }] }]));
    const r = await kiln('data', 'models/vwlmm.kiln', '--config', 'tiny', '--tokenizer', 'test/golden/text/mistral', '--data', join(dir, 'c.json'));
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^template chat_template/);
    // this vocabulary has a token "▁[/INST]The" that straddles prompt and answer: it is scored,
    // as its characters overlap the answer (the golden labels do the same)
    expect(r.stdout).toContain('<s>[INST] Count the objects.⟦ [/INST]There are four.</s>⟧');
    const m = await kiln('data', 'models/vwlmm.kiln', '--config', 'tiny', '--tokenizer', 'test/golden/text/mistral', '--template', 'mistral', '--data', join(dir, 'c.json'), '--json');
    const chat = await kiln('data', 'models/vwlmm.kiln', '--config', 'tiny', '--tokenizer', 'test/golden/text/mistral', '--data', join(dir, 'c.json'), '--json');
    // Same text, different ids, as in transformers (golden cases mistral/mistral vs
    // mistral/chat_template): the tokenizer's BOS leaves "[INST]" at the start of the text, where
    // Metaspace prepends "▁"; the template writes "<s>" into the text, after which it does not.
    const first = (out: string) => (JSON.parse(out.split('\n')[0]!) as { input_ids: number[] }).input_ids.slice(0, 3);
    expect(first(m.stdout)).toEqual([1, 368, 600]);
    expect(first(chat.stdout)).toEqual([1, 303, 348]);
  });

  it("picks the template from the checkpoint's model type", async () => {
    const llama = await kiln('data', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', join(G, 'llava'), '--data', 'builtin:shapes', '--limit', '1');
    const mistral = await kiln('data', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', 'test/golden/mistral_gqa/llava', '--vision-tower', 'test/golden/mistral_gqa/clip', '--data', 'builtin:shapes', '--limit', '1');
    expect(llama.stdout).toMatch(/^template vicuna_v1/);
    expect(mistral.stderr).toBe('');
    expect(mistral.stdout).toMatch(/^template mistral, .* image 30px = 9 positions/);
    expect(mistral.stdout).toMatch(/<s>\[INST\] <image>\\nare the objects small or large \? \[\/INST\]⟦\w+<\/s>⟧/);
  });

  it('keeps <image> where the text has it with --image-placement inplace', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'x.png'), readFileSync('test/golden/images/src/rgb.png'));
    writeFileSync(join(dir, 'd.json'), JSON.stringify([{ id: 'm', image: 'x.png', conversations: [{ from: 'human', value: 'look at <image> now' }, { from: 'gpt', value: 'red' }] }]));
    const base = ['data', 'models/vwlmm.kiln', '--config', 'tiny', '--data', dir];
    const front = await kiln(...base);
    const inplace = await kiln(...base, '--image-placement', 'inplace');
    // LLaVA removes the placeholder and strips the ends only: the two spaces stay
    expect(front.stdout).toContain('USER: <image>\\nlook at  now ASSISTANT:');
    expect(inplace.stdout).toContain('USER: look at <image> now ASSISTANT:');
    expect((await kiln(...base, '--image-placement', 'middle')).code).toBe(2);
  });
});

