// data/image.ts against PIL 12.3 / transformers 5.18 CLIPImageProcessor + LLaVA's expand2square, on
// the files test/golden/images/make_images.py wrote (see test/golden/images/README.md).
//
// Tolerance: none. Every image must be bit-exact, decode and pixel_values both: the decoders and
// the resampler reproduce libjpeg-turbo's and Pillow's integer arithmetic (mozjpeg for YCbCr and
// greyscale JPEGs, data/jpeg-cmyk.ts for CMYK, Pillow's unpackers for PNG, Resample.c for the
// resize, numpy's float32 for the normalisation); nothing is approximated.
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadImageFile } from '../../data/image-node.js';
import { CLIP_MEAN, CLIP_STD, normalizeClip } from '../../data/image.js';
import { KilnError } from '../../runtime/errors.js';
import { bundleRuntime } from '../../scripts/bundle-runtime.js';
import { readSafetensors } from '../../runtime/node/safetensors-file.js';
import { IMAGES_DIR, compareAll, formatResults, readMeta, type ImageResult } from '../golden/images/compare.js';

describe('decode and preprocess vs PIL + CLIPImageProcessor', () => {
  let results: ImageResult[];
  beforeAll(async () => {
    results = await compareAll();
    console.log(formatResults(results));
  });

  it('covers every kind the issue names', () => {
    const modes = new Set(results.map((r) => r.mode));
    for (const m of ['RGB', 'RGBA', 'P', 'L', 'I;16', 'CMYK']) expect(modes).toContain(m);
    const names = results.map((r) => r.name);
    for (const n of ['palette_trns_png', 'grey16_png', 'cmyk_jpg', 'cmyk_mixed_jpg', 'exif_rotated_jpg', 'wide_jpg', 'tall_png', 'large_jpg', 'cmyk_progressive_jpg']) expect(names).toContain(n);
  });

  it('every PNG and JPEG kind: bit-exact decode, 28 px and 336 px pixel_values', () => {
    for (const r of results) {
      expect({ name: r.name, rgb: r.rgbExact, pv28: r.pv28Exact, pv336: r.pv336Exact }).toEqual({ name: r.name, rgb: true, pv28: true, pv336: true });
      expect(r.crop28MaxLevels, r.name).toBe(0);
      if (r.pv28NopadMax !== undefined) expect(r.pv28NopadMax, r.name).toBe(0);
      if (r.crop336MaxLevels !== undefined) expect(r.crop336MaxLevels, r.name).toBe(0);
      if (r.pv336Max !== undefined) expect(r.pv336Max, r.name).toBe(0);
    }
  });

  it('EXIF orientation is ignored, as PIL.Image.open does', () => {
    const r = results.find((x) => x.name === 'exif_rotated_jpg')!;
    expect(r.rgbExact).toBe(true);
  });
});

describe('normalisation', () => {
  it('equals HF rescale + normalize for all 256 levels, bit for bit', () => {
    const lut = readSafetensors(join(IMAGES_DIR, 'expected.safetensors')).get('lut')!.data;
    const levels = new Uint8Array(256 * 3);
    for (let v = 0; v < 256; v++) levels.fill(v, v * 3, v * 3 + 3);
    const out = normalizeClip({ width: 256, height: 1, data: levels }, CLIP_MEAN, CLIP_STD);
    expect(Array.from(out)).toEqual(Array.from(lut));
  });
});

describe('files PIL refuses are refused, naming the file', () => {
  const meta = readMeta();
  it.each(Object.entries(meta.broken))('%s', async (_name, b) => {
    const path = join(IMAGES_DIR, b.file);
    const err = await loadImageFile(path).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(KilnError);
    expect((err as KilnError).file).toBe(path);
    expect((err as KilnError).message).toMatch(/broken (PNG|JPEG) file|not an image/);
  });
});

describe('data/image.ts stays browser-safe', () => {
  it('bundles for the browser with no Node module and nothing of the compiler', async () => {
    const r = await bundleRuntime('data/image.ts');
    expect(r.forbidden).toEqual([]);
    expect(r.inputs).toContain('data/jpeg-cmyk.ts');
    expect(r.inputs.some((i) => i.includes('@jsquash/jpeg'))).toBe(true);
  });
});
