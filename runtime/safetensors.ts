// safetensors, read and written without a dependency: 8 bytes little-endian header length, a JSON
// header ({name: {dtype, shape, data_offsets}}, optional "__metadata__": {string: string}), then
// the raw little-endian data. Files come from users and the internet, so the header is validated
// in full before any tensor is allocated: every allocation is sized by byte ranges already proven
// to lie inside the file, never by a number the header merely claims.
//
// Coverage policy: like the reference Rust crate, tensors must tile the data section from byte 0
// with no gap and no overlap (a gap or overlap means a corrupt or hand-edited header). Unlike the
// crate, bytes after the last tensor are allowed and ignored: some writers pad files, and the
// bytes cannot alias a tensor.
//
// Decoded dtypes: F32, F64 -> f32; F16, BF16 -> f16/bf16 held as Float32Array (runtime/tensor.ts);
// I64, U64, U32 -> i32 when every value fits (else an error); I32, I16, U16, I8, U8 -> i32;
// BOOL -> bool. The F8 types are recognised (a header with them is valid) but cannot be loaded.
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { randomBytes } from 'node:crypto';
import { KilnError, describeFsError } from './errors.js';
import { numel, type HostTensor } from './tensor.js';

/** The Rust crate's limit: a longer header is a corrupt length field, not a real file. */
export const MAX_HEADER_BYTES = 100_000_000;

const ITEM_SIZE = { BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, I64: 8, U64: 8, F64: 8 } as const;

export type SafetensorsDtype = keyof typeof ITEM_SIZE;

export interface TensorEntry {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** byte range [begin, end) relative to the start of the data section. */
  readonly begin: number;
  readonly end: number;
}

export interface SafetensorsFile {
  readonly path: string;
  readonly metadata: Readonly<Record<string, string>> | null;
  /** tensor names in header order. */
  readonly names: readonly string[];
  readonly entries: ReadonlyMap<string, TensorEntry>;
  /** Reads one tensor with positioned fs reads; the rest of the file stays on disk. */
  load(name: string): HostTensor;
}

// Typed-array views reinterpret bytes in host order; every Node platform in use is little-endian,
// and a big-endian host would silently byte-swap every weight, so it is refused instead.
const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
function requireLittleEndian(file: string): void {
  if (!HOST_LE) throw new KilnError('safetensors needs a little-endian host', { file });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function headerLength(first8: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8) throw new KilnError(`not a safetensors file: ${fileSize} bytes, shorter than the 8-byte header length`, { file });
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) throw new KilnError(`not a safetensors file: header length ${n} is over the ${MAX_HEADER_BYTES}-byte limit`, { file });
  if (8n + n > BigInt(fileSize)) throw new KilnError(`truncated: header length ${n} runs past the end of the file (${fileSize} bytes)`, { file });
  return Number(n);
}

function parseEntry(name: string, v: unknown, dataLen: number, file: string): TensorEntry {
  const fail = (msg: string) => new KilnError(msg, { file, tensor: name });
  if (!isObject(v)) throw fail('header entry is not an object');
  const { dtype, shape, data_offsets: offsets } = v;
  if (dtype === undefined) throw fail('header entry has no dtype');
  if (typeof dtype !== 'string' || !Object.hasOwn(ITEM_SIZE, dtype)) throw fail(`unknown dtype ${JSON.stringify(dtype)}`);
  if (shape === undefined) throw fail('header entry has no shape');
  if (!Array.isArray(shape)) throw fail('shape is not an array');
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || (d as number) < 0) throw fail(`shape ${JSON.stringify(shape)} has a dimension that is not a non-negative integer`);
  }
  if (offsets === undefined) throw fail('header entry has no data_offsets');
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)) {
    throw fail(`data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw fail(`data_offsets [${begin}, ${end}]: begin is after end`);
  if (end > dataLen) throw fail(`data_offsets [${begin}, ${end}] run past the end of the data section (${dataLen} bytes)`);
  const item = ITEM_SIZE[dtype as SafetensorsDtype];
  const dims = shape as number[];
  // The byte count is bounded by the file size, so a product past 2^50 is already wrong: stop
  // there rather than let a shape like [2^40, 2^40] lose precision (or size an allocation).
  let n = dims.includes(0) ? 0 : 1;
  let huge = false;
  for (const d of dims) {
    n *= d;
    if (n > 2 ** 50) [huge, n] = [true, 2 ** 50];
  }
  if (huge || n * item !== end - begin) {
    const need = huge ? `more than ${end - begin}` : String(n * item);
    throw fail(`${dtype}${JSON.stringify(dims)} needs ${need} bytes but data_offsets [${begin}, ${end}] hold ${end - begin}`);
  }
  return { name, dtype: dtype as SafetensorsDtype, shape: dims, begin, end };
}

/** Validates a header (the JSON bytes) against a data section of `dataLen` bytes. */
export function parseHeader(
  bytes: Uint8Array,
  dataLen: number,
  file: string,
): { metadata: Record<string, string> | null; entries: Map<string, TensorEntry> } {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw new KilnError(`header is not valid JSON: ${(e as Error).message}`, { file, cause: e });
  }
  if (!isObject(json)) throw new KilnError('header is not a JSON object', { file });
  let metadata: Record<string, string> | null = null;
  const entries = new Map<string, TensorEntry>();
  for (const [name, value] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isObject(value) || !Object.values(value).every((s) => typeof s === 'string')) {
        throw new KilnError('__metadata__ is not an object of strings', { file });
      }
      metadata = value as Record<string, string>;
    } else {
      entries.set(name, parseEntry(name, value, dataLen, file));
    }
  }
  const sorted = [...entries.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev: TensorEntry | undefined;
  for (const e of sorted) {
    if (e.begin < pos) {
      throw new KilnError(`data_offsets [${e.begin}, ${e.end}] overlap tensor '${prev!.name}' [${prev!.begin}, ${prev!.end}]`, { file, tensor: e.name });
    }
    if (e.begin > pos) {
      throw new KilnError(`data_offsets [${e.begin}, ${e.end}] leave bytes ${pos}..${e.begin} of the data section covered by no tensor`, { file, tensor: e.name });
    }
    pos = e.end;
    prev = e;
  }
  return { metadata, entries };
}

let f16Table: Float32Array | undefined;
function f16ToF32Table(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  const bits = new Uint32Array(t.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    // Subnormal halves are normal floats: mant * 2^-24 is exact in f32.
    if (exp === 0) t[h] = (sign ? -1 : 1) * mant * 2 ** -24;
    else if (exp === 31) bits[h] = sign | 0x7f800000 | (mant << 13);
    else bits[h] = sign | ((exp + 112) << 23) | (mant << 13);
  }
  return (f16Table = t);
}

export function f16BitsToF32(h: number): number {
  return f16ToF32Table()[h & 0xffff]!;
}

/** f32 bit pattern -> f16 bit pattern, round to nearest even, overflow to inf, NaN kept quiet. */
export function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112;
  if (e >= 31) return sign | 0x7c00;
  let h: number, rem: number, half: number;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    h = mant >>> shift;
    rem = mant & ((1 << shift) - 1);
    half = 1 << (shift - 1);
  } else {
    h = (e << 10) | (mant >>> 13);
    rem = mant & 0x1fff;
    half = 0x1000;
  }
  // A carry out of the mantissa bumps the exponent, which is the correctly rounded result
  // (including rounding up to inf or from the largest subnormal to the smallest normal).
  if (rem > half || (rem === half && (h & 1) === 1)) h++;
  return sign | h;
}

/** f32 bit pattern -> bf16 bit pattern, round to nearest even, NaN kept quiet. */
export function f32BitsToBf16(x: number): number {
  if ((x & 0x7fffffff) >>> 0 > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x >>> 0) + 0x7fff + ((x >>> 16) & 1)) >>> 16;
}

/** A view of `raw` as T, copying only when its offset is not aligned for T. */
function viewAs<T>(ctor: { new (b: ArrayBufferLike, o: number, n: number): T; BYTES_PER_ELEMENT: number }, raw: Uint8Array): T {
  const r = raw.byteOffset % ctor.BYTES_PER_ELEMENT === 0 ? raw : raw.slice();
  return new ctor(r.buffer, r.byteOffset, r.byteLength / ctor.BYTES_PER_ELEMENT);
}

const SMALL_INTS = { I16: Int16Array, U16: Uint16Array, I8: Int8Array, U8: Uint8Array, U32: Uint32Array } as const;

/** Decodes one tensor's bytes. `owned`: raw is a fresh buffer the result may keep. */
function decode(e: TensorEntry, raw: Uint8Array, owned: boolean, file: string): HostTensor {
  requireLittleEndian(file);
  const shape = [...e.shape];
  const n = numel(shape);
  const tooBig = (i: number, v: bigint | number) =>
    new KilnError(`${e.dtype} value ${v} at flat index ${i} does not fit in int32`, { file, tensor: e.name });
  switch (e.dtype) {
    case 'F32':
      return { dtype: 'f32', shape, data: viewAs(Float32Array, owned ? raw : raw.slice()) };
    case 'I32':
      return { dtype: 'i32', shape, data: viewAs(Int32Array, owned ? raw : raw.slice()) };
    case 'F64':
      return { dtype: 'f32', shape, data: new Float32Array(viewAs(Float64Array, raw)) };
    case 'F16':
    case 'BF16': {
      const src = viewAs(Uint16Array, raw);
      const out = new Float32Array(n);
      if (e.dtype === 'F16') {
        const t = f16ToF32Table();
        for (let i = 0; i < n; i++) out[i] = t[src[i]!]!;
      } else {
        const bits = new Uint32Array(out.buffer);
        for (let i = 0; i < n; i++) bits[i] = src[i]! << 16;
      }
      return { dtype: e.dtype === 'F16' ? 'f16' : 'bf16', shape, data: out };
    }
    case 'I64':
    case 'U64': {
      const src = viewAs(Int32Array, raw);
      const out = new Int32Array(n);
      const unsigned = e.dtype === 'U64';
      for (let i = 0; i < n; i++) {
        const lo = src[2 * i]!;
        const hi = src[2 * i + 1]!;
        // In int32 range exactly when the high word is the sign extension of the low word.
        if (unsigned ? hi !== 0 || lo < 0 : hi !== lo >> 31) {
          throw tooBig(i, (BigInt(unsigned ? hi >>> 0 : hi) << 32n) | BigInt(lo >>> 0));
        }
        out[i] = lo;
      }
      return { dtype: 'i32', shape, data: out };
    }
    case 'BOOL':
      return { dtype: 'bool', shape, data: Int32Array.from(raw, (b) => (b !== 0 ? 1 : 0)) };
    case 'F8_E4M3':
    case 'F8_E5M2':
      throw new KilnError(`dtype ${e.dtype} cannot be loaded (supported: F32, F16, BF16, F64, integers, BOOL)`, { file, tensor: e.name });
    default: {
      const src = viewAs<ArrayLike<number>>(SMALL_INTS[e.dtype], raw);
      if (e.dtype === 'U32') for (let i = 0; i < n; i++) if (src[i]! > 0x7fffffff) throw tooBig(i, src[i]!);
      return { dtype: 'i32', shape, data: Int32Array.from(src) };
    }
  }
}

/** Parses a whole safetensors file held in memory. `file` names it in errors. */
export function parseSafetensors(bytes: Uint8Array, file = '<buffer>'): Map<string, HostTensor> {
  const n = headerLength(bytes.subarray(0, 8), bytes.length, file);
  const base = 8 + n;
  const { entries } = parseHeader(bytes.subarray(8, base), bytes.length - base, file);
  const out = new Map<string, HostTensor>();
  for (const e of entries.values()) out.set(e.name, decode(e, bytes.subarray(base + e.begin, base + e.end), false, file));
  return out;
}

function withFd<T>(path: string, flags: string, f: (fd: number) => T): T {
  let fd: number;
  try {
    fd = fs.openSync(path, flags);
  } catch (e) {
    throw new KilnError(`cannot open: ${describeFsError(e)}`, { file: path, cause: e });
  }
  try {
    return f(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Fills `buf` from `position`; a short read means the file changed under us. */
function readAt(fd: number, buf: Uint8Array, position: number, path: string, tensor?: string): void {
  let done = 0;
  while (done < buf.length) {
    let got: number;
    try {
      got = fs.readSync(fd, buf, done, Math.min(buf.length - done, 1 << 30), position + done);
    } catch (e) {
      throw new KilnError(`cannot read: ${describeFsError(e)}`, { file: path, tensor, cause: e });
    }
    if (got === 0) throw new KilnError('file ended early (was it changed after it was opened?)', { file: path, tensor });
    done += got;
  }
}

/** Reads and validates the header only; tensors load one at a time with `load(name)`. */
export function openSafetensors(path: string): SafetensorsFile {
  const { header, dataStart } = withFd(path, 'r', (fd) => {
    const st = fs.fstatSync(fd);
    if (st.isDirectory()) throw new KilnError('cannot read: is a directory, not a file', { file: path });
    const size = st.size;
    const first8 = new Uint8Array(8);
    if (size >= 8) readAt(fd, first8, 0, path);
    const n = headerLength(first8, size, path);
    const headerBytes = new Uint8Array(n);
    readAt(fd, headerBytes, 8, path);
    return { header: parseHeader(headerBytes, size - 8 - n, path), dataStart: 8 + n };
  });
  return {
    path,
    metadata: header.metadata,
    names: [...header.entries.keys()],
    entries: header.entries,
    load(name: string): HostTensor {
      const e = header.entries.get(name);
      if (e === undefined) throw new KilnError('no such tensor in the file', { file: path, tensor: name });
      const raw = new Uint8Array(e.end - e.begin);
      withFd(path, 'r', (fd) => readAt(fd, raw, dataStart + e.begin, path, name));
      return decode(e, raw, true, path);
    },
  };
}

/** Reads every tensor of a file. */
export function readSafetensors(path: string): Map<string, HostTensor> {
  const f = openSafetensors(path);
  return new Map(f.names.map((name) => [name, f.load(name)]));
}

export interface WriteOptions {
  /** float storage dtype for every float tensor; default: each tensor's own dtype. */
  dtype?: 'f32' | 'f16' | 'bf16';
  /** `__metadata__`; default {format: 'pt'}, which transformers' loader checks for. */
  metadata?: Record<string, string>;
}

function encode(t: HostTensor, st: SafetensorsDtype): Uint8Array {
  const n = t.data.length;
  const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (st === 'I32') return bytesOf(t.data instanceof Int32Array ? t.data : new Int32Array(t.data));
  if (st === 'BOOL') return Uint8Array.from(t.data, (v) => (v !== 0 ? 1 : 0));
  const f32 = t.data instanceof Float32Array ? t.data : new Float32Array(t.data);
  if (st === 'F32') return bytesOf(f32);
  const bits = new Uint32Array(f32.buffer, f32.byteOffset, n);
  const out = new Uint16Array(n);
  const conv = st === 'F16' ? f32BitsToF16 : f32BitsToBf16;
  for (let i = 0; i < n; i++) out[i] = conv(bits[i]!);
  return bytesOf(out);
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length; ) done += fs.writeSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30));
}

/**
 * Writes atomically: a temp file in the same folder, fsync, rename over `path`, so a crash leaves
 * the old file or the new one, never half of one. The header is space-padded so the data starts
 * at a multiple of 8, and tensors are laid out widest item first, as the Rust crate does, so
 * every tensor is aligned for a zero-copy view.
 */
export function writeSafetensors(path: string, tensors: ReadonlyMap<string, HostTensor>, opts: WriteOptions = {}): void {
  requireLittleEndian(path);
  const plan = [...tensors].map(([name, t]) => {
    if (name === '__metadata__') throw new KilnError('a tensor cannot be named __metadata__', { file: path, tensor: name });
    if (t.data.length !== numel(t.shape)) {
      throw new KilnError(`shape [${t.shape.join(', ')}] holds ${numel(t.shape)} values but the data has ${t.data.length}`, { file: path, tensor: name });
    }
    const fl = opts.dtype ?? t.dtype;
    const st: SafetensorsDtype =
      t.dtype === 'i32' ? 'I32' : t.dtype === 'bool' ? 'BOOL' : fl === 'f16' ? 'F16' : fl === 'bf16' ? 'BF16' : 'F32';
    return { name, t, st };
  });
  plan.sort((a, b) => ITEM_SIZE[b.st] - ITEM_SIZE[a.st]);
  const header: Record<string, unknown> = { __metadata__: opts.metadata ?? { format: 'pt' } };
  let offset = 0;
  for (const p of plan) {
    const bytes = numel(p.t.shape) * ITEM_SIZE[p.st];
    header[p.name] = { dtype: p.st, shape: [...p.t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20);
  padded.set(json);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(padded.length), true);

  const dir = nodePath.dirname(path);
  const tmp = nodePath.join(dir, `.${nodePath.basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    withFd(tmp, 'w', (fd) => {
      writeAll(fd, prefix);
      writeAll(fd, padded);
      for (const p of plan) writeAll(fd, encode(p.t, p.st));
      fs.fsyncSync(fd);
    });
    fs.renameSync(tmp, path);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    if (e instanceof KilnError) throw new KilnError(e.detail.replace(/^cannot open/, 'cannot write'), { file: path, cause: e });
    throw new KilnError(`cannot write: ${describeFsError(e)}`, { file: path, cause: e });
  }
  // Make the rename itself durable; not every platform can fsync a directory, and the data is
  // already safe, so a failure here is not worth failing the save for.
  try {
    withFd(dir, 'r', (fd) => fs.fsyncSync(fd));
  } catch {
    /* best effort */
  }
}
