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
//
// This module works on bytes only (browser-safe); reading and writing files is in
// runtime/node/safetensors-file.ts.
import { KilnError } from './errors.js';
import { f16ToF32Table, f32BitsToBf16, f32BitsToF16 } from './f16.js';
import { numel, type HostTensor } from './tensor.js';

export { f16BitsToF32, f32BitsToBf16, f32BitsToF16 } from './f16.js';

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
export function requireLittleEndian(file: string): void {
  if (!HOST_LE) throw new KilnError('safetensors needs a little-endian host', { file });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The header's byte length from the first 8 bytes, checked against the file size. */
export function headerLength(first8: Uint8Array, fileSize: number, file: string): number {
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

/** A view of `raw` as T, copying only when its offset is not aligned for T. */
function viewAs<T>(ctor: { new (b: ArrayBufferLike, o: number, n: number): T; BYTES_PER_ELEMENT: number }, raw: Uint8Array): T {
  const r = raw.byteOffset % ctor.BYTES_PER_ELEMENT === 0 ? raw : raw.slice();
  return new ctor(r.buffer, r.byteOffset, r.byteLength / ctor.BYTES_PER_ELEMENT);
}

const SMALL_INTS = { I16: Int16Array, U16: Uint16Array, I8: Int8Array, U8: Uint8Array, U32: Uint32Array } as const;

/** Decodes one tensor's bytes. `owned`: raw is a fresh buffer the result may keep. */
export function decodeTensor(e: TensorEntry, raw: Uint8Array, owned: boolean, file: string): HostTensor {
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
  for (const e of entries.values()) out.set(e.name, decodeTensor(e, bytes.subarray(base + e.begin, base + e.end), false, file));
  return out;
}

export interface WriteOptions {
  /** float storage dtype for every float tensor; default: each tensor's own dtype. */
  dtype?: 'f32' | 'f16' | 'bf16';
  /** `__metadata__`; default {format: 'pt'}, which transformers' loader checks for. */
  metadata?: Record<string, string>;
}

/** The bytes of `t` stored as `st` (a view, not a copy, when `t` already holds that type). */
export function encodeTensor(t: HostTensor, st: SafetensorsDtype): Uint8Array {
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


/** The safetensors dtype a host tensor is stored as, given the writer's float storage dtype. */
export function storageDtype(dtype: HostTensor['dtype'], floats?: WriteOptions['dtype']): SafetensorsDtype {
  const fl = floats ?? dtype;
  return dtype === 'i32' ? 'I32' : dtype === 'bool' ? 'BOOL' : fl === 'f16' ? 'F16' : fl === 'bf16' ? 'BF16' : 'F32';
}

/** One tensor of a file about to be written: what its header entry needs, before its values exist. */
export interface PlannedTensor {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
}

/**
 * The 8-byte length and the space-padded header of a file holding `tensors`, and the tensors in
 * the order their bytes must follow it: widest item first (stable otherwise), as the Rust crate
 * lays them out, so every tensor is aligned for a zero-copy view. Knowing only names, dtypes and
 * shapes, a writer can emit the header first and stream each tensor's bytes after it.
 */
export function safetensorsLayout<T extends PlannedTensor>(tensors: readonly T[], metadata: Record<string, string> = { format: 'pt' }, file = '<buffer>'): { prefix: Uint8Array; order: T[]; bytes: number } {
  requireLittleEndian(file);
  const seen = new Set<string>();
  for (const t of tensors) {
    if (t.name === '__metadata__') throw new KilnError('a tensor cannot be named __metadata__', { file, tensor: t.name });
    if (seen.has(t.name)) throw new KilnError('two tensors have this name', { file, tensor: t.name });
    seen.add(t.name);
  }
  const order = [...tensors].sort((a, b) => ITEM_SIZE[b.dtype] - ITEM_SIZE[a.dtype]);
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const p of order) {
    const bytes = numel(p.shape) * ITEM_SIZE[p.dtype];
    header[p.name] = { dtype: p.dtype, shape: [...p.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = new Uint8Array(8 + Math.ceil(json.length / 8) * 8).fill(0x20);
  new DataView(padded.buffer).setBigUint64(0, BigInt(padded.length - 8), true);
  padded.set(json, 8);
  return { prefix: padded, order, bytes: padded.length + offset };
}

/**
 * A whole safetensors file as byte chunks (the layout of `safetensorsLayout`). `file` names the
 * destination in errors.
 */
export function serializeSafetensors(tensors: ReadonlyMap<string, HostTensor>, opts: WriteOptions = {}, file = '<buffer>'): Uint8Array[] {
  requireLittleEndian(file);
  const plan = [...tensors].map(([name, t]) => {
    if (name === '__metadata__') throw new KilnError('a tensor cannot be named __metadata__', { file, tensor: name });
    if (t.data.length !== numel(t.shape)) {
      throw new KilnError(`shape [${t.shape.join(', ')}] holds ${numel(t.shape)} values but the data has ${t.data.length}`, { file, tensor: name });
    }
    return { name, t, dtype: storageDtype(t.dtype, opts.dtype), shape: t.shape };
  });
  const { prefix, order } = safetensorsLayout(plan, opts.metadata ?? { format: 'pt' }, file);
  return [prefix, ...order.map((p) => encodeTensor(p.t, p.dtype))];
}
