// Calls to ops by name. Most map mechanically through the op's surface (inputs, then attrs);
// the few that need compile-time help (dim, reshape's 0 and -1, fill, slicing) are here.
import type { Call, Expr, IndexItem, Span } from '../syntax/ast.js';
import { fail } from '../diagnostics.js';
import type { Dim } from '../ir/dims.js';
import { addDims, divDims, dimToString, isConst, mulDims, numelDims, shapeToString } from '../ir/dims.js';
import type { AttrValue, DType } from '../ir/graph.js';
import { getOp, surfaceOps } from '../ops/registry.js';
import type { AttrSpec } from '../ops/types.js';
import { suggest } from './config.js';
import { printExpr } from '../syntax/print.js';
import { ropeInvFreq } from '../ops/rope.js';
import type { Evaluator, Scope } from './evaluate.js';
import type { Value } from './values.js';
import { describe, num } from './values.js';

export function scalarLike(ev: Evaluator, value: number, like: number, span: Span): number {
  const dtype = ev.ctx.builder.type(like).dtype;
  return ev.ctx.op('fill', [], { value, shape: [], dtype }, span);
}

function dimValue(v: Value, span: Span): Dim {
  if (v.kind !== 'num' || (isConst(v.value) && !Number.isInteger(v.value))) fail('type', `expected a dimension (an integer), got ${describe(v)}`, span);
  return v.value;
}

function dimList(v: Value, span: Span): Dim[] {
  if (v.kind !== 'list') fail('type', `expected a list of dimensions like [B, T, 64], got ${describe(v)}`, span);
  return v.items.map((i) => dimValue(i, span));
}

function axisOf(axis: number, rank: number, span: Span): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) fail('shape', `axis ${axis} is out of range for a tensor of rank ${rank}`, span);
  return a;
}

/** `x[a:b, i, :]`: one slice op per sliced axis; a plain index also drops the axis. */
export function sliceTensor(ev: Evaluator, id: number, items: readonly IndexItem[], scope: Scope, span: Span): number {
  const shape = ev.ctx.builder.type(id).shape;
  if (items.length > shape.length) fail('shape', `${items.length} indices for a tensor of rank ${shape.length} ${shapeToString(shape)}`, span);
  let cur = id;
  const keep: Dim[] = [];
  items.forEach((item, axis) => {
    const size = shape[axis]!;
    const bound = (e: Expr | null, dflt: Dim): Dim => {
      if (!e) return dflt;
      const d = dimValue(ev.expr(e, scope), e.span);
      return isConst(d) && d < 0 ? addDims(size, d) : d;
    };
    if (item.kind === 'slice') {
      const start = bound(item.start, 0);
      const stop = bound(item.stop, size);
      if (!(isConst(start) && start === 0 && dimToString(stop) === dimToString(size))) {
        cur = ev.ctx.op('slice', [cur], { axis, start, stop }, item.span);
      }
      keep.push(addDims(stop, scaleNeg(start)));
    } else {
      const at = bound(item.index, 0);
      cur = ev.ctx.op('slice', [cur], { axis, start: at, stop: addDims(at, 1) }, item.span);
    }
  });
  const dropped = items.some((i) => i.kind === 'at');
  if (!dropped) return cur;
  const outShape = [...keep, ...shape.slice(items.length)];
  return ev.ctx.op('reshape', [cur], { shape: outShape }, span);
}

function scaleNeg(d: Dim): Dim {
  return mulDims(d, -1);
}

/** reshape(x, [0, 0, heads, -1]): 0 copies the input's dim at that place, -1 takes the rest. */
function resolveReshape(input: readonly Dim[], target: Dim[], span: Span): Dim[] {
  const out = target.map((d, i) => (isConst(d) && d === 0 ? (input[i] ?? fail('shape', `reshape: 0 at position ${i} copies a dim the input ${shapeToString(input)} does not have`, span)) : d));
  const holes = out.filter((d) => isConst(d) && d === -1).length;
  if (holes > 1) fail('shape', 'reshape: at most one -1', span);
  if (holes === 1) {
    const known = numelDims(out.filter((d) => !(isConst(d) && d === -1)));
    const rest = divDims(numelDims(input), known);
    if (rest === null) fail('shape', `reshape: cannot infer -1: ${shapeToString(input)} has ${dimToString(numelDims(input))} elements, not a multiple of ${dimToString(known)}`, span);
    return out.map((d) => (isConst(d) && d === -1 ? rest : d));
  }
  return out;
}

export function callBuiltin(ev: Evaluator, name: string, call: Call, scope: Scope): Value {
  const args = call.args;
  const positional = args.filter((a) => !a.name);
  const named = new Map(args.filter((a) => a.name).map((a) => [a.name!.name, a]));
  const val = (e: Expr) => ev.expr(e, scope);
  const t = (id: number): Value => ({ kind: 'tensor', id });
  const needArgs = (n: number, sig: string) => {
    if (positional.length !== n || named.size > 0) fail('arity', `${name} takes ${sig}`, call.span);
  };

  switch (name) {
    case 'dim': {
      needArgs(2, 'dim(x, axis)');
      const x = ev.tensor(val(positional[0]!.value), positional[0]!.span);
      const shape = ev.ctx.builder.type(x).shape;
      const a = axisOf(ev.intValue(val(positional[1]!.value), positional[1]!.span), shape.length, positional[1]!.span);
      return num(shape[a]!);
    }
    case 'reshape': {
      needArgs(2, 'reshape(x, [dims]) (0 copies a dim, -1 takes the rest)');
      const x = ev.tensor(val(positional[0]!.value), positional[0]!.span);
      const target = resolveReshape(ev.ctx.builder.type(x).shape, dimList(val(positional[1]!.value), positional[1]!.span), positional[1]!.span);
      return t(ev.ctx.op('reshape', [x], { shape: target }, call.span));
    }
    case 'fill': {
      if (positional.length < 2 || positional.length > 3 || named.size > 0) fail('arity', `fill takes fill(value, [dims], dtype = f32)`, call.span);
      const v = val(positional[0]!.value);
      if (v.kind !== 'num' || !isConst(v.value)) fail('type', `fill: the value must be a number, got ${describe(v)}`, positional[0]!.span);
      const shape = dimList(val(positional[1]!.value), positional[1]!.span);
      let dtype: DType = 'f32';
      if (positional[2]) {
        const d = val(positional[2].value);
        if (d.kind !== 'dtype') fail('type', `fill: the third argument must be a dtype (f32, i32, ...), got ${describe(d)}`, positional[2].span);
        dtype = d.value;
      }
      return t(ev.ctx.op('fill', [], { value: v.value, shape, dtype }, call.span));
    }
    case 'rope_inv_freq': {
      // transformers' rotary inv_freq: 1 / theta^(arange(0, d, 2).float() / d), in float32.
      needArgs(2, 'rope_inv_freq(head_dim, theta)');
      const d = ev.intValue(val(positional[0]!.value), positional[0]!.span);
      const theta = val(positional[1]!.value);
      if (theta.kind !== 'num' || !isConst(theta.value) || !(theta.value > 0)) fail('type', `rope_inv_freq: theta must be a positive number, got ${describe(theta)}`, positional[1]!.span);
      return { kind: 'list', items: ropeInvFreq(d, theta.value as number).map((x) => num(x, false)) };
    }
    case 'py_index': {
      needArgs(2, 'py_index(i, n): Python\'s index i into n entries (negative counts from the end)');
      const iv = val(positional[0]!.value);
      const i = ev.intValue(iv, positional[0]!.span);
      const n = ev.intValue(val(positional[1]!.value), positional[1]!.span);
      if (i >= -n && i < n) return num(i < 0 ? n + i : i);
      const from = iv.kind === 'num' && iv.from ? `; the value comes from ${iv.from.join(' and ')}` : '';
      return fail(
        'config',
        `${printExpr(positional[0]!.value)} = ${i} is out of range: a Python index into ${n} entries must be in ${-n} .. ${n - 1}${from}`,
        positional[0]!.span,
      );
    }
  }

  let def;
  try {
    def = getOp(name);
  } catch {
    def = undefined;
  }
  if (!def?.surface) {
    const names = [...surfaceOps().map((o) => o.name), 'dim', 'reshape', 'fill', 'py_index', 'rope_inv_freq'];
    return fail('name', `unknown function '${name}'${suggest(name, names)}`, call.callee.span);
  }
  const surface = def.surface;
  const inputs: number[] = [];
  // Numbers among the inputs become scalars of a tensor input's dtype: where(m, 0, x).
  const pendingScalars: { index: number; value: number; span: Span }[] = [];
  let p = 0;
  for (const spec of surface.inputs) {
    const optional = spec.endsWith('?');
    const list = spec.endsWith('*');
    const key = spec.replace(/[?*]$/, '');
    const arg = named.get(key) ?? positional[p];
    if (!named.has(key) && positional[p]) p++;
    named.delete(key);
    if (!arg) {
      if (optional) continue;
      return fail('arity', `${name}: missing argument '${key}'; usage: ${surface.doc}`, call.span);
    }
    const v = val(arg.value);
    if (list) {
      if (v.kind !== 'list') fail('type', `${name}: '${key}' must be a list of tensors, got ${describe(v)}`, arg.span);
      for (const item of v.items) inputs.push(ev.tensor(item, arg.span));
    } else if (v.kind === 'num' && isConst(v.value)) {
      pendingScalars.push({ index: inputs.length, value: v.value, span: arg.value.span });
      inputs.push(-1);
    } else {
      inputs.push(ev.tensor(v, arg.value.span));
    }
  }
  if (pendingScalars.length > 0) {
    // Match a value operand, not a mask: the scalar in where(mask, 0, x) is x's dtype.
    const tensors = inputs.filter((i) => i >= 0);
    const like = tensors.find((i) => ev.ctx.builder.type(i).dtype !== 'bool') ?? tensors[0];
    if (like === undefined) return fail('type', `${name}: at least one argument must be a tensor`, call.span);
    for (const s of pendingScalars) inputs[s.index] = scalarLike(ev, s.value, like, s.span);
  }
  const attrs: Record<string, AttrValue> = {};
  const attrNames = Object.keys(surface.attrs);
  let a = 0;
  while (p < positional.length) {
    const key = attrNames[a++];
    if (!key) return fail('arity', `${name}: too many arguments; usage: ${surface.doc}`, positional[p]!.span);
    attrs[key] = attrValue(ev, name, key, surface.attrs[key]!, positional[p]!.value, scope);
    p++;
  }
  for (const [key, arg] of named) {
    const spec = surface.attrs[key];
    if (!spec) return fail('arity', `${name} has no argument '${key}'${suggest(key, [...attrNames, ...surface.inputs.map((s) => s.replace(/[?*]$/, ''))])}; usage: ${surface.doc}`, arg.name!.span);
    attrs[key] = attrValue(ev, name, key, spec, arg.value, scope);
  }
  for (const key of attrNames) {
    if (key in attrs) continue;
    const spec = surface.attrs[key]!;
    if (spec.default === undefined) return fail('arity', `${name}: missing argument '${key}'; usage: ${surface.doc}`, call.span);
    attrs[key] = spec.default;
  }
  return t(ev.ctx.op(name, inputs, attrs, call.span));
}

function attrValue(ev: Evaluator, op: string, key: string, spec: AttrSpec, e: Expr, scope: Scope): AttrValue {
  const v = ev.expr(e, scope);
  const bad = (what: string): never => fail('type', `${op}: '${key}' must be ${what}, got ${describe(v)}`, e.span);
  switch (spec.type) {
    case 'number':
      if (v.kind === 'num' && isConst(v.value)) return v.value;
      if (v.kind === 'num') return v.value;
      return bad('a number');
    case 'int':
      if (v.kind === 'num' && (!isConst(v.value) || Number.isInteger(v.value))) return v.value;
      return bad('an integer');
    case 'bool':
      return v.kind === 'bool' ? v.value : bad('true or false');
    case 'string':
      return v.kind === 'str' ? v.value : bad('a string');
    case 'dtype':
      return v.kind === 'dtype' ? v.value : bad('a dtype (f32, f16, bf16, i32, bool)');
    case 'dims':
      return dimList(v, e.span);
    case 'ints':
      if (v.kind === 'num') return [ev.intValue(v, e.span)];
      if (v.kind === 'list') return v.items.map((i) => ev.intValue(i, e.span));
      return bad('an integer or a list of integers');
  }
}
