// Node-only side of data/image.ts: reading image files, and handing the JPEG decoder its
// WebAssembly module from node_modules (in a browser the emscripten glue fetches it itself).

import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { KilnError, describeFsError } from '../runtime/errors.js';
import { decodeImage, setJpegWasmModule, wasmApi, type RgbImage } from './image.js';

export { decodeImage, preprocessLlava, type RgbImage, type LlavaPreprocessOptions, CLIP_MEAN, CLIP_STD } from './image.js';

let wasmReady = false;

/** Compile mozjpeg's decoder once per process (synchronously: Node has no limit on that). */
export function ensureJpegWasm(): void {
  if (wasmReady) return;
  const require = createRequire(import.meta.url);
  const path = require.resolve('@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm');
  setJpegWasmModule(new wasmApi.Module(readFileSync(path)));
  wasmReady = true;
}
ensureJpegWasm();

/**
 * Read and decode a PNG or JPEG file to RGB as PIL's `Image.open(path).convert("RGB")` does
 * (see {@link decodeImage}).
 * @throws KilnError naming `path` when it is missing, unreadable, a folder, or not a PNG/JPEG.
 */
export async function loadImageFile(path: string): Promise<RgbImage> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new KilnError(`cannot read the image: ${describeFsError(e)}`, { file: path, cause: e });
  }
  return decodeImage(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), path);
}
