// kiln train's held-out evaluation and loss.png, through the command (cpu reference backend, a
// small builtin:shapes): the evaluations happen before the first step, every --eval-every steps
// and after the last; the summary's held-out accuracy is the scorer's on the final weights and
// sits beside the image-blind baseline of the same pictures; loss.png decodes to the layout with
// curves in it; --eval-data reads a LLaVA JSON with the training tokenizer; bad usage is exit 2.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode } from 'fast-png';
import { describe, expect, it } from 'vitest';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';
import { plotLayout, PLOT_COLOURS } from '../../../compiler/cli/loss-plot.js';
import { openBuiltin } from '../../../data/builtin.js';

const TINY = ['models/vwlmm.kiln', '--config', 'tiny', '--batch-size', '2', '--lr', '1e-3', '--backend', 'cpu'];

async function run(args: string[]): Promise<{ code: number; out: string[]; err: string }> {
  const o = new Output(true);
  const code = await main(['train', ...args], o);
  return { code, out: o.out, err: o.err.join('\n') };
}

describe('kiln train: held-out evaluation and loss.png', () => {
  it('evaluates builtin:shapes held-out questions and writes loss.png (--json)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-train-eval-'));
    const r = await run([...TINY, '--data', 'builtin:shapes?size=24&stage=mix', '--steps', '3', '--eval-every', '2', '--out', dir, '--json']);
    expect(r.code, r.err).toBe(0);
    const summary = (JSON.parse(r.out.at(-1)!) as { summary: Record<string, unknown> }).summary;
    const held = summary['heldout'] as { accuracy: number; baseline_accuracy: number; terms: Record<string, number>; answers: number; samples: number; per_type: Record<string, unknown> };
    // size=24: every sixth picture is held out, 4 conversations; the mix is evaluated on its questions.
    const heldout = openBuiltin('builtin:shapes?size=24&split=heldout');
    expect(held.samples).toBe(4);
    expect(held.answers).toBe(heldout.baseline.total);
    expect(held.baseline_accuracy).toBe(heldout.baseline.accuracy);
    expect(held.accuracy).toBeGreaterThanOrEqual(0);
    expect(held.accuracy).toBeLessThanOrEqual(1);
    expect(held.terms['lm']!).toBeGreaterThan(0);
    expect(held.terms['vm']!).toBeGreaterThanOrEqual(0);
    expect(Object.keys(held.per_type).sort()).toEqual(Object.keys(heldout.baseline.perType).sort());
    // loss.png: both terms and the accuracy panel, the train and held-out curves drawn.
    const path = join(dir, 'loss.png');
    expect(summary['loss_png']).toBe(path);
    const png = decode(readFileSync(path));
    const layout = plotLayout({ train: [{ step: 1, terms: { lm: 1, vm: 1 } }], heldout: [{ step: 0, terms: { lm: 1, vm: 1 }, accuracy: 0 }], caption: 'x' });
    expect([png.width, png.height]).toEqual([layout.width, layout.height]);
    const [r0, g0, b0] = [0x1f, 0x77, 0xb4];
    let trainPixels = 0;
    const a = layout.panels[0]!;
    for (let y = a.y + 2; y < a.y + a.height - 1; y++)
      for (let x = a.x + 2; x < a.x + a.width - 1; x++) {
        const o = (y * png.width + x) * png.channels;
        if (Math.abs(png.data[o]! - r0) + Math.abs(png.data[o + 1]! - g0) + Math.abs(png.data[o + 2]! - b0) < 40) trainPixels++;
      }
    expect(trainPixels, `pixels of ${PLOT_COLOURS.train} in the lm panel`).toBeGreaterThan(20);
  }, 300_000);

  it('prints the held-out table beside the baseline (text)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-train-eval-'));
    const r = await run([...TINY, '--data', 'builtin:shapes?size=24', '--steps', '2', '--out', dir]);
    expect(r.code, r.err).toBe(0);
    const text = r.out.join('\n');
    expect(text).toContain('held-out: builtin:shapes?size=24&split=heldout, 4 conversations');
    expect(text).toMatch(/\n\s+0\s+\d+\.\d{4}\s+\d\.\d+(e-\d+)?\s+\d+\.\d%/);
    expect(text).toMatch(/\n\s+2\s+\d+\.\d{4}/);
    expect(text).toMatch(/image-blind baseline \(most frequent train answer per question type\): \d+\.\d%/);
    expect(r.err).toMatch(/held-out at step 0: lm \d/);
  }, 300_000);

  it('--eval-data: a LLaVA JSON held out, read with the training vocabulary; without it, no heldout', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-train-eval-'));
    const b = openBuiltin('builtin:shapes?size=12&split=all');
    // Pictures as files: the JSON's images, drawn by the same rasteriser.
    const { encode } = await import('fast-png');
    const records = b.records.map((r) => ({ id: r.id, image: r.image, conversations: r.turns }));
    for (const r of b.records) {
      const img = await b.loadImage(r.image!);
      writeFileSync(join(dir, r.image!), encode({ width: img.width, height: img.height, data: img.data, channels: 3 }));
    }
    writeFileSync(join(dir, 'train.json'), JSON.stringify(records.slice(0, 8)));
    writeFileSync(join(dir, 'held.json'), JSON.stringify(records.slice(8)));
    const withEval = await run([...TINY, '--data', join(dir, 'train.json'), '--eval-data', join(dir, 'held.json'), '--steps', '2', '--out', join(dir, 'a'), '--json']);
    expect(withEval.code, withEval.err).toBe(0);
    const h = (JSON.parse(withEval.out.at(-1)!) as { summary: { heldout: { samples: number; baseline_accuracy: unknown; answers: number } } }).summary.heldout;
    expect(h.samples).toBe(4);
    expect(h.baseline_accuracy).toBeNull();
    expect(h.answers).toBe(b.all.slice(8).reduce((n, s) => n + s.questions.length, 0));
    const without = await run([...TINY, '--data', join(dir, 'train.json'), '--steps', '1', '--out', join(dir, 'b'), '--json']);
    expect(without.code, without.err).toBe(0);
    const s = (JSON.parse(without.out.at(-1)!) as { summary: Record<string, unknown> }).summary;
    expect(s['heldout']).toBeUndefined();
    // loss.png from the train terms alone: the two loss panels.
    expect(decode(readFileSync(join(dir, 'b', 'loss.png'))).width).toBe(plotLayout({ train: [{ step: 1, terms: { lm: 1, vm: 1 } }], heldout: [] }).width);
  }, 300_000);

  it('refuses --eval-data with builtin data, and a bad --eval-every, as usage errors', async () => {
    const a = await run([...TINY, '--data', 'builtin:shapes?size=24', '--eval-data', 'x.json', '--steps', '1']);
    expect(a.code).toBe(2);
    expect(a.err).toContain('--eval-data does not apply to builtin:shapes');
    const b = await run([...TINY, '--data', 'builtin:shapes?size=24', '--eval-every', 'often', '--steps', '1']);
    expect(b.code).toBe(2);
    expect(b.err).toContain('--eval-every often: expected an integer >= 0');
  }, 120_000);
});
