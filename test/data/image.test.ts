// Unit checks of data/image.ts that need no golden files: error paths and geometry.
// test/data/image-golden.test.ts compares against PIL / CLIPImageProcessor output.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { encode as encodePng } from 'fast-png';
import { decodeImage, loadImageFile } from '../../data/image-node.js';
import { expandToSquare, preprocessLlava, shortestEdgeSize, CLIP_MEAN, CLIP_STD } from '../../data/image.js';
import { KilnError } from '../../runtime/errors.js';

async function rejects(p: Promise<unknown>, ...parts: string[]): Promise<KilnError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(KilnError);
  for (const part of parts) expect((e as KilnError).message).toContain(part);
  return e as KilnError;
}

describe('decodeImage errors name the source', () => {
  it('rejects bytes that are not an image', async () => {
    await rejects(decodeImage(new TextEncoder().encode('hello'), 'rec7/cat.png'), 'rec7/cat.png', 'not an image');
    await rejects(decodeImage(new Uint8Array(0), 'empty.jpg'), 'empty.jpg', 'empty');
  });
  it('rejects a truncated PNG and a truncated JPEG', async () => {
    const png = encodePng({ width: 4, height: 3, data: new Uint8Array(36), channels: 3, depth: 8 });
    await rejects(decodeImage(png.subarray(0, 40), 'a.png'), 'a.png', 'broken PNG');
    const jpegStart = new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46]);
    await rejects(decodeImage(jpegStart, 'b.jpg'), 'b.jpg', 'broken JPEG');
  });
  it('a broken JPEG among concurrent decodes fails alone, and decoding goes on', async () => {
    const dir = join(dirname(fileURLToPath(import.meta.url)), '../golden/images/src');
    const files = ['wide.jpg', 'broken_truncated.jpg', 'grey.jpg', 'exif_rotated.jpg', 'large.jpg'];
    const bytes = files.map((f) => new Uint8Array(readFileSync(join(dir, f))));
    // a JPEG that libjpeg rejects outright (error_exit, not a warning): sampling factors 0x0
    const bad = bytes[0]!.slice();
    const sof = bad.findIndex((b, i) => b === 0xff && bad[i + 1] === 0xc0);
    bad[sof + 11] = 0;
    const all = await Promise.allSettled([...bytes.map((b, i) => decodeImage(b, files[i]!)), decodeImage(bad, 'bad.jpg'), decodeImage(bytes[2]!, 'again.jpg')]);
    expect(all.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect(String((all[5] as PromiseRejectedResult).reason.message)).toMatch(/^bad\.jpg: broken JPEG file: /);
  });
  it('says which format a non-PNG/JPEG image is', async () => {
    await rejects(decodeImage(new TextEncoder().encode('GIF89a\x01\x00\x01\x00'), 'ocr/123.jpg'), 'ocr/123.jpg', 'a GIF image', 'PNG and JPEG only');
    await rejects(decodeImage(new TextEncoder().encode('RIFF\x00\x00\x00\x00WEBPVP8 '), 'x.webp'), 'a WebP image');
  });
  it('refuses images over Pillow\'s decompression-bomb limit before decoding them', async () => {
    // 20000 x 10000 = 2e8 pixels > 178956970: PIL raises DecompressionBombError
    const png = encodePng({ width: 1, height: 1, data: new Uint8Array(3), channels: 3, depth: 8 }).slice();
    new DataView(png.buffer).setUint32(16, 20000);
    new DataView(png.buffer).setUint32(20, 10000);
    await rejects(decodeImage(png, 'bomb.png'), 'bomb.png', 'image too large', '178956970');
    const dir = join(dirname(fileURLToPath(import.meta.url)), '../golden/images/src');
    const jpg = new Uint8Array(readFileSync(join(dir, 'wide.jpg')));
    const sof = jpg.findIndex((b, i) => b === 0xff && jpg[i + 1] === 0xc0);
    jpg.set([0xff, 0xff, 0x40, 0x00], sof + 5); // height 65535, width 16384
    await rejects(decodeImage(jpg, 'bomb.jpg'), 'bomb.jpg', 'image too large');
  });
  it('corrupted JPEGs (YCbCr, CMYK, YCCK) and PNGs decode or fail with a KilnError, never anything else', async () => {
    const dir = join(dirname(fileURLToPath(import.meta.url)), '../golden/images/src');
    let seed = 12345;
    const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
    for (const f of ['cmyk.jpg', 'cmyk_progressive.jpg', 'ycck.jpg', 'wide.jpg', 'palette_trns.png', 'grey16.png', 'interlaced.png']) {
      const orig = new Uint8Array(readFileSync(join(dir, f)));
      for (let t = 0; t < 60; t++) {
        const b = orig.slice();
        for (let k = 0; k < 1 + rand(4); k++) b[rand(b.length)] = rand(256);
        const cut = t % 3 === 0 ? b.subarray(0, 20 + rand(b.length - 20)) : b;
        const err = await decodeImage(cut, f).then(() => undefined, (e: unknown) => e);
        if (err !== undefined) {
          expect(err, `${f} try ${t}`).toBeInstanceOf(KilnError);
          expect((err as KilnError).file).toBe(f);
        }
      }
    }
  });
  it('names a missing file', async () => {
    await rejects(loadImageFile('/nonexistent/dir/x.png'), '/nonexistent/dir/x.png', 'no such file');
  });
});

describe('geometry', () => {
  it('expand2square pastes at (long - short) // 2', () => {
    const img = { width: 3, height: 6, data: new Uint8Array(54).fill(9) };
    const sq = expandToSquare(img, [1, 2, 3]);
    expect(sq.width).toBe(6);
    // columns 0 and 4..5 are background, 1..3 the image; (6 - 3) // 2 = 1
    expect(Array.from(sq.data.subarray(0, 6))).toEqual([1, 2, 3, 9, 9, 9]);
    expect(Array.from(sq.data.subarray(9, 18))).toEqual([9, 9, 9, 1, 2, 3, 1, 2, 3]);
  });
  it('shortest edge follows int(size * long / short)', () => {
    expect(shortestEdgeSize(500, 333, 336)).toEqual([504, 336]);
    expect(shortestEdgeSize(333, 500, 336)).toEqual([336, 504]);
  });
  it('the padding normalises to (int(m*255)/255 - m) / s when padded', () => {
    // 2 x 40 padded to 40 x 40 needs no resize at size 40, so the corner is pure background.
    const img = { width: 2, height: 40, data: new Uint8Array(240).fill(200) };
    const out = preprocessLlava(img, { size: 40, mean: CLIP_MEAN, std: CLIP_STD, padToSquare: true });
    expect(out.length).toBe(3 * 1600);
    // corner pixel is pure background: int(0.48145466 * 255) = 122
    expect(out[0]).toBeCloseTo((122 / 255 - CLIP_MEAN[0]) / CLIP_STD[0], 6);
  });
});
