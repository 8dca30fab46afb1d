// Image decoding (here) and LLaVA-1.5 preprocessing (preprocess.ts, re-exported here), exactly as
// the release computes pixel_values with PIL:
// `Image.open(f).convert("RGB")` -> `expand2square(img, tuple(int(x*255) for x in mean))` ->
// `CLIPImageProcessor` (PIL bicubic resize of the shortest side, centre crop, rescale, normalise).
// A model learns from whatever numbers come out of here, so every step follows the integer
// arithmetic of the library the release used (Pillow's Resample.c, Convert.c; libjpeg-turbo for
// JPEG) rather than an "equivalent" float formula: the tests compare against PIL's own output.
//
// Browser-safe: no Node imports. In Node, import data/image-node.ts instead, which hands the JPEG
// decoder its WebAssembly module from disk (the browser fetches it beside the package's glue code).

import { decode as decodePngFile } from 'fast-png';
import type { DecodedPng } from 'fast-png';
import mozjpegFactory from '@jsquash/jpeg/codec/dec/mozjpeg_dec.js';
import { KilnError } from '../runtime/errors.js';
import { JpegFormatError, JpegUnsupportedError, decodeCmykJpegExact } from './jpeg-cmyk.js';

/** An 8-bit RGB image, row-major, interleaved: `data[(y * width + x) * 3 + c]`, c = R, G, B. */
export interface RgbImage {
  width: number;
  height: number;
  /** length width * height * 3. */
  data: Uint8Array;
}

/** CLIP's normalisation constants (OpenAI CLIP; LLaVA-1.5's `openai/clip-vit-large-patch14-336`). */
export const CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** Options of {@link preprocessLlava}; `size` is both the shortest-edge resize and the crop. */
export interface LlavaPreprocessOptions {
  size: number;
  mean: [number, number, number];
  std: [number, number, number];
  /** LLaVA-1.5's `image_aspect_ratio = "pad"` (expand2square); false: plain CLIPImageProcessor. */
  padToSquare: boolean;
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** Which container the bytes are, by signature (the file name's extension is not trusted). */
export function sniffImageFormat(bytes: Uint8Array): 'png' | 'jpeg' | undefined {
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (bytes.length >= 8 && png.every((b, i) => bytes[i] === b)) return 'png';
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'jpeg';
  return undefined;
}

/**
 * Decode a PNG or JPEG file to 8-bit RGB exactly as Pillow's `Image.open(...).convert("RGB")`:
 * alpha is dropped, not blended; palette images (with or without tRNS) look up the palette;
 * greyscale is replicated; 16-bit samples keep their high byte, except 16-bit greyscale, which
 * Pillow opens as "I;16" and clips at 255 on conversion (so most 16-bit grey images come out
 * white, as they do in LLaVA's pipeline); CMYK and YCCK JPEGs are inverted and mapped with
 * Pillow's cmyk2rgb (data/jpeg-cmyk.ts, libjpeg's arithmetic); EXIF
 * orientation is ignored. YCbCr and greyscale JPEGs are decoded by libjpeg-turbo's decompressor
 * (mozjpeg compiled to WebAssembly), the decoder Pillow's wheels embed: same integer IDCT, same
 * fancy upsampling, same colour tables, so the pixels are PIL's.
 *
 * @param bytes the whole file.
 * @param source what to call the file in errors (a path, a URL, a record id).
 * @throws KilnError naming `source` when the bytes are not a PNG/JPEG or are broken.
 */
export async function decodeImage(bytes: Uint8Array, source: string): Promise<RgbImage> {
  const format = sniffImageFormat(bytes);
  if (format === 'png') return decodePng(bytes, source);
  if (format === 'jpeg') return decodeJpeg(bytes, source);
  if (bytes.length === 0) throw new KilnError('not an image: the file is empty', { file: source });
  const other = otherImageFormat(bytes);
  if (other !== undefined) fail(source, `a ${other} image: Kiln reads PNG and JPEG only (convert it, e.g. to PNG)`);
  throw new KilnError('not an image Kiln can read: expected a PNG or JPEG file (by its first bytes)', { file: source });
}

/** Formats PIL would open that Kiln does not, by signature, so the error can say which. */
function otherImageFormat(b: Uint8Array): string | undefined {
  const ascii = (from: number, to: number): string => String.fromCharCode(...b.subarray(from, to));
  if (ascii(0, 6) === 'GIF87a' || ascii(0, 6) === 'GIF89a') return 'GIF';
  if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'WebP';
  if (ascii(0, 2) === 'BM') return 'BMP';
  if (ascii(0, 4) === 'II*\0' || ascii(0, 4) === 'MM\0*') return 'TIFF';
  if (ascii(4, 12) === 'ftypheic' || ascii(4, 12) === 'ftypheix' || ascii(4, 12) === 'ftypmif1') return 'HEIC';
  if (ascii(4, 12) === 'ftypavif') return 'AVIF';
  return undefined;
}

/**
 * Pillow's decompression-bomb limit: `Image.open` raises DecompressionBombError above
 * 2 * MAX_IMAGE_PIXELS = 2 * (1024 * 1024 * 1024 // 4 // 3) pixels, so such an image never reached
 * LLaVA's training; Kiln refuses it before allocating.
 */
export const MAX_IMAGE_PIXELS = 2 * Math.floor(1024 * 1024 * 1024 / 4 / 3);

function checkPixels(width: number, height: number, source: string): void {
  if (width * height > MAX_IMAGE_PIXELS) {
    fail(source, `image too large: ${width}x${height} = ${width * height} pixels, over Pillow's limit of ${MAX_IMAGE_PIXELS} (a decompression bomb to PIL)`);
  }
}

function fail(source: string, what: string, cause?: unknown): never {
  throw new KilnError(what, cause === undefined ? { file: source } : { file: source, cause });
}

function decodePng(bytes: Uint8Array, source: string): RgbImage {
  // IHDR is the first chunk: width and height at bytes 16..23, big-endian.
  if (bytes.length >= 24) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    checkPixels(dv.getUint32(16), dv.getUint32(20), source);
  }
  let png: DecodedPng;
  try {
    png = decodePngFile(bytes, { checkCrc: true });
  } catch (e) {
    // fast-png's messages are terse ("Error while decompressing the data:"), the cause has the rest.
    const parts = [(e as Error).message, ((e as Error).cause as Error | undefined)?.message]
      .filter((m): m is string => typeof m === 'string' && m.trim() !== '')
      .map((m) => m.trim().replace(/:$/, ''));
    fail(source, `broken PNG file: ${parts.join(': ') || 'cannot be decoded'} (truncated or corrupt)`, e);
  }
  const { width, height, depth, channels } = png;
  if (width <= 0 || height <= 0) fail(source, `broken PNG file: size ${width}x${height}`);
  const n = width * height;
  const expected = depth < 8 ? Math.ceil((width * depth) / 8) * height : n * channels;
  if (png.data.length < expected) fail(source, 'broken PNG file: image data is truncated');
  const out = new Uint8Array(n * 3);
  const indexed = png.palette !== undefined && channels === 1;

  // Samples of depth < 8 are packed MSB first, each row starting on a byte boundary.
  const rowBytes = Math.ceil((width * depth) / 8);
  const packed = (x: number, y: number): number => {
    const bit = x * depth;
    const byte = png.data[y * rowBytes + (bit >> 3)]!;
    return (byte >> (8 - depth - (bit & 7))) & ((1 << depth) - 1);
  };

  if (indexed) {
    // Pillow keeps a 256-entry palette whose entries past PLTE's are black.
    const palette = png.palette!;
    for (let y = 0, o = 0; y < height; y++) {
      for (let x = 0; x < width; x++, o += 3) {
        const idx = depth === 8 ? png.data[y * width + x]! : packed(x, y);
        const c = palette[idx];
        out[o] = c?.[0] ?? 0;
        out[o + 1] = c?.[1] ?? 0;
        out[o + 2] = c?.[2] ?? 0;
      }
    }
    return { width, height, data: out };
  }

  if (channels === 1 || channels === 2) {
    if (depth < 8) {
      // Pillow's "1" / "L;2" / "L;4" unpackers scale to 0..255 (x255, x0x55, x0x11).
      const scale = 255 / ((1 << depth) - 1);
      for (let y = 0, o = 0; y < height; y++) {
        for (let x = 0; x < width; x++, o += 3) {
          const v = packed(x, y) * scale;
          out[o] = v; out[o + 1] = v; out[o + 2] = v;
        }
      }
      return { width, height, data: out };
    }
    for (let i = 0; i < n; i++) {
      const s = png.data[i * channels]!;
      // 16-bit grey is Pillow's "I;16", whose conversion to L/RGB clips at 255 (I16_RGB); 16-bit
      // grey+alpha is "LA;16B", which keeps the high byte.
      const v = depth === 16 ? (channels === 1 ? Math.min(s, 255) : s >> 8) : s;
      out[i * 3] = v; out[i * 3 + 1] = v; out[i * 3 + 2] = v;
    }
    return { width, height, data: out };
  }

  if (channels === 3 || channels === 4) {
    const shift = depth === 16 ? 8 : 0;
    for (let i = 0; i < n; i++) {
      out[i * 3] = png.data[i * channels]! >> shift;
      out[i * 3 + 1] = png.data[i * channels + 1]! >> shift;
      out[i * 3 + 2] = png.data[i * channels + 2]! >> shift;
    }
    return { width, height, data: out };
  }
  fail(source, `unsupported PNG layout: ${channels} channels at ${depth} bits`);
}

/** What the JPEG's headers say, read before choosing a decoder. */
interface JpegHeader {
  components: number;
  precision: number;
}

/** Walks the markers up to the first SOF; throws on a file that ends or breaks before it. */
function readJpegHeader(bytes: Uint8Array, source: string): JpegHeader {
  let i = 2;
  while (i + 4 <= bytes.length) {
    if (bytes[i] !== 0xff) fail(source, `broken JPEG file: no marker at byte ${i}`);
    const marker = bytes[i + 1]!;
    if (marker === 0xff) { i++; continue; }
    if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) { i += 2; continue; }
    if (marker === 0xd9) break;
    const len = (bytes[i + 2]! << 8) | bytes[i + 3]!;
    if (len < 2 || i + 2 + len > bytes.length) fail(source, 'broken JPEG file: truncated header');
    const seg = i + 4;
    // SOF0..SOF15 except DHT (c4), JPG (c8), DAC (cc).
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      if (seg + 6 > bytes.length) fail(source, 'broken JPEG file: truncated frame header');
      const height = (bytes[seg + 1]! << 8) | bytes[seg + 2]!;
      const width = (bytes[seg + 3]! << 8) | bytes[seg + 4]!;
      checkPixels(width, height, source);
      return { precision: bytes[seg]!, components: bytes[seg + 5]! };
    }
    i += 2 + len;
  }
  fail(source, 'broken JPEG file: no frame header (SOF) found');
}

type MozJpegModule = Awaited<ReturnType<typeof mozjpegFactory>>;
/** The part of the WebAssembly JS API used here (the project's TS lib has no DOM types). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
}
/** A compiled `WebAssembly.Module`. */
export type WasmModule = object;
export const wasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
let jpegWasm: WasmModule | undefined;
let jpegModule: Promise<MozJpegModule> | undefined;
let jpegErrors: string[] = [];
const deadJpegModules = new WeakSet<object>();

/**
 * Hand the JPEG decoder its compiled WebAssembly module (`@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm`).
 * Node must (data/image-node.ts does it); in a browser the glue fetches the file itself.
 */
export function setJpegWasmModule(module: WasmModule): void {
  jpegWasm = module;
  jpegModule = undefined;
}

function mozjpeg(): Promise<MozJpegModule> {
  if (jpegModule === undefined) {
    const wasm = jpegWasm;
    const options: Record<string, unknown> = {
      noInitialRun: true,
      // libjpeg reports through stderr before it exits; keep the text for the error message.
      printErr: (s: string) => { jpegErrors.push(s); },
      print: () => {},
    };
    if (wasm !== undefined) {
      options.instantiateWasm = (imports: object, done: (i: object) => void) => {
        const instance = new wasmApi.Instance(wasm, imports);
        done(instance);
        return instance.exports;
      };
    }
    jpegModule = (mozjpegFactory as unknown as (o: Record<string, unknown>) => Promise<MozJpegModule>)(options);
  }
  return jpegModule;
}

async function decodeJpeg(bytes: Uint8Array, source: string): Promise<RgbImage> {
  const header = readJpegHeader(bytes, source);
  if (header.precision !== 8) fail(source, `unsupported JPEG: ${header.precision}-bit samples (only 8-bit JPEGs are read)`);
  if (header.components === 4) return decodeCmykJpeg(bytes, source);
  if (header.components !== 1 && header.components !== 3) {
    fail(source, `unsupported JPEG: ${header.components} colour components`);
  }
  let module: MozJpegModule;
  let pending: Promise<MozJpegModule>;
  try {
    // Decodes awaiting the same instance may find that an earlier one (a broken file) retired it.
    do {
      pending = mozjpeg();
      module = await pending;
    } while (deadJpegModules.has(module));
  } catch (e) {
    jpegModule = undefined;
    throw new KilnError(`cannot start the JPEG decoder (WebAssembly): ${(e as Error).message}`, { file: source, cause: e });
  }
  jpegErrors = [];
  let result: ImageDataLike | null;
  try {
    const copy = bytes.slice();
    result = module.decode(copy, false) as unknown as ImageDataLike | null;
  } catch (e) {
    // libjpeg's error_exit calls exit() in the wasm program, leaving its heap mid-decode (no
    // jpeg_destroy): later decodes get a fresh instance rather than trust this one.
    deadJpegModules.add(module);
    if (jpegModule === pending) jpegModule = undefined;
    const why = jpegErrors.join(' ').trim() || (e as Error).message;
    fail(source, `broken JPEG file: ${why}`, e);
  }
  if (result === null) fail(source, 'broken JPEG file: the decoder returned nothing');
  // libjpeg only warns when the data ends early or a segment is cut short, and fills the rest of
  // the image with grey; Pillow raises ("image file is truncated"). Those pixels are not the
  // image, so Kiln refuses the file too. Other warnings (extraneous bytes before a marker) leave
  // the pixels intact, as Pillow reads them.
  const warning = jpegErrors.find((w) => /premature end/i.test(w));
  if (warning !== undefined) fail(source, `broken JPEG file: ${warning.trim()} (the file is truncated or corrupt)`);
  const { width, height } = result;
  const rgba = result.data;
  const out = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; j < out.length; i += 4, j += 3) {
    out[j] = rgba[i]!; out[j + 1] = rgba[i + 1]!; out[j + 2] = rgba[i + 2]!;
  }
  return { width, height, data: out };
}

interface ImageDataLike { width: number; height: number; data: Uint8ClampedArray | Uint8Array }

/**
 * CMYK JPEG. libjpeg cannot convert CMYK to RGB, so mozjpeg's decoder (which asks for RGBA)
 * refuses it. Pillow asks libjpeg for CMYK, inverts it ("CMYK;I", Adobe's convention) and maps
 * with cmyk2rgb; data/jpeg-cmyk.ts does exactly that.
 */
function decodeCmykJpeg(bytes: Uint8Array, source: string): RgbImage {
  try {
    return decodeCmykJpegExact(bytes);
  } catch (e) {
    if (e instanceof JpegFormatError) fail(source, `broken JPEG file: ${e.message}`, e);
    if (e instanceof JpegUnsupportedError) fail(source, `unsupported JPEG: ${e.message}`, e);
    throw e;
  }
}

export * from './preprocess.js';
