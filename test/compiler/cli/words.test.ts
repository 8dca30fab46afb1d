// `kiln words` through the real process on the golden checkpoint llama_b2 (a 28-pixel image in
// 4x4 patches of 7 pixels; test/compiler/exec/words.test.ts checks the numbers against torch
// and WebGPU against the reference): the JSON layout, the picture (the image as the model saw it,
// scaled x12 by nearest neighbour, labels on the patches), and bad input / bad usage exit codes.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode } from 'fast-png';
import { describe, expect, it } from 'vitest';
import { CLIP_MEAN, CLIP_STD } from '../../../data/image.js';
import { readSafetensors, writeSafetensors } from '../../../runtime/node/safetensors-file.js';
import { denormalise, MIN_CELL_PX, wordsScale } from '../../../compiler/cli/words-plot.js';

const G = 'test/golden/llama_b2';

function kiln(args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync('node', ['bin/kiln.js', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

const tmp = mkdtempSync(join(tmpdir(), 'kiln-words-'));
const base = ['words', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', `${G}/llava`, '--vision-tower', `${G}/clip`, '--backend', 'cpu'];

interface WordsJson {
  grid: [number, number];
  patches: { row: number; col: number; top: { id: number; token: string | null; p: number }[] }[];
}

describe('kiln words', () => {
  it('--json: a 4x4 grid, patches in row-major order, top-k most probable first; no picture unless --out', () => {
    const r = kiln([...base, '--batch', `${G}/batch.safetensors`, '--top-k', '3', '--json']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as WordsJson;
    expect(j.grid).toEqual([4, 4]);
    expect(j.patches.map((p) => [p.row, p.col])).toEqual(Array.from({ length: 16 }, (_, i) => [Math.floor(i / 4), i % 4]));
    for (const p of j.patches) {
      expect(p.top).toHaveLength(3);
      expect(p.top[0]!.p).toBeGreaterThanOrEqual(p.top[1]!.p);
      expect(p.top[1]!.p).toBeGreaterThanOrEqual(p.top[2]!.p);
      expect(p.top.every((t) => t.token === null && t.id >= 0 && t.id < 97)).toBe(true);
    }
    expect(existsSync('words.png')).toBe(false);
  }, 120_000);

  it('words.png: the image as the model saw it, scaled by a whole factor, with the top-1 labels', () => {
    const out = join(tmp, 'w.png');
    const r = kiln([...base, '--batch', `${G}/batch.safetensors`, '--out', out]);
    expect(r.code).toBe(0);
    expect(r.err).toContain('4x4 patches');
    // A 4x4 text grid of the top-1 ids on stdout.
    expect(r.out.trim().split('\n')).toHaveLength(4);
    const png = decode(readFileSync(out));
    const scale = wordsScale(28, 4);
    expect(scale).toBe(12);
    expect(28 * scale / 4).toBeGreaterThanOrEqual(MIN_CELL_PX);
    expect(png.width).toBe(28 * scale);
    expect(png.height).toBeGreaterThan(28 * scale);
    // Away from the labels (centred in each patch) and the grid lines, each pixel is the
    // de-normalised pixel_values[0] pixel it covers, exactly.
    const px = readSafetensors(`${G}/batch.safetensors`).get('pixel_values')!;
    const img = denormalise(px.data.subarray(0, 3 * 28 * 28), 28, CLIP_MEAN, CLIP_STD);
    const ch = png.channels;
    let checked = 0;
    for (let y = 0; y < 28; y++)
      for (let x = 0; x < 28; x++) {
        if (y % 7 !== 0 || x % 7 !== 0) continue; // the top-left pixel of each patch: far from its label
        const X = x * scale + scale / 2;
        const Y = y * scale + scale / 2;
        const d = ch * (Y * png.width + X);
        expect([png.data[d], png.data[d + 1], png.data[d + 2]], `pixel (${x}, ${y})`).toEqual([img.data[3 * (y * 28 + x)], img.data[3 * (y * 28 + x) + 1], img.data[3 * (y * 28 + x) + 2]]);
        checked++;
      }
    expect(checked).toBe(16);
    // The label boxes darken each patch's centre: its pixels are not the image's there.
    let differ = 0;
    for (let p = 0; p < 16; p++) {
      const X = (p % 4) * 7 * scale + (7 * scale) / 2;
      const Y = Math.floor(p / 4) * 7 * scale + (7 * scale) / 2;
      const src = 3 * ((Math.floor(Y / scale)) * 28 + Math.floor(X / scale));
      const d = ch * (Y * png.width + X);
      if (png.data[d] !== img.data[src] || png.data[d + 1] !== img.data[src + 1] || png.data[d + 2] !== img.data[src + 2]) differ++;
    }
    expect(differ).toBe(16);
  }, 120_000);

  it('with a tokenizer, token is the decoded text', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-words-tok-'));
    cpSync(`${G}/llava`, dir, { recursive: true });
    cpSync('test/golden/text/wordlevel', dir, { recursive: true });
    const r = kiln(['words', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', dir, '--vision-tower', `${G}/clip`, '--backend', 'cpu', '--image', 'test/golden/images/src/rgb.png', '--top-k', '1', '--json']);
    expect(r.err).toBe('');
    const j = JSON.parse(r.out) as WordsJson;
    // The word-level vocabulary has 68 entries; the model's 97 ids past them decode as <id>.
    for (const p of j.patches) expect(typeof p.top[0]!.token).toBe('string');
    expect(j.patches.some((p) => p.top[0]!.id < 68 && p.top[0]!.token !== '' && !p.top[0]!.token!.startsWith('<'))).toBe(true);
  }, 120_000);

  // A LLaVA checkpoint without the VM head: the same folder with vm_head.weight removed.
  const noHead = mkdtempSync(join(tmpdir(), 'kiln-words-nohead-'));
  cpSync(`${G}/llava`, noHead, { recursive: true });
  const all = readSafetensors(join(noHead, 'model.safetensors'));
  all.delete('vm_head.weight');
  writeSafetensors(join(noHead, 'model.safetensors'), all);
  writeFileSync(join(tmp, 'not-an-image.png'), 'hello');

  it.each([
    [['--batch', `${G}/batch.safetensors`, '--top-k', '0'], 2, '--top-k 0: expected a whole number > 0'],
    [['--batch', `${G}/batch.safetensors`, '--image', 'x.png'], 2, 'give either --image FILE or --batch FILE, not both'],
    [[], 2, 'an image is required'],
    [['--image', join(tmp, 'missing.png')], 1, 'cannot read the image: no such file or directory'],
    [['--image', join(tmp, 'not-an-image.png')], 1, 'not-an-image.png'],
    [['--batch', `${G}/batch.safetensors`, '--out', tmp], 1, 'is a folder'],
  ])('%j: exit %i', (extra, code, message) => {
    const r = kiln([...base, ...extra]);
    expect(r.code).toBe(code);
    expect(r.err).toContain(message);
    expect(r.err).not.toMatch(/\n\s+at /);
  }, 120_000);

  it('a checkpoint without vm_head: exit 1, saying it has no VM head', () => {
    const r = kiln(['words', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', noHead, '--vision-tower', `${G}/clip`, '--backend', 'cpu', '--batch', `${G}/batch.safetensors`, '--json']);
    expect(r.code).toBe(1);
    expect(r.err).toContain('the checkpoint has no VM head (vm_head.weight), so it has no visual words');
    expect(r.err).toContain(noHead);
    expect(r.err).not.toMatch(/\n\s+at /);
  }, 120_000);
});
