// Parameters and state resident on the device, by checkpoint name: the store every entry of every
// artefact loaded over it shares (runtime/webgpu/program.ts runs the entries). Uploads go tensor
// by tensor with a queue wait every UPLOAD_FLUSH_BYTES and keep no host copy alive; read-backs
// stage at most READ_BATCH_BYTES at a time.
import { storedElementBytes, type TensorDecl } from '../artefact.js';
import { KilnError } from '../errors.js';
import { parseSafetensors } from '../safetensors.js';
import { isFloat, numel, type HostTensor } from '../tensor.js';
import { COPY_DST, COPY_SRC, deviceArray, describe, hostTensor, MAP_READ, MIB, paddedBytes, sameShape, sizeText, STORAGE, unlessLost, type OwnedView } from './bytes.js';
import { gpuStep, type KilnDevice } from './device.js';

interface StoreEntry {
  readonly decl: TensorDecl;
  readonly buffer: GPUBuffer;
  /**
   * The host tensor last written, so writing the same object again sends nothing. Weakly held:
   * the store never keeps a host copy alive once its caller lets go of it (a 1B-parameter
   * checkpoint would otherwise stay on the host beside its device copy for the store's life).
   */
  written?: WeakRef<HostTensor>;
}

/**
 * Bytes written with queue.writeBuffer before the writer waits for the queue: Dawn copies each
 * write into staging memory that it frees only when the queue has caught up, so writing a whole
 * checkpoint without a wait would hold a second copy of it (host memory, on any adapter).
 */
export const UPLOAD_FLUSH_BYTES = 256 * MIB;

/** Staging bytes one read-back may hold at a time (a bigger single output gets its own). */
export const READ_BATCH_BYTES = 64 * MIB;

/**
 * Parameters and state on the device, by checkpoint name (moments by `adamw.m:<param>`), shared
 * by every entry loaded over it. Buffers are created when an artefact declares the tensor.
 */
export class TensorStore {
  private readonly tensors = new Map<string, StoreEntry>();

  constructor(
    readonly kd: KilnDevice,
    readonly floatStorage: 'f32' | 'f16' = 'f32',
  ) {}

  /** Declares a tensor (idempotent); a second declaration with another dtype or shape is an error. */
  declare(decl: TensorDecl): void {
    const have = this.tensors.get(decl.name);
    if (have) {
      if (have.decl.dtype !== decl.dtype || !sameShape(have.decl.shape, decl.shape))
        throw new KilnError(`declared as ${describe(have.decl)} and again as ${describe(decl)}`, { tensor: decl.name });
      return;
    }
    const bytes = numel(decl.shape) * storedElementBytes(decl.dtype, this.floatStorage);
    const maxBuffer = this.kd.limits.maxBufferSize;
    if (bytes > maxBuffer) throw new KilnError(`needs ${sizeText(bytes)}, more than this device's largest buffer (${sizeText(maxBuffer)})`, { tensor: decl.name });
    const buffer = this.kd.device.createBuffer({ size: paddedBytes(bytes), usage: STORAGE | COPY_SRC | COPY_DST, label: `kiln ${decl.name}` });
    this.tensors.set(decl.name, { decl, buffer });
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  /** The device buffer of `name`. */
  buffer(name: string): GPUBuffer {
    const e = this.tensors.get(name);
    if (!e) throw new KilnError('not a parameter or state tensor of this store', { tensor: name });
    return e.buffer;
  }

  /**
   * Writes host values into the store, checking each against its declaration (a mismatch names
   * the tensor). The same object written again is not sent again; `forget()` makes it send.
   */
  write(values: Iterable<readonly [string, HostTensor]>, origin?: string): void {
    for (const [name, t] of values) this.writeOne(name, t, origin);
  }

  /** Writes one tensor; returns the bytes sent (0 when it was the object last written). */
  private writeOne(name: string, t: HostTensor, origin?: string): number {
    const e = this.tensors.get(name);
    if (!e) throw new KilnError('is not a parameter or state tensor of the compiled program', { file: origin, tensor: name });
    if (e.written?.deref() === t) return 0;
    const d = e.decl;
    const dtypeOk = t.dtype === d.dtype || (isFloat(t.dtype) && isFloat(d.dtype));
    if (!dtypeOk || !sameShape(t.shape, d.shape)) throw new KilnError(`the program expects ${describe(d)}, got ${describe(t)}`, { file: origin, tensor: name });
    const bytes = deviceArray(t, this.floatStorage, `${'kind' in d ? 'state tensor' : 'parameter'} '${name}'`);
    this.kd.device.queue.writeBuffer(e.buffer, 0, bytes as OwnedView);
    e.written = new WeakRef(t);
    return bytes.byteLength;
  }

  /**
   * Writes host values one tensor at a time, as `values` yields them (a lazy source loads each
   * only when its turn comes, e.g. compiler/checkpoint/load.ts's openParams), and waits for the
   * queue after every UPLOAD_FLUSH_BYTES, so the host holds about one tensor and one flush's
   * staging at a time, never the whole set. Checks as `write` does.
   */
  async upload(values: Iterable<readonly [string, HostTensor]>, origin?: string): Promise<void> {
    let unflushed = 0;
    for (const [name, t] of values) {
      unflushed += this.writeOne(name, t, origin);
      if (unflushed >= UPLOAD_FLUSH_BYTES) {
        await this.flush();
        unflushed = 0;
      }
    }
    if (unflushed > 0) await this.flush();
  }

  /** Waits until the queue has consumed every write so far (Dawn frees their staging then). */
  private async flush(): Promise<void> {
    const q = this.kd.device.queue;
    q.submit([]);
    await unlessLost(this.kd, 'uploading tensors', q.onSubmittedWorkDone());
  }

  /** Whether the store still refers to the host tensor last written to `name` (tests: it must not keep one alive). */
  writtenHostTensor(name: string): HostTensor | undefined {
    return this.tensors.get(name)?.written?.deref();
  }

  /**
   * Loads weights from safetensors bytes (a file's contents, an ArrayBuffer, a fetched body).
   * Every tensor in the file must be declared here with its shape; with `complete`, every
   * declared parameter in `required` must be in the file.
   */
  loadSafetensors(bytes: Uint8Array | ArrayBuffer, opts: { file?: string; required?: readonly string[] } = {}): void {
    const file = opts.file ?? '<safetensors bytes>';
    const tensors = parseSafetensors(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes), file);
    for (const name of opts.required ?? []) if (!tensors.has(name)) throw new KilnError('the compiled program needs this tensor; the file lacks it', { file, tensor: name });
    this.write(tensors, file);
  }

  /** Forgets which host tensors were written, so writing them again sends their (changed) data. */
  forget(): void {
    for (const e of this.tensors.values()) delete e.written;
  }

  /** Reads tensors back from the device (checkpoints, tests): an explicit, awaited copy. */
  async read(names: readonly string[]): Promise<Map<string, HostTensor>> {
    const device = this.kd.device;
    const out = new Map<string, HostTensor>();
    await gpuStep(device, `reading back ${names.length} tensors`, async () => {
      for (const name of names) {
        const e = this.tensors.get(name);
        if (!e) throw new KilnError('not a parameter or state tensor on the device', { tensor: name });
        const bytes = paddedBytes(numel(e.decl.shape) * storedElementBytes(e.decl.dtype, this.floatStorage));
        const st = device.createBuffer({ size: bytes, usage: MAP_READ | COPY_DST, label: `kiln read ${name}` });
        const enc = device.createCommandEncoder();
        enc.copyBufferToBuffer(e.buffer, 0, st, 0, bytes);
        device.queue.submit([enc.finish()]);
        try {
          await unlessLost(this.kd, `reading ${name}`, st.mapAsync(MAP_READ));
          out.set(name, hostTensor(st.getMappedRange(), e.decl.dtype, e.decl.shape, this.floatStorage));
        } finally {
          if (st.mapState === 'mapped') st.unmap();
          st.destroy();
        }
      }
    });
    return out;
  }

  destroy(): void {
    for (const e of this.tensors.values()) e.buffer.destroy();
    this.tensors.clear();
  }
}
