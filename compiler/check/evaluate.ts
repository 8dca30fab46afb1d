// Evaluates forward bodies: statements are unrolled, compile-time values folded, and every
// tensor expression becomes graph nodes.
import type { Expr, Span, Stmt } from '../syntax/ast.js';
import { fail } from '../diagnostics.js';
import { isConst } from '../ir/dims.js';
import type { DType } from '../ir/graph.js';
import { arith, configGet } from './config.js';
import type { BuildContext } from './context.js';
import type { ModuleInstance, Value } from './values.js';
import { describe, num } from './values.js';
import { callBuiltin, scalarLike, sliceTensor } from './builtins.js';

/** Lexical scopes: a forward body's lets over the module's members and arguments. */
export class Scope {
  private readonly vars = new Map<string, Value>();
  constructor(private readonly parent: Scope | null) {}
  get(name: string): Value | undefined {
    return this.vars.get(name) ?? this.parent?.get(name);
  }
  has(name: string): boolean {
    return this.vars.has(name) || (this.parent?.has(name) ?? false);
  }
  define(name: string, v: Value): void {
    this.vars.set(name, v);
  }
  assign(name: string, v: Value): boolean {
    if (this.vars.has(name)) {
      this.vars.set(name, v);
      return true;
    }
    return this.parent?.assign(name, v) ?? false;
  }
  names(): string[] {
    return [...this.vars.keys(), ...(this.parent?.names() ?? [])];
  }
}

/** loops unroll into the graph: past this a bound is surely the wrong config value. */
const MAX_LOOP = 4096;

const DTYPES = new Set(['f32', 'f16', 'bf16', 'i32', 'bool']);

const BINARY_OPS: Record<string, string> = {
  '+': 'add',
  '-': 'sub',
  '*': 'mul',
  '/': 'div',
  '%': 'remainder',
  '@': 'matmul',
  '==': 'eq',
  '!=': 'ne',
  '<': 'lt',
  '<=': 'le',
  '>': 'gt',
  '>=': 'ge',
};

export interface ForwardHooks {
  output?(name: string, value: number, span: Span): void;
  loss?(name: string, value: number, weight: number, span: Span): void;
}

export class Evaluator {
  constructor(
    readonly ctx: BuildContext,
    readonly callModule: (inst: ModuleInstance, args: Value[], span: Span) => Value,
  ) {}

  expr(e: Expr, scope: Scope): Value {
    switch (e.kind) {
      case 'number':
        return num(e.value, e.isInt);
      case 'string':
        return { kind: 'str', value: e.value };
      case 'bool':
        return { kind: 'bool', value: e.value };
      case 'name': {
        const v = scope.get(e.name);
        if (v) return v;
        if (DTYPES.has(e.name)) return { kind: 'dtype', value: e.name as DType };
        return fail('name', `unknown name '${e.name}'`, e.span);
      }
      case 'member':
        return this.member(this.expr(e.object, scope), e.property.name, e.property.span);
      case 'list':
        return { kind: 'list', items: e.items.map((i) => this.expr(i, scope)) };
      case 'unary': {
        const v = this.expr(e.operand, scope);
        if (v.kind === 'tensor' && e.op === '-') return { kind: 'tensor', id: this.ctx.op('neg', [v.id], {}, e.span) };
        if (v.kind === 'num' && e.op === '-') return arith('*', v, num(-1), e.span);
        if (v.kind === 'bool' && e.op === '!') return { kind: 'bool', value: !v.value };
        return fail('type', `cannot apply '${e.op}' to ${describe(v)}`, e.span);
      }
      case 'binary': {
        const a = this.expr(e.left, scope);
        const b = this.expr(e.right, scope);
        if (a.kind === 'tensor' || b.kind === 'tensor') {
          const op = BINARY_OPS[e.op];
          if (!op) return fail('type', `'${e.op}' does not apply to tensors`, e.span);
          const x = this.asTensor(a, b, e.left.span);
          const y = this.asTensor(b, a, e.right.span);
          return { kind: 'tensor', id: this.ctx.op(op, [x, y], {}, e.span) };
        }
        return arith(e.op, a, b, e.span);
      }
      case 'index': {
        const obj = this.expr(e.object, scope);
        if (obj.kind === 'modules' || obj.kind === 'list') {
          const only = e.items[0];
          if (e.items.length !== 1 || only?.kind !== 'at') return fail('type', `${describe(obj)} takes one index`, e.span);
          const i = this.intValue(this.expr(only.index, scope), only.span);
          const items = obj.items as Value[];
          const k = i < 0 ? items.length + i : i;
          if (k < 0 || k >= items.length) fail('index', `index ${i} is out of range for ${describe(obj)} of length ${items.length}`, only.span);
          return items[k]!;
        }
        if (obj.kind !== 'tensor') return fail('type', `cannot index ${describe(obj)}`, e.span);
        return { kind: 'tensor', id: sliceTensor(this, obj.id, e.items, scope, e.span) };
      }
      case 'call': {
        if (e.callee.kind === 'name' && !scope.has(e.callee.name)) return callBuiltin(this, e.callee.name, e, scope);
        const callee = this.expr(e.callee, scope);
        if (callee.kind !== 'module') return fail('type', `${describe(callee)} cannot be called`, e.callee.span);
        for (const a of e.args) if (a.name) fail('type', `modules take positional arguments only`, a.span);
        return this.callModule(
          callee,
          e.args.map((a) => this.expr(a.value, scope)),
          e.span,
        );
      }
    }
  }

  member(obj: Value, name: string, span: Span): Value {
    if (obj.kind === 'config') return configGet(obj, name, span);
    if (obj.kind === 'module') {
      const m = obj.members.get(name);
      if (!m) return fail('name', `${describe(obj)} has no member '${name}' (it has ${[...obj.members.keys()].join(', ') || 'none'})`, span);
      return m;
    }
    return fail('type', `${describe(obj)} has no field '${name}'`, span);
  }

  /** A tensor operand; a number beside a tensor becomes a scalar of that tensor's dtype. */
  asTensor(v: Value, other: Value, span: Span): number {
    if (v.kind === 'tensor') return v.id;
    if (v.kind === 'num' && isConst(v.value) && other.kind === 'tensor') return scalarLike(this, v.value, other.id, span);
    return fail('type', `expected a tensor or a number here, got ${describe(v)}`, span);
  }

  tensor(v: Value, span: Span): number {
    if (v.kind !== 'tensor') fail('type', `expected a tensor, got ${describe(v)}`, span);
    return v.id;
  }

  intValue(v: Value, span: Span): number {
    if (v.kind !== 'num' || !isConst(v.value) || !Number.isInteger(v.value)) fail('type', `expected an integer, got ${describe(v)}`, span);
    return v.value;
  }

  /** Runs statements; returns the `return` value, or null when the body ends without one. */
  block(stmts: readonly Stmt[], scope: Scope, hooks: ForwardHooks): Value | null {
    for (const s of stmts) {
      switch (s.kind) {
        case 'let':
          scope.define(s.name.name, this.expr(s.value, scope));
          break;
        case 'assign':
          if (!scope.assign(s.name.name, this.expr(s.value, scope))) fail('name', `'${s.name.name}' is not defined; use 'let' to define it`, s.name.span);
          break;
        case 'for': {
          const from = this.intValue(this.expr(s.from, scope), s.from.span);
          const to = this.intValue(this.expr(s.to, scope), s.to.span);
          if (to - from > MAX_LOOP) fail('config', `the loop runs ${to - from} times, more than ${MAX_LOOP}; loops unroll into the graph`, s.span);
          for (let i = from; i < to; i++) {
            const inner = new Scope(scope);
            inner.define(s.variable.name, num(i));
            const r = this.block(s.body, inner, hooks);
            if (r) return r;
          }
          break;
        }
        case 'if': {
          // Decided now, like a loop bound: the graph has one branch, never a run-time select.
          const cond = this.expr(s.cond, scope);
          if (cond.kind !== 'bool') {
            const why = cond.kind === 'tensor' ? '; a tensor condition would need both branches in the graph: use where(cond, a, b)' : '';
            fail('type', `if: the condition must be true or false when the graph is built (a config value), got ${describe(cond)}${why}`, s.cond.span);
          }
          const body = cond.value ? s.then : s.else;
          if (body) {
            const r = this.block(body, new Scope(scope), hooks);
            if (r) return r;
          }
          break;
        }
        case 'return':
          return this.expr(s.value, scope);
        case 'output': {
          if (!hooks.output) fail('syntax', "'output' is allowed in a model's forward only", s.span);
          hooks.output(s.name.name, this.tensor(this.expr(s.value, scope), s.value.span), s.span);
          break;
        }
        case 'loss': {
          if (!hooks.loss) fail('syntax', "'loss' is allowed in a model's forward only", s.span);
          let weight = 1;
          if (s.weight) {
            const w = this.expr(s.weight, scope);
            if (w.kind !== 'num' || !isConst(w.value)) fail('type', `a loss weight must be a number, got ${describe(w)}`, s.weight.span);
            weight = w.value;
          }
          hooks.loss(s.name.name, this.tensor(this.expr(s.value, scope), s.value.span), weight, s.span);
          break;
        }
      }
    }
    return null;
  }
}

