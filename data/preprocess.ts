// LLaVA-1.5's preprocessing of a decoded image, with Pillow's integer arithmetic: expand2square,
// the bicubic resize of the shortest side, HF's centre crop, rescale and CLIP normalisation. Split
// from image.ts (decoding) along that seam; image.ts re-exports everything here.

import { KilnError } from '../runtime/errors.js';
import type { LlavaPreprocessOptions, RgbImage } from './image.js';

// ---------------------------------------------------------------------------------------------
// Geometry: expand2square, PIL's bicubic resample, HF's centre crop

/**
 * LLaVA-1.5's `expand2square` (llava/mm_utils.py): a square canvas of the long side filled with
 * `background`, the image pasted at ((long - short) // 2) along the short axis. Square images are
 * returned as they are.
 */
export function expandToSquare(img: RgbImage, background: [number, number, number]): RgbImage {
  const { width, height } = img;
  if (width === height) return img;
  const side = Math.max(width, height);
  const data = new Uint8Array(side * side * 3);
  for (let i = 0; i < side * side; i++) {
    data[i * 3] = background[0]; data[i * 3 + 1] = background[1]; data[i * 3 + 2] = background[2];
  }
  const x0 = width > height ? 0 : Math.floor((height - width) / 2);
  const y0 = width > height ? Math.floor((width - height) / 2) : 0;
  for (let y = 0; y < height; y++) {
    data.set(img.data.subarray(y * width * 3, (y + 1) * width * 3), ((y0 + y) * side + x0) * 3);
  }
  return { width: side, height: side, data };
}

// Pillow's Resample.c: 8-bit images are filtered with 22-bit fixed-point coefficients.
const PRECISION_BITS = 32 - 8 - 2;

function bicubicFilter(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

interface Coeffs { ksize: number; bounds: Int32Array; kk: Int32Array }

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for the box [0, inSize). */
function precomputeCoeffs(inSize: number, outSize: number): Coeffs {
  const support0 = 2; // bicubic
  const scale = inSize / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = support0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = 0 + (xx + 0.5) * scale;
    let ww = 0;
    const ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    k.fill(0);
    for (let x = 0; x < xmax; x++) {
      const w = bicubicFilter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) if (ww !== 0) k[x] = k[x]! / ww;
    for (let x = 0; x < ksize; x++) {
      const v = k[x]!;
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(v: number): number {
  if (v >= (1 << PRECISION_BITS) * 256) return 255;
  if (v <= 0) return 0;
  return v >> PRECISION_BITS;
}

/**
 * Pillow's `Image.resize((w, h), Image.BICUBIC)` on an RGB image (no reducing_gap): separable,
 * antialiased (the kernel widens by the scale when shrinking), horizontal pass first into an
 * 8-bit image of the rows the vertical pass needs, each pass rounding and clipping to uint8 with
 * Pillow's fixed-point coefficients. Bit-exact with Pillow.
 */
export function resizeBicubicPil(img: RgbImage, outW: number, outH: number): RgbImage {
  const { width: inW, height: inH } = img;
  if (outW === inW && outH === inH) return { width: inW, height: inH, data: img.data.slice() };
  const needH = outW !== inW;
  const needV = outH !== inH;
  const horiz = precomputeCoeffs(inW, outW);
  const vert = precomputeCoeffs(inH, outH);
  const yFirst = vert.bounds[0]!;
  const yLast = vert.bounds[outH * 2 - 2]! + vert.bounds[outH * 2 - 1]!;
  let cur = img;
  let vBounds = vert.bounds;
  if (needH) {
    // Only the rows the vertical pass reads are filtered; bounds shift to that band.
    vBounds = vert.bounds.slice();
    for (let i = 0; i < outH; i++) vBounds[i * 2] = vBounds[i * 2]! - yFirst;
    const rows = yLast - yFirst;
    const tmp = new Uint8Array(outW * rows * 3);
    const { ksize, bounds, kk } = horiz;
    const src = img.data;
    const half = 1 << (PRECISION_BITS - 1);
    for (let y = 0; y < rows; y++) {
      const rowIn = (y + yFirst) * inW * 3;
      const rowOut = y * outW * 3;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = bounds[xx * 2]!;
        const xmax = bounds[xx * 2 + 1]!;
        const kOff = xx * ksize;
        let s0 = half, s1 = half, s2 = half;
        let p = rowIn + xmin * 3;
        for (let x = 0; x < xmax; x++, p += 3) {
          const w = kk[kOff + x]!;
          s0 += src[p]! * w;
          s1 += src[p + 1]! * w;
          s2 += src[p + 2]! * w;
        }
        tmp[rowOut + xx * 3] = clip8(s0);
        tmp[rowOut + xx * 3 + 1] = clip8(s1);
        tmp[rowOut + xx * 3 + 2] = clip8(s2);
      }
    }
    cur = { width: outW, height: rows, data: tmp };
  }
  if (!needV) return cur;
  const w = cur.width;
  const out = new Uint8Array(w * outH * 3);
  const { ksize, kk } = vert;
  const src = cur.data;
  const stride = w * 3;
  const half = 1 << (PRECISION_BITS - 1);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = vBounds[yy * 2]!;
    const ymax = vBounds[yy * 2 + 1]!;
    const kOff = yy * ksize;
    for (let xx = 0; xx < w; xx++) {
      let s0 = half, s1 = half, s2 = half;
      let p = ymin * stride + xx * 3;
      for (let y = 0; y < ymax; y++, p += stride) {
        const wgt = kk[kOff + y]!;
        s0 += src[p]! * wgt;
        s1 += src[p + 1]! * wgt;
        s2 += src[p + 2]! * wgt;
      }
      const o = (yy * w + xx) * 3;
      out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
    }
  }
  return { width: w, height: outH, data: out };
}

/**
 * Hugging Face's `get_resize_output_image_size(image, size, default_to_square=False)`: the short
 * side becomes `size`, the long side `int(size * long / short)` (truncated). Returns [width, height].
 */
export function shortestEdgeSize(width: number, height: number, size: number): [number, number] {
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const newLong = Math.trunc((size * long) / short);
  return width <= height ? [size, newLong] : [newLong, size];
}

// ---------------------------------------------------------------------------------------------
// The whole pipeline

/**
 * The uint8 image LLaVA-1.5's processor normalises: optional `expand2square` with background
 * `int(m * 255)` per channel, then CLIPImageProcessor's PIL bicubic resize of the shortest side to
 * `size` and centre crop `size` x `size` (offsets `(H - size) // 2`, `(W - size) // 2`, as HF's
 * `center_crop`). Returns a `size` x `size` RGB image.
 */
export function llavaResizeCrop(img: RgbImage, opts: LlavaPreprocessOptions): RgbImage {
  const { size, mean } = opts;
  if (!Number.isInteger(size) || size < 1) throw new KilnError(`image size must be a positive integer, got ${size}`);
  if (img.width < 1 || img.height < 1) throw new KilnError(`cannot preprocess an empty image (${img.width}x${img.height})`);
  let cur = img;
  if (opts.padToSquare) {
    const bg: [number, number, number] = [Math.trunc(mean[0] * 255), Math.trunc(mean[1] * 255), Math.trunc(mean[2] * 255)];
    cur = expandToSquare(cur, bg);
  }
  const [rw, rh] = shortestEdgeSize(cur.width, cur.height, size);
  cur = resizeBicubicPil(cur, rw, rh);
  const top = Math.floor((cur.height - size) / 2);
  const left = Math.floor((cur.width - size) / 2);
  if (top === 0 && left === 0 && cur.width === size && cur.height === size) return cur;
  const data = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const from = ((y + top) * cur.width + left) * 3;
    data.set(cur.data.subarray(from, from + size * 3), y * size * 3);
  }
  return { width: size, height: size, data };
}

/**
 * HF's `rescale` (x * (1/255) in float64, then float32) and `normalize` ((x - mean) / std in
 * float32) of an RGB image, as CHW float32 [3, height, width]. Bit-exact with numpy's float32.
 */
export function normalizeClip(img: RgbImage, mean: [number, number, number], std: [number, number, number]): Float32Array {
  const { width, height } = img;
  const n = width * height;
  const out = new Float32Array(3 * n);
  const scale = 1 / 255;
  const f = Math.fround;
  for (let c = 0; c < 3; c++) {
    // 256 levels: a table per channel is both faster and the same arithmetic.
    const m = f(mean[c]!);
    const s = f(std[c]!);
    const table = new Float32Array(256);
    for (let v = 0; v < 256; v++) table[v] = f(f(f(v * scale) - m) / s);
    for (let i = 0; i < n; i++) out[c * n + i] = table[img.data[i * 3 + c]!]!;
  }
  return out;
}

/**
 * LLaVA-1.5's pixel_values for one image: {@link llavaResizeCrop} then {@link normalizeClip}.
 * With `padToSquare` this is `process_images` under `image_aspect_ratio = "pad"`; without it, plain
 * `CLIPImageProcessor(images)`.
 *
 * @returns CHW float32 [3, size, size] (length 3 * size * size).
 * @throws KilnError on a size that is not a positive integer or an empty image.
 */
export function preprocessLlava(img: RgbImage, opts: LlavaPreprocessOptions): Float32Array {
  return normalizeClip(llavaResizeCrop(img, opts), opts.mean, opts.std);
}
