// Shared pieces of the custom kernel templates (compiler/codegen/kernel.ts has the contract).
//
// Every template is written once against a "lane group": L invocations that cooperate on one
// unit of work (a row, an output element, a block of query rows), exchanging values only through
// sum/max/bcast below. With a fixed subgroup size S the group is one subgroup filling a workgroup
// of S (no barriers, no workgroup memory: on lavapipe a barrier turns the shader into coroutines
// while subgroup ops are register shuffles). Without one, L = 1: every invocation is its own group
// and the exchanges vanish, which is the portable fallback and the better choice for many short
// rows. Tests run both.
import { grid1d, type DeviceTraits, type LowerContext } from '../../codegen/kernel.js';
import { numel } from '../../../runtime/tensor.js';

export interface Lanes {
  /** invocations per group */
  readonly L: number;
  /** invocations per workgroup */
  readonly WG: number;
  readonly enables: readonly string[];
  /** main's parameters. */
  readonly params: string;
  /** statements defining `grp` (the group index) and `lane` (0..L-1). */
  readonly prologue: string;
  workgroups(groups: number): [number, number, number];
  /** WGSL expressions: the sum / max of `e` over the group, in every lane. */
  sum(e: string): string;
  max(e: string): string;
  /** `e` as lane `from` holds it (a constant lane index). */
  bcast(e: string, from: number): string;
}

/** Invocations per workgroup when every invocation is its own group. */
const WG_SINGLE = 64;

/**
 * split: whether the op wants lanes splitting its work units (long rows, few outputs). Templates
 * that unroll over lanes (bcast tiles) pass a cap so an unusually wide subgroup falls back.
 */
export function chooseLanes(device: DeviceTraits, split: boolean, maxL = 64): Lanes {
  const S = device.subgroupSize;
  if (split && S !== undefined && S >= 2 && S <= maxL && S <= device.maxWorkgroupInvocations) return subgroupLanes(S, device);
  return singleLanes(device);
}

export function singleLanes(device: DeviceTraits): Lanes {
  const WG = Math.min(WG_SINGLE, device.maxWorkgroupInvocations);
  return {
    L: 1,
    WG,
    enables: [],
    params: '@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>',
    prologue: `let grp = linear_id(gid, nwg, ${WG}u);\n  let lane = 0u;`,
    workgroups: (groups) => grid1d(groups, WG, device),
    sum: (e) => e,
    max: (e) => e,
    bcast: (e) => e,
  };
}

function subgroupLanes(S: number, device: DeviceTraits): Lanes {
  return {
    L: S,
    WG: S,
    enables: ['subgroups'],
    params:
      '@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(subgroup_invocation_id) sgl: u32',
    prologue: 'let grp = linear_id(wid, nwg, 1u);\n  let lane = sgl;',
    workgroups: (groups) => grid1d(groups, 1, device),
    sum: (e) => `subgroupAdd(${e})`,
    max: (e) => `subgroupMax(${e})`,
    bcast: (e, from) => `subgroupBroadcast(${e}, ${from}u)`,
  };
}

/**
 * A zero that the shader compiler cannot see through, added to constant loop bounds: lavapipe
 * (NIR, then LLVM) fully unrolls constant-trip loops, and unrolled loops over per-lane arrays or
 * with subgroup broadcasts inside compile for seconds. (grp < 2^31 for any real dispatch.)
 */
export const OPAQUE_ZERO = '(grp >> 31u)';

export interface LaneArray {
  readonly name: string;
  readonly type: string;
  /** elements per lane */
  readonly n: number;
}

/**
 * Per-lane arrays (a lane's accumulator row, statistics), laid out so that no lane ever reads
 * another's elements: no barriers. With subgroup lanes they live in workgroup memory, indexed
 * lane * n + i, when they fit in `budgetBytes`: lavapipe turns a dynamically indexed private
 * array into if-ladders (compile time grows with its length), while workgroup memory is plain
 * memory. Otherwise (one lane per group, or too big) they are private arrays.
 */
export function laneArrays(lanes: Lanes, arrays: readonly LaneArray[], budgetBytes: number): { module: string; local: string; at: (name: string, i: string) => string } {
  const size = (a: LaneArray): number => (a.type.startsWith('vec4') ? 16 : 4) * a.n;
  const total = arrays.reduce((t, a) => t + size(a) * lanes.L, 0);
  const shared = lanes.L > 1 && total <= budgetBytes;
  const byName = new Map(arrays.map((a) => [a.name, a]));
  return {
    // Prefixed: module scope is shared with the accessors' declarations.
    module: shared ? arrays.map((a) => `var<workgroup> k_${a.name}: array<${a.type}, ${lanes.L * a.n}>;`).join('\n') : '',
    local: shared ? '' : arrays.map((a) => `  var k_${a.name}: array<${a.type}, ${a.n}>;`).join('\n'),
    at: (name, i) => (shared ? `k_${name}[lane * ${byName.get(name)!.n}u + ${i}]` : `k_${name}[${i}]`),
  };
}

/** `@compute` entry point with the group prologue and an early exit past the last group. */
export function entry(lanes: Lanes, groups: number, body: string, attrs = ''): string {
  return `${attrs}@compute @workgroup_size(${lanes.WG})
fn main(${lanes.params}) {
  ${lanes.prologue}
  if (grp >= ${groups}u) { return; }
${body}
}`;
}

/** `for` over i = lane, lane + L, ... < n. */
export function laneLoop(lanes: Lanes, n: number | string, v: string, body: string): string {
  const end = typeof n === 'number' ? `${n}u` : n;
  return lanes.L === 1
    ? `for (var ${v} = 0u; ${v} < ${end}; ${v}++) {\n${body}\n}`
    : `for (var ${v} = lane; ${v} < ${end}; ${v} += ${lanes.L}u) {\n${body}\n}`;
}

/** A WGSL f32 literal that round-trips the f32 nearest to x (x finite). */
export function f32(x: number): string {
  const v = Math.fround(x);
  if (!Number.isFinite(v)) throw new Error(`f32 literal out of range: ${x}`);
  let s = String(v);
  if (!/[.e]/.test(s)) s += '.0';
  return `${s}f`;
}

/** Largest finite f32: the running max's start, so no inf ever enters exp(). */
export const NEG_BIG = '-3.402823466e+38f';

/**
 * Module-scope helpers some templates share. Every module-scope name a template declares starts
 * with k_ (or K_), so it cannot collide with what fused accessors declare.
 */
export const NEG_INF_FN = `fn k_neg_inf() -> f32 {
  // A var, not a const: a constant expression may not evaluate to infinity.
  var bits = 0xff800000u;
  return bitcast<f32>(bits);
}`;

/**
 * NaN and infinity tests and a runtime NaN, for the templates that must propagate non-finite
 * values as PyTorch does. Bit tests, not `x != x`: WGSL lets a compiler assume floats are finite
 * (Mesa folds such comparisons), while integer bit tests always hold. `body()` adds these to a
 * template that calls any of them.
 */
export const NONFINITE_FNS = `fn k_isnan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn k_isinf(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u; }
fn k_nan() -> f32 {
  // A var, not a const: a constant expression may not evaluate to NaN.
  var bits = 0x7fc00000u;
  return bitcast<f32>(bits);
}
// max(a, b) that is NaN when either is, as torch.max / torch.maximum (WGSL's max leaves it open).
fn k_max(a: f32, b: f32) -> f32 { return select(max(a, b), k_nan(), k_isnan(a) || k_isnan(b)); }`;

/**
 * A statement referencing inputs the kernel does not need (a weight-gradient kernel never reads
 * the weight): pipelines with layout 'auto' drop unreferenced bindings, which would break the
 * caller's one-binding-per-input bind group. Never taken, so it costs nothing.
 */
export function touch(inputs: readonly number[]): string {
  if (inputs.length === 0) return '';
  return `  if (grp == 0xffffffffu) { ${inputs.map((k) => `_ = load${k}(0u);`).join(' ')} }`;
}

/** Elements of a shape (one definition: runtime/tensor.ts `numel`). */
export const product: (shape: readonly number[]) => number = numel;

/** A KernelBody's fields from the parts every template produces. */
export function body(ctx: LowerContext, label: string, lanes: Lanes, groups: number, code: string, extraEnables: readonly string[] = []) {
  const enables = [...new Set([...lanes.enables, ...extraEnables])];
  const nonfinite = /\bk_(isnan|isinf|nan|max)\(/.test(code) && !code.includes('fn k_isnan(');
  return {
    label: `${ctx.op} ${label} L${lanes.L}`,
    code: nonfinite ? `${NONFINITE_FNS}\n${code}` : code,
    workgroups: lanes.workgroups(groups),
    ...(enables.length > 0 ? { enables } : {}),
  };
}
