// `kiln generate` through the real process: the tokens of a golden checkpoint (the same ones
// test/compiler/exec/generate.test.ts checks against full recomputation), sampling reproduced by
// its seed, and the exit codes of bad usage (2) and bad input (1), with no stack trace.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync } from 'node:fs';
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
