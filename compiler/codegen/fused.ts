// WGSL for one fused group (compiler/passes/fuse.ts): the bindings of its buffers, the accessors
// of the kernel contract (load<k> computing prologues and views, store applying the epilogue and
// writing every published value), and the anchor's body: a custom op's template, the matmul
// generator, or an elementwise loop. Names are local (kf_n3 is the group's fourth member), so the
// same group in every layer is the same code and compiles once.
import type { Attrs, DType } from '../ir/graph.js';
import { KilnError } from '../../runtime/errors.js';
import type { FusedGroup } from '../passes/fuse.js';
import { getOp } from '../ops/registry.js';
import { SPECIAL_VALUES } from './expr.js';
import { exprWGSL } from '../ops/expr/wgsl.js';
import { grid1d, LINEAR_ID, storageType, wgslType, type CustomKernel, type DeviceTraits, type KernelBody, type ViewKernel } from './kernel.js';
import { broadcastMap, transposeMap, type IndexMap } from './views.js';
import { matmulWGSL, type MatmulSpec } from './matmul.js';
import { isFloat, numel } from '../../runtime/tensor.js';
import { symbolSlot, symbolsStruct, type WorkgroupExtent } from '../../runtime/artefact.js';

/** A node with symbols bound: what code generation sees. */
export interface ConcreteNode {
  readonly id: number;
  readonly op: string;
  readonly inputs: readonly number[];
  readonly attrs: Attrs;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

/** Binding k of a kernel: elements [offset, offset + length) of a value's buffer. */
export interface BindingRef {
  readonly value: number;
  readonly access: 'read' | 'read_write';
  readonly offset: number;
  readonly length: number;
  /** bytes per stored element: 4, or 2 for f16 storage. */
  readonly elementBytes: number;
}

export interface CodegenOptions {
  /** 'f16': float tensors stored as f16 (the accessors convert; all math stays f32). */
  readonly floatStorage?: 'f32' | 'f16';
  /**
   * Values overwritten in place (target -> the update that replaces it, runtime/webgpu/in-place.ts):
   * a kernel that writes the update reads the target through the update's read_write binding,
   * since WebGPU forbids binding one buffer twice when one binding writes.
   */
  readonly aliases?: ReadonlyMap<number, number>;
  /**
   * Per-call symbols (runtime/artefact.ts SymbolDecl): the i32 scalar input nodes that carry
   * them, with their slot in the symbols uniform and their name. Kernels read these nodes from
   * the uniform, never from a storage binding.
   */
  readonly symbols?: { readonly nodes: ReadonlyMap<number, { readonly slot: number; readonly name: string }>; readonly count: number };
}

export interface GroupKernel {
  readonly label: string;
  readonly code: string;
  readonly workgroups: readonly [number, number, number];
  readonly bindings: readonly BindingRef[];
  /** 'buffers': the matmul fast path; 'accessors': everything else. */
  readonly io: 'buffers' | 'accessors';
  /** the kernel reads the symbols uniform (bound after `bindings`). */
  readonly symbols?: true;
  /** per axis, the workgroup count as a formula of a per-call symbol (KernelBody.perCall). */
  readonly perCall?: readonly [WorkgroupExtent | null, WorkgroupExtent | null, WorkgroupExtent | null];
}

/** An op with no kernel: a user-facing error (the CLI prints it), not a bug. */
export class UnlowerableError extends KilnError {}

const LOOP_WG = 64;

/** Elements per binding for a value: whole, or chunks aligned to 256 bytes past the limit. */
export function chunkLength(length: number, device: DeviceTraits, elementBytes = 4): number {
  const max = Math.floor(device.maxStorageBindingBytes / elementBytes);
  const align = 256 / elementBytes;
  return length <= max ? Math.max(length, 1) : Math.floor(max / align) * align;
}


interface Decl {
  name: string;
  type: 'f32' | 'i32' | 'f16';
  access: 'read' | 'read_write';
}

class Emitter {
  readonly bindings: BindingRef[] = [];
  readonly decls: Decl[] = [];
  readonly fns: string[] = [];
  readonly enables = new Set<string>();
  /** whether some accessor reads the symbols uniform. */
  usesSymbols = false;
  private readonly readers = new Map<number, string>();
  private readonly writers = new Map<number, string>();
  private readonly values = new Map<number, string>();
  private readonly local: Map<number, number>;
  private readonly placement: Map<number, string>;

  constructor(
    readonly group: FusedGroup,
    readonly node: (id: number) => ConcreteNode,
    readonly device: DeviceTraits,
    readonly opts: CodegenOptions = {},
  ) {
    this.local = new Map(group.members.map((m, k) => [m.node, k]));
    this.placement = new Map(group.members.map((m) => [m.node, m.placement]));
  }

  private readonly bound = new Map<number, { names: string[]; chunk: number; st: Decl['type']; read?: string }>();

  /**
   * The read_write binding already declared for `id` (the matmul fast path's `c`), read through
   * the generator's function `read` (element i) rather than indexed here.
   */
  adopt(id: number, read: string, st: Decl['type']): void {
    this.bound.set(id, { names: [], chunk: 0, st, read });
  }

  /** Declares the bindings of a value (one per chunk) and returns their names. */
  private bind(id: number, access: 'read' | 'read_write'): { names: string[]; chunk: number; st: Decl['type']; read?: string } {
    const prior = this.bound.get(id);
    if (prior && access === 'read_write') return prior;
    const n = this.node(id);
    const length = numel(n.shape);
    const st = this.opts.floatStorage === 'f16' && isFloat(n.dtype) ? 'f16' : storageType(n.dtype, this.device);
    const elementBytes = st === 'f16' ? 2 : 4;
    const chunk = chunkLength(length, this.device, elementBytes);
    if (st === 'f16') this.enables.add('f16');
    const names: string[] = [];
    for (let offset = 0; offset < Math.max(length, 1); offset += chunk) {
      const name = `kb${this.bindings.length}`;
      this.bindings.push({ value: id, access, offset, length: Math.min(chunk, Math.max(length - offset, 1)), elementBytes });
      this.decls.push({ name, type: st, access });
      names.push(name);
    }
    if (access === 'read_write') this.bound.set(id, { names, chunk, st });
    return { names, chunk, st };
  }

  /** The update this group writes in place of `id`, if any. */
  private aliasOf(id: number): number | undefined {
    const u = this.opts.aliases?.get(id);
    return u !== undefined && this.group.outputs.includes(u) ? u : undefined;
  }

  /** kf_rJ(i): element i of a buffered value, across its chunks. */
  reader(id: number): string {
    const hit = this.readers.get(id);
    if (hit) return hit;
    const symbol = this.opts.symbols?.nodes.get(id);
    if (symbol) {
      // A per-call symbol: the same value at every index, from the uniform (no storage binding).
      const name = `kf_r${this.readers.size}`;
      this.fns.push(`fn ${name}(i: u32) -> i32 {\n  return ${symbolSlot(symbol.slot)};\n}`);
      this.readers.set(id, name);
      this.usesSymbols = true;
      return name;
    }
    const alias = this.aliasOf(id);
    const { names, chunk, read } = alias === undefined ? this.bind(id, 'read') : this.bind(alias, 'read_write');
    const t = wgslType(this.node(id).dtype);
    const name = `kf_r${this.readers.size}`;
    if (read) {
      this.fns.push(`fn ${name}(i: u32) -> ${t} {\n  return ${t}(${read}(i));\n}`);
      this.readers.set(id, name);
      return name;
    }
    const body = names.map((b, c) => {
      const at = c === 0 ? 'i' : `i - ${c * chunk}u`;
      const ret = `return ${t}(${b}[${at}]);`;
      return c === names.length - 1 ? `  ${ret}` : `  if (i < ${(c + 1) * chunk}u) { ${ret} }`;
    });
    this.fns.push(`fn ${name}(i: u32) -> ${t} {\n${body.join('\n')}\n}`);
    this.readers.set(id, name);
    return name;
  }

  /** kf_wJ(i, v): writes element i of a published value. */
  writer(id: number): string {
    const hit = this.writers.get(id);
    if (hit) return hit;
    const { names, chunk, st, read } = this.bind(id, 'read_write');
    if (read) throw new Error(`fused: value ${id} is written by the matmul generator itself`);
    const t = wgslType(this.node(id).dtype);
    const name = `kf_w${this.writers.size}`;
    const body = names.map((b, c) => {
      const w = `${b}[${c === 0 ? 'i' : `i - ${c * chunk}u`}] = ${st}(v);`;
      return c === names.length - 1 ? `  ${w}` : `  if (i < ${(c + 1) * chunk}u) { ${w} return; }`;
    });
    this.fns.push(`fn ${name}(i: u32, v: ${t}) {\n${body.join('\n')}\n}`);
    this.writers.set(id, name);
    return name;
  }

  /** The index map from a node's element index to operand p's. */
  operandMap(n: ConcreteNode, p: number): IndexMap {
    const o = this.node(n.inputs[p]!);
    const kernel = getOp(n.op).kernel;
    if (kernel?.kind === 'view') return kernel.map(o.shape, n.shape, n.attrs);
    return broadcastMap(o.shape, n.shape);
  }

  /** WGSL index expression of operand p for the node's element `idx`. */
  private operandIndex(n: ConcreteNode, p: number, idx: string): string {
    const map = this.operandMap(n, p);
    if (map.identity) return idx;
    const name = `kf_m${this.local.get(n.id)}_${p}`;
    if (!this.fns.some((f) => f.startsWith(`fn ${name}(`))) {
      const { lets, index } = map.wgsl('i');
      this.fns.push(`fn ${name}(i: u32) -> u32 {\n${lets.map((l) => `  ${l}\n`).join('')}  return ${index};\n}`);
    }
    return `${name}(${idx})`;
  }

  /** Expression for the value of `id` at element `idx`, from outside the store. */
  valueAt(id: number, idx: string): string {
    const placement = this.placement.get(id);
    if (placement === undefined) return `${this.reader(id)}(${idx})`;
    if (placement === 'epilogue' || (placement === 'anchor' && this.group.kind !== 'elementwise' && this.group.kind !== 'view' && this.group.kind !== 'const'))
      throw new Error(`fused: node ${id} is only known inside store`);
    return `${this.valueFn(id)}(${idx})`;
  }

  /**
   * A node's operands bound to `let <prefix>P` lines, and the op's expression over those names
   * (elementwise expressions may repeat an argument: it must be a plain identifier).
   */
  private compute(n: ConcreteNode, operand: (p: number) => string, prefix: string): { lets: string[]; expr: string } {
    const lets = n.inputs.map((_, p) => `let ${prefix}${p} = ${operand(p)};`);
    const args = n.inputs.map((_, p) => `${prefix}${p}`);
    const kernel = getOp(n.op).kernel;
    if (kernel?.kind === 'view') return { lets, expr: args[0]! };
    if (kernel?.kind !== 'elementwise') throw new Error(`fused: ${n.op} is not elementwise`);
    const types = { inputs: n.inputs.map((i) => this.node(i).dtype), output: n.dtype };
    return { lets, expr: exprWGSL(kernel.ir(n.attrs, types.inputs, types.output), args, types) };
  }

  /** kf_nK(i): a load-side member (prologue, or a loop's anchor) at element i. */
  private valueFn(id: number): string {
    const hit = this.values.get(id);
    if (hit) return hit;
    const n = this.node(id);
    const name = `kf_n${this.local.get(id)}`;
    const { lets, expr } = this.compute(n, (p) => this.valueAt(n.inputs[p]!, this.operandIndex(n, p, 'i')), 'a');
    this.fns.push(`fn ${name}(i: u32) -> ${wgslType(n.dtype)} {\n${lets.map((l) => `  ${l}\n`).join('')}  return ${wgslType(n.dtype)}(${expr});\n}`);
    this.values.set(id, name);
    return name;
  }

  /**
   * The epilogue at store index `i` with the anchor's value `v`: let-lines computing every
   * store-side member, and the WGSL value of each of them (and of the anchor).
   */
  epilogue(): { lines: string[]; valueOf: Map<number, string>; indexOf: Map<number, string> } {
    const valueOf = new Map<number, string>([[this.group.anchor, 'v']]);
    const indexOf = new Map<number, string>();
    const lines: string[] = [];
    for (const m of this.group.members) {
      if (m.placement !== 'epilogue') continue;
      const n = this.node(m.node);
      const k = this.local.get(m.node);
      if (m.rule === 'transposed-store') {
        // Written, not computed: the operand's value at the transposed index (fusion-rules.ts).
        const o = this.node(n.inputs[0]!);
        const perm = viewOf(n)?.perm?.(n.attrs);
        if (!perm) throw new Error(`fused: ${n.op} (node ${n.id}) is stored transposed but permutes no axes`);
        const inv = perm.map((_, d) => perm.indexOf(d));
        const { lets, index } = transposeMap(n.shape, inv).wgsl('i');
        this.fns.push(`fn kf_s${k}(i: u32) -> u32 {\n${lets.map((l) => `  ${l}\n`).join('')}  return ${index};\n}`);
        valueOf.set(m.node, valueOf.get(o.id)!);
        indexOf.set(m.node, `kf_s${k}(i)`);
        continue;
      }
      const { lets, expr } = this.compute(n, (p) => {
        const o = n.inputs[p]!;
        const inStore = valueOf.get(o);
        if (inStore !== undefined) {
          if (!this.operandMap(n, p).identity) throw new Error(`fused: node ${n.id} reads a store-side value through a non-identity map`);
          return inStore;
        }
        return this.valueAt(o, this.operandIndex(n, p, 'i'));
      }, `e${k}_`);
      lines.push(...lets, `let e${k} = ${wgslType(n.dtype)}(${expr});`);
      valueOf.set(m.node, `e${k}`);
    }
    return { lines, valueOf, indexOf };
  }

  declarations(start = 0): string[] {
    const storage = this.decls.slice(start).map((d, k) => `@group(0) @binding(${k + start}) var<storage, ${d.access}> ${d.name}: array<${d.type}>;`);
    if (!this.usesSymbols) return storage;
    return [...storage, symbolsStruct(this.opts.symbols!.count), `@group(0) @binding(${this.decls.length}) var<uniform> kiln_symbols: KilnSymbols;`];
  }
}

/**
 * The input whose in-place body (CustomKernel.inPlace) this group runs: when the anchor's output
 * is written over that input's buffer (an alias) and the group stores nothing else, since that
 * body calls store only for the elements it replaces. Otherwise undefined: the op's own kernel,
 * which stores every element (reading the aliased input at the index it stores, which is safe).
 */
function inPlaceBody(group: FusedGroup, anchor: ConcreteNode, kernel: CustomKernel, opts: CodegenOptions): number | undefined {
  const slot = kernel.inPlace?.input;
  if (slot === undefined || opts.aliases?.get(anchor.inputs[slot]!) !== anchor.id) return undefined;
  if (group.outputs.length !== 1 || group.members.some((m) => m.placement === 'epilogue')) return undefined;
  return slot;
}

function viewOf(n: ConcreteNode): ViewKernel | undefined {
  const kernel = getOp(n.op).kernel;
  return kernel?.kind === 'view' ? kernel : undefined;
}

function labelOf(group: FusedGroup, node: (id: number) => ConcreteNode): string {
  const ops = group.members.filter((m) => m.placement !== 'prologue').map((m) => node(m.node).op);
  const a = node(group.anchor);
  return `${ops.join('+')} ${a.dtype}[${a.shape.join(',')}]`;
}

/** Generates the kernel for one group with symbols bound. Throws UnlowerableError for ops with no kernel. */
export function generateGroup(group: FusedGroup, node: (id: number) => ConcreteNode, device: DeviceTraits, opts: CodegenOptions = {}): GroupKernel {
  const anchor = node(group.anchor);
  const def = getOp(anchor.op);
  if (group.kind === 'custom' && def.kernel?.kind !== 'custom')
    throw new UnlowerableError(`op ${anchor.op} (node ${anchor.id}) has no WebGPU kernel yet`);
  const label = labelOf(group, node);
  // The fast path binds f32 arrays itself; f16 storage goes through the accessors.
  if (group.kind === 'matmul' && opts.floatStorage !== 'f16') {
    const fast = matmulBuffers(group, node, device, label, opts);
    if (fast) return fast;
  }
  const em = new Emitter(group, node, device, opts);
  const t = wgslType(anchor.dtype);
  let body: KernelBody;
  if (group.kind === 'custom' || group.kind === 'matmul') {
    if (def.kernel?.kind !== 'custom') throw new UnlowerableError(`op ${anchor.op} has no custom kernel`);
    const sparse = inPlaceBody(group, anchor, def.kernel, opts);
    // The in-place body never reads the replaced input, so it gets no load (and no binding).
    anchor.inputs.forEach((o, k) => {
      if (k !== sparse) em.fns.push(`fn load${k}(i: u32) -> ${wgslType(node(o).dtype)} { return ${em.valueAt(o, 'i')}; }`);
    });
    const symbols = opts.symbols && anchor.inputs.some((i) => opts.symbols!.nodes.has(i)) ? { symbols: anchor.inputs.map((i) => opts.symbols!.nodes.get(i)?.name) } : {};
    const ctx = { op: anchor.op, inputs: anchor.inputs.map((i) => ({ dtype: node(i).dtype, shape: node(i).shape })), output: { dtype: anchor.dtype, shape: anchor.shape }, attrs: anchor.attrs, device, ...symbols };
    body = sparse === undefined ? def.kernel.lower(ctx) : def.kernel.inPlace!.lower(ctx);
  } else {
    const n = numel(anchor.shape);
    const root = em.valueAt(group.anchor, 'i');
    body = {
      label,
      code: `@compute @workgroup_size(${LOOP_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg, ${LOOP_WG}u);
  if (i >= ${n}u) { return; }
  store(i, ${root});
}`,
      workgroups: grid1d(n, LOOP_WG, device),
    };
  }
  const { lines, valueOf, indexOf } = em.epilogue();
  const writes = group.outputs.map((o) => `  ${em.writer(o)}(${indexOf.get(o) ?? 'i'}, ${valueOf.get(o)});`);
  em.fns.push(`fn store(i: u32, v: ${t}) {\n${lines.map((l) => `  ${l}\n`).join('')}${writes.join('\n')}\n}`);
  for (const e of body.enables ?? []) em.enables.add(e);
  const fns = em.fns.join('\n');
  const special = fns.includes('kf_bits') ? [SPECIAL_VALUES] : [];
  const code = [...[...em.enables].map((e) => `enable ${e};`), ...em.declarations(), ...special, fns, LINEAR_ID, body.code].join('\n');
  return { label, code, workgroups: body.workgroups, bindings: em.bindings, io: 'accessors', ...(em.usesSymbols ? { symbols: true as const } : {}), ...(body.perCall ? { perCall: body.perCall } : {}) };
}

/**
 * The matmul fast path: A and B are whole buffers (through reshapes, and a transpose of their
 * last two axes: weight gradients read x^T), so the tuned generator binds them as (vec4) arrays itself; the epilogue
 * and the extra outputs ride on its epilogue hook. null when the operands do not allow it.
 */
function matmulBuffers(group: FusedGroup, node: (id: number) => ConcreteNode, device: DeviceTraits, label: string, opts: CodegenOptions = {}): GroupKernel | null {
  const anchor = node(group.anchor);
  const inGroup = new Map(group.members.map((m) => [m.node, m.placement]));
  const whole = (id: number): boolean => numel(node(id).shape) <= chunkLength(numel(node(id).shape), device) && node(id).dtype === 'f32';
  // Through reshapes (and at most one swap of the last two axes) down to a buffered value. Above
  // the swap a reshape may only regroup batch axes: the matrices must stay [K, M] blocks.
  const lastTwo = (sh: readonly number[]): string => sh.slice(-2).join('x');
  const transposeBelow = (id: number): boolean => {
    for (let at = id; inGroup.has(at); at = node(at).inputs[0]!) if (viewOf(node(at))?.perm) return true;
    return false;
  };
  const plain = (id: number): { leaf: number; swapped: boolean } | null => {
    let swapped = false;
    for (;;) {
      if (!inGroup.has(id)) return whole(id) ? { leaf: id, swapped } : null;
      const n = node(id);
      const r = n.shape.length;
      const view = viewOf(n);
      const perm = view?.perm?.(n.attrs);
      if (perm) {
        if (swapped || r < 2 || !perm.every((p, d) => (d < r - 2 ? p === d : p === 2 * r - 3 - d))) return null;
        swapped = true;
      } else if (view?.flat) {
        if (!swapped && lastTwo(n.shape) !== lastTwo(node(n.inputs[0]!).shape) && transposeBelow(n.inputs[0]!)) return null;
      } else return null;
      id = n.inputs[0]!;
    }
  };
  const a = plain(anchor.inputs[0]!);
  const b = plain(anchor.inputs[1]!);
  if (!a || !b || group.outputs.some((o) => !whole(o))) return null;
  const kernel = getOp(anchor.op).kernel;
  const form = kernel?.kind === 'custom' ? kernel.matmul : undefined;
  if (!form) throw new Error(`fused: ${anchor.op} is a matmul-category op without a matmul form`);
  if (a.swapped && !form.transposableA) return null;
  const shape = form.shape(node(anchor.inputs[0]!).shape, node(anchor.inputs[1]!).shape, anchor.shape);
  const spec: MatmulSpec = { ...shape.spec, transposeA: a.swapped, transposeB: (shape.spec.transposeB ?? false) !== b.swapped };

  const em = new Emitter(group, node, device, opts);
  const primary = group.outputs[0]!;
  // A target overwritten in place by the primary output is read through the generator's `c`,
  // whose element type (f32 or vec4<f32>) the generator chooses: through its c_at(i).
  em.adopt(primary, 'c_at', 'f32');
  // Bindings 0..2 are the generator's a, b, c; ours start at 3.
  const fixed: BindingRef[] = [
    { value: a.leaf, access: 'read', offset: 0, length: numel(node(a.leaf).shape), elementBytes: 4 },
    { value: b.leaf, access: 'read', offset: 0, length: numel(node(b.leaf).shape), elementBytes: 4 },
    { value: primary, access: 'read_write', offset: 0, length: numel(node(primary).shape), elementBytes: 4 },
  ];
  em.bindings.push(...fixed);
  em.decls.push({ name: 'a', type: 'f32', access: 'read' }, { name: 'b', type: 'f32', access: 'read' }, { name: 'c', type: 'f32', access: 'read_write' });
  const biasInput = form.bias === undefined ? undefined : anchor.inputs[form.bias];
  const bias = biasInput === undefined ? '' : ` + ${em.valueAt(biasInput, 'col')}`;
  const { lines, valueOf } = em.epilogue();
  const writes = group.outputs.filter((o) => o !== primary).map((o) => `  ${em.writer(o)}(i, ${valueOf.get(o)});`);
  em.fns.push(`fn kf_epi(v: f32, i: u32) -> f32 {\n${lines.map((l) => `  ${l}\n`).join('')}${writes.join('\n')}\n  return ${valueOf.get(primary)};\n}`);
  // The generator declares its own bindings: a kernel reading the symbols uniform takes the accessors.
  if (em.enables.size > 0 || em.usesSymbols) return null;
  const k = matmulWGSL(
    {
      ...spec,
      io: 'buffers',
      epilogue: {
        expr: `kf_epi(acc${bias}, (batch * M + row) * N + col)`,
        bindings: em.decls.slice(3).map((d) => ({ name: d.name, type: d.type as 'f32' | 'i32', access: d.access })),
        helpers: [shape.helpers, ...(em.fns.some((f) => f.includes('kf_bits')) ? [SPECIAL_VALUES] : []), ...em.fns].filter(Boolean).join('\n'),
      },
    },
    { subgroupSize: device.subgroupSize, maxComputeWorkgroupsPerDimension: device.maxWorkgroupsPerDimension },
  );
  return { label, code: k.code, workgroups: k.workgroups, bindings: em.bindings, io: 'buffers' };
}
