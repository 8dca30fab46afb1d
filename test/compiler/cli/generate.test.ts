// `kiln generate` through the real process: the tokens of a golden checkpoint (the same ones
// test/compiler/exec/generate.test.ts checks against full recomputation), sampling reproduced by
// its seed, and the exit codes of bad usage (2) and bad input (1), with no stack trace.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const G = 'test/golden/llama_b2';

function kiln(args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync('node', ['bin/kiln.js', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

const base = ['generate', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', `${G}/llava`, '--vision-tower', `${G}/clip`, '--batch', `${G}/batch.safetensors`, '--backend', 'cpu'];

describe('kiln generate', () => {
  it('greedy tokens as JSON, with the timing figures', () => {
    const r = kiln([...base, '--max-tokens', '6', '--json']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as { tokens: number[]; prefill_ms: number; decode_tokens_per_s: number; stop: string };
    expect(j.tokens).toEqual([82, 88, 82, 88, 88, 52]);
    expect(j.stop).toBe('max-tokens');
    expect(j.prefill_ms).toBeGreaterThan(0);
    expect(j.decode_tokens_per_s).toBeGreaterThan(0);
  }, 120_000);

  it('streams token ids in text mode and says why it stopped', () => {
    const r = kiln([...base, '--max-tokens', '3']);
    expect(r.code).toBe(0);
    expect(r.out.trim()).toBe('82 88 82');
    expect(r.err).toMatch(/^3 tokens \(max-tokens\); prefill [\d.]+ ms over 24 positions; decode [\d.]+ tokens\/s; backend cpu/);
  }, 120_000);

  it('sampling: the same seed gives the same tokens, in another process too', () => {
    const args = [...base, '--max-tokens', '8', '--temperature', '1.5', '--top-p', '0.9', '--top-k', '50', '--json'];
    const a = JSON.parse(kiln([...args, '--seed', '4']).out) as { tokens: number[]; stop: string };
    const b = JSON.parse(kiln([...args, '--seed', '4']).out) as { tokens: number[]; stop: string };
    expect([b.tokens, b.stop]).toEqual([a.tokens, a.stop]);
    // Seed 4 samples the checkpoint's eos_token_id (2) third: generation stops there, eos included.
    expect(a.stop).toBe('eos');
    expect(a.tokens).toEqual([58, 45, 2]);
  }, 120_000);

  it.each([
    [['--top-p', '1.5'], 2, '--top-p 1.5: expected a probability in (0, 1]'],
    [['--max-tokens', '0'], 2, '--max-tokens 0: expected a whole number > 0'],
    [['--temperature=-1'], 2, '--temperature -1: expected a number >= 0 (0: greedy)'],
    [['--backend', 'tpu'], 2, '--backend tpu: expected webgpu or cpu'],
    [['--cache', '10'], 1, 'the prompt is 24 positions long (with the image), longer than the KV cache (--cache 10)'],
  ])('%j: exit %i', (extra, code, message) => {
    const r = kiln([...base, ...extra]);
    expect(r.code).toBe(code);
    expect(r.err).toContain(message);
    expect(r.err).not.toMatch(/\n\s+at /);
  }, 120_000);

  // The golden checkpoint with the word-level tokenizer of test/golden/text (68 ids; the model's
  // vocabulary is 97, so ids past 67 decode as <id>).
  const withTok = mkdtempSync(join(tmpdir(), 'kiln-generate-'));
  cpSync(`${G}/llava`, withTok, { recursive: true });
  cpSync('test/golden/text/wordlevel', withTok, { recursive: true });
  const image = ['generate', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', withTok, '--vision-tower', `${G}/clip`, '--backend', 'cpu', '--max-tokens', '8'];

  it('--image --prompt: the streamed text is the whole-sequence decode of the JSON tokens', () => {
    const args = [...image, '--image', 'test/golden/images/src/rgb.png', '--prompt', 'what colour is the shape?'];
    const j = JSON.parse(kiln([...args, '--json']).out) as { tokens: number[]; text: string };
    expect(j.tokens).toHaveLength(8);
    expect(j.text.length).toBeGreaterThan(0);
    const r = kiln(args);
    expect(r.code).toBe(0);
    expect(r.out).toBe(`${j.text}\n`);
    // LLaVA's prompt: BOS, system, "USER: <image>\n..." then -200's 9 patches, "ASSISTANT:".
    expect(r.err).toMatch(/over \d+ positions/);
  }, 120_000);

  it.each([
    [['--image', 'test/golden/images/src/broken_text.png', '--prompt', 'x'], 1, 'broken_text.png: not an image Kiln can read'],
    [['--image', 'no/such.png', '--prompt', 'x'], 1, 'no/such.png'],
    [['--image', 'test/golden/images/src/rgb.png'], 2, '--image needs --prompt TEXT'],
    [['--image', 'test/golden/images/src/rgb.png', '--prompt', 'x', '--batch', `${G}/batch.safetensors`], 2, 'not both'],
  ])('--image %j: exit %i', (extra, code, message) => {
    const r = kiln([...image, ...extra]);
    expect(r.code).toBe(code);
    expect(r.err).toContain(message);
    expect(r.err).not.toMatch(/\n\s+at /);
  }, 120_000);

  it('several --prompt: left-padded into one call, each row the tokens and text of its prompt alone', () => {
    // Prompts of 2 and 7 words: the short one gets left padding.
    const qs = ['colour?', 'what colour is the shape in the picture?'];
    const both = kiln([...image, '--image', 'test/golden/images/src/rgb.png', '--prompt', qs[0]!, '--prompt', qs[1]!, '--json']);
    expect(both.err).toBe('');
    expect(both.code).toBe(0);
    const j = JSON.parse(both.out) as { rows: { tokens: number[]; text: string; stop: string }[]; decode_tokens_per_s: number };
    expect(j.rows).toHaveLength(2);
    qs.forEach((q, i) => {
      const one = JSON.parse(kiln([...image, '--image', 'test/golden/images/src/rgb.png', '--prompt', q, '--json']).out) as { tokens: number[]; text: string; stop: string };
      expect(j.rows[i]!.tokens, q).toEqual(one.tokens);
      expect(j.rows[i]!.text).toBe(one.text);
      expect(j.rows[i]!.stop).toBe(one.stop);
    });
    expect(j.decode_tokens_per_s).toBeGreaterThan(0);
    // Text mode: one line per prompt.
    const text = kiln([...image, '--image', 'test/golden/images/src/rgb.png', '--prompt', qs[0]!, '--prompt', qs[1]!]);
    expect(text.out).toBe(`[0] ${j.rows[0]!.text}\n[1] ${j.rows[1]!.text}\n`);
  }, 300_000);

  it('--batch --rows all: the rows of a batch together, each as with --rows i', () => {
    const all = JSON.parse(kiln([...base, '--max-tokens', '4', '--rows', 'all', '--json']).out) as { rows: { tokens: number[] }[] };
    expect(all.rows).toHaveLength(2);
    for (const r of [0, 1]) expect(all.rows[r]!.tokens).toEqual((JSON.parse(kiln([...base, '--max-tokens', '4', '--rows', String(r), '--json']).out) as { tokens: number[] }).tokens);
  }, 300_000);

  it('the checkpoint\'s chat_template is the default template when its tokenizer_config has one', () => {
    // A chat_template that writes the mistral format into a checkpoint whose model type (llama)
    // would choose vicuna_v1: without --template the prompt is the mistral one.
    const dir = mkdtempSync(join(tmpdir(), 'kiln-generate-chat-'));
    cpSync(withTok, dir, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    cfg['chat_template'] = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}";
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(cfg));
    const args = ['generate', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', dir, '--vision-tower', `${G}/clip`, '--backend', 'cpu', '--max-tokens', '8', '--image', 'test/golden/images/src/rgb.png', '--prompt', 'what colour is the shape?', '--json'];
    const tokens = (extra: string[]) => (JSON.parse(kiln([...args, ...extra]).out) as { tokens: number[] }).tokens;
    const chat = tokens([]);
    expect(chat).toEqual(tokens(['--template', 'mistral']));
    expect(chat).not.toEqual(tokens(['--template', 'vicuna_v1']));
    expect(chat).toEqual(tokens(['--template', 'chat_template']));
  }, 300_000);

  it.each([
    [['--rows', '0,x'], 2, '--rows 0,x: expected all or row numbers such as 0,2'],
    [['--rows', '5'], 1, 'the batch has 2 rows; row 5 was asked for (--rows)'],
  ])('--batch %j: exit %i', (extra, code, message) => {
    const r = kiln([...base, ...extra]);
    expect(r.code).toBe(code);
    expect(r.err).toContain(message);
  }, 120_000);

  it.each([
    [['--image', 'test/golden/images/src/rgb.png', '--image', 'test/golden/images/src/rgb.png', '--prompt', 'x'], 2, '2 --image and 1 --prompt'],
    [['--image', 'test/golden/images/src/rgb.png', '--prompt', 'x', '--rows', '1'], 2, '--rows chooses rows of --batch FILE'],
    [['--image', 'test/golden/images/src/rgb.png', '--prompt', 'x', '--template', 'chat_template'], 2, 'has no chat_template'],
  ])('several prompts %j: exit %i', (extra, code, message) => {
    const r = kiln([...image, ...extra]);
    expect(r.code).toBe(code);
    expect(r.err).toContain(message);
  }, 120_000);

  it('--prompt with a checkpoint that has no tokenizer: exit 1', () => {
    const r = kiln([...base, '--image', 'test/golden/images/src/rgb.png', '--prompt', 'x'].filter((a, i, all) => a !== '--batch' && all[i - 1] !== '--batch'));
    expect(r.code).toBe(1);
    expect(r.err).toContain('no tokenizer.json in the checkpoint folder, and --prompt needs one');
  }, 120_000);

  it('a batch file that does not exist: exit 1 naming it', () => {
    const r = kiln(['generate', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', `${G}/llava`, '--vision-tower', `${G}/clip`, '--batch', 'no/such.safetensors', '--backend', 'cpu']);
    expect(r.code).toBe(1);
    expect(r.err).toContain('no/such.safetensors');
    expect(r.err).not.toMatch(/\n\s+at /);
  }, 120_000);

  it('no checkpoint: exit 2', () => {
    const r = kiln(['generate', 'models/vwlmm.kiln', '--batch', `${G}/batch.safetensors`]);
    expect(r.code).toBe(2);
    expect(r.err).toContain('--checkpoint DIR is required');
  }, 120_000);
});
