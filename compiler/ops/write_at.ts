// write_at(cache, x, position; axis): cache with positions [p, p + n) along `axis` replaced by x
// (n = x's size there, p the i32 scalar `position`, read at run time): how a KV cache of fixed
// capacity takes a step's keys and values without a kernel over the whole cache. Positions that
// fall outside [0, capacity) are not written (a position past the end writes nothing), in the
// reference, both kernels and the PyTorch rendering alike, so a bad position never writes out of
// bounds.
//
// Two kernels. Unfused it is a copy over every output element (x inside the window, the cache
// elsewhere). Written in place over the cache's own buffer (compiler/passes/in-place.ts, the
// normal case for a state update), the output buffer already holds the cache, so the in-place
// body runs over x's elements only and never reads the cache: it touches n/capacity of the bytes.
//
// No gradient: the op writes state in generation graphs (compiler/passes/kv-cache.ts), which are
// never differentiated; autodiff reaching it stops with "write_at ... has no gradient rule".
import { dimsEqual, dimToString, isConst, shapeToString } from '../ir/dims.js';
import type { TensorType } from '../ir/graph.js';
import { grid1d, type KernelBody, type LowerContext } from '../codegen/kernel.js';
import type { OpDef } from './types.js';
import { alloc, splitAt } from './util/ref.js';
import { attrInt, expectArity, expectInt, fail, normAxis, typeToString } from './util/shape.js';
import { numel } from '../../runtime/tensor.js';

const WG = 64;

function geometry(ctx: LowerContext): { outer: number; C: number; n: number; inner: number; axis: number } {
  const out = ctx.output.shape;
  const axis = normAxis('write_at', attrInt('write_at', ctx.attrs, 'axis'), out.length);
  const { outer, n: C, inner } = splitAt(out, axis);
  return { outer, C, n: ctx.inputs[1]!.shape[axis]!, inner, axis };
}

/** Every output element: x's where the window covers it, else the cache's (load0). */
function lowerCopy(ctx: LowerContext): KernelBody {
  const { C, n, inner, axis } = geometry(ctx);
  const size = numel(ctx.output.shape);
  const code = `@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg, ${WG}u);
  if (i >= ${size}u) { return; }
  let e = i % ${inner}u;
  let c = (i / ${inner}u) % ${C}u;
  let o = i / ${inner * C}u;
  // i32: a negative position puts c - p past n, so those elements keep the cache.
  let j = i32(c) - load2(0u);
  if (j >= 0i && j < ${n}i) {
    store(i, load1((o * ${n}u + u32(j)) * ${inner}u + e));
  } else {
    store(i, load0(i));
  }
}`;
  return { label: `write_at copy axis ${axis} ${n}/${C}`, code, workgroups: grid1d(size, WG, ctx.device) };
}

/** x's elements only, stored at their cache index; the output buffer already holds the cache. */
function lowerInPlace(ctx: LowerContext): KernelBody {
  const { C, n, inner, axis } = geometry(ctx);
  const size = numel(ctx.inputs[1]!.shape);
  const code = `@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg, ${WG}u);
  if (i >= ${size}u) { return; }
  let e = i % ${inner}u;
  let j = (i / ${inner}u) % ${n}u;
  let o = i / ${inner * n}u;
  let c = load2(0u) + i32(j);
  if (c >= 0i && c < ${C}i) {
    store((o * ${C}u + u32(c)) * ${inner}u + e, load1(i));
  }
}`;
  return { label: `write_at in place axis ${axis} ${n}/${C}`, code, workgroups: grid1d(size, WG, ctx.device) };
}

/** The op in PyTorch: index_copy of the in-range part of x on a copy of the cache. */
export const WRITE_AT_TORCH = `def _write_at(cache, x, position, axis):
    idx = position.to(torch.long) + torch.arange(x.shape[axis], device=cache.device)
    keep = (idx >= 0) & (idx < cache.shape[axis])
    return cache.index_copy(axis, idx[keep], x.index_select(axis, keep.nonzero().flatten()))`;

export const writeAtOp: OpDef = {
  name: 'write_at',
  fusion: 'custom',
  infer(inputs, attrs) {
    expectArity('write_at', inputs, 3);
    const [cache, x, position] = inputs as [TensorType, TensorType, TensorType];
    const axis = normAxis('write_at', attrInt('write_at', attrs, 'axis'), cache.shape.length);
    expectInt('write_at', position, 'position', 2);
    if (position.shape.length !== 0) fail(`write_at: position must be an i32 scalar, got ${typeToString(position)}`, 2);
    if (x.dtype !== cache.dtype) fail(`write_at: dtypes differ: cache is ${typeToString(cache)}, x is ${typeToString(x)}`, 1);
    const s = shapeToString;
    if (x.shape.length !== cache.shape.length) fail(`write_at: x ${s(x.shape)} must have the rank of cache ${s(cache.shape)}`, 1);
    for (let a = 0; a < cache.shape.length; a++) {
      if (a === axis) continue;
      if (!dimsEqual(x.shape[a]!, cache.shape[a]!))
        fail(`write_at: x ${s(x.shape)} and cache ${s(cache.shape)} differ at dim ${a} (${dimToString(x.shape[a]!)} vs ${dimToString(cache.shape[a]!)})`, 1);
    }
    const n = x.shape[axis]!;
    const C = cache.shape[axis]!;
    if (isConst(n) && isConst(C) && n > C) fail(`write_at: x ${s(x.shape)} has ${n} positions along axis ${axis}, more than the cache's ${C}`, 1);
    return { dtype: cache.dtype, shape: [...cache.shape] };
  },
  reference([cache, x, position], attrs, out, ctx) {
    const axis = normAxis('write_at', attrInt('write_at', attrs, 'axis'), cache!.shape.length);
    const { outer, n: C, inner } = splitAt(cache!.shape, axis);
    const n = x!.shape[axis]!;
    const p = position!.data[0]!;
    const y = alloc(ctx, out.dtype, out.shape);
    y.data.set(cache!.data);
    for (let o = 0; o < outer; o++)
      for (let j = 0; j < n; j++) {
        const c = p + j;
        if (c < 0 || c >= C) continue;
        const from = (o * n + j) * inner;
        y.data.set(x!.data.subarray(from, from + inner), (o * C + c) * inner);
      }
    return y;
  },
  torch: {
    expr: (c) => `_write_at(${c.inputs.join(', ')}, ${normAxis('write_at', attrInt('write_at', c.attrs, 'axis'), c.output.shape.length)})`,
    helpers: { _write_at: WRITE_AT_TORCH },
  },
  kernel: { kind: 'custom', lower: lowerCopy, inPlace: { input: 0, lower: lowerInPlace } },
};
