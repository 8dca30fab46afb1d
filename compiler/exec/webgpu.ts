// Runs a graph on WebGPU: fuse once, lower per binding of the symbols, then follow the plan.
// Every pipeline is created up front (createComputePipelineAsync, all at once, deduplicated by
// code), every buffer and bind group is made once per compiled program, parameters are uploaded
// once, and a run is one command encoder: all dispatches, then copies of the requested values
// only. Failures become KilnErrors naming the step; a lost device rejects, it never hangs.
import { reachable, type Graph } from '../ir/graph.js';
import type { DeviceTraits } from '../codegen/kernel.js';
import { fuse, type FusedProgram, type FuseOptions } from '../passes/fuse.js';
import { lowerProgram, type CompiledProgram } from '../passes/lower.js';
import { mib } from '../passes/plan-report.js';
import type { BindingRef } from '../codegen/fused.js';
import { bindSymbols } from './reference.js';
import { KilnError } from '../../runtime/errors.js';
import { inPlaceUpdates, type UpdateRef } from '../passes/in-place.js';
import { isFloat, numel, type HostTensor } from '../../runtime/tensor.js';
import { f16BitsToF32, f32BitsToF16 } from '../../runtime/f16.js';
import { gpuStep, type KilnDevice } from '../../runtime/webgpu/device.js';

const STORAGE = 0x80;
const COPY_SRC = 0x04;
const COPY_DST = 0x08;
const MAP_READ = 0x01;
const COMPUTE = 0x4;

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
}

/** What one compiled step costs: for `npm run bench` and `kiln plan`-style reports. */
export interface RunStats {
  readonly dispatches: number;
  /** ops the step computes: the dispatch count without fusion. */
  readonly unfusedOps: number;
  /** device bytes allocated: parameters, inputs, pinned values, intermediate slots. */
  readonly allocatedBytes: number;
  /** the fused program's buffered values, each in a buffer of its own (no sharing). */
  readonly unsharedBytes: number;
  /** the sum of all values' bytes: every op's output in a buffer of its own (no fusion either). */
  readonly naiveBytes: number;
  readonly inPlaceUpdates: number;
}

interface Prepared {
  readonly inPlace: ReadonlyMap<number, number>;
  readonly stats: RunStats;
  readonly compiled: CompiledProgram;
  readonly pipelines: readonly GPUComputePipeline[];
  readonly bindGroups: readonly GPUBindGroup[];
  readonly buffers: ReadonlyMap<number, GPUBuffer>;
  readonly owned: readonly GPUBuffer[];
}

// Pipelines by WGSL, per device: layers repeat the same kernels, and tests compile the same ones.
const pipelineCache = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();

function layoutOf(device: GPUDevice, bindings: readonly BindingRef[]): GPUPipelineLayout {
  // Explicit layouts: 'auto' would drop a binding the shader never touches (an unused load<k>).
  const bgl = device.createBindGroupLayout({
    entries: bindings.map((b, k) => ({ binding: k, visibility: COMPUTE, buffer: { type: b.access === 'read' ? 'read-only-storage' : 'storage' } })),
  });
  return device.createPipelineLayout({ bindGroupLayouts: [bgl] });
}

function pipelineFor(device: GPUDevice, code: string, bindings: readonly BindingRef[], label: string): Promise<GPUComputePipeline> {
  let cache = pipelineCache.get(device);
  if (!cache) pipelineCache.set(device, (cache = new Map()));
  let p = cache.get(code);
  if (!p) {
    const module = device.createShaderModule({ code, label });
    p = device.createComputePipelineAsync({ layout: layoutOf(device, bindings), compute: { module, entryPoint: 'main' }, label });
    p.catch(() => cache.delete(code));
    cache.set(code, p);
  }
  return p;
}

const padded = (bytes: number): number => Math.max(4, Math.ceil(bytes / 4) * 4);

/** Rejects when the device is lost, so no await on the GPU can hang past a device loss. */
function unlessLost<T>(kd: KilnDevice, what: string, p: Promise<T>): Promise<T> {
  const lost = kd.device.lost.then((info) => {
    throw new KilnError(`WebGPU device lost during ${what}: ${info.message || info.reason}`);
  });
  return Promise.race([p, lost]);
}

export class WebGpuExecutor {
  private readonly fused = new Map<string, FusedProgram>();
  private readonly prepared = new Map<string, Promise<Prepared>>();
  private readonly params = new Map<number, GPUBuffer>();
  /** the host tensor each parameter buffer holds: fed again (the same object), it is not re-sent. */
  private readonly uploaded = new Map<number, HostTensor>();
  /** the costs of the step the last run() executed. */
  lastStats: RunStats | undefined;
  /** inputs that updates write (optimiser moments): kept on the device like parameters. */
  private readonly residents = new Set<number>();

  constructor(
    readonly kd: KilnDevice,
    readonly graph: Graph,
    readonly opts: ExecutorOptions = {},
  ) {}

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
   * their targets' device buffers after the step; the targets stay resident on the device from
   * then on, so later runs fed the same host tensors neither upload nor read them back
   * (`readSources` fetches their current values).
   */
  async run(feeds: ReadonlyMap<string, HostTensor>, wanted: readonly number[], opts: { applyUpdates?: boolean } = {}): Promise<Map<number, HostTensor>> {
    const bindings = bindSymbols(this.graph, feeds);
    const updates = opts.applyUpdates ? this.updateTargets() : [];
    const computed = [...wanted, ...updates.map((u) => u.node).filter((n) => !wanted.includes(n))];
    const key = `${computed.join(',')}|${[...bindings].map(([k, v]) => `${k}=${v}`).join(',')}`;
    let prep = this.prepared.get(key);
    if (!prep) {
      prep = this.prepare(this.program(computed), bindings, updates, new Set(wanted));
      prep.catch(() => this.prepared.delete(key));
      this.prepared.set(key, prep);
    }
    const p = await prep;
    const device = this.kd.device;
    await gpuStep(device, 'uploading the inputs', () => {
      for (const id of p.compiled.program.sources) {
        const node = this.graph.nodes[id]!;
        const name = String(node.attrs['name']);
        const t = feeds.get(name);
        if (!t) throw new KilnError(`${node.op} ${name}: no value was fed`);
        if (node.op === 'param' || this.residents.has(id)) {
          if (this.uploaded.get(id) === t) continue;
          this.uploaded.set(id, t);
        }
        device.queue.writeBuffer(p.buffers.get(id)!, 0, hostArray(t, this.f16));
      }
    });
    this.lastStats = p.stats;
    return this.execute(p, wanted, updates);
  }

  /** Sources the graph's updates write, with the value each takes; they become device-resident. */
  private updateTargets(): { node: number; target: number }[] {
    const byName = new Map(this.graph.nodes.filter((n) => n.op === 'param' || n.op === 'input').map((n) => [String(n.attrs['name']), n.id]));
    return (this.graph.updates ?? []).map((u) => {
      const target = byName.get(u.name);
      if (target === undefined) throw new KilnError(`update of '${u.name}': the graph has no input or parameter of that name`);
      this.residents.add(target);
      return { node: u.node, target };
    });
  }

  /** Current device values of parameters or resident inputs, by name (after updated steps). */
  async readSources(names: readonly string[]): Promise<Map<string, HostTensor>> {
    const device = this.kd.device;
    const out = new Map<string, HostTensor>();
    await gpuStep(device, `reading back ${names.length} parameters`, async () => {
      for (const name of names) {
        const node = this.graph.nodes.find((n) => (n.op === 'param' || n.op === 'input') && n.attrs['name'] === name);
        const buf = node ? this.params.get(node.id) : undefined;
        if (!node || !buf) throw new KilnError(`'${name}' is not a parameter or resident input on the device`);
        const len = node.type.shape.reduce<number>((a, d) => a * (typeof d === 'number' ? d : 0), 1);
        const bytes = padded(len * this.elementBytes(node.type.dtype));
        const st = device.createBuffer({ size: bytes, usage: MAP_READ | COPY_DST, label: `kiln read ${name}` });
        const enc = device.createCommandEncoder();
        enc.copyBufferToBuffer(buf, 0, st, 0, bytes);
        device.queue.submit([enc.finish()]);
        await unlessLost(this.kd, `reading ${name}`, st.mapAsync(MAP_READ));
        const raw = st.getMappedRange();
        const data = !isFloat(node.type.dtype) ? new Int32Array(raw.slice(0, len * 4)) : this.f16 ? Float32Array.from(new Uint16Array(raw, 0, len), f16BitsToF32) : new Float32Array(raw.slice(0, len * 4));
        st.unmap();
        st.destroy();
        out.set(name, { dtype: node.type.dtype, shape: node.type.shape.map((d) => (typeof d === 'number' ? d : 0)), data });
      }
    });
    return out;
  }

  /** Forgets uploaded parameters, so the next run uploads them again (their data changed in place). */
  invalidateParams(): void {
    this.uploaded.clear();
  }

  private async prepare(program: FusedProgram, bindings: Map<string, number>, updates: readonly UpdateRef[] = [], readBack: ReadonlySet<number> = new Set()): Promise<Prepared> {
    const inPlace = inPlaceUpdates(program, updates, readBack);
    const device = this.kd.device;
    if (this.f16 && !this.kd.features.shaderF16) throw new KilnError(`f16 storage needs the shader-f16 feature, which ${this.kd.adapterName} lacks`);
    const compiled = lowerProgram(program, bindings, this.traits(), { floatStorage: this.opts.storage ?? 'f32', aliases: new Map([...inPlace].map(([u, t]) => [t, u])) });
    const { plan, kernels } = compiled;
    checkSizes(compiled, this.kd.limits.maxBufferSize);
    const maxBindings = this.kd.limits.maxStorageBuffersPerShaderStage;
    kernels.forEach((k, s) => {
      if (k.bindings.length > maxBindings)
        throw new KilnError(`step ${s} (${k.label}) needs ${k.bindings.length} storage bindings; this device allows ${maxBindings}`);
    });
    const pipelines = await gpuStep(device, `compiling ${kernels.length} kernels`, () =>
      Promise.all(kernels.map((k, s) => pipelineFor(device, k.code, k.bindings, `step ${s}: ${k.label}`))),
    );
    const buffers = new Map<number, GPUBuffer>();
    const owned: GPUBuffer[] = [];
    const make = (bytes: number, label: string): GPUBuffer => {
      const b = device.createBuffer({ size: padded(bytes), usage: STORAGE | COPY_SRC | COPY_DST, label });
      owned.push(b);
      return b;
    };
    const slotBuffers = await gpuStep(device, `allocating ${plan.slots.length} intermediate buffers (${mib(plan.totals.slots)})`, () =>
      plan.slots.map((s) => make(s.bytes, `kiln slot ${s.id}`)),
    );
    await gpuStep(device, `allocating parameters, inputs and outputs (${mib(plan.totals.params + plan.totals.inputs + plan.totals.requested)})`, () => {
      // Resident buffers first: an update written in place takes its target's buffer.
      const ordered = [...plan.values.values()].sort((a, b) => Number(inPlace.has(a.node)) - Number(inPlace.has(b.node)));
      for (const v of ordered) {
        const target = inPlace.get(v.node);
        if (target !== undefined) {
          buffers.set(v.node, buffers.get(target)!);
          continue;
        }
        if (v.kind === 'temp') buffers.set(v.node, slotBuffers[plan.slotOf.get(v.node)!]!);
        else if (v.kind === 'param' || this.residents.has(v.node)) {
          let b = this.params.get(v.node);
          if (!b) {
            b = device.createBuffer({ size: padded(v.bytes), usage: STORAGE | COPY_SRC | COPY_DST, label: `kiln param ${v.node}` });
            this.params.set(v.node, b);
          }
          buffers.set(v.node, b);
        } else buffers.set(v.node, make(v.bytes, `kiln ${v.kind} ${v.node}`));
      }
    });
    const bindGroups: GPUBindGroup[] = [];
    for (const [s, k] of kernels.entries()) {
      bindGroups.push(
        await gpuStep(device, `binding step ${s}: ${k.label}`, () =>
          device.createBindGroup({
            layout: pipelines[s]!.getBindGroupLayout(0),
            entries: k.bindings.map((b, binding) => ({ binding, resource: { buffer: buffers.get(b.value)!, offset: b.offset * b.elementBytes, size: padded(b.length * b.elementBytes) } })),
          }),
        ),
      );
    }
    const aliased = [...inPlace.keys()].reduce((a, id) => a + (plan.values.get(id)?.bytes ?? 0), 0);
    const t = plan.totals;
    const stats: RunStats = {
      dispatches: kernels.length,
      unfusedOps: program.unfusedOps,
      allocatedBytes: t.params + t.inputs + t.requested - aliased + t.slots,
      unsharedBytes: t.params + t.inputs + t.requested + t.naive,
      naiveBytes: reachable(program.graph, program.requested).reduce((a, id) => a + numel(compiled.node(id).shape) * this.elementBytes(compiled.node(id).dtype), 0),
      inPlaceUpdates: inPlace.size,
    };
    return { compiled, pipelines, bindGroups, buffers, owned, inPlace, stats };
  }

  private async execute(p: Prepared, wanted: readonly number[], updates: readonly { node: number; target: number }[] = []): Promise<Map<number, HostTensor>> {
    const device = this.kd.device;
    const { kernels } = p.compiled;
    const encodeRange = (from: number, to: number): GPUCommandEncoder => {
      const enc = device.createCommandEncoder({ label: 'kiln step' });
      const pass = enc.beginComputePass();
      for (let s = from; s < to; s++) {
        const w = kernels[s]!.workgroups;
        pass.setPipeline(p.pipelines[s]!);
        pass.setBindGroup(0, p.bindGroups[s]!);
        pass.dispatchWorkgroups(w[0], w[1], w[2]);
      }
      pass.end();
      return enc;
    };
    if (this.opts.stepByStep) {
      for (let s = 0; s < kernels.length; s++) {
        await gpuStep(device, `step ${s}: ${kernels[s]!.label}`, async () => {
          device.queue.submit([encodeRange(s, s + 1).finish()]);
          await unlessLost(this.kd, `step ${s}`, device.queue.onSubmittedWorkDone());
        });
      }
    }
    const what = `running ${kernels.length} kernels and reading back ${wanted.length} values`;
    return gpuStep(device, what, async () => {
      const enc = this.opts.stepByStep ? device.createCommandEncoder() : encodeRange(0, kernels.length);
      // After every kernel has read the old values: the new ones replace them in place.
      for (const u of updates) {
        if (p.inPlace.has(u.node)) continue;
        const n = p.compiled.node(u.node);
        enc.copyBufferToBuffer(p.buffers.get(u.node)!, 0, p.buffers.get(u.target)!, 0, padded(numel(n.shape) * this.elementBytes(n.dtype)));
      }
      const staging = wanted.map((id) => {
        const n = p.compiled.node(id);
        const bytes = padded(numel(n.shape) * this.elementBytes(n.dtype));
        const st = device.createBuffer({ size: bytes, usage: MAP_READ | COPY_DST, label: `kiln read-back ${id}` });
        enc.copyBufferToBuffer(p.buffers.get(id)!, 0, st, 0, bytes);
        return st;
      });
      device.queue.submit([enc.finish()]);
      try {
        await unlessLost(this.kd, what, Promise.all(staging.map((s) => s.mapAsync(MAP_READ))));
        const out = new Map<number, HostTensor>();
        wanted.forEach((id, k) => {
          const n = p.compiled.node(id);
          const len = numel(n.shape);
          const raw = staging[k]!.getMappedRange();
          const data = !isFloat(n.dtype)
            ? new Int32Array(raw.slice(0, len * 4))
            : this.f16
              ? Float32Array.from(new Uint16Array(raw, 0, len), f16BitsToF32)
              : new Float32Array(raw.slice(0, len * 4));
          out.set(id, { dtype: n.dtype, shape: [...n.shape], data });
        });
        return out;
      } finally {
        for (const s of staging) {
          if (s.mapState === 'mapped') s.unmap();
          s.destroy();
        }
      }
    });
  }

  /** The compiled program a run with these feeds would use (for reports and tests). */
  async compiled(feeds: ReadonlyMap<string, HostTensor>, wanted: readonly number[]): Promise<CompiledProgram> {
    const bindings = bindSymbols(this.graph, feeds);
    return lowerProgram(this.program(wanted), bindings, this.traits(), { floatStorage: this.opts.storage ?? 'f32' });
  }

  private get f16(): boolean {
    return this.opts.storage === 'f16';
  }

  private elementBytes(dtype: HostTensor['dtype']): number {
    return this.f16 && isFloat(dtype) ? 2 : 4;
  }

  private traits(): DeviceTraits {
    return { ...deviceTraits(this.kd), ...this.opts.traits };
  }

  destroy(): void {
    void Promise.all(this.prepared.values()).then((ps) => ps.forEach((p) => p.owned.forEach((b) => b.destroy())));
    for (const b of this.params.values()) b.destroy();
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

function hostArray(t: HostTensor, f16: boolean): Float32Array | Int32Array | Uint16Array {
  if (isFloat(t.dtype) && f16) {
    // Rounded to nearest even; padded to whole 4-byte words, which writeBuffer requires.
    const bits = new Uint16Array(t.data.length + (t.data.length % 2));
    const word = new Float32Array(1);
    const asInt = new Uint32Array(word.buffer);
    for (let i = 0; i < t.data.length; i++) {
      word[0] = t.data[i]!;
      bits[i] = f32BitsToF16(asInt[0]!);
    }
    return bits;
  }
  if (isFloat(t.dtype)) return t.data instanceof Float32Array ? t.data : Float32Array.from(t.data);
  return t.data instanceof Int32Array ? t.data : Int32Array.from(t.data);
}
