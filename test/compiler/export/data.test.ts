// The exported data.py (Kiln's data pipeline in Python, for train.py --data) against Kiln's own:
// on a LLaVA JSON + image folder made from the golden text records and golden images, every
// record's input_ids and labels, the summary (malformed, all-masked, too long, truncated) and the
// dumped batch (padding, pixel_values) equal `kiln data --json --dump`'s, for each kind of
// tokenizer and template; then train.py --data on 2 processes equals `kiln train --data` step for
// step, and a kiln train checkpoint resumes in train.py with the next losses equal.
//
// Tolerances: ids and labels are integers: exact. Pixels: exact (0 difference), because both
// sides compute Pillow's arithmetic: Kiln's data/image.ts is bit-exact with PIL's decode, resize
// and HF's float32 normalisation (test/golden/images), and data.py calls PIL itself. Training:
// kiln train (cpu reference) and PyTorch are two float32 implementations of one step, held to the
// trajectory test's 1e-4 relative per loss term and grad_norm, as train.test.ts holds --batch.
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';
import { readSafetensors } from '../../../runtime/node/safetensors-file.js';
import { runPython } from '../../helpers/torch-python.js';
import { port, steps, worst } from '../../helpers/train-steps.js';

const T = 'test/golden/text';
const IMG = 'test/golden/images/src';

async function kiln(args: readonly string[]): Promise<{ code: number; out: string; err: string }> {
  const out = new Output(true);
  const code = await main([...args], out);
  return { code, out: out.out.join('\n'), err: out.err.join('\n') };
}

/** The golden text records (every placeholder position, several turns, text only, byte fallback) with images, plus edge cases. */
function fixture(root: string): string {
  const dir = join(root, 'llava');
  mkdirSync(dir);
  const records = (JSON.parse(readFileSync(join(T, 'expected.json'), 'utf8')) as { records: unknown[] }).records;
  // Names as the records give them; contents of several kinds (RGB, a JPEG named .png, CMYK JPEG,
  // palette with transparency, 16-bit grey), non-square so expand2square and the resize matter.
  const images: Record<string, string> = { 'a.png': 'rgb.png', 'b.png': 'tall.png', 'c.png': 'wide.jpg', 'd.jpg': 'cmyk.jpg', 'e.png': 'palette_trns.png', 'f.png': 'grey16.png' };
  for (const [name, src] of Object.entries(images)) cpSync(join(IMG, src), join(dir, name));
  records.push(
    { id: 'malformed', conversations: [{ from: 'gpt', value: 'x' }] },
    { id: 7, image: 'e.png', conversations: [{ from: 'human', value: 'What is this? <image>' }, { from: 'gpt', value: 'A palette.' }] },
    { id: 'empty-answer', image: 'f.png', conversations: [{ from: 'human', value: '<image>' }, { from: 'gpt', value: '' }] },
  );
  writeFileSync(join(dir, 'data.json'), JSON.stringify(records, null, 1));
  return dir;
}

let root: string;
let data: string;
let tiny: string;
let wide: string;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'kiln-export-data-'));
  data = fixture(root);
  tiny = join(root, 'tiny');
  expect((await kiln(['export', 'models/vwlmm.kiln', '--config', 'tiny', '--target', 'torch', '--out', tiny])).code).toBe(0);
  // mistral_gqa's tower: 30-px images in 10-px patches (9 positions), another resize and crop.
  wide = join(root, 'wide');
  expect((await kiln(['export', 'models/vwlmm.kiln', '--config', 'tiny', '--vision-tower', 'test/golden/mistral_gqa/clip', '--target', 'torch', '--out', wide])).code).toBe(0);
}, 120_000);

// [name, export, kiln data flags (data.py takes the same)]
const CASES: [string, () => string, string[]][] = [
  ['Llama legacy, vicuna_v1 chosen by the config name', () => tiny, ['--tokenizer', join(T, 'llama_legacy')]],
  ['Llama legacy=false, --template mistral', () => tiny, ['--tokenizer', join(T, 'llama_nolegacy'), '--template', 'mistral']],
  ['Mistral, its jinja chat_template', () => tiny, ['--tokenizer', join(T, 'mistral')]],
  ['byte-level BPE, --image-placement inplace --max-length 68 (records cut and left out)', () => tiny, ['--tokenizer', join(T, 'bytelevel'), '--image-placement', 'inplace', '--max-length', '68']],
  ['word-level vocabulary, --limit 7', () => tiny, ['--tokenizer', join(T, 'wordlevel'), '--limit', '7']],
  ['30-px tower', () => wide, ['--tokenizer', join(T, 'llama_legacy'), '--vision-tower', 'test/golden/mistral_gqa/clip']],
];

const reached = new Map<string, number>();

describe("data.py equals Kiln's data pipeline", () => {
  it.each(CASES)('%s', async (name, pkg, flags) => {
    const tag = name.replace(/[^a-z0-9]+/gi, '-');
    const kDump = join(root, `${tag}-kiln.safetensors`);
    const pDump = join(root, `${tag}-py.safetensors`);
    const k = await kiln(['data', 'models/vwlmm.kiln', '--config', 'tiny', '--data', data, ...flags, '--json', '--dump', kDump]);
    expect(k.err).toBe('');
    expect(k.code).toBe(0);
    const pyFlags = flags.filter((_f, i) => flags[i] !== '--vision-tower' && flags[i - 1] !== '--vision-tower');
    const p = runPython([join(pkg(), 'data.py'), '--data', data, ...pyFlags, '--json', '--dump', pDump]);
    const kl = k.out.split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const pl = p.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    // Every record's ids and labels, and the summary's account of the rest, by index and id.
    expect(pl).toEqual(kl);
    const summary = kl.at(-1)!['summary'] as Record<string, unknown[] | number>;
    for (const [key, v] of Object.entries(summary)) if (Array.isArray(v)) reached.set(key, (reached.get(key) ?? 0) + v.length);
    const a = readSafetensors(kDump);
    const b = readSafetensors(pDump);
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const n of ['input_ids', 'labels']) {
      expect(b.get(n)!.shape).toEqual(a.get(n)!.shape);
      expect([...b.get(n)!.data]).toEqual([...a.get(n)!.data]);
    }
    const [pa, pb] = [a.get('pixel_values')!, b.get('pixel_values')!];
    expect(pb.shape).toEqual(pa.shape);
    let worst = 0;
    let nonzero = 0;
    for (let i = 0; i < pa.data.length; i++) {
      worst = Math.max(worst, Math.abs(pa.data[i]! - pb.data[i]!));
      if (pa.data[i] !== 0) nonzero++;
    }
    console.log(`${name}: ${kl.length - 1} samples (${JSON.stringify(Object.fromEntries(Object.entries(summary).map(([key, v]) => [key, Array.isArray(v) ? v.length : v])))}), ${pa.shape.join('x')} pixels, worst pixel difference ${worst}`);
    // At least one row's pixels (not only text-only rows' zeros) were compared.
    expect(nonzero).toBeGreaterThan(pa.shape.slice(1).reduce((x, y) => x * y, 1) / 2);
    expect(worst).toBe(0);
  });

  it('the cases reach every way a record is left out or cut', () => {
    // Guards the fixture: cases that stopped truncating (say) would pass the equality above without testing it.
    for (const key of ['malformed', 'all_masked', 'too_long', 'truncated']) expect(reached.get(key) ?? 0, key).toBeGreaterThan(0);
  });
});

/** Nine image records with short answers (a vocabulary small enough for llama_b2's 97 ids), one or two turns, the placeholder first or last. */
function trainingData(dir: string): void {
  mkdirSync(dir);
  const files = ['rgb.png', 'tall.png', 'wide.jpg', 'cmyk.jpg', 'palette_trns.png', 'grey.png', 'rgba.png', 'rgb444.jpg', 'la8.png'];
  const qa = [['What colour is it?', 'red'], ['How many shapes?', 'two'], ['Is it big?', 'yes, big'], ['Where is it?', 'left'], ['What shape is it?', 'a circle'], ['What colour is it?', 'blue'], ['How many shapes?', 'three'], ['Is it big?', 'no'], ['Where is it?', 'top right']];
  const records = files.map((f, i) => {
    cpSync(join(IMG, f), join(dir, `${i}_${f}`));
    const first = i % 2 ? `<image>\n${qa[i]![0]}` : `${qa[i]![0]} <image>`;
    const more = i % 3 === 0 ? [{ from: 'human', value: 'And the shape?' }, { from: 'gpt', value: 'a square' }] : [];
    return { id: `r${i}`, image: `${i}_${f}`, conversations: [{ from: 'human', value: first }, { from: 'gpt', value: qa[i]![1] }, ...more] };
  });
  writeFileSync(join(dir, 'data.json'), JSON.stringify(records, null, 1));
}

describe('train.py --data', () => {
  it('on 2 processes equals kiln train --data step for step over two epochs, and resumes a kiln train checkpoint', { timeout: 900_000 }, async () => {
    const C = 'test/golden/llama_b2';
    const dir = join(root, 'train-data');
    trainingData(dir);
    const tok = join(root, 'train-tok');
    expect((await kiln(['data', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', join(C, 'llava'), '--data', dir, '--save-tokenizer', tok])).code).toBe(0);
    const pkg = join(root, 'b2');
    expect((await kiln(['export', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', join(C, 'llava'), '--vision-tower', join(C, 'clip'), '--target', 'torch', '--out', pkg])).code).toBe(0);
    // 9 samples in batches of 4: 2 steps an epoch (the ninth dropped), so 4 steps cross into a second, reshuffled epoch.
    const flags = ['--stage', 'finetune', '--lr', '0.001', '--warmup-steps', '2', '--steps', '4', '--max-grad-norm', '12.0', '--checkpoint', join(C, 'llava'), '--vision-tower', join(C, 'clip'), '--data', dir, '--tokenizer', tok, '--batch-size', '4', '--json'];
    const k = await kiln(['train', 'models/vwlmm.kiln', '--config', 'tiny', ...flags, '--backend', 'cpu', '--save-every', '2', '--out', join(root, 'kd')]);
    expect(k.code).toBe(0);
    const mine = steps(k.out);
    const two = steps(runPython(['-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', port(), join(pkg, 'train.py'), ...flags, '--workers', '1', '--out', join(root, 'td')]));
    const resumeDir = join(root, 'from-kiln');
    mkdirSync(resumeDir);
    cpSync(join(root, 'kd', 'checkpoint-2'), join(resumeDir, 'checkpoint-2'), { recursive: true });
    const resumed = steps(runPython([join(pkg, 'train.py'), ...flags, '--workers', '0', '--resume', '--out', resumeDir], { MASTER_PORT: port() }));
    expect(mine).toHaveLength(4);
    const twoVsKiln = worst(two, mine);
    const resumedVsKiln = worst(resumed, mine.slice(2));
    console.log(`train.py --data (2 processes) vs kiln train --data, 4 steps over 2 epochs: worst relative difference ${twoVsKiln.toExponential(2)}; steps 3-4 of train.py resuming kiln's checkpoint-2: ${resumedVsKiln.toExponential(2)}; losses ${JSON.stringify(mine.map((s) => s.loss))}`);
    // The steps differ from each other (different rows each step), so equal losses are not one batch repeated.
    expect(new Set(mine.map((s) => s.loss.toFixed(4))).size).toBe(4);
    expect(twoVsKiln).toBeLessThan(1e-4);
    expect(resumedVsKiln).toBeLessThan(1e-4);
    // The tokenizer travels with the checkpoint, as kiln train's does.
    expect(readFileSync(join(root, 'td', 'checkpoint-4', 'tokenizer.json'))).toEqual(readFileSync(join(tok, 'tokenizer.json')));
  });

  it('refuses text-only records and a run without a tokenizer, as kiln train does', () => {
    const base = [join(tiny, 'train.py'), '--data', data, '--checkpoint', 'test/golden/llama_b2/llava', '--steps', '1', '--workers', '0'];
    expect(() => runPython([...base, '--tokenizer', join(T, 'wordlevel')], { MASTER_PORT: port() })).toThrow(/exited 1:[\s\S]*error: 2 records have no image \(record 3, id text-only, is the first\)/);
    expect(() => runPython(base, { MASTER_PORT: port() })).toThrow(/exited 2:[\s\S]*--data needs a tokenizer/);
  });
});
