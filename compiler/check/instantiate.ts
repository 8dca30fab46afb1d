// Module instances: parameters become `param` nodes named by their checkpoint path, submodules
// and repeated stacks become nested instances, and calling an instance inlines its forward.
import type { Arg, Expr, ModuleDecl, Span, TensorTypeExpr } from '../syntax/ast.js';
import { fail } from '../diagnostics.js';
import type { Dim } from '../ir/dims.js';
import { isConst, shapesEqual, shapeToString, sym } from '../ir/dims.js';
import type { DType, Initializer } from '../ir/graph.js';
import { suggest } from './config.js';
import type { BuildContext, PendingTie } from './context.js';
import { Evaluator, Scope } from './evaluate.js';
import type { ModuleInstance, Value } from './values.js';
import { describe, num } from './values.js';

const MAX_CALL_DEPTH = 64;
/** repeats and loops unroll into the graph; past this a value is surely the wrong one (a vocab size). */
export const MAX_UNROLL = 4096;

export class Instantiator {
  readonly ev: Evaluator;
  constructor(readonly ctx: BuildContext) {
    this.ev = new Evaluator(ctx, (inst, args, span) => this.call(inst, args, span));
  }

  lookupModule(name: string, span: Span): ModuleDecl {
    const decl = this.ctx.modules.get(name);
    if (!decl || decl.kind !== 'module') {
      return fail('name', `unknown module '${name}'${suggest(name, [...this.ctx.modules.keys()])}`, span);
    }
    return decl;
  }

  /** Binds arguments to a module's parameters (positional, then by name). */
  bindArgs(decl: ModuleDecl, args: readonly Arg[], scope: Scope, span: Span): Map<string, Value> {
    const bound = new Map<string, Value>();
    const positional = args.filter((a) => !a.name);
    if (positional.length > decl.params.length) fail('arity', `${decl.name.name} takes ${decl.params.length} argument(s), got ${positional.length}`, span, [{ message: 'declared here', span: decl.name.span }]);
    positional.forEach((a, i) => bound.set(decl.params[i]!.name, this.ev.expr(a.value, scope)));
    for (const a of args.filter((x) => x.name)) {
      if (!decl.params.some((p) => p.name === a.name!.name)) fail('arity', `${decl.name.name} has no parameter '${a.name!.name}'`, a.name!.span);
      bound.set(a.name!.name, this.ev.expr(a.value, scope));
    }
    for (const p of decl.params) if (!bound.has(p.name)) fail('arity', `${decl.name.name}: missing argument '${p.name}'`, span, [{ message: 'declared here', span: p.span }]);
    return bound;
  }

  /** Creates the members of an instance (its parameters, submodules and stacks). */
  instantiate(decl: ModuleDecl, args: Map<string, Value>, path: string, ckpt: string, outer: readonly string[] = []): ModuleInstance {
    const inst: ModuleInstance = { kind: 'module', decl, path, ckpt, args, members: new Map() };
    // The module types from the model down to this one (the optimiser's weight-decay split asks
    // whether a parameter lies inside a LayerNorm, as the Trainer asks of nn.LayerNorm).
    const modules = [...outer, decl.name.name];
    const scope = this.memberScope(inst);
    const join = (p: string) => (path ? `${path}.${p}` : p);
    for (const m of decl.members) {
      switch (m.kind) {
        case 'param': {
          const name = ckpt + (m.ckpt ? m.ckpt.value : m.name.name);
          const shape = this.dims(m.type, scope, false);
          const tie = this.ctx.ties.get(join(m.name.name));
          if (tie) {
            inst.members.set(m.name.name, { kind: 'tensor', id: this.tiedTo(tie, join(m.name.name), name, m.type.dtype, shape) });
            break;
          }
          const prior = this.ctx.paramNames.get(name);
          if (prior) fail('name', `two parameters load from the checkpoint name '${name}'`, m.span, [{ message: 'the other one', span: prior }]);
          this.ctx.paramNames.set(name, m.span);
          const node = this.ctx.builder.add('param', [], { name, dtype: m.type.dtype, shape }, { span: m.span, label: name, ...(path ? { scope: path } : {}) });
          this.ctx.params.push({ name, node, init: this.initializer(m.init, scope), path: join(m.name.name), modules, span: m.span });
          inst.members.set(m.name.name, { kind: 'tensor', id: node });
          break;
        }
        case 'sub': {
          const sub = this.lookupModule(m.module.name, m.module.span);
          const subCkpt = m.ckpt ? m.ckpt.value : m.name.name;
          const child = this.instantiate(sub, this.bindArgs(sub, m.args, scope, m.span), join(m.name.name), subCkpt === '' ? ckpt : `${ckpt}${subCkpt}.`, modules);
          inst.members.set(m.name.name, child);
          break;
        }
        case 'repeat': {
          const sub = this.lookupModule(m.module.name, m.module.span);
          const count = this.ev.intValue(this.ev.expr(m.count, scope), m.count.span);
          if (count < 0) fail('config', `repeat count must be >= 0, got ${count}`, m.count.span);
          if (count > MAX_UNROLL) fail('config', `repeat count ${count} is more than ${MAX_UNROLL} copies; is the right config value used?`, m.count.span);
          const pattern = m.ckpt ? m.ckpt.value : `${m.name.name}.{${m.index.name}}`;
          const hole = `{${m.index.name}}`;
          if (!pattern.includes(hole)) fail('name', `the checkpoint name of a repeat must contain ${hole}, so each layer gets its own`, m.ckpt?.span ?? m.span);
          const items: ModuleInstance[] = [];
          for (let i = 0; i < count; i++) {
            const inner = new Scope(scope);
            inner.define(m.index.name, num(i));
            const c = pattern.split(hole).join(String(i));
            items.push(this.instantiate(sub, this.bindArgs(sub, m.args, inner, m.span), join(`${m.name.name}.${i}`), `${ckpt}${c}.`, modules));
          }
          inst.members.set(m.name.name, { kind: 'modules', items, name: join(m.name.name) });
          break;
        }
        default:
          break;
      }
    }
    return inst;
  }

  /** The node of the parameter a tie makes `path` (checkpoint `name`) be; it must match in dtype and shape. */
  private tiedTo(tie: PendingTie, path: string, name: string, dtype: DType, shape: readonly Dim[]): number {
    const target = this.ctx.params.find((p) => p.path === tie.to);
    if (!target) return fail('name', `tie: '${tie.to}' is not a parameter declared before '${path}'`, tie.span);
    const t = this.ctx.builder.type(target.node);
    if (t.dtype !== dtype || !shapesEqual(t.shape, shape)) {
      fail('shape', `tie: ${path} is ${dtype}${shapeToString(shape)} but ${tie.to} is ${t.dtype}${shapeToString(t.shape)}`, tie.span);
    }
    tie.used = true;
    this.ctx.tied.push({ name, to: target.name });
    return target.node;
  }

  memberScope(inst: ModuleInstance): Scope {
    const scope = new Scope(null);
    for (const [k, v] of inst.args) scope.define(k, v);
    for (const [k, v] of inst.members) scope.define(k, v);
    return scope;
  }

  /** Inlines the instance's forward for these arguments. */
  call(inst: ModuleInstance, args: Value[], span: Span): Value {
    const fwd = inst.decl.members.find((m) => m.kind === 'forward');
    if (!fwd || fwd.kind !== 'forward' || !fwd.params) return fail('type', `module ${inst.decl.name.name} has no forward(...) to call`, span);
    if (args.length !== fwd.params.length) fail('arity', `${inst.decl.name.name} takes ${fwd.params.length} input(s), got ${args.length}`, span, [{ message: 'forward declared here', span: fwd.span }]);
    if (++this.ctx.depth > MAX_CALL_DEPTH) fail('recursion', `modules nest deeper than ${MAX_CALL_DEPTH} calls (a module calling itself?)`, span);
    const outer = this.ctx.builder.scope;
    this.ctx.builder.scope = inst.path || undefined;
    try {
      const scope = new Scope(this.memberScope(inst));
      fwd.params.forEach((p, i) => scope.define(p.name, args[i]!));
      const r = this.ev.block(fwd.body, scope, {});
      if (!r) return fail('type', `forward of ${inst.decl.name.name} ends without 'return'`, fwd.span);
      return r;
    } finally {
      this.ctx.depth--;
      this.ctx.builder.scope = outer;
    }
  }

  /** Dims of a declared type; unbound names become symbolic dims only where allowed (inputs). */
  dims(type: TensorTypeExpr, scope: Scope, allowSymbols: boolean, symbols?: string[]): Dim[] {
    const dims = type.dims.map((d) => {
      if (d.kind === 'name' && !scope.has(d.name)) {
        if (!allowSymbols) fail('name', `unknown name '${d.name}' in a parameter shape (parameters have fixed shapes)`, d.span);
        if (symbols && !symbols.includes(d.name)) symbols.push(d.name);
        return sym(d.name);
      }
      const v = this.ev.expr(d, scope);
      if (v.kind !== 'num' || (isConst(v.value) && (!Number.isInteger(v.value) || v.value < 0))) {
        return fail('shape', `a dimension must be a non-negative integer, got ${describe(v)}`, d.span);
      }
      // Past 2^53 a double no longer counts every integer: the dim (or the counts and byte sizes
      // built from it) would be silently rounded.
      if (isConst(v.value) && !Number.isSafeInteger(v.value)) {
        return fail('shape', `a dimension must be at most 2^53 - 1 (${Number.MAX_SAFE_INTEGER}), got ${describe(v)}`, d.span);
      }
      return v.value;
    });
    if (dims.every(isConst)) {
      const count = dims.reduce<number>((a, d) => a * (d as number), 1);
      if (!Number.isSafeInteger(count))
        fail('shape', `a tensor of [${dims.join(', ')}] has ${count.toExponential(3)} elements, more than 2^53 - 1: its sizes cannot be counted exactly`, type.span);
    }
    return dims;
  }

  initializer(e: Expr | null, scope: Scope): Initializer {
    if (!e) return { kind: 'normal', std: 0.02, mean: 0 };
    const name = e.kind === 'name' ? e.name : e.kind === 'call' && e.callee.kind === 'name' ? e.callee.name : '';
    const args = e.kind === 'call' ? e.args.map((a) => this.ev.expr(a.value, scope)) : [];
    const nums = args.map((a, i) => {
      if (a.kind !== 'num' || !isConst(a.value)) fail('type', `initialiser arguments are numbers; argument ${i + 1} is ${describe(a)}`, e.span);
      return a.value;
    });
    switch (name) {
      case 'zeros':
        return { kind: 'zeros' };
      case 'ones':
        return { kind: 'ones' };
      case 'normal':
        return { kind: 'normal', std: nums[0] ?? 0.02, mean: nums[1] ?? 0 };
      case 'uniform':
        return { kind: 'uniform', low: nums[0] ?? -1, high: nums[1] ?? 1 };
      case 'constant':
        if (nums[0] === undefined) fail('arity', 'constant(value) needs a value', e.span);
        return { kind: 'constant', value: nums[0] };
      default:
        return fail('name', `unknown initialiser '${name}'; use zeros, ones, normal(std, mean), uniform(low, high) or constant(value)`, e.span);
    }
  }
}

