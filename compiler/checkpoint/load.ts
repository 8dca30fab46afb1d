// Checkpoint folders -> parameter tensors.
//
//   openCheckpointDir(dir): CheckpointView
//     A Hugging Face folder with `model.safetensors`, or sharded with `model.safetensors.index.json`
//     (weight_map: tensor name -> shard file), or one .safetensors file. Only headers are read;
//     `load(name)` reads one tensor. Every tensor of the shards the index names is in the view,
//     as transformers loads them; one the weight_map omits adds a line to `warnings`.
//
//   planParams(params, sources, options): LoadPlan      (validates, reads no tensor data)
//   loadParams(params, sources, options): LoadedParams  (planParams, then loads every tensor)
//     params: the graph's parameters as {name, shape, dtype}; `paramRequests(graph.params)`.
//     sources: where tensors come from, searched in order (the first source with a name wins):
//       { dir, prefixFrom?, prefixTo?, unused? }. A source with a prefix mapping offers file
//       tensor `prefixFrom.rest` as parameter `prefixTo.rest` and nothing else; prefixes are
//       dotted module paths, a trailing dot is optional, '' means every name. `unused` holds
//       glob patterns (`*` matches any run of characters, dots included) of file tensors that
//       are expected and ignored; each pattern is tried on the file name and the mapped name.
//     options.aliases: {param, from} pairs: when no source has `param`, use tensor `from` (a
//       parameter-space name).
//     options.tied: {name, to} pairs of a spec's active `tie`s (CheckedModel.tied): `name` is no
//       parameter (HF saves no lm_head.weight for tied embeddings); when a file has it anyway it
//       must equal `to` bit for bit (loadParams checks; an error names the tensor otherwise).
//     options.optional: glob patterns of parameters that may be absent (heads the checkpoint
//       predates, filled by their initialiser); they are listed in `absent`.
//   Errors (KilnError, in this order): missing tensors (up to 5 named, with the folder and the
//   file name looked for), a wrong shape (both shapes) or a dtype that cannot become the
//   parameter's, tensors that match no parameter and no `unused` pattern (up to 5 named).
//
// The CLI, for a spec with `checkpoint vision_tower from "vision_model"` and `unused ...`, puts
// the explicit --vision-tower folder first so that it wins over a tower saved in the checkpoint:
//   sources = [{ dir: visionTowerDir, prefixFrom: 'vision_model',
//                prefixTo: componentPrefix(graph.params, 'vision_tower'), unused },
//              { dir: checkpointDir, unused }]
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import type { DType, ParamInfo } from '../ir/graph.js';
import { KilnError, describeFsError } from '../../runtime/errors.js';
import { f16BitsToF32, f32BitsToBf16, f32BitsToF16, type SafetensorsDtype, type SafetensorsFile } from '../../runtime/safetensors.js';
import { openSafetensors } from '../../runtime/node/safetensors-file.js';
import { isFloat, type HostTensor } from '../../runtime/tensor.js';

export interface TensorInfo {
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** the file holding it (a shard, for sharded folders). */
  readonly file: string;
}

export interface CheckpointView {
  /** the folder (or file), as errors name it. */
  readonly label: string;
  readonly names: readonly string[];
  info(name: string): TensorInfo | undefined;
  load(name: string): HostTensor;
  /** what the folder does that transformers accepts with a warning (a shard tensor the index omits). */
  readonly warnings?: readonly string[];
}

function fromFiles(label: string, where: ReadonlyMap<string, SafetensorsFile>, warnings: readonly string[] = []): CheckpointView {
  return {
    label,
    warnings,
    names: [...where.keys()],
    info(name) {
      const f = where.get(name);
      const e = f?.entries.get(name);
      return f && e ? { dtype: e.dtype, shape: e.shape, file: f.path } : undefined;
    },
    load(name) {
      const f = where.get(name);
      if (f === undefined) throw new KilnError('no such tensor in the checkpoint', { file: label, tensor: name });
      return f.load(name);
    },
  };
}

function readIndex(dir: string, indexPath: string): CheckpointView {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (e) {
    const why = e instanceof SyntaxError ? `not valid JSON: ${e.message}` : `cannot read: ${describeFsError(e)}`;
    throw new KilnError(why, { file: indexPath, cause: e });
  }
  const map = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) {
    throw new KilnError('field "weight_map" is missing or not an object', { file: indexPath });
  }
  const shards = new Map<string, SafetensorsFile>();
  const where = new Map<string, SafetensorsFile>();
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== 'string' || shard === '' || nodePath.isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
      throw new KilnError(`weight_map gives ${JSON.stringify(shard)}, not a file name inside the folder`, { file: indexPath, tensor: name });
    }
    let file = shards.get(shard);
    if (file === undefined) {
      const shardPath = nodePath.join(dir, shard);
      if (!fs.existsSync(shardPath)) {
        throw new KilnError(`shard '${shard}' named in the index does not exist in ${dir}`, { file: indexPath, tensor: name });
      }
      file = openSafetensors(shardPath);
      shards.set(shard, file);
    }
    if (!file.entries.has(name)) {
      throw new KilnError(`the index maps it to shard '${shard}', which has no such tensor`, { file: indexPath, tensor: name });
    }
    where.set(name, file);
  }
  // transformers reads every tensor of the shards the index names (hub.py: the shard files are
  // set(weight_map.values())), listed or not: so does Kiln, and says which the index misses.
  const warnings: string[] = [];
  for (const [shard, file] of shards) {
    for (const name of file.names) {
      if (where.has(name)) continue;
      where.set(name, file);
      warnings.push(`${indexPath}: tensor '${name}' is in shard '${shard}' but not in the index's weight_map; loaded from the shard, as transformers does`);
    }
  }
  return fromFiles(dir, where, warnings);
}

export function openCheckpointDir(dir: string): CheckpointView {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch (e) {
    throw new KilnError(`cannot open checkpoint: ${describeFsError(e)}`, { file: dir, cause: e });
  }
  const single = stat.isFile() ? dir : nodePath.join(dir, 'model.safetensors');
  const index = nodePath.join(dir, 'model.safetensors.index.json');
  // transformers' order: the single file first, then the index. Errors name the folder as the
  // user gave it; TensorInfo.file names the exact file.
  if (stat.isFile() || fs.existsSync(single)) {
    const f = openSafetensors(single);
    return fromFiles(dir, new Map(f.names.map((n) => [n, f])));
  }
  if (fs.existsSync(index)) return readIndex(dir, index);
  const hasBin = ['pytorch_model.bin', 'pytorch_model.bin.index.json'].some((f) => fs.existsSync(nodePath.join(dir, f)));
  throw new KilnError(
    hasBin
      ? 'the folder has only PyTorch .bin weights; convert them to safetensors first (transformers: save_pretrained(..., safe_serialization=True))'
      : 'no model.safetensors or model.safetensors.index.json in the folder',
    { file: dir },
  );
}

const SAFETENSORS_DTYPE: Record<DType, SafetensorsDtype> = { f32: 'F32', f16: 'F16', bf16: 'BF16', i32: 'I32', bool: 'BOOL' };

/** Host tensors as a checkpoint (tests, weights produced in-process). */
export function checkpointFromTensors(label: string, tensors: ReadonlyMap<string, HostTensor>): CheckpointView {
  return {
    label,
    names: [...tensors.keys()],
    info(name) {
      const t = tensors.get(name);
      return t && { dtype: SAFETENSORS_DTYPE[t.dtype], shape: t.shape, file: label };
    },
    load(name) {
      const t = tensors.get(name);
      if (t === undefined) throw new KilnError('no such tensor in the checkpoint', { file: label, tensor: name });
      return t;
    },
  };
}

/** `*` matches any run of characters (dots too); everything else is literal. */
export function globMatcher(patterns: readonly string[]): (name: string) => boolean {
  if (patterns.length === 0) return () => false;
  const body = patterns.map((p) => p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*'));
  const re = new RegExp(`^(?:${body.join('|')})$`, 's');
  return (name) => re.test(name);
}

export interface ParamRequest {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/** The graph's parameters as load requests; parameter shapes are constant by construction. */
export function paramRequests(params: readonly ParamInfo[]): ParamRequest[] {
  return params.map((p) => ({
    name: p.name,
    dtype: p.type.dtype,
    shape: p.type.shape.map((d) => {
      if (typeof d !== 'number') throw new Error(`parameter ${p.name} has a symbolic shape`);
      return d;
    }),
  }));
}

/** The dotted prefix all of a component's parameter names share (`model.vision_tower.vision_tower.vision_model`). */
export function componentPrefix(params: readonly ParamInfo[], component: string): string {
  let common: string[] | undefined;
  for (const p of params) {
    if (p.component !== component) continue;
    const parts = p.name.split('.').slice(0, -1);
    if (common === undefined) common = parts;
    let i = 0;
    while (i < common.length && common[i] === parts[i]) i++;
    common = common.slice(0, i);
  }
  return (common ?? []).join('.');
}

export interface TensorAlias {
  readonly param: string;
  readonly from: string;
}


export interface CheckpointSource {
  readonly dir: string | CheckpointView;
  readonly prefixFrom?: string;
  readonly prefixTo?: string;
  readonly unused?: readonly string[];
}

/** A parameter-space name that is another parameter (a spec's `tie`). */
export interface TiedName {
  readonly name: string;
  readonly to: string;
}

/** File tensors (glob) the model computes itself (a spec's `buffer`): accepted when equal to `values`. */
export interface KnownBuffer {
  readonly pattern: string;
  readonly values: readonly number[];
  /** how the model computes them, for messages. */
  readonly what: string;
}

export interface LoadOptions {
  readonly aliases?: readonly TensorAlias[];
  readonly tied?: readonly TiedName[];
  readonly buffers?: readonly KnownBuffer[];
  readonly optional?: readonly string[];
}

export interface PlannedParam {
  readonly param: ParamRequest;
  readonly source: CheckpointView;
  /** the tensor's name in the source's files. */
  readonly tensor: string;
  /** reads the tensor and converts it to the parameter's dtype (floats as Float32Array). */
  load(): HostTensor;
}

export interface LoadPlan {
  readonly params: readonly PlannedParam[];
  /** file tensors matching a known buffer, to compare with its values. */
  readonly buffersPresent: readonly { readonly buffer: KnownBuffer; readonly source: CheckpointView; readonly tensor: string }[];
  /** file tensors under a tied name, to compare with the parameter they are tied to. */
  readonly tiedPresent: readonly { readonly tie: TiedName; readonly source: CheckpointView; readonly tensor: string }[];
  /** optional parameters no source has. */
  readonly absent: readonly string[];
}

export interface LoadedParams {
  readonly tensors: Map<string, HostTensor>;
  readonly absent: readonly string[];
}

const trimDot = (p: string) => (p.endsWith('.') ? p.slice(0, -1) : p);
const join = (prefix: string, rest: string) => (prefix === '' ? rest : rest === '' ? prefix : `${prefix}.${rest}`);

/** Maps a file name to a parameter-space name, or undefined when the source does not offer it. */
function mapName(name: string, from: string, to: string): string | undefined {
  if (from === '') return join(to, name);
  if (name === from) return to;
  return name.startsWith(`${from}.`) ? join(to, name.slice(from.length + 1)) : undefined;
}

/** The file name a source would hold a parameter under, or undefined when it cannot hold it. */
function unmapName(param: string, from: string, to: string): string | undefined {
  return mapName(param, to, from);
}

function listSome(names: readonly string[], n = 5): string {
  const shown = names.slice(0, n).join(', ');
  return names.length > n ? `${shown} (and ${names.length - n} more)` : shown;
}

function convert(t: HostTensor, p: ParamRequest): HostTensor {
  if (!isFloat(p.dtype)) return { dtype: p.dtype, shape: p.shape, data: t.data instanceof Int32Array ? t.data : Int32Array.from(t.data) };
  const data = t.data instanceof Float32Array ? t.data : new Float32Array(t.data);
  // A narrower parameter holds what its dtype can: round wider file values as a cast would.
  const narrower = (p.dtype === 'f16' && t.dtype === 'f32') || (p.dtype === 'bf16' && (t.dtype === 'f32' || t.dtype === 'f16'));
  if (!narrower) return { dtype: p.dtype, shape: p.shape, data };
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const out = new Float32Array(data.length);
  if (p.dtype === 'f16') {
    for (let i = 0; i < bits.length; i++) out[i] = f16BitsToF32(f32BitsToF16(bits[i]!));
  } else {
    const outBits = new Uint32Array(out.buffer);
    for (let i = 0; i < bits.length; i++) outBits[i] = f32BitsToBf16(bits[i]!) << 16;
  }
  return { dtype: p.dtype, shape: p.shape, data: out };
}

const FLOAT_FILE: ReadonlySet<SafetensorsDtype> = new Set(['F32', 'F16', 'BF16', 'F64']);
const INT_FILE: ReadonlySet<SafetensorsDtype> = new Set(['I64', 'I32', 'I16', 'I8', 'U64', 'U32', 'U16', 'U8', 'BOOL']);

interface OpenedSource {
  readonly view: CheckpointView;
  readonly from: string;
  readonly to: string;
  readonly unused: (name: string) => boolean;
}

function missingError(missing: readonly ParamRequest[], opened: readonly OpenedSource[]): KilnError {
  const first = missing[0]!.name;
  // Name the most specific source that could hold it, under the file name it would have there.
  const where = opened
    .filter((s) => unmapName(first, s.from, s.to) !== undefined)
    .sort((a, b) => b.to.length - a.to.length)[0];
  const fileName = where === undefined ? first : unmapName(first, where.from, where.to)!;
  const param = fileName === first ? '' : ` (the model's parameter '${first}')`;
  const more = missing.length > 1 ? `; ${missing.length - 1} more missing: ${listSome(missing.slice(1).map((m) => m.name))}` : '';
  const label = where?.view.label ?? (opened.map((s) => s.view.label).join(', ') || '(no checkpoint given)');
  return new KilnError(`missing from the checkpoint${param}${more}`, { file: label, tensor: fileName });
}

export function planParams(params: readonly ParamRequest[], sources: readonly CheckpointSource[], options: LoadOptions = {}): LoadPlan {
  const opened: OpenedSource[] = sources.map((s) => ({
    view: typeof s.dir === 'string' ? openCheckpointDir(s.dir) : s.dir,
    from: trimDot(s.prefixFrom ?? ''),
    to: trimDot(s.prefixTo ?? ''),
    unused: globMatcher(s.unused ?? []),
  }));
  const wanted = new Set(params.map((p) => p.name));
  for (const a of options.aliases ?? []) wanted.add(a.from);
  // parameter-space name -> (source, file name); earlier sources win.
  const found = new Map<string, { view: CheckpointView; tensor: string }>();
  const extras: { view: CheckpointView; names: string[] }[] = [];
  const tiedByName = new Map((options.tied ?? []).map((t) => [t.name, t]));
  const tiedPresent: { tie: TiedName; source: CheckpointView; tensor: string }[] = [];
  const bufferMatchers = (options.buffers ?? []).map((b) => ({ buffer: b, match: globMatcher([b.pattern]) }));
  const buffersPresent: { buffer: KnownBuffer; source: CheckpointView; tensor: string }[] = [];
  for (const src of opened) {
    const names: string[] = [];
    for (const name of src.view.names) {
      const mapped = mapName(name, src.from, src.to);
      const tie = mapped === undefined ? undefined : tiedByName.get(mapped);
      if (mapped !== undefined && wanted.has(mapped)) {
        if (!found.has(mapped)) found.set(mapped, { view: src.view, tensor: name });
      } else if (tie !== undefined) {
        tiedPresent.push({ tie, source: src.view, tensor: name });
      } else if (bufferMatchers.some((b) => b.match(name) || (mapped !== undefined && b.match(mapped)))) {
        const b = bufferMatchers.find((x) => x.match(name) || (mapped !== undefined && x.match(mapped)))!;
        buffersPresent.push({ buffer: b.buffer, source: src.view, tensor: name });
      } else if (!src.unused(name) && !(mapped !== undefined && src.unused(mapped))) {
        names.push(name);
      }
    }
    if (names.length > 0) extras.push({ view: src.view, names });
  }

  const optional = globMatcher(options.optional ?? []);
  const aliasOf = new Map((options.aliases ?? []).map((a) => [a.param, a.from]));
  const planned: PlannedParam[] = [];
  const absent: string[] = [];
  const missing: ParamRequest[] = [];
  for (const p of params) {
    const alias = aliasOf.get(p.name);
    const hit = found.get(p.name) ?? (alias === undefined ? undefined : found.get(alias));
    if (hit !== undefined) planned.push({ param: p, source: hit.view, tensor: hit.tensor, load: () => convert(hit.view.load(hit.tensor), p) });
    else if (optional(p.name)) absent.push(p.name);
    else missing.push(p);
  }
  if (missing.length > 0) throw missingError(missing, opened);
  for (const { param: p, source, tensor } of planned) {
    const info = source.info(tensor)!;
    if (info.shape.length !== p.shape.length || info.shape.some((d, i) => d !== p.shape[i])) {
      throw new KilnError(`shape [${info.shape.join(', ')}] in the checkpoint, but the model's parameter '${p.name}' is [${p.shape.join(', ')}]`, {
        file: info.file,
        tensor,
      });
    }
    if (!(isFloat(p.dtype) ? FLOAT_FILE : INT_FILE).has(info.dtype)) {
      throw new KilnError(`dtype ${info.dtype} cannot be loaded into the model's ${p.dtype} parameter '${p.name}'`, { file: info.file, tensor });
    }
  }
  const extra = extras[0];
  if (extra !== undefined) {
    const n = extra.names.length;
    throw new KilnError(
      `${n} tensor${n > 1 ? 's' : ''} match${n > 1 ? '' : 'es'} no parameter of the model and no \`unused\` pattern: ${listSome(extra.names)}`,
      { file: extra.view.label, tensor: extra.names[0] },
    );
  }
  return { params: planned, absent, tiedPresent, buffersPresent };
}

/** Relative agreement a stored buffer needs with the model's value: a few units in its dtype's last place. */
const BUFFER_TOLERANCE: Partial<Record<SafetensorsDtype, number>> = { F64: 1e-6, F32: 1e-6, F16: 2e-3, BF16: 1.6e-2 };

function checkBuffer(buffer: KnownBuffer, source: CheckpointView, tensor: string): void {
  const info = source.info(tensor)!;
  const where = { file: info.file, tensor };
  const want = buffer.values;
  if (info.shape.length !== 1 || info.shape[0] !== want.length) {
    throw new KilnError(`shape [${info.shape.join(', ')}], but the model computes this buffer as ${buffer.what}, [${want.length}]`, where);
  }
  const tol = BUFFER_TOLERANCE[info.dtype];
  if (tol === undefined) throw new KilnError(`dtype ${info.dtype}, but the model computes this buffer as floats (${buffer.what})`, where);
  const got = source.load(tensor).data;
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i]! - want[i]!) <= tol * Math.abs(want[i]!))) {
      throw new KilnError(
        `element ${i} is ${got[i]}, but the model computes ${want[i]} there (${buffer.what}); the checkpoint was made with other settings (a different rope_theta or head_dim?)`,
        where,
      );
    }
  }
}

/** The tie and buffer checks of a plan: each loads the two tensors it compares, one pair at a time. */
function checkTiesAndBuffers(plan: LoadPlan): void {
  const byName = new Map(plan.params.map((p) => [p.param.name, p]));
  for (const { tie, source, tensor } of plan.tiedPresent) {
    const target = byName.get(tie.to)?.load();
    const file = source.load(tensor);
    const same = target !== undefined && file.shape.length === target.shape.length && file.shape.every((d, i) => d === target.shape[i]) &&
      file.data.length === target.data.length && file.data.every((x, i) => Object.is(x, target.data[i]));
    if (!same) {
      throw new KilnError(`the model ties '${tie.name}' to '${tie.to}' (one tensor), but the checkpoint's '${tensor}' differs from '${tie.to}'`, {
        file: source.info(tensor)?.file ?? source.label,
        tensor,
      });
    }
  }
  for (const { buffer, source, tensor } of plan.buffersPresent) checkBuffer(buffer, source, tensor);
}

export function loadParams(params: readonly ParamRequest[], sources: readonly CheckpointSource[], options: LoadOptions = {}): LoadedParams {
  const plan = planParams(params, sources, options);
  checkTiesAndBuffers(plan);
  const tensors = new Map(plan.params.map((p) => [p.param.name, p.load()]));
  return { tensors, absent: plan.absent };
}

/**
 * Parameters by name whose values are read from the checkpoint files each time `get` asks (and
 * iteration reaches them), never kept: what a WebGPU run uploads tensor by tensor, so the host
 * holds one tensor's values at a time instead of the model's. `get` of a name again reads the
 * file again; a consumer that needs every value repeatedly (the reference executor in a loop)
 * copies them into a Map first.
 */
export class LazyParams implements ReadonlyMap<string, HostTensor> {
  private readonly byName: ReadonlyMap<string, PlannedParam>;
  /** how many tensors were read from the files so far (tests: checkpoint loads go one at a time). */
  loads = 0;

  constructor(readonly plan: LoadPlan) {
    this.byName = new Map(plan.params.map((p) => [p.param.name, p]));
  }

  get size(): number {
    return this.byName.size;
  }
  has(name: string): boolean {
    return this.byName.has(name);
  }
  get(name: string): HostTensor | undefined {
    const p = this.byName.get(name);
    if (p === undefined) return undefined;
    this.loads++;
    return p.load();
  }
  keys(): MapIterator<string> {
    return this.byName.keys();
  }
  *entries(): MapIterator<[string, HostTensor]> {
    for (const name of this.byName.keys()) yield [name, this.get(name)!];
  }
  *values(): MapIterator<HostTensor> {
    for (const name of this.byName.keys()) yield this.get(name)!;
  }
  [Symbol.iterator](): MapIterator<[string, HostTensor]> {
    return this.entries();
  }
  forEach(f: (value: HostTensor, key: string, map: ReadonlyMap<string, HostTensor>) => void): void {
    for (const [k, v] of this.entries()) f(v, k, this);
  }
}

/** loadParams, lazily: the same plan and checks (missing, shapes, ties, buffers) up front, no values kept (LazyParams). */
export function openParams(params: readonly ParamRequest[], sources: readonly CheckpointSource[], options: LoadOptions = {}): LazyParams {
  const plan = planParams(params, sources, options);
  checkTiesAndBuffers(plan);
  return new LazyParams(plan);
}
