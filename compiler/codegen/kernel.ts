// The kernel contract. Every op's kernel is written against two accessors instead of buffers:
//   load<k>(i: u32) -> T     element i (row-major, logical shape) of input k
//   store(i: u32, v: T)      element i of the output
// (T is f32 for float tensors, i32 for i32 and bool). The code generator supplies them. Unfused,
// they index a storage buffer. Fused, load<k> may compute an elementwise prologue or a view
// (transpose, slice, broadcast) of other buffers, and store may apply an epilogue before writing,
// so one kernel template serves every fusion the pass decides on. Storage dtype (f16 with f32
// math), and tensors split across several bindings past maxStorageBufferBindingSize, also live
// in the accessors and never in the kernel templates.
import type { Attrs, DType } from '../ir/graph.js';
import type { ConcreteType } from '../ops/types.js';
import type { ExprOf } from '../ops/expr/op.js';
import type { IndexMap } from './views.js';
import type { MatmulShape } from './matmul-op.js';
import type { WorkgroupExtent } from '../../runtime/artefact.js';

export type { WorkgroupExtent };

export interface DeviceTraits {
  /** the adapter's one subgroup size, when it has a single one (lavapipe: 8). */
  readonly subgroupSize: number | undefined;
  readonly maxWorkgroupInvocations: number;
  readonly maxWorkgroupsPerDimension: number;
  readonly workgroupMemoryBytes: number;
  readonly maxStorageBindingBytes: number;
  readonly shaderF16: boolean;
}

export const DEFAULT_TRAITS: DeviceTraits = {
  subgroupSize: undefined,
  maxWorkgroupInvocations: 256,
  maxWorkgroupsPerDimension: 65535,
  workgroupMemoryBytes: 16384,
  maxStorageBindingBytes: 128 * 1024 * 1024,
  shaderF16: false,
};

export interface LowerContext {
  readonly op: string;
  readonly inputs: readonly ConcreteType[];
  readonly output: ConcreteType;
  /** symbolic dims already evaluated. */
  readonly attrs: Attrs;
  readonly device: DeviceTraits;
  /**
   * Per input: the name of the per-call symbol it is (an i32 scalar entry input read from the
   * symbols uniform, runtime/artefact.ts), else undefined. A template may then make its
   * workgroup counts follow the value (KernelBody.perCall); its load<k> reads the uniform.
   */
  readonly symbols?: readonly (string | undefined)[];
}

export interface KernelBody {
  readonly label: string;
  /**
   * Module-scope WGSL with an entry point `main`: constants with every size baked in, helper
   * functions, `@compute @workgroup_size(...) fn main(...)`. It reads inputs only through
   * load<k>(i) and writes only through store(i, v); it declares no bindings of its own.
   * Workgroup-memory and subgroup use are the template's business.
   */
  readonly code: string;
  readonly workgroups: readonly [number, number, number];
  /** WGSL extensions the body needs besides what the accessors need (e.g. 'subgroups'). */
  readonly enables?: readonly string[];
  /**
   * Per axis, the count as a formula of a per-call symbol (LowerContext.symbols), clamped to
   * `workgroups` (the count at the symbol's max): the invocations past it must do nothing the
   * output's readers need.
   */
  readonly perCall?: readonly [WorkgroupExtent | null, WorkgroupExtent | null, WorkgroupExtent | null];
}

/**
 * An elementwise op: its value as the expression IR over its operands (compiler/ops/expr/), which
 * the code generator renders to WGSL (exprWGSL) wherever the op is placed: a loop, a prologue, a
 * matmul's or a custom op's epilogue. attrs arrive with symbolic dims evaluated (fill's value,
 * unary_grad's fn).
 */
export interface ElementwiseKernel {
  readonly kind: 'elementwise';
  readonly ir: ExprOf;
}

/** Any other op: a template producing a whole kernel body for concrete shapes. */
export interface CustomKernel {
  readonly kind: 'custom';
  lower(ctx: LowerContext): KernelBody;
  /** For a matmul-category op: the product it computes, for the fused matmul fast path. */
  readonly matmul?: MatmulForm;
  /**
   * For an op whose output is its input `input` with some elements replaced (write_at): a body
   * that stores only the replaced elements, used when the output is written in place over that
   * input's buffer (compiler/passes/in-place.ts), which then already holds every other element.
   * It must not call load<input> (the buffer is the output's, and other invocations write it).
   */
  readonly inPlace?: { readonly input: number; lower(ctx: LowerContext): KernelBody };
}

/** A matmul op as the fast path (compiler/codegen/fused.ts) needs it. */
export interface MatmulForm {
  /** The product's spec for operand shapes a, b and the output shape. */
  shape(a: readonly number[], b: readonly number[], out: readonly number[]): MatmulShape;
  /** The operand added per output column (linear's bias), if the op has one. */
  readonly bias?: number;
  /** Whether A may be read through a swap of its last two axes (linear flattens A's rows: no). */
  readonly transposableA: boolean;
}

/** Movement ops: no kernel of their own; the code generator folds them into index maps. */
export interface ViewKernel {
  readonly kind: 'view';
  /** The map from the view's element index to its operand's (concrete shapes, evaluated attrs). */
  map(inShape: readonly number[], outShape: readonly number[], attrs: Attrs): IndexMap;
  /** Every element keeps its flat index (reshape), whatever the shapes: read element for element. */
  readonly flat?: true;
  /** The view permutes axes, output axis d being operand axis perm[d] (transpose): a kernel may write it as a scatter. */
  perm?(attrs: Attrs): readonly number[];
}

export type OpKernel = ElementwiseKernel | CustomKernel | ViewKernel;

/** WGSL scalar type for a tensor dtype in kernel arithmetic. */
export function wgslType(dtype: DType): 'f32' | 'i32' {
  return dtype === 'i32' || dtype === 'bool' ? 'i32' : 'f32';
}

/** Storage element type: f16 tensors are stored as f16 when the device can, else f32. */
export function storageType(dtype: DType, device: DeviceTraits): 'f32' | 'i32' | 'f16' {
  if (dtype === 'f16' && device.shaderF16) return 'f16';
  return wgslType(dtype);
}

/**
 * Workgroup counts for `threads` invocations of `workgroupSize`, folded into y (and z) past the
 * per-dimension limit. A body indexes with linearId(gid, nwg) below.
 */
export function grid1d(threads: number, workgroupSize: number, device: DeviceTraits): [number, number, number] {
  const groups = Math.max(1, Math.ceil(threads / workgroupSize));
  const max = device.maxWorkgroupsPerDimension;
  if (groups <= max) return [groups, 1, 1];
  const y = Math.ceil(groups / max);
  if (y <= max) return [max, y, 1];
  return [max, max, Math.ceil(groups / (max * max))];
}

/** WGSL: the flat invocation index for a grid1d dispatch (`WG` is the workgroup size). */
export const LINEAR_ID = `fn linear_id(gid: vec3<u32>, nwg: vec3<u32>, wg: u32) -> u32 {
  return gid.x + (gid.y + gid.z * nwg.y) * nwg.x * wg;
}`;

export interface PlainBinding {
  readonly dtype: DType;
  /** elements. */
  readonly length: number;
}

/**
 * The unfused accessors: load<k> and store index one storage buffer each. Bindings are
 * inputs in order, then the output. (The fusion code generator emits richer accessors.)
 */
export function wrapPlain(body: KernelBody, inputs: readonly PlainBinding[], output: PlainBinding, device: DeviceTraits): string {
  const enables = new Set(body.enables ?? []);
  const decls: string[] = [];
  inputs.forEach((b, k) => {
    const st = storageType(b.dtype, device);
    if (st === 'f16') enables.add('f16');
    const t = wgslType(b.dtype);
    decls.push(`@group(0) @binding(${k}) var<storage, read> in${k}: array<${st}>;`);
    decls.push(`fn load${k}(i: u32) -> ${t} { return ${t}(in${k}[i]); }`);
  });
  const st = storageType(output.dtype, device);
  if (st === 'f16') enables.add('f16');
  const t = wgslType(output.dtype);
  decls.push(`@group(0) @binding(${inputs.length}) var<storage, read_write> out: array<${st}>;`);
  decls.push(`fn store(i: u32, v: ${t}) { out[i] = ${st}(v); }`);
  // inf/NaN literals read a private var (codegen/expr.ts SPECIAL_VALUES), as the fused generator adds.
  if (body.code.includes('kf_bits')) decls.push('var<private> kf_bits: vec3<u32> = vec3<u32>(0x7f800000u, 0xff800000u, 0x7fc00000u);');
  return [...[...enables].map((e) => `enable ${e};`), ...decls, LINEAR_ID, body.code].join('\n');
}
