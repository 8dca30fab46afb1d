// Runs a graph on WebGPU through the one path there is: compile the requested values into an
// artefact entry (compiler/emit/artefact.ts), load it (runtime/webgpu/program.ts) over one
// TensorStore, run it. Entries are compiled once per set of requested values and binding of the
// symbols; parameters and optimiser state live in the store by name, so every entry shares them
// and an updated step leaves them on the device. What `compiled()` reports is the entry that ran.
import type { Graph } from '../ir/graph.js';
import type { DeviceTraits } from '../codegen/kernel.js';
import { fuse, type FusedProgram, type FuseOptions } from '../passes/fuse.js';
import type { CompiledProgram } from '../passes/lower.js';
import { mib } from '../passes/plan-report.js';
import { compileArtefact, type CompiledEntry } from '../emit/artefact.js';
import { bindSymbols } from './reference.js';
import { KilnError } from '../../runtime/errors.js';
import type { EntryStats } from '../../runtime/artefact.js';
import type { TracedKernel } from '../../runtime/nonfinite.js';
import type { HostTensor } from '../../runtime/tensor.js';
import type { KilnDevice } from '../../runtime/webgpu/device.js';
import { ArtefactProgram } from '../../runtime/webgpu/program.js';
import { TensorStore } from '../../runtime/webgpu/store.js';

/** The device's limits as the code generator sees them. */
export function deviceTraits(d: KilnDevice): DeviceTraits {
  return {
    subgroupSize: d.subgroupSize,
    maxWorkgroupInvocations: d.limits.maxComputeInvocationsPerWorkgroup,
    maxWorkgroupsPerDimension: d.limits.maxComputeWorkgroupsPerDimension,
    workgroupMemoryBytes: d.limits.maxComputeWorkgroupStorageSize,
    maxStorageBindingBytes: d.limits.maxStorageBufferBindingSize,
    shaderF16: d.features.shaderF16,
  };
}

export interface ExecutorOptions {
  readonly fuse?: FuseOptions;
  /** submit and check each dispatch on its own, so a failure names its kernel (slow; debugging). */
  readonly stepByStep?: boolean;
  /** narrower limits than the device's (tests: a small binding limit forces split bindings). */
  readonly traits?: Partial<DeviceTraits>;
  /** 'f16': float tensors stored as f16, math in f32 (needs shader-f16); halves their memory. */
  readonly storage?: 'f32' | 'f16';
  /** bytes of one row chunk of a loss head's logits (compiler/passes/loss-heads.ts). */
  readonly lossChunkBytes?: number;
}

/** A run whose values stay on the device until read (WebGpuExecutor.start). */
export interface StartedRun {
  /** Reads these values (node ids among the run's `wanted`) back from the device. */
  read(ids: readonly number[]): Promise<Map<number, HostTensor>>;
}

/** What one compiled step costs: for `npm run bench` and `kiln plan`-style reports. */
export type RunStats = EntryStats;

interface Prepared {
  readonly entry: CompiledEntry;
  readonly program: ArtefactProgram;
}

const ENTRY = 'run';
const outputName = (id: number): string => `v${id}`;

export class WebGpuExecutor {
  private readonly fused = new Map<string, FusedProgram>();
  private readonly prepared = new Map<string, Promise<Prepared>>();
  private readonly store: TensorStore;
  /** the costs of the step the last run() executed. */
  lastStats: RunStats | undefined;

  constructor(
    readonly kd: KilnDevice,
    readonly graph: Graph,
    readonly opts: ExecutorOptions = {},
  ) {
    this.store = new TensorStore(kd, opts.storage ?? 'f32');
  }

  /** The fused program for a set of requested values (cached). */
  program(wanted: readonly number[]): FusedProgram {
    const key = wanted.join(',');
    let p = this.fused.get(key);
    if (!p) {
      p = fuse(this.graph, wanted, { maxBindings: this.kd.limits.maxStorageBuffersPerShaderStage, ...this.opts.fuse });
      this.fused.set(key, p);
    }
    return p;
  }

  /**
   * Evaluates `wanted` (node ids) from feeds named like the reference executor's. With
   * `applyUpdates`, the graph's `updates` (optimiser steps) are computed too and written into
   * their targets on the device after the step; the targets stay resident from then on, so
   * later runs fed the same host tensors neither upload nor read them back (`readSources`
   * fetches their current values).
   */
  async run(feeds: ReadonlyMap<string, HostTensor>, wanted: readonly number[], opts: { applyUpdates?: boolean } = {}): Promise<Map<number, HostTensor>> {
    const run = await this.start(feeds, wanted, opts);
    return run.read(wanted);
  }

  /**
   * Runs like `run` but reads nothing back: the returned handle reads values of `wanted` when
   * asked (`read`), until this executor runs again, so a caller can take a model's gradients
   * one tensor at a time (kiln loss --grads streams them into the file).
   */
  async start(feeds: ReadonlyMap<string, HostTensor>, wanted: readonly number[], opts: { applyUpdates?: boolean } = {}): Promise<StartedRun> {
    const p = await this.prepare(feeds, wanted, opts.applyUpdates ?? false);
    await this.writeShared(p, feeds);
    this.lastStats = p.entry.manifest.stats;
    await p.program.dispatch(ENTRY, feeds);
    const asked = new Set(wanted);
    return {
      read: async (ids) => {
        for (const id of ids) if (!asked.has(id)) throw new KilnError(`node ${id} was not among the values this run computed`);
        const out = await p.program.readOutputs(ENTRY, ids.map(outputName), p.program.runLabel(ENTRY, ids.length));
        return new Map(ids.map((id) => [id, out.get(outputName(id))!]));
      },
    };
  }

  /**
   * Parameters and state from the feeds into the store, one tensor at a time (each fetched from
   * `feeds` when its turn comes, so a lazy map of checkpoint tensors is never all on the host;
   * the same objects again send nothing).
   */
  private async writeShared(p: Prepared, feeds: ReadonlyMap<string, HostTensor>): Promise<void> {
    const m = p.program.manifest;
    const names = [...m.params.map((d) => ['param', d.name] as const), ...m.state.map((d) => ['input', d.name] as const)];
    for (const [kind, name] of names) if (!feeds.has(name)) throw new KilnError(`${kind} ${name}: no value was fed`);
    await this.store.upload(
      (function* () {
        for (const [, name] of names) yield [name, feeds.get(name)!] as const;
      })(),
    );
  }

  /**
   * The diagnostic run behind runtime/nonfinite.ts: the entry run(feeds, wanted) uses, one
   * dispatch at a time, reading back every value each dispatch writes. Returns the sources and
   * every kernel output, each with the kernel that wrote it and the graph nodes that kernel
   * computes. Slow, and holds every output on the host: only for finding where a non-finite
   * value began.
   */
  async trace(feeds: ReadonlyMap<string, HostTensor>, wanted: readonly number[]): Promise<{ values: Map<number, HostTensor>; kernelOf: Map<number, TracedKernel> }> {
    const p = await this.prepare(feeds, wanted, false);
    await this.writeShared(p, feeds);
    const { compiled, origin, partOf } = p.entry;
    const dispatches = p.entry.manifest.dispatches;
    const values = new Map<number, HostTensor>();
    for (const id of compiled.program.sources) values.set(origin.get(id)!, feeds.get(String(compiled.program.graph.nodes[id]!.attrs['name']))!);
    // A value bound in chunks (split bindings) appears once per chunk: read it once, whole.
    const written = (s: number): number[] => [...new Set(compiled.kernels[s]!.bindings.filter((b) => b.access === 'read_write').map((b) => b.value))];
    const bufferOf = (s: number, node: number): number => dispatches[s]!.bindings[compiled.kernels[s]!.bindings.findIndex((b) => b.value === node)]!.buffer;
    const kernelOf = new Map<number, TracedKernel>();
    const firstBad = new Map<number, TracedKernel>();
    await p.program.trace(
      ENTRY,
      feeds,
      (s) => written(s).map((id) => ({ buffer: bufferOf(s, id), dtype: compiled.node(id).dtype, shape: compiled.node(id).shape })),
      (s, got) => {
        const step = compiled.plan.steps[s]!;
        // Ids of this graph's nodes: the chunks of an expanded loss head have none, its result
        // stands for the fused op (compiled graph -> this graph through `origin`).
        const nodes = compiled.program.groups[step.group]!.members.map((m) => origin.get(m.node)).filter((n) => n !== undefined);
        const traced: TracedKernel = { step: s, label: dispatches[s]!.label, nodes };
        written(s).forEach((id, k) => {
          const own = origin.get(id);
          // A fused loss head is charged to the first of its chunk kernels that made a
          // non-finite value (the projection reading a NaN weight, say), else its last.
          const part = partOf.get(id);
          if (part !== undefined && !firstBad.has(part) && !got[k]!.data.every(Number.isFinite)) firstBad.set(part, { ...traced, nodes: [part] });
          if (own === undefined) return;
          values.set(own, got[k]!);
          kernelOf.set(own, traced);
        });
      },
    );
    for (const [node, kernel] of firstBad) kernelOf.set(node, kernel);
    return { values, kernelOf };
  }

  private prepare(feeds: ReadonlyMap<string, HostTensor>, wanted: readonly number[], applyUpdates: boolean): Promise<Prepared> {
    const bindings = bindSymbols(this.graph, feeds);
    const key = `${wanted.join(',')}|${applyUpdates}|${[...bindings].map(([k, v]) => `${k}=${v}`).join(',')}`;
    let prep = this.prepared.get(key);
    if (!prep) {
      prep = (async () => {
        const traits = { ...deviceTraits(this.kd), ...this.opts.traits };
        const { artefact, entries } = compileArtefact([{ name: ENTRY, graph: this.graph, outputs: wanted.map((id) => ({ name: outputName(id), node: id })), applyUpdates }], {
          bindings,
          traits,
          floatStorage: this.opts.storage ?? 'f32',
          maxBindings: this.kd.limits.maxStorageBuffersPerShaderStage,
          ...(this.opts.fuse ? { fuse: this.opts.fuse } : {}),
          ...(this.opts.lossChunkBytes === undefined ? {} : { lossChunkBytes: this.opts.lossChunkBytes }),
        });
        const entry = entries.get(ENTRY)!;
        checkSizes(entry.compiled, this.kd.limits.maxBufferSize);
        const program = await ArtefactProgram.load(this.kd, artefact, { store: this.store, stepByStep: this.opts.stepByStep ?? false });
        return { entry, program };
      })();
      prep.catch(() => this.prepared.delete(key));
      this.prepared.set(key, prep);
    }
    return prep;
  }

  /** Current device values of parameters or resident inputs, by name (after updated steps). */
  async readSources(names: readonly string[]): Promise<Map<string, HostTensor>> {
    for (const name of names) if (!this.store.has(name)) throw new KilnError(`'${name}' is not a parameter or resident input on the device`);
    return this.store.read(names);
  }

  /** Forgets uploaded parameters, so the next run uploads them again (their data changed in place). */
  invalidateParams(): void {
    this.store.forget();
  }

  /**
   * The compiled program a run with these feeds uses: the very entry `run` loads (compiled now
   * if no run needed it yet), with the in-place aliases of `applyUpdates`.
   */
  async compiled(feeds: ReadonlyMap<string, HostTensor>, wanted: readonly number[], opts: { applyUpdates?: boolean } = {}): Promise<CompiledProgram> {
    return (await this.prepare(feeds, wanted, opts.applyUpdates ?? false)).entry.compiled;
  }

  /** The artefact entry a run with these feeds uses (its manifest is what the runtime follows). */
  async entry(feeds: ReadonlyMap<string, HostTensor>, wanted: readonly number[], opts: { applyUpdates?: boolean } = {}): Promise<CompiledEntry> {
    return (await this.prepare(feeds, wanted, opts.applyUpdates ?? false)).entry;
  }

  destroy(): void {
    void Promise.allSettled(this.prepared.values()).then((ps) => ps.forEach((p) => p.status === 'fulfilled' && p.value.program.destroy()));
    this.store.destroy();
  }
}

/** Buffers past maxBufferSize cannot exist: say which value and which step, before allocating. */
function checkSizes(c: CompiledProgram, maxBuffer: number): void {
  const writer = new Map<number, number>();
  c.plan.steps.forEach((st, s) => st.writes.forEach((w) => writer.set(w, s)));
  const name = (n: number): string => {
    const node = c.program.graph.nodes[n]!;
    const what = node.op === 'param' || node.op === 'input' ? `${node.op} ${String(node.attrs['name'])}` : `${node.label ?? node.op} (node ${n})`;
    const s = writer.get(n);
    return s === undefined ? what : `${what}, written by step ${s} (${c.kernels[s]!.label})`;
  };
  for (const v of c.plan.values.values())
    if (v.bytes > maxBuffer) throw new KilnError(`${name(v.node)} needs ${mib(v.bytes)}, more than this device's largest buffer (${mib(maxBuffer)})`);
  for (const slot of c.plan.slots)
    if (slot.bytes > maxBuffer) throw new KilnError(`intermediate buffer ${slot.id} for ${name(largest(c, slot.values))} needs ${mib(slot.bytes)}, more than this device's largest buffer (${mib(maxBuffer)})`);
}

function largest(c: CompiledProgram, nodes: readonly number[]): number {
  return nodes.reduce((a, b) => (c.plan.values.get(b)!.bytes > c.plan.values.get(a)!.bytes ? b : a));
}
