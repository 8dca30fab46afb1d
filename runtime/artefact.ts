// The compiled program as data: what `kiln compile` writes and the runtime runs. A manifest
// (JSON) names the parameters and state tensors every entry shares, and each entry's inputs,
// outputs, updates, buffers and dispatch list; the WGSL of each kernel is a file of its own.
// Nothing here holds a closure, so an artefact written to disk is the whole program.
// Browser-safe: the compiler writes these types (compiler/emit/artefact.ts), the runtime reads
// them (runtime/webgpu/program.ts).
import { KilnError } from './errors.js';
import { isFloat, type DType } from './tensor.js';
import type { ValueRule } from './validate.js';

/** The manifest format this runtime reads; any other is refused. */
export const ARTEFACT_FORMAT = 'kiln-artefact';
export const ARTEFACT_VERSION = 2;
export const MANIFEST_FILE = 'manifest.json';

/** A tensor by name, with a concrete shape (symbols already bound at compile time). */
export interface TensorDecl {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

export interface ParamDecl extends TensorDecl {
  readonly trainable: boolean;
}

/** A tensor the runtime keeps on the device between calls, written by an entry's updates. */
export interface StateDecl extends TensorDecl {
  /** 'optimizer': AdamW moments; 'kv-cache': a fixed-capacity cache; 'resident': another input an update writes. */
  readonly kind: 'optimizer' | 'kv-cache' | 'resident';
  /** a KV cache's fixed capacity: the size of its position axis (entries write slices of it at run-time positions). */
  readonly capacity?: { readonly axis: number; readonly size: number };
}

/**
 * A symbol. 'fixed': a dim of the model bound at compile time (`value`; every size in the WGSL
 * uses it). 'per-call': a value that changes from call to call (the KV position of a decode
 * step), fed as the i32 scalar entry input `input`: kernels read it from a uniform (the struct
 * `symbolsStruct` declares, bound after a dispatch's storage bindings), dispatches whose extent
 * depends on it give formulas (DispatchDecl.perCall), and every buffer is sized for `max` (its
 * `value`), so one compiled entry serves every value in [min, max] without new WGSL, pipelines
 * or buffers. A call with a value outside that range is refused, naming the input. (tinygrad's
 * bound Variable, sized at its maximum, is the model.)
 */
export interface SymbolDecl {
  readonly name: string;
  readonly kind: 'fixed' | 'per-call';
  readonly value: number;
  readonly min: number;
  readonly max: number;
  /** per-call symbols: the entry input (an i32 scalar) that carries the value. */
  readonly input?: string;
}

/**
 * A workgroup count that follows a per-call symbol: floor((scale * value + offset) / divisor),
 * clamped to [1, the dispatch's compiled count] (`workgroups`, the count at the symbol's max).
 */
export interface WorkgroupExtent {
  readonly symbol: string;
  readonly scale: number;
  readonly offset: number;
  readonly divisor: number;
}

/** Where a buffer's bytes come from: the shared store (by name), the caller, or the entry. */
export type BufferDecl =
  | { readonly kind: 'param' | 'state'; readonly name: string; readonly bytes: number }
  | { readonly kind: 'input' | 'output'; readonly name: string; readonly bytes: number }
  | { readonly kind: 'temp'; readonly bytes: number };

export interface BindingDecl {
  /** index into the entry's buffers. */
  readonly buffer: number;
  readonly access: 'read' | 'read_write';
  /** elements from the start of the buffer. */
  readonly offset: number;
  /** elements. */
  readonly length: number;
  /** bytes per stored element: 4, or 2 for f16 storage. */
  readonly elementBytes: number;
}

export interface DispatchDecl {
  /** the WGSL file, relative to the artefact folder. */
  readonly kernel: string;
  readonly label: string;
  /** the counts at every per-call symbol's max: an upper bound of every call's (and what the limits cover). */
  readonly workgroups: readonly [number, number, number];
  /** binding k of group 0 is bindings[k]; in-place updates appear as read_write aliases of their target. */
  readonly bindings: readonly BindingDecl[];
  /** per axis (x, y, z), the count's formula when it follows a per-call symbol; null: the compiled count. */
  readonly perCall?: readonly [WorkgroupExtent | null, WorkgroupExtent | null, WorkgroupExtent | null];
  /** the kernel reads per-call symbols: the uniform `kiln_symbols` at binding `bindings.length`. */
  readonly symbols?: true;
}

export interface OutputDecl extends TensorDecl {
  readonly buffer: number;
}

/** An update: after the dispatches, state `name` holds the value in `buffer`. */
export interface UpdateDecl {
  readonly name: string;
  readonly buffer: number;
  /** written straight into the state's own buffer by its kernel (no copy after the step). */
  readonly inPlace: boolean;
}

/** What one compiled step costs (for `npm run bench` and plan reports). */
export interface EntryStats {
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

export interface EntryManifest {
  /** fed by the caller on every call. */
  readonly inputs: readonly TensorDecl[];
  /** read back when asked for. */
  readonly outputs: readonly OutputDecl[];
  readonly updates: readonly UpdateDecl[];
  readonly buffers: readonly BufferDecl[];
  readonly dispatches: readonly DispatchDecl[];
  /**
   * The value rules the entry's caller-fed integer inputs obey (ids in the vocabulary, labels in
   * the classes or the ignore index, one image placeholder per row), derived by the compiler from
   * the graph: the runtime checks every call against them on the host, since kernels cannot
   * raise errors. Absent in artefacts whose inputs carry no such rule.
   */
  readonly rules?: readonly ValueRule[];
  readonly stats: EntryStats;
}

export interface Manifest {
  readonly format: typeof ARTEFACT_FORMAT;
  readonly version: number;
  /** where it came from (spec, config, stage): for people, not for the runtime. */
  readonly source: Readonly<Record<string, string>>;
  /** 'f16': float tensors are stored as f16 on the device (math in f32). */
  readonly floatStorage: 'f32' | 'f16';
  readonly requires: {
    readonly features: readonly string[];
    /** GPUSupportedLimits names -> the least value the kernels and buffers need. */
    readonly limits: Readonly<Record<string, number>>;
    /** kernels written for exactly this subgroup width (subgroup broadcasts). */
    readonly subgroupSize?: number;
  };
  readonly symbols: readonly SymbolDecl[];
  readonly params: readonly ParamDecl[];
  readonly state: readonly StateDecl[];
  readonly entries: Readonly<Record<string, EntryManifest>>;
  /** present when the artefact has `prefill` and `decode` entries over KV-cache state (runtime/generate.ts). */
  readonly generation?: GenerationDecl;
}

/**
 * How the `prefill` and `decode` entries were compiled (compiler/passes/kv-cache.ts): the prefill
 * takes input_ids [rows, promptTokens]; shorter prompts are left-padded to it when `leftPadded`.
 */
export interface GenerationDecl {
  /** prompts per call: the batch dim of both entries. */
  readonly rows: number;
  /** input_ids' length in the prefill entry. */
  readonly promptTokens: number;
  /** the decoder's length of the prompt (promptTokens with the image spliced in): the first decode position. */
  readonly promptLength: number;
  /** KV cache positions; decoding stops when they are full. */
  readonly capacity: number;
  /** whether both entries take `prompt_start` [rows] (i32): each row's number of left-padding positions. */
  readonly leftPadded: boolean;
  /** the image placeholder id the prefill splices the image at (LLaVA's -200), when it takes an image. */
  readonly imageToken?: number;
}

/** A manifest and its kernels' WGSL, by file name: in memory, or read from a folder. */
export interface Artefact {
  readonly manifest: Manifest;
  readonly kernels: ReadonlyMap<string, string>;
}

/** Bytes of one stored element of `dtype` under `floatStorage`. */
export function storedElementBytes(dtype: DType, floatStorage: 'f32' | 'f16'): number {
  return floatStorage === 'f16' && isFloat(dtype) ? 2 : 4;
}

/** The per-call symbols, in the order of their slots in the symbols uniform. */
export function perCallSymbols(m: Pick<Manifest, 'symbols'>): SymbolDecl[] {
  return m.symbols.filter((s) => s.kind === 'per-call');
}

/**
 * The WGSL of the per-call symbols' uniform: symbol k (perCallSymbols order) is
 * kiln_symbols.v[k / 4][k % 4]. A uniform array's stride must be 16 bytes, hence vec4s.
 */
export function symbolsStruct(count: number): string {
  return `struct KilnSymbols { v: array<vec4<i32>, ${Math.max(1, Math.ceil(count / 4))}> }`;
}

/** WGSL reading symbol slot `k` of the uniform. */
export function symbolSlot(k: number): string {
  return `kiln_symbols.v[${Math.floor(k / 4)}][${k % 4}]`;
}

/** Bytes of the symbols uniform for `count` per-call symbols. */
export const symbolsBytes = (count: number): number => 16 * Math.max(1, Math.ceil(count / 4));

/**
 * The per-call symbols' values for one call, from the entry's fed inputs (name -> i32 data):
 * slot k holds symbol k. @throws KilnError naming the input when a value is missing, not a
 * whole number or outside [min, max].
 */
export function symbolValues(symbols: readonly SymbolDecl[], inputs: ReadonlyMap<string, { readonly data: ArrayLike<number> }>): Int32Array {
  const out = new Int32Array(symbolsBytes(symbols.length) / 4);
  symbols.forEach((s, k) => {
    const t = inputs.get(s.input!);
    const v = t?.data[0];
    if (v === undefined || !Number.isInteger(v)) throw new KilnError(`input ${s.input}: no value was fed for the per-call symbol ${s.name}`);
    if (v < s.min || v > s.max) throw new KilnError(`input ${s.input} is ${v}; this compiled program serves ${s.name} from ${s.min} to ${s.max}`);
    out[k] = v;
  });
  return out;
}

/** A workgroup count's value for a symbol value `v`, clamped to [1, compiled]. */
export function evalExtent(e: WorkgroupExtent, v: number, compiled: number): number {
  return Math.min(compiled, Math.max(1, Math.floor((e.scale * v + e.offset) / e.divisor)));
}

/** A dispatch's workgroup counts for this call's symbol values (slot order of `symbols`). */
export function workgroupsAt(d: DispatchDecl, symbols: readonly SymbolDecl[], values: Int32Array | undefined): [number, number, number] {
  const w = d.workgroups;
  if (!d.perCall || !values) return [w[0], w[1], w[2]];
  const at = (axis: 0 | 1 | 2): number => {
    const e = d.perCall![axis];
    if (!e) return w[axis];
    return evalExtent(e, values[symbols.findIndex((s) => s.name === e.symbol)]!, w[axis]);
  };
  return [at(0), at(1), at(2)];
}

/** Parses and checks a manifest's text; every problem names `file` and the field. */
export function parseManifest(text: string, file = MANIFEST_FILE): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new KilnError(`corrupted manifest: not valid JSON (${(e as Error).message})`, { file, cause: e });
  }
  const bad = (what: string): KilnError => new KilnError(`corrupted manifest: ${what}`, { file });
  if (!isRecord(json)) throw bad('not a JSON object');
  if (json['format'] !== ARTEFACT_FORMAT) throw bad(`format is ${JSON.stringify(json['format'])}, expected "${ARTEFACT_FORMAT}"`);
  if (json['version'] !== ARTEFACT_VERSION)
    throw new KilnError(`artefact format version ${JSON.stringify(json['version'])}; this runtime reads version ${ARTEFACT_VERSION} (compile it again with this Kiln)`, { file });
  const m = json as unknown as Manifest;
  if (m.floatStorage !== 'f32' && m.floatStorage !== 'f16') throw bad(`floatStorage ${JSON.stringify(m.floatStorage)}`);
  if (!isRecord(m.requires) || !Array.isArray(m.requires.features) || !isRecord(m.requires.limits)) throw bad('requires must hold features and limits');
  for (const key of ['symbols', 'params', 'state'] as const) if (!Array.isArray(m[key])) throw bad(`${key} is not a list`);
  for (const t of [...m.params, ...m.state]) checkTensor(t, bad);
  const perCall = new Set<string>();
  for (const s of m.symbols as unknown[]) {
    if (!isRecord(s) || typeof s['name'] !== 'string' || (s['kind'] !== 'fixed' && s['kind'] !== 'per-call') || ![s['value'], s['min'], s['max']].every(Number.isInteger))
      throw bad(`symbol ${JSON.stringify(isRecord(s) ? s['name'] : s)} needs a name, a kind (fixed or per-call) and whole value, min and max`);
    if ((s['min'] as number) > (s['max'] as number)) throw bad(`symbol ${s['name']}: min ${s['min'] as number} is above max ${s['max'] as number}`);
    if (s['kind'] === 'per-call') {
      if (typeof s['input'] !== 'string') throw bad(`per-call symbol ${s['name']} names no input`);
      perCall.add(s['name']);
    }
  }
  if (!isRecord(m.entries)) throw bad('entries is not an object');
  if (m.generation !== undefined) {
    const g = m.generation as unknown;
    if (!isRecord(g)) throw bad('generation is not an object');
    for (const key of ['rows', 'promptTokens', 'promptLength', 'capacity'] as const)
      if (!Number.isInteger(g[key]) || (g[key] as number) < 1) throw bad(`generation.${key} is ${JSON.stringify(g[key])}, expected a positive integer`);
    if (typeof g['leftPadded'] !== 'boolean') throw bad('generation.leftPadded is not a boolean');
    if (!isRecord(m.entries['prefill']) || !isRecord(m.entries['decode'])) throw bad('generation is declared but the prefill and decode entries are not both there');
  }
  for (const [name, e] of Object.entries(m.entries)) {
    const where = `entry '${name}'`;
    if (!isRecord(e)) throw bad(`${where} is not an object`);
    for (const key of ['inputs', 'outputs', 'updates', 'buffers', 'dispatches'] as const) if (!Array.isArray(e[key])) throw bad(`${where}: ${key} is not a list`);
    const entry = e as unknown as EntryManifest;
    const nb = entry.buffers.length;
    const index = (b: unknown, what: string): void => {
      if (!Number.isInteger(b) || (b as number) < 0 || (b as number) >= nb) throw bad(`${where}: ${what} names buffer ${JSON.stringify(b)}, which does not exist`);
    };
    entry.buffers.forEach((b, k) => {
      if (!isRecord(b) || !Number.isInteger(b.bytes) || b.bytes < 0) throw bad(`${where}: buffer ${k} has no byte size`);
    });
    for (const t of entry.inputs) checkTensor(t, bad);
    if (entry.rules !== undefined) {
      if (!Array.isArray(entry.rules)) throw bad(`${where}: rules is not a list`);
      const fed = new Set(entry.inputs.map((t) => t.name));
      for (const r of entry.rules as unknown[]) {
        if (!isRecord(r) || (r['kind'] !== 'index' && r['kind'] !== 'once-per-row') || typeof r['input'] !== 'string' || !fed.has(r['input']))
          throw bad(`${where}: a rule ${JSON.stringify(r)} is not an index or once-per-row rule over one of the entry's inputs`);
      }
    }
    for (const o of entry.outputs) {
      checkTensor(o, bad);
      index(o.buffer, `output ${o.name}`);
    }
    for (const u of entry.updates) index(u.buffer, `update of ${u.name}`);
    entry.dispatches.forEach((d, s) => {
      if (!isRecord(d) || typeof d.kernel !== 'string' || !Array.isArray(d.bindings) || !Array.isArray(d.workgroups) || d.workgroups.length !== 3)
        throw bad(`${where}: dispatch ${s} needs kernel, workgroups [x, y, z] and bindings`);
      for (const b of d.bindings) index(b.buffer, `dispatch ${s} (${d.label})`);
      if (d.perCall !== undefined) {
        const ok =
          Array.isArray(d.perCall) &&
          d.perCall.length === 3 &&
          (d.perCall as unknown[]).every((e) => e === null || (isRecord(e) && typeof e['symbol'] === 'string' && perCall.has(e['symbol']) && [e['scale'], e['offset'], e['divisor']].every(Number.isInteger) && (e['divisor'] as number) > 0));
        if (!ok) throw bad(`${where}: dispatch ${s} (${d.label}) has perCall that is not three formulas (or null) over per-call symbols`);
      }
      if (d.symbols !== undefined && d.symbols !== true) throw bad(`${where}: dispatch ${s} (${d.label}): symbols must be true or absent`);
      if ((d.symbols || d.perCall) && perCall.size === 0) throw bad(`${where}: dispatch ${s} (${d.label}) reads per-call symbols, but the manifest declares none`);
    });
    const fed = new Set(entry.inputs.map((t) => t.name));
    if (entry.dispatches.some((d) => d.symbols || d.perCall))
      for (const sym of (m.symbols as SymbolDecl[]).filter((x) => x.kind === 'per-call'))
        if (!fed.has(sym.input!)) throw bad(`${where} reads the per-call symbol ${sym.name}, but does not take its input ${sym.input}`);
  }
  return m;
}

function checkTensor(t: unknown, bad: (what: string) => KilnError): void {
  if (!isRecord(t) || typeof t.name !== 'string' || typeof t.dtype !== 'string' || !Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0))
    throw bad(`tensor ${JSON.stringify(isRecord(t) ? t.name : t)} needs a name, a dtype and a shape of whole numbers`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * What the manifest needs that the device lacks, one phrase each (empty: it can run). `features`
 * and `limits` are the device's; `subgroupSize` its fixed subgroup width, if any.
 */
export function missingCapabilities(
  m: Manifest,
  device: { readonly features: ReadonlySet<string> | { has(f: string): boolean }; readonly limits: Readonly<Record<string, unknown>>; readonly subgroupSize: number | undefined },
): string[] {
  const missing: string[] = [];
  for (const f of m.requires.features) if (!device.features.has(f)) missing.push(`feature ${f}`);
  for (const [name, need] of Object.entries(m.requires.limits)) {
    const have = device.limits[name];
    if (typeof have !== 'number') missing.push(`limit ${name} (the device does not report it)`);
    else if (have < need) missing.push(`limit ${name} >= ${need} (the device has ${have})`);
  }
  const sg = m.requires.subgroupSize;
  if (sg !== undefined && device.subgroupSize !== sg) missing.push(`subgroup size ${sg} (the device has ${device.subgroupSize ?? 'no fixed size'})`);
  return missing;
}
