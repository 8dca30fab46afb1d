// Runs compiled artefacts on WebGPU. A TensorStore (store.ts) holds parameters and state on the device,
// keyed by checkpoint name, and every entry of every artefact loaded over it reads and writes
// those same buffers: after `train_step`, `loss` sees the new weights with no copy and no
// upload. An entry is a flat dispatch list over numbered buffers; running it is: write the
// inputs, encode the dispatches, copy the updates that were not written in place, copy out the
// requested outputs. Pipelines (deduplicated by code, per device) and bind groups are made once
// when the artefact is loaded. Failures are KilnErrors naming the step; a lost device rejects.
import {
  missingCapabilities,
  perCallSymbols,
  storedElementBytes,
  symbolsBytes,
  symbolValues,
  workgroupsAt,
  type SymbolDecl,
  type Artefact,
  type EntryManifest,
  type EntryStats,
  type Manifest,
} from '../artefact.js';
import { KilnError } from '../errors.js';
import { isFloat, numel, type DType, type HostTensor } from '../tensor.js';
import { COMPUTE, COPY_DST, COPY_SRC, describe, deviceArray, hostTensor, MAP_READ, paddedBytes, QUERY_RESOLVE, sameShape, sizeText, STORAGE, UNIFORM, unlessLost, type OwnedView } from './bytes.js';
import { gpuStep, type KilnDevice } from './device.js';
import { READ_BATCH_BYTES, TensorStore } from './store.js';
import { validateBatch } from '../validate.js';
import { QUERIES_PER_SET, requireTimestamps, type KernelProfiler } from './profile.js';

// Pipelines by WGSL, per device: layers repeat the same kernels, and tests compile the same ones.
const pipelineCache = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();

/** The pipeline of `code` with storage bindings `access` (and the symbols uniform after them when `symbols`). */
function pipelineFor(device: GPUDevice, code: string, access: readonly ('read' | 'read_write')[], symbols: boolean, label: string): Promise<GPUComputePipeline> {
  let cache = pipelineCache.get(device);
  if (!cache) pipelineCache.set(device, (cache = new Map()));
  const key = `${access.join(',')}${symbols ? ',uniform' : ''}\n${code}`;
  let p = cache.get(key);
  if (!p) {
    // Explicit layouts: 'auto' would drop a binding the shader never touches (an unused load<k>).
    const bgl = device.createBindGroupLayout({
      entries: [
        ...access.map((a, k): GPUBindGroupLayoutEntry => ({ binding: k, visibility: COMPUTE, buffer: { type: a === 'read' ? 'read-only-storage' : 'storage' } })),
        ...(symbols ? [{ binding: access.length, visibility: COMPUTE, buffer: { type: 'uniform' as const } }] : []),
      ],
    });
    const layout = device.createPipelineLayout({ bindGroupLayouts: [bgl] });
    const module = device.createShaderModule({ code, label });
    p = device.createComputePipelineAsync({ layout, compute: { module, entryPoint: 'main' }, label });
    p.catch(() => cache.delete(key));
    cache.set(key, p);
  }
  return p;
}

interface Staging {
  readonly buffer: GPUBuffer;
  readonly bytes: number;
  busy: boolean;
}

interface LoadedEntry {
  readonly name: string;
  readonly manifest: EntryManifest;
  readonly pipelines: readonly GPUComputePipeline[];
  readonly bindGroups: readonly GPUBindGroup[];
  readonly buffers: readonly GPUBuffer[];
  readonly owned: readonly GPUBuffer[];
  /** the per-call symbols' uniform, when some dispatch reads it or follows a symbol. */
  readonly symbolBuffer?: GPUBuffer;
}

export interface ProgramOptions {
  /** the store to share (another artefact's); default: a new one. */
  readonly store?: TensorStore;
  /** submit and check each dispatch on its own, so a failure names its kernel (slow; debugging). */
  readonly stepByStep?: boolean;
  /** names the artefact in errors (its folder). */
  readonly origin?: string;
}

/** Options of one `run`. */
export interface RunOptions {
  /** time every dispatch with timestamp queries into this profiler (runtime/webgpu/profile.ts). */
  readonly profiler?: KernelProfiler;
}

/** What `run` returns: the requested outputs by name. */
export type EntryOutputs = Map<string, HostTensor>;

/**
 * An artefact loaded on a device: its entries ready to run over one TensorStore. Refuses an
 * artefact the device cannot run (a missing feature or limit is named) and kernels that are
 * missing from the artefact (the file is named).
 */
export class ArtefactProgram {
  readonly store: TensorStore;
  private readonly entries = new Map<string, LoadedEntry>();
  /** per entry: the read-back buffer `run` reuses from call to call. */
  private readonly staging = new Map<string, Staging>();

  private constructor(
    readonly kd: KilnDevice,
    readonly manifest: Manifest,
    store: TensorStore,
    private readonly opts: ProgramOptions,
  ) {
    this.store = store;
  }

  /** Loads every entry of `artefact` (or only `entries`), creating its pipelines, buffers and bind groups. */
  static async load(kd: KilnDevice, artefact: Artefact, opts: ProgramOptions & { entries?: readonly string[] } = {}): Promise<ArtefactProgram> {
    const m = artefact.manifest;
    const missing = missingCapabilities(m, { features: kd.device.features, limits: kd.limits as unknown as Record<string, unknown>, subgroupSize: kd.subgroupSize });
    if (missing.length > 0) throw new KilnError(`this artefact needs ${missing.join(', ')}, which ${kd.adapterName} lacks`, { file: opts.origin });
    const store = opts.store ?? new TensorStore(kd, m.floatStorage);
    if (store.floatStorage !== m.floatStorage) throw new KilnError(`the artefact stores floats as ${m.floatStorage}, the shared store as ${store.floatStorage}`, { file: opts.origin });
    for (const t of [...m.params, ...m.state]) store.declare(t);
    const program = new ArtefactProgram(kd, m, store, opts);
    for (const name of opts.entries ?? Object.keys(m.entries)) {
      const e = m.entries[name];
      if (!e) throw new KilnError(`no entry '${name}' (it has ${Object.keys(m.entries).join(', ')})`, { file: opts.origin });
      program.entries.set(name, await program.loadEntry(name, e, artefact.kernels));
    }
    return program;
  }

  /** The entry names loaded. */
  entryNames(): string[] {
    return [...this.entries.keys()];
  }

  stats(entry: string): EntryStats {
    return this.entry(entry).manifest.stats;
  }

  private entry(name: string): LoadedEntry {
    const e = this.entries.get(name);
    if (!e) throw new KilnError(`no entry '${name}' loaded (loaded: ${this.entryNames().join(', ')})`, { file: this.opts.origin });
    return e;
  }

  private async loadEntry(name: string, e: EntryManifest, kernels: ReadonlyMap<string, string>): Promise<LoadedEntry> {
    const device = this.kd.device;
    const maxBuffer = this.kd.limits.maxBufferSize;
    const maxBindings = this.kd.limits.maxStorageBuffersPerShaderStage;
    e.dispatches.forEach((d, s) => {
      if (!kernels.has(d.kernel)) throw new KilnError(`kernel file missing (entry '${name}', step ${s}: ${d.label})`, { file: d.kernel });
      if (d.bindings.length > maxBindings) throw new KilnError(`step ${s} (${d.label}) needs ${d.bindings.length} storage bindings; this device allows ${maxBindings}`);
    });
    e.buffers.forEach((b) => {
      if (b.kind !== 'param' && b.kind !== 'state' && b.bytes > maxBuffer) {
        const what = b.kind === 'temp' ? `an intermediate buffer of entry '${name}'` : `${b.kind} ${b.name}`;
        throw new KilnError(`${what} needs ${sizeText(b.bytes)}, more than this device's largest buffer (${sizeText(maxBuffer)})`);
      }
    });
    const pipelines = await gpuStep(device, `compiling ${e.dispatches.length} kernels`, () =>
      Promise.all(
        e.dispatches.map((d, s) =>
          pipelineFor(
            device,
            kernels.get(d.kernel)!,
            d.bindings.map((b) => b.access),
            d.symbols === true,
            `step ${s}: ${d.label}`,
          ),
        ),
      ),
    );
    const owned: GPUBuffer[] = [];
    const temps = e.buffers.filter((b) => b.kind === 'temp').reduce((a, b) => a + b.bytes, 0);
    const buffers = await gpuStep(device, `allocating the buffers of entry '${name}' (${sizeText(temps)} of intermediates)`, () =>
      e.buffers.map((b, k) => {
        if (b.kind === 'param' || b.kind === 'state') return this.store.buffer(b.name);
        const buf = device.createBuffer({ size: paddedBytes(b.bytes), usage: STORAGE | COPY_SRC | COPY_DST, label: `kiln ${name} ${b.kind} ${'name' in b ? b.name : k}` });
        owned.push(buf);
        return buf;
      }),
    );
    // One uniform per entry holds the call's per-call symbols; it is written with the inputs.
    const symbolBuffer = e.dispatches.some((d) => d.symbols || d.perCall)
      ? device.createBuffer({ size: symbolsBytes(perCallSymbols(this.manifest).length), usage: UNIFORM | COPY_DST, label: `kiln ${name} symbols` })
      : undefined;
    if (symbolBuffer) owned.push(symbolBuffer);
    const bindGroups: GPUBindGroup[] = [];
    for (const [s, d] of e.dispatches.entries()) {
      bindGroups.push(
        await gpuStep(device, `binding step ${s}: ${d.label}`, () =>
          device.createBindGroup({
            layout: pipelines[s]!.getBindGroupLayout(0),
            entries: [
              ...d.bindings.map((b, binding): GPUBindGroupEntry => ({ binding, resource: { buffer: buffers[b.buffer]!, offset: b.offset * b.elementBytes, size: paddedBytes(b.length * b.elementBytes) } })),
              ...(d.symbols ? [{ binding: d.bindings.length, resource: { buffer: symbolBuffer! } }] : []),
            ],
          }),
        ),
      );
    }
    return { name, manifest: e, pipelines, bindGroups, buffers, owned, ...(symbolBuffer ? { symbolBuffer } : {}) };
  }

  /**
   * Runs `entry`: `inputs` by name (every input the entry declares; parameters and state come
   * from the store), then reads back the outputs named in `read` (default: all), one at a time
   * (readOutput). Updates are applied to the store after the dispatches, in the same submission.
   */
  async run(entry: string, inputs: ReadonlyMap<string, HostTensor>, read?: readonly string[], opts: RunOptions = {}): Promise<EntryOutputs> {
    const e = this.entry(entry);
    const m = e.manifest;
    const wanted = read === undefined ? m.outputs.map((o) => o.name) : read;
    const outs = wanted.map((n) => m.outputs.find((o) => o.name === n) ?? fail(`entry '${entry}' has no output '${n}'`));
    // Outputs packed into one staging buffer at 256-byte offsets (copy and map alignment).
    const offsets: number[] = [];
    let total = 0;
    for (const o of outs) {
      offsets.push(total);
      total += Math.ceil(paddedBytes(numel(o.shape) * storedElementBytes(o.dtype, this.manifest.floatStorage)) / 256) * 256;
    }
    if (opts.profiler || this.opts.stepByStep || total > READ_BATCH_BYTES) {
      await this.dispatch(entry, inputs, opts);
      return this.readOutputs(entry, wanted, this.runLabel(entry, wanted.length));
    }
    // The common case (a step, an evaluation, a decode step): upload, kernels, updates and the
    // read-back in one submission under one error scope, into a staging buffer the entry keeps,
    // so a call costs one wait on the device (a decode step is a few ms: round trips matter).
    this.checkRules(m, inputs);
    const device = this.kd.device;
    const what = this.runLabel(entry, wanted.length);
    return gpuStep(device, what, async () => {
      const symbols = this.writeInputs(e, inputs);
      const enc = this.encode(entry, e, 0, m.dispatches.length, symbols);
      this.encodeUpdates(e, enc);
      const staging = total > 0 ? this.takeStaging(entry, total) : undefined;
      outs.forEach((o, k) => enc.copyBufferToBuffer(e.buffers[o.buffer]!, 0, staging!.buffer, offsets[k]!, paddedBytes(numel(o.shape) * storedElementBytes(o.dtype, this.manifest.floatStorage))));
      device.queue.submit([enc.finish()]);
      const result: EntryOutputs = new Map();
      if (!staging) return result;
      try {
        await unlessLost(this.kd, what, staging.buffer.mapAsync(MAP_READ, 0, total));
        outs.forEach((o, k) => result.set(o.name, hostTensor(staging.buffer.getMappedRange(offsets[k]!, (k + 1 < outs.length ? offsets[k + 1]! : total) - offsets[k]!), o.dtype, o.shape, this.manifest.floatStorage)));
      } finally {
        if (staging.buffer.mapState === 'mapped') staging.buffer.unmap();
        this.returnStaging(entry, staging);
      }
      return result;
    });
  }

  /** A staging buffer of at least `bytes` for `entry`: the kept one when free, else a new one (a concurrent call). */
  private takeStaging(entry: string, bytes: number): Staging {
    const kept = this.staging.get(entry);
    if (kept && !kept.busy && kept.bytes >= bytes) {
      kept.busy = true;
      return kept;
    }
    const st: Staging = { buffer: this.kd.device.createBuffer({ size: bytes, usage: MAP_READ | COPY_DST, label: `kiln read-back ${entry}` }), bytes, busy: true };
    return st;
  }

  /** Keeps `st` for the entry's next call when it is the kept one or the entry has none free; else frees it. */
  private returnStaging(entry: string, st: Staging): void {
    st.busy = false;
    const kept = this.staging.get(entry);
    if (kept === st) return;
    if (!kept || (!kept.busy && kept.bytes < st.bytes)) {
      kept?.buffer.destroy();
      this.staging.set(entry, st);
      return;
    }
    st.buffer.destroy();
  }

  /** The host-side checks of an entry's inputs (ids and labels in range): kernels cannot raise errors. */
  private checkRules(m: EntryManifest, inputs: ReadonlyMap<string, HostTensor>): void {
    // The kernels clamp or silently shift on ids they cannot take: every call is checked on the
    // host first, with the reference's wording, whoever the caller is (kiln loss, training, a page).
    // Callers may pass more than the entry's inputs (the executor feeds parameters alongside).
    if (m.rules === undefined) return;
    const fed = new Map(m.inputs.flatMap((d) => (inputs.has(d.name) ? [[d.name, inputs.get(d.name)!] as const] : [])));
    validateBatch({ inputs: m.inputs, rules: m.rules }, fed);
  }

  /**
   * Dispatches from..to-1 of `e` in one compute pass, or one pass each with timestamps when
   * profiled; `symbols`: this call's per-call symbol values (workgroup counts that follow them).
   */
  private encode(entry: string, e: LoadedEntry, from: number, to: number, symbols: Int32Array | undefined, profiler?: KernelProfiler, querySets: readonly GPUQuerySet[] = []): GPUCommandEncoder {
    const enc = this.kd.device.createCommandEncoder({ label: `kiln ${entry}` });
    const m = e.manifest;
    let pass: GPUComputePassEncoder | undefined;
    for (let s = from; s < to; s++) {
      if (profiler || !pass) {
        pass?.end();
        const q = 2 * s;
        pass = enc.beginComputePass(
          profiler ? { timestampWrites: { querySet: querySets[Math.floor(q / QUERIES_PER_SET)]!, beginningOfPassWriteIndex: q % QUERIES_PER_SET, endOfPassWriteIndex: (q % QUERIES_PER_SET) + 1 } } : {},
        );
      }
      const w = workgroupsAt(m.dispatches[s]!, this.symbols, symbols);
      pass.setPipeline(e.pipelines[s]!);
      pass.setBindGroup(0, e.bindGroups[s]!);
      pass.dispatchWorkgroups(w[0], w[1], w[2]);
    }
    (pass ?? enc.beginComputePass()).end();
    return enc;
  }

  /** After every kernel has read the old values: the updates not written in place replace them. */
  private encodeUpdates(e: LoadedEntry, enc: GPUCommandEncoder): void {
    const m = e.manifest;
    for (const u of m.updates) {
      if (u.inPlace) continue;
      enc.copyBufferToBuffer(e.buffers[u.buffer]!, 0, this.store.buffer(u.name), 0, paddedBytes(m.buffers[u.buffer]!.bytes));
    }
  }

  /**
   * Runs `entry` without reading anything back: its outputs stay in the entry's own buffers
   * until `entry` runs again, for `readOutput` to fetch one at a time (a 1B-parameter model's
   * gradients are read and written to a file tensor by tensor, never all on the host at once).
   * Profiled (opts.profiler), the kernel timestamps are read back and recorded here.
   */
  async dispatch(entry: string, inputs: ReadonlyMap<string, HostTensor>, opts: RunOptions = {}): Promise<void> {
    const e = this.entry(entry);
    const m = e.manifest;
    const device = this.kd.device;
    this.checkRules(m, inputs);
    const symbols = await this.upload(e, inputs);
    const profiler = this.opts.stepByStep ? undefined : opts.profiler;
    if (profiler) requireTimestamps(device, this.kd.adapterName);
    // Profiled: each dispatch in its own pass, which writes a timestamp at its start and end.
    const querySets = profiler
      ? Array.from({ length: Math.ceil((2 * m.dispatches.length) / QUERIES_PER_SET) }, (_, k) =>
          device.createQuerySet({ type: 'timestamp', count: Math.min(QUERIES_PER_SET, 2 * m.dispatches.length - k * QUERIES_PER_SET), label: `kiln profile ${entry} ${k}` }),
        )
      : [];
    const encodeRange = (from: number, to: number): GPUCommandEncoder => this.encode(entry, e, from, to, symbols, profiler, querySets);
    if (this.opts.stepByStep) {
      for (let s = 0; s < m.dispatches.length; s++) {
        await gpuStep(device, `step ${s}: ${m.dispatches[s]!.label}`, async () => {
          device.queue.submit([encodeRange(s, s + 1).finish()]);
          await unlessLost(this.kd, `step ${s}`, device.queue.onSubmittedWorkDone());
        });
      }
    }
    const what = `running ${m.dispatches.length} kernels`;
    await gpuStep(device, what, async () => {
      const enc = this.opts.stepByStep ? device.createCommandEncoder() : encodeRange(0, m.dispatches.length);
      this.encodeUpdates(e, enc);
      if (!profiler) {
        device.queue.submit([enc.finish()]);
        return;
      }
      const timestampBytes = 2 * m.dispatches.length * 8;
      const resolved = device.createBuffer({ size: querySets.length * QUERIES_PER_SET * 8, usage: QUERY_RESOLVE | COPY_SRC, label: 'kiln profile resolve' });
      const times = device.createBuffer({ size: timestampBytes, usage: MAP_READ | COPY_DST, label: 'kiln profile read-back' });
      try {
        querySets.forEach((q, k) => enc.resolveQuerySet(q, 0, q.count, resolved, k * QUERIES_PER_SET * 8));
        enc.copyBufferToBuffer(resolved, 0, times, 0, timestampBytes);
        device.queue.submit([enc.finish()]);
        await unlessLost(this.kd, what, times.mapAsync(MAP_READ));
        profiler.record(entry, m.dispatches, new BigUint64Array(times.getMappedRange().slice(0)));
      } finally {
        if (times.mapState === 'mapped') times.unmap();
        times.destroy();
        resolved.destroy();
        for (const q of querySets) q.destroy();
      }
    });
  }

  /** What a run and its read-back are called in errors (a lost device names it). */
  runLabel(entry: string, outputs: number): string {
    return `running ${this.entry(entry).manifest.dispatches.length} kernels and reading back ${outputs} values`;
  }

  /** Reads back output `name` of the last `dispatch` of `entry` (readOutputs of one). */
  async readOutput(entry: string, name: string): Promise<HostTensor> {
    return (await this.readOutputs(entry, [name])).get(name)!;
  }

  /**
   * Reads back outputs of the last `dispatch` of `entry`: small ones together (one submission
   * and one map for a training step's scalars), and the rest so that at most READ_BATCH_BYTES
   * of staging exist at a time, each staging buffer freed once copied to the host. Errors name
   * the entry and the output.
   */
  async readOutputs(entry: string, names: readonly string[], what?: string): Promise<EntryOutputs> {
    const e = this.entry(entry);
    const floatStorage = this.manifest.floatStorage;
    const outs = names.map((n) => e.manifest.outputs.find((x) => x.name === n) ?? fail(`entry '${entry}' has no output '${n}'`));
    const sized = outs.map((o) => ({ o, bytes: paddedBytes(numel(o.shape) * storedElementBytes(o.dtype, floatStorage)) }));
    const result: EntryOutputs = new Map();
    for (let i = 0; i < sized.length; ) {
      let j = i + 1;
      let total = sized[i]!.bytes;
      while (j < sized.length && total + sized[j]!.bytes <= READ_BATCH_BYTES) total += sized[j++]!.bytes;
      await this.readGroup(e, sized.slice(i, j), result, what);
      i = j;
    }
    return new Map(names.map((n) => [n, result.get(n)!]));
  }

  private async readGroup(e: LoadedEntry, group: readonly { o: EntryManifest['outputs'][number]; bytes: number }[], into: EntryOutputs, label?: string): Promise<void> {
    const device = this.kd.device;
    const floatStorage = this.manifest.floatStorage;
    const what = label ?? `reading back ${group.map((g) => g.o.name).join(', ')}`;
    await gpuStep(device, what, async () => {
      const enc = device.createCommandEncoder();
      const staging = group.map(({ o, bytes }) => {
        const st = device.createBuffer({ size: bytes, usage: MAP_READ | COPY_DST, label: `kiln read-back ${o.name}` });
        enc.copyBufferToBuffer(e.buffers[o.buffer]!, 0, st, 0, bytes);
        return st;
      });
      try {
        device.queue.submit([enc.finish()]);
        await unlessLost(this.kd, what, Promise.all(staging.map((st) => st.mapAsync(MAP_READ))));
        group.forEach(({ o }, k) => into.set(o.name, hostTensor(staging[k]!.getMappedRange(), o.dtype, o.shape, floatStorage)));
      } finally {
        for (const st of staging) {
          if (st.mapState === 'mapped') st.unmap();
          st.destroy();
        }
      }
    });
  }

  /** Writes the entry's declared inputs into their buffers; returns the per-call symbols' values. */
  private async upload(e: LoadedEntry, inputs: ReadonlyMap<string, HostTensor>): Promise<Int32Array | undefined> {
    return gpuStep(this.kd.device, 'uploading the inputs', () => this.writeInputs(e, inputs));
  }

  /** The artefact's per-call symbols (slot order of the symbols uniform). */
  private get symbols(): readonly SymbolDecl[] {
    return perCallSymbols(this.manifest);
  }

  /**
   * Queues the writes of the entry's declared inputs (checked against the manifest) into their
   * buffers, and of the per-call symbols' values (range-checked) into the entry's uniform;
   * returns those values (undefined when the entry reads none).
   */
  private writeInputs(e: LoadedEntry, inputs: ReadonlyMap<string, HostTensor>): Int32Array | undefined {
    const m = e.manifest;
    const device = this.kd.device;
    // Checked before anything is written: a position past the cache is refused, not clamped.
    const values = e.symbolBuffer ? symbolValues(this.symbols, inputs) : undefined;
    {
      const inputBuffer = new Map(m.buffers.flatMap((b, k) => (b.kind === 'input' ? [[b.name, k] as const] : [])));
      for (const decl of m.inputs) {
        const t = inputs.get(decl.name);
        if (!t) throw new KilnError(`input ${decl.name}: no value was fed`);
        const dtypeOk = t.dtype === decl.dtype || (isFloat(t.dtype) && isFloat(decl.dtype));
        if (!dtypeOk || !sameShape(t.shape, decl.shape)) throw new KilnError(`input ${decl.name}: expected ${describe(decl)}, got ${describe(t)}`);
        device.queue.writeBuffer(e.buffers[inputBuffer.get(decl.name)!]!, 0, deviceArray(t, this.manifest.floatStorage, `input tensor '${decl.name}'`) as OwnedView);
      }
    }
    if (!e.symbolBuffer || !values) return undefined;
    device.queue.writeBuffer(e.symbolBuffer, 0, values as OwnedView);
    return values;
  }

  /**
   * The diagnostic run behind runtime/nonfinite.ts: `entry` one dispatch at a time (updates are
   * not applied), reading back after each dispatch the buffers `reads(step)` names, before a
   * later dispatch can reuse them, and handing them to `observe`. Slow; for finding where a
   * non-finite value began.
   */
  async trace(
    entry: string,
    inputs: ReadonlyMap<string, HostTensor>,
    reads: (step: number) => readonly { readonly buffer: number; readonly dtype: DType; readonly shape: readonly number[] }[],
    observe: (step: number, values: readonly HostTensor[]) => void,
  ): Promise<void> {
    const e = this.entry(entry);
    const device = this.kd.device;
    const floatStorage = this.manifest.floatStorage;
    const symbols = await this.upload(e, inputs);
    for (const [s, d] of e.manifest.dispatches.entries()) {
      await gpuStep(device, `step ${s}: ${d.label}`, async () => {
        const enc = device.createCommandEncoder({ label: `kiln trace ${entry}` });
        const pass = enc.beginComputePass();
        pass.setPipeline(e.pipelines[s]!);
        pass.setBindGroup(0, e.bindGroups[s]!);
        const w = workgroupsAt(d, this.symbols, symbols);
        pass.dispatchWorkgroups(w[0], w[1], w[2]);
        pass.end();
        const wanted = reads(s);
        const staging = wanted.map((o) => {
          const bytes = paddedBytes(numel(o.shape) * storedElementBytes(o.dtype, floatStorage));
          const st = device.createBuffer({ size: bytes, usage: MAP_READ | COPY_DST, label: `kiln trace step ${s}` });
          enc.copyBufferToBuffer(e.buffers[o.buffer]!, 0, st, 0, bytes);
          return st;
        });
        device.queue.submit([enc.finish()]);
        try {
          await unlessLost(this.kd, `step ${s}`, Promise.all(staging.map((st) => st.mapAsync(MAP_READ))));
          observe(
            s,
            wanted.map((o, k) => hostTensor(staging[k]!.getMappedRange(), o.dtype, o.shape, floatStorage)),
          );
        } finally {
          for (const st of staging) {
            if (st.mapState === 'mapped') st.unmap();
            st.destroy();
          }
        }
      });
    }
  }

  /** Frees the entries' own buffers (the store stays: other programs may share it). */
  destroy(): void {
    for (const e of this.entries.values()) for (const b of e.owned) b.destroy();
    for (const st of this.staging.values()) st.buffer.destroy();
    this.entries.clear();
    this.staging.clear();
  }
}

function fail(message: string): never {
  throw new KilnError(message);
}
