// safetensors files on disk (Node only): positioned reads of one tensor at a time, and atomic
// writes. The format itself (validation, decoding, encoding) is runtime/safetensors.ts, on bytes.
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { randomBytes } from 'node:crypto';
import { KilnError, describeFsError } from '../errors.js';
import { numel, type DType, type HostTensor } from '../tensor.js';
import { decodeTensor, encodeTensor, headerLength, parseHeader, safetensorsLayout, serializeSafetensors, storageDtype, type SafetensorsDtype, type SafetensorsFile, type WriteOptions } from '../safetensors.js';

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
      return decodeTensor(e, raw, true, path);
    },
  };
}

/** Reads every tensor of a file. */
export function readSafetensors(path: string): Map<string, HostTensor> {
  const f = openSafetensors(path);
  return new Map(f.names.map((name) => [name, f.load(name)]));
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
  const chunks = serializeSafetensors(tensors, opts, path);
  const dir = nodePath.dirname(path);
  const tmp = tempPath(path);
  try {
    withFd(tmp, 'w', (fd) => {
      for (const c of chunks) writeAll(fd, c);
      fs.fsyncSync(fd);
    });
    fs.renameSync(tmp, path);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    if (e instanceof KilnError) throw new KilnError(e.detail.replace(/^cannot open/, 'cannot write'), { file: path, cause: e });
    throw new KilnError(`cannot write: ${describeFsError(e)}`, { file: path, cause: e });
  }
  syncDir(dir);
}

/** A temporary name beside `path` (same folder, so the rename is atomic). */
const tempPath = (path: string): string => nodePath.join(nodePath.dirname(path), `.${nodePath.basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);

/**
 * Makes a rename in `dir` durable; not every platform can fsync a directory, and the data is
 * already safe, so a failure here is not worth failing the save for.
 */
function syncDir(dir: string): void {
  try {
    withFd(dir, 'r', (fd) => fs.fsyncSync(fd));
  } catch {
    /* best effort */
  }
}

/**
 * A tensor to be written whose values are fetched only when its turn comes (from a GPU buffer,
 * another file): its name, dtype and shape are known up front, so the file's header can be
 * written before any value is read.
 */
export interface TensorSource {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** the values; called once, when the writer reaches this tensor. */
  read(): Promise<HostTensor> | HostTensor;
}

/**
 * Writes `tensors` to `path` (created or truncated, not atomically: the caller writes into a
 * folder it renames into place) streaming: the header first, then each tensor as its `read()`
 * returns, so only one tensor's values are on the host at a time; the file is fsynced before
 * return. Float tensors are stored as `opts.dtype` (default: their own dtype). Returns the file's
 * size in bytes. Errors (KilnError) name the file and the tensor: a value whose shape or dtype
 * differs from what the source declared, or a write that fails (no space left).
 */
export async function writeSafetensorsStreaming(path: string, tensors: readonly TensorSource[], opts: WriteOptions & { atomic?: boolean } = {}): Promise<number> {
  if (opts.atomic) {
    // A temp file beside `path`, renamed over it once complete (as writeSafetensors does), so a
    // failed read (a NaN found mid-way, a lost device) or a crash leaves the old file or none.
    const tmp = tempPath(path);
    let bytes: number;
    try {
      bytes = await writeSafetensorsStreaming(tmp, tensors, { ...opts, atomic: false });
      fs.renameSync(tmp, path);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      if (e instanceof KilnError && e.file === tmp) throw new KilnError(e.detail, { file: path, ...(e.tensor === undefined ? {} : { tensor: e.tensor }), cause: e });
      throw e;
    }
    syncDir(nodePath.dirname(path));
    return bytes;
  }
  const planned = tensors.map((t) => ({ name: t.name, dtype: storageDtype(t.dtype, opts.dtype) as SafetensorsDtype, shape: t.shape, src: t }));
  const { prefix, order, bytes } = safetensorsLayout(planned, opts.metadata ?? { format: 'pt' }, path);
  let fd: number;
  try {
    fd = fs.openSync(path, 'w');
  } catch (e) {
    throw new KilnError(`cannot write: ${describeFsError(e)}`, { file: path, cause: e });
  }
  try {
    const write = (b: Uint8Array, tensor?: string) => {
      try {
        writeAll(fd, b);
      } catch (e) {
        throw new KilnError(`cannot write: ${describeFsError(e)}`, { file: path, tensor, cause: e });
      }
    };
    write(prefix);
    for (const p of order) {
      const t = await p.src.read();
      const same = t.shape.length === p.shape.length && t.shape.every((d, i) => d === p.shape[i]);
      if (!same || t.dtype !== p.src.dtype || t.data.length !== numel(p.shape)) {
        throw new KilnError(
          `declared ${p.src.dtype}[${p.shape.join(', ')}] but read ${t.dtype}[${t.shape.join(', ')}] with ${t.data.length} values`,
          { file: path, tensor: p.name },
        );
      }
      write(encodeTensor(t, p.dtype), p.name);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return bytes;
}
