// Compares data/image.ts with the files make_images.py wrote (PIL + HF CLIPImageProcessor), per
// image: the RGB decode (uint8 levels), the 28 px pixel_values with and without expand2square
// (normalised units; HF's values rebuilt bit-exactly from the stored uint8 crop and the
// processor's 256-level table), and the 336 px pixel_values (bit-exact by SHA-256; where the uint8 crop is
// stored, also the max error in levels and in normalised units). Used by image-golden.test.ts;
// `node bin/run-ts.js test/golden/images/compare.ts` prints the table.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decode as decodePng } from 'fast-png';
import { loadImageFile } from '../../../data/image-node.js';
import { CLIP_MEAN, CLIP_STD, llavaResizeCrop, normalizeClip, preprocessLlava, type RgbImage } from '../../../data/image.js';
import { readSafetensors } from '../../../runtime/node/safetensors-file.js';

export const IMAGES_DIR = dirname(fileURLToPath(import.meta.url));

interface ImageMeta {
  file: string; mode: string; width: number; height: number;
  sha256_rgb: string; sha256_pv336: string; sha256_pv28: string; crop336: string | null;
}
export interface GoldenMeta {
  pillow: string; libjpeg_turbo: string; transformers: string;
  images: Record<string, ImageMeta>;
  broken: Record<string, { file: string; pil_error: string }>;
}

export function readMeta(): GoldenMeta {
  return JSON.parse(readFileSync(join(IMAGES_DIR, 'expected.json'), 'utf8')) as GoldenMeta;
}

/** Per-image agreement with PIL / HF. `undefined` where the golden value is not stored. */
export interface ImageResult {
  name: string;
  mode: string;
  /** decode == PIL's convert("RGB"), by SHA-256 of the uint8 HWC bytes. */
  rgbExact: boolean;
  /** max |Kiln - PIL| of the RGB decode in uint8 levels (when PIL's decode is stored). */
  rgbMaxLevels?: number;
  /** max |Kiln - HF| of the uint8 crop at 28 px with expand2square, in levels. */
  crop28MaxLevels?: number;
  /** max |Kiln - HF| of pixel_values at 28 px with expand2square, normalised units. */
  pv28Max: number;
  pv28Exact: boolean;
  /** the same without expand2square (plain CLIPImageProcessor), for some images. */
  pv28NopadMax?: number;
  /** 336 px pixel_values bit-identical with HF's (SHA-256 of the float32 bytes). */
  pv336Exact: boolean;
  /** where the 336 crop is stored: max error in uint8 levels of the crop, and normalised. */
  crop336MaxLevels?: number;
  pv336Max?: number;
}

const sha = (a: ArrayBufferView): string => createHash('sha256').update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).digest('hex');

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** HF's pixel_values from a stored uint8 crop: lut[c][crop] (make_images.py checks it is bit-exact). */
function viaLut(crop: ArrayLike<number>, lut: ArrayLike<number>, size: number): Float32Array {
  const n = size * size;
  const out = new Float32Array(3 * n);
  for (let c = 0; c < 3; c++) for (let i = 0; i < n; i++) out[c * n + i] = lut[c * 256 + crop[i * 3 + c]!]!;
  return out;
}

export async function compareAll(): Promise<ImageResult[]> {
  const meta = readMeta();
  const golden = readSafetensors(join(IMAGES_DIR, 'expected.safetensors'));
  const lut = golden.get('lut')!.data;
  const opts = (size: number, padToSquare: boolean) => ({ size, mean: CLIP_MEAN, std: CLIP_STD, padToSquare });
  const results: ImageResult[] = [];
  for (const [name, m] of Object.entries(meta.images)) {
    const img = await loadImageFile(join(IMAGES_DIR, m.file));
    const sameSize = img.width === m.width && img.height === m.height;
    const r: ImageResult = {
      name, mode: m.mode,
      rgbExact: sameSize && sha(img.data) === m.sha256_rgb,
      pv28Max: 0, pv28Exact: false, pv336Exact: false,
    };
    const rgb = golden.get(`${name}.rgb`);
    if (rgb !== undefined) r.rgbMaxLevels = sameSize ? maxAbs(img.data, rgb.data) : Infinity;

    const crop28 = llavaResizeCrop(img, opts(28, true));
    const pv28 = normalizeClip(crop28, CLIP_MEAN, CLIP_STD);
    const theirs28 = golden.get(`${name}.crop28`)!.data;
    r.crop28MaxLevels = maxAbs(crop28.data, theirs28);
    r.pv28Max = maxAbs(pv28, viaLut(theirs28, lut, 28));
    r.pv28Exact = sha(pv28) === m.sha256_pv28;
    const nopad = golden.get(`${name}.crop28_nopad`);
    if (nopad !== undefined) {
      r.pv28NopadMax = maxAbs(preprocessLlava(img, opts(28, false)), viaLut(nopad.data, lut, 28));
    }

    const crop336 = llavaResizeCrop(img, opts(336, true));
    const pv336 = normalizeClip(crop336, CLIP_MEAN, CLIP_STD);
    r.pv336Exact = sha(pv336) === m.sha256_pv336;
    if (m.crop336 !== null) {
      const theirs = decodePng(readFileSync(join(IMAGES_DIR, m.crop336)));
      r.crop336MaxLevels = maxAbs(crop336.data, theirs.data);
      r.pv336Max = maxAbs(pv336, viaLut(theirs.data, lut, 336));
    }
    results.push(r);
  }
  return results;
}

/** One line per image, for the test log and the README. */
export function formatResults(rs: ImageResult[]): string {
  const f = (x: number | undefined, digits = 2): string => (x === undefined ? '-' : x === 0 ? '0' : x.toExponential(digits));
  const lines = ['image              mode  rgb(levels)  crop28(levels) pv28 max     pv28 nopad   pv336 exact  crop336(levels)  pv336 max'];
  for (const r of rs) {
    lines.push([
      r.name.padEnd(18), r.mode.padEnd(5),
      (r.rgbExact ? 'exact' : r.rgbMaxLevels === undefined ? 'DIFFERS' : String(r.rgbMaxLevels)).padEnd(12),
      String(r.crop28MaxLevels).padEnd(14),
      (r.pv28Exact ? 'exact' : f(r.pv28Max)).padEnd(12),
      f(r.pv28NopadMax).padEnd(12),
      String(r.pv336Exact).padEnd(12),
      (r.crop336MaxLevels === undefined ? '-' : String(r.crop336MaxLevels)).padEnd(16),
      f(r.pv336Max),
    ].join(' '));
  }
  return lines.join('\n');
}

export type { RgbImage };

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  console.log(formatResults(await compareAll()));
}
