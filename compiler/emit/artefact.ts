// The last pass: graphs become an artefact (runtime/artefact.ts), the data the runtime runs.
// Each entry is one fused, lowered program over concrete symbol values; its memory plan becomes
// a numbered buffer list (parameters and state by name, so every entry shares them), its kernels
// become WGSL files (deduplicated by code, named in order of first use, so compiling twice gives
// the same bytes) and its in-place updates become read_write bindings of the target's buffer.
import { KilnError } from '../../runtime/errors.js';
import {
  ARTEFACT_FORMAT,
  ARTEFACT_VERSION,
  MANIFEST_FILE,
  type Artefact,
  type BindingDecl,
  type BufferDecl,
  type DispatchDecl,
  type EntryManifest,
  type GenerationDecl,
  type Manifest,
  type OutputDecl,
  type ParamDecl,
  type StateDecl,
  type SymbolDecl,
  type TensorDecl,
  type UpdateDecl,
} from '../../runtime/artefact.js';
import { momentName } from '../../runtime/optim/schedule.js';
import type { SymbolBindings } from '../ir/dims.js';
import { reachable, type Graph, type NamedValue } from '../ir/graph.js';
import { DEFAULT_TRAITS, type DeviceTraits } from '../codegen/kernel.js';
import { bindingsOf, fuse, type FusedProgram, type FuseOptions } from '../passes/fuse.js';
import { inPlaceUpdates, type UpdateRef } from '../passes/in-place.js';
import { inputContract } from '../passes/input-contract.js';
import { lowerProgram, storedBytes, type CompiledProgram } from '../passes/lower.js';
import { chunkLossHeads, LOSS_CHUNK_BYTES } from '../passes/loss-heads.js';
import { accumulatorLinks } from '../passes/plan.js';

/** One entry to compile: values of `graph` to read back, and whether its updates are applied. */
export interface EntrySpec {
  readonly name: string;
  readonly graph: Graph;
  readonly outputs: readonly NamedValue[];
  /** apply `graph.updates` (optimiser steps) to the shared state after the dispatches. */
  readonly applyUpdates?: boolean;
}

export interface CompileOptions {
  /** the values of the model's symbols (B, T, ...): every size in the WGSL is fixed by them. */
  readonly bindings: SymbolBindings;
  readonly traits?: DeviceTraits;
  readonly floatStorage?: 'f32' | 'f16';
  readonly fuse?: FuseOptions;
  /** storage bindings one kernel may use (the device's maxStorageBuffersPerShaderStage). */
  readonly maxBindings?: number;
  /** state inputs that are KV caches, with their position axis (the manifest records the capacity). */
  readonly kvCaches?: ReadonlyMap<string, number>;
  /** provenance for the manifest (spec, config, stage). */
  readonly source?: Readonly<Record<string, string>>;
  /** for generation artefacts: how the prefill and decode entries were built (recorded in the manifest). */
  readonly generation?: GenerationDecl;
  /** bytes of one chunk of a loss head's logits (compiler/passes/loss-heads.ts; default LOSS_CHUNK_BYTES). */
  readonly lossChunkBytes?: number;
  /**
   * Values that vary per call (runtime/artefact.ts SymbolDecl 'per-call'), each carried by an
   * i32 scalar input of the entries that take it: kernels read it from the symbols uniform, and
   * ops that can make their workgroup counts follow it do (decode attention's blocks).
   */
  readonly perCall?: readonly PerCallSymbol[];
}

/** A per-call symbol: its name, the entry input that carries it, and the values it may take. */
export interface PerCallSymbol {
  readonly name: string;
  readonly input: string;
  readonly min: number;
  readonly max: number;
}

/** An entry with the compiler's view of it, for reports and tests: what runs is `manifest`. */
export interface CompiledEntry {
  readonly name: string;
  readonly compiled: CompiledProgram;
  /** update node -> target node, for the updates written in place. */
  readonly inPlace: ReadonlyMap<number, number>;
  readonly manifest: EntryManifest;
  /**
   * node of the compiled graph (`compiled.program.graph`, where the loss heads are expanded into
   * chunks) -> the node of the entry's graph it stands for, where there is one.
   */
  readonly origin: ReadonlyMap<number, number>;
  /** node of the compiled graph inside a loss head's chunks -> the entry graph's fused op. */
  readonly partOf: ReadonlyMap<number, number>;
}

export interface CompiledArtefact {
  readonly artefact: Artefact;
  readonly entries: ReadonlyMap<string, CompiledEntry>;
}

/** Kernel files by code, named in order of first use across all entries. */
class KernelFiles {
  readonly byCode = new Map<string, string>();
  readonly files = new Map<string, string>();
  add(code: string): string {
    let file = this.byCode.get(code);
    if (!file) {
      file = `kernels/k${String(this.byCode.size).padStart(4, '0')}.wgsl`;
      this.byCode.set(code, file);
      this.files.set(file, code);
    }
    return file;
  }
}

const sourceName = (graph: Graph, id: number): string => String(graph.nodes[id]!.attrs['name']);

/** Compiles `specs` into one artefact whose entries share parameters and state by name. */
export function compileArtefact(specs: readonly EntrySpec[], opts: CompileOptions): CompiledArtefact {
  const traits = opts.traits ?? DEFAULT_TRAITS;
  const floatStorage = opts.floatStorage ?? 'f32';
  const kernels = new KernelFiles();
  const params = new Map<string, ParamDecl>();
  const state = new Map<string, StateDecl>();
  const entries = new Map<string, CompiledEntry>();
  const manifests: Record<string, EntryManifest> = {};
  for (const spec of specs) {
    if (entries.has(spec.name)) throw new KilnError(`entry '${spec.name}' is listed twice`);
    const e = compileEntry(spec, opts.bindings, opts.lossChunkBytes ?? LOSS_CHUNK_BYTES, traits, floatStorage, { ...(opts.maxBindings === undefined ? {} : { maxBindings: opts.maxBindings }), ...opts.fuse }, kernels, params, state, opts.kvCaches ?? new Map(), opts.perCall ?? []);
    entries.set(spec.name, e);
    manifests[spec.name] = e.manifest;
  }
  const manifest: Manifest = {
    format: ARTEFACT_FORMAT,
    version: ARTEFACT_VERSION,
    source: opts.source ?? {},
    floatStorage,
    requires: requirements(Object.values(manifests), kernels.files, traits, floatStorage),
    symbols: [
      ...[...opts.bindings].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([name, value]): SymbolDecl => ({ name, kind: 'fixed', value, min: value, max: value })),
      ...(opts.perCall ?? []).map((p): SymbolDecl => ({ name: p.name, kind: 'per-call', value: p.max, min: p.min, max: p.max, input: p.input })),
    ],
    params: [...params.values()],
    state: [...state.values()],
    entries: manifests,
    ...(opts.generation ? { generation: opts.generation } : {}),
  };
  return { artefact: { manifest, kernels: kernels.files }, entries };
}

/**
 * Fuses the entry counting an update and its target as one binding (they share a read_write
 * binding when the update is written in place), then checks each kernel against the updates
 * actually written in place; when one would exceed the binding limit, fuses again counting them
 * apart. AdamW's kernel (parameter, both moments, gradient, step scalars, clipping factor) fits
 * WebGPU's default 8 bindings only so.
 */
function fuseWithUpdates(graph: Graph, computed: readonly number[], fuseOpts: FuseOptions, updates: readonly UpdateRef[], readBack: ReadonlySet<number>): { program: FusedProgram; inPlace: Map<number, number> } {
  if (updates.length > 0) {
    const program = fuse(graph, computed, { ...fuseOpts, sharedBindings: new Map(updates.map((u) => [u.node, u.target])) });
    const inPlace = inPlaceUpdates(program, updates, readBack);
    if (bindingsOf(program, inPlace).every((n) => n <= (fuseOpts.maxBindings ?? 8))) return { program, inPlace };
  }
  const program = fuse(graph, computed, fuseOpts);
  return { program, inPlace: inPlaceUpdates(program, updates, readBack) };
}

function compileEntry(
  given: EntrySpec,
  bindings: SymbolBindings,
  lossChunkBytes: number,
  traits: DeviceTraits,
  floatStorage: 'f32' | 'f16',
  fuseOpts: FuseOptions,
  kernels: KernelFiles,
  params: Map<string, ParamDecl>,
  state: Map<string, StateDecl>,
  kvCaches: ReadonlyMap<string, number>,
  perCall: readonly PerCallSymbol[],
): CompiledEntry {
  // The loss heads' fused ops become row chunks of existing kernels under these bindings.
  const chunked = chunkLossHeads(given.graph, bindings, lossChunkBytes);
  const spec: EntrySpec = { ...given, graph: chunked.graph, outputs: given.outputs.map((o) => ({ ...o, node: chunked.map(o.node) })) };
  const graph = spec.graph;
  const byName = new Map(graph.nodes.filter((n) => n.op === 'param' || n.op === 'input').map((n) => [String(n.attrs['name']), n.id]));
  const updates = (spec.applyUpdates ? (graph.updates ?? []) : []).map((u) => {
    const target = byName.get(u.name);
    if (target === undefined) throw new KilnError(`update of '${u.name}': the graph has no input or parameter of that name`);
    return { name: u.name, node: u.node, target };
  });
  const readBack = new Set(spec.outputs.map((o) => o.node));
  const computed = [...new Set([...spec.outputs.map((o) => o.node), ...updates.map((u) => u.node)])];
  const { program, inPlace } = fuseWithUpdates(graph, computed, fuseOpts, updates, readBack);
  // Updates written over their targets, and running sums over their previous step (plan.ts).
  const aliases = new Map([...[...inPlace].map(([u, t]): [number, number] => [t, u]), ...accumulatorLinks(program)]);
  const symbolNodes = new Map<number, { slot: number; name: string }>();
  perCall.forEach((p, slot) => {
    const id = byName.get(p.input);
    if (id === undefined || graph.nodes[id]!.op !== 'input') return;
    const t = graph.nodes[id]!.type;
    if (t.dtype !== 'i32' || t.shape.length !== 0) throw new KilnError(`per-call symbol ${p.name}: input ${p.input} of entry '${spec.name}' is ${t.dtype}[${t.shape.join(', ')}], not an i32 scalar`);
    if (!Number.isInteger(p.min) || !Number.isInteger(p.max) || p.min > p.max) throw new KilnError(`per-call symbol ${p.name}: [${p.min}, ${p.max}] is not a range of whole numbers`);
    symbolNodes.set(id, { slot, name: p.name });
  });
  const symbols = symbolNodes.size > 0 ? { symbols: { nodes: symbolNodes, count: perCall.length } } : {};
  const compiled = lowerProgram(program, bindings, traits, { floatStorage, aliases, ...symbols });
  const { plan } = compiled;
  // Inputs some update writes are state: resident on the device, shared by name like parameters.
  const stateNames = new Set((graph.updates ?? []).map((u) => u.name).filter((n) => graph.nodes[byName.get(n) ?? -1]?.op === 'input'));
  const paramInfo = new Map(graph.params.map((p) => [p.name, p]));
  const floatBytes = floatStorage === 'f16' ? 2 : 4;
  const decl = (id: number, name: string): TensorDecl => {
    const n = compiled.node(id);
    return { name, dtype: n.dtype, shape: [...n.shape] };
  };

  const buffers: BufferDecl[] = [];
  const bufferOf = new Map<number, number>();
  const named = new Map<string, number>();
  const inputs: TensorDecl[] = [];
  const outputName = new Map<number, string>();
  for (const o of spec.outputs) if (!outputName.has(o.node)) outputName.set(o.node, o.name);
  for (const u of updates) if (!outputName.has(u.node)) outputName.set(u.node, `update:${u.name}`);
  const slotBuffer = plan.slots.map((s) => buffers.push({ kind: 'temp', bytes: s.bytes }) - 1);
  const shared = (kind: 'param' | 'state', name: string, bytes: number): number => {
    const key = `${kind}:${name}`;
    let k = named.get(key);
    if (k === undefined) named.set(key, (k = buffers.push({ kind, name, bytes }) - 1));
    return k;
  };
  for (const v of plan.values.values()) {
    if (inPlace.has(v.node) || plan.sharedWith.has(v.node)) continue;
    const node = graph.nodes[v.node]!;
    if (v.kind === 'temp') bufferOf.set(v.node, slotBuffer[plan.slotOf.get(v.node)!]!);
    else if (v.kind === 'param') {
      const name = sourceName(graph, v.node);
      const info = paramInfo.get(name);
      mergeDecl(params, { ...decl(v.node, name), trainable: info?.trainable ?? false });
      bufferOf.set(v.node, shared('param', name, v.bytes));
    } else if (v.kind === 'input' && stateNames.has(sourceName(graph, v.node))) {
      const name = sourceName(graph, v.node);
      const d = decl(v.node, name);
      const axis = kvCaches.get(name);
      if (axis !== undefined && (axis < 0 || axis >= d.shape.length)) throw new KilnError(`KV cache axis ${axis} is not an axis of ${d.dtype}[${d.shape.join(', ')}]`, { tensor: name });
      const kind = axis !== undefined ? 'kv-cache' : name.startsWith(momentName('m', '')) || name.startsWith(momentName('v', '')) ? 'optimizer' : 'resident';
      mergeDecl(state, { ...d, kind, ...(axis !== undefined ? { capacity: { axis, size: d.shape[axis]! } } : {}) });
      bufferOf.set(v.node, shared('state', name, v.bytes));
    } else if (v.kind === 'input') {
      const name = sourceName(graph, v.node);
      inputs.push(decl(v.node, name));
      bufferOf.set(v.node, buffers.push({ kind: 'input', name, bytes: v.bytes }) - 1);
    } else {
      const name = outputName.get(v.node) ?? `${node.label ?? node.op}#${v.node}`;
      bufferOf.set(v.node, buffers.push({ kind: 'output', name, bytes: v.bytes }) - 1);
    }
  }
  for (const [u, t] of inPlace) bufferOf.set(u, bufferOf.get(t)!);
  for (const [t, f] of plan.sharedWith) bufferOf.set(t, bufferOf.get(f)!);

  const dispatches: DispatchDecl[] = compiled.kernels.map((k) => ({
    kernel: kernels.add(k.code),
    label: k.label,
    workgroups: [k.workgroups[0], k.workgroups[1], k.workgroups[2]],
    bindings: k.bindings.map((b): BindingDecl => ({ buffer: bufferOf.get(b.value)!, access: b.access, offset: b.offset, length: b.length, elementBytes: b.elementBytes })),
    ...(k.perCall ? { perCall: k.perCall } : {}),
    ...(k.symbols ? { symbols: true as const } : {}),
  }));
  const outputs: OutputDecl[] = spec.outputs.map((o) => ({ ...decl(o.node, o.name), buffer: bufferOf.get(o.node)! }));
  const updateDecls: UpdateDecl[] = updates.map((u) => ({ name: u.name, buffer: bufferOf.get(u.node)!, inPlace: inPlace.get(u.node) === u.target }));
  const aliased = [...inPlace.keys()].reduce((a, id) => a + (plan.values.get(id)?.bytes ?? 0), 0);
  const t = plan.totals;
  // Only rules over what the caller feeds: state inputs (KV caches, moments) come from the store.
  const fed = new Set(inputs.map((i) => i.name));
  const rules = inputContract(graph).rules.filter((r) => fed.has(r.input) && (r.kind !== 'index' || r.skip === undefined || fed.has(r.skip.ids)));
  const manifest: EntryManifest = {
    inputs,
    outputs,
    updates: updateDecls,
    buffers,
    dispatches,
    ...(rules.length > 0 ? { rules } : {}),
    stats: {
      dispatches: dispatches.length,
      unfusedOps: program.unfusedOps,
      allocatedBytes: t.params + t.inputs + t.requested - aliased + t.slots,
      unsharedBytes: t.params + t.inputs + t.requested + t.naive,
      naiveBytes: reachable(program.graph, program.requested).reduce((a, id) => a + storedBytes(compiled.node(id), floatBytes), 0),
      inPlaceUpdates: inPlace.size,
    },
  };
  return { name: spec.name, compiled, inPlace, manifest, origin: chunked.origin, partOf: chunked.partOf };
}

function mergeDecl<T extends TensorDecl>(into: Map<string, T>, d: T): void {
  const have = into.get(d.name);
  if (!have) {
    into.set(d.name, d);
    return;
  }
  if (have.dtype !== d.dtype || have.shape.join(',') !== d.shape.join(','))
    throw new KilnError(`entries disagree: ${have.dtype}[${have.shape.join(', ')}] and ${d.dtype}[${d.shape.join(', ')}]`, { tensor: d.name });
}

/** The features and least limits the entries need (what the loader checks against the adapter). */
function requirements(entries: readonly EntryManifest[], files: ReadonlyMap<string, string>, traits: DeviceTraits, floatStorage: 'f32' | 'f16'): Manifest['requires'] {
  const code = [...files.values()];
  const features: string[] = [];
  if (floatStorage === 'f16' || code.some((c) => /^enable f16;/m.test(c))) features.push('shader-f16');
  const subgroups = code.some((c) => /^enable subgroups;/m.test(c));
  if (subgroups) features.push('subgroups');
  let bindings = 0;
  let bindingBytes = 0;
  let bufferBytes = 0;
  let groups = 1;
  for (const e of entries) {
    for (const b of e.buffers) bufferBytes = Math.max(bufferBytes, b.bytes);
    for (const d of e.dispatches) {
      bindings = Math.max(bindings, d.bindings.length);
      for (const b of d.bindings) bindingBytes = Math.max(bindingBytes, b.length * b.elementBytes);
      groups = Math.max(groups, ...d.workgroups);
    }
  }
  const limits: Record<string, number> = {
    maxBufferSize: bufferBytes,
    maxStorageBufferBindingSize: bindingBytes,
    maxStorageBuffersPerShaderStage: bindings,
    maxComputeWorkgroupsPerDimension: groups,
    // Tile sizes were chosen for these; a smaller device would reject the pipelines.
    maxComputeInvocationsPerWorkgroup: traits.maxWorkgroupInvocations,
    maxComputeWorkgroupStorageSize: traits.workgroupMemoryBytes,
  };
  return subgroups && traits.subgroupSize !== undefined ? { features, limits, subgroupSize: traits.subgroupSize } : { features, limits };
}

/** The artefact as files (path -> text): manifest.json and kernels/*.wgsl. Deterministic. */
export function artefactFiles(a: Artefact): Map<string, string> {
  const files = new Map<string, string>([[MANIFEST_FILE, JSON.stringify(a.manifest, null, 1) + '\n']]);
  for (const [path, code] of a.kernels) files.set(path, code.endsWith('\n') ? code : code + '\n');
  return files;
}
