// Configs: named records of numbers, strings, booleans and nested records, with inheritance.
// Values are expressions evaluated lazily in the record where they were written, so that an
// override (`text.hidden = 64`) flows into everything derived from it (`head_dim`, `projector_hidden`).
import type { ConfigDecl, ConfigItem, Expr, Ident, Span } from '../syntax/ast.js';
import { fail } from '../diagnostics.js';
import { addDims, divDims, isConst, mulDims, scaleDim, subDims } from '../ir/dims.js';
import type { ConfigRecord, Value } from './values.js';
import { describe, num, withOrigins } from './values.js';

export type ConfigTable = ReadonlyMap<string, ConfigDecl>;

function newRecord(name: string, parent: ConfigRecord | null, decl: ConfigDecl | null): ConfigRecord {
  return { kind: 'config', name, entries: new Map(), parent, decl };
}

/**
 * A fresh instance of a config declaration, its bases applied first (root first). The `extends`
 * chain is walked with a loop, not recursion, so thousands of links cannot overflow the stack.
 */
export function instantiateConfig(decl: ConfigDecl, table: ConfigTable, parent: ConfigRecord | null = null, name = decl.name.name, chain: string[] = []): ConfigRecord {
  const lineage: ConfigDecl[] = [];
  const seen = new Set(chain);
  for (let d: ConfigDecl | undefined = decl; d; ) {
    if (seen.has(d.name.name)) {
      fail('config', `config inheritance cycle: ${[...chain, ...lineage.map((l) => l.name.name), d.name.name].join(' -> ')}`, d.name.span);
    }
    seen.add(d.name.name);
    lineage.push(d);
    if (!d.base) break;
    const base = table.get(d.base.name);
    if (!base) fail('name', `unknown config '${d.base.name}'${suggest(d.base.name, [...table.keys()])}`, d.base.span);
    d = base;
  }
  const record = newRecord(name, parent, lineage[lineage.length - 1]!);
  // Nested configs (`vision = clip_vit_l14_336`) see the whole lineage as their chain, for cycles.
  const nextChain = [...chain, ...lineage.map((l) => l.name.name).reverse()];
  for (let i = lineage.length - 1; i >= 0; i--) applyItems(record, lineage[i]!.items, table, nextChain);
  return record;
}

function applyItems(record: ConfigRecord, items: readonly ConfigItem[], table: ConfigTable, chain: string[]): void {
  for (const item of items) {
    if (item.kind === 'block') {
      const target = navigate(record, [item.name], table, chain, true);
      applyItems(target, item.entries, table, chain);
      continue;
    }
    const parts = item.path.parts;
    const owner = parts.length > 1 ? navigate(record, parts.slice(0, -1), table, chain, false) : record;
    const key = parts[parts.length - 1]!;
    setEntry(owner, key.name, item.value, record, item.span, table, chain);
  }
}

function setEntry(owner: ConfigRecord, key: string, expr: Expr, scope: ConfigRecord, span: Span, table: ConfigTable, chain: string[]): void {
  // `vision = clip_vit_l14_336`: a bare name of a config (not a key in scope) nests a fresh copy.
  if (expr.kind === 'name' && table.has(expr.name) && lookupEntry(scope, expr.name) === null) {
    const nested = instantiateConfig(table.get(expr.name)!, table, owner, `${owner.name}.${key}`, chain);
    owner.entries.set(key, { kind: 'record', record: nested, span });
    return;
  }
  owner.entries.set(key, { kind: 'lazy', expr, scope, span });
}

/** Walks `a.b` down nested records, creating empty ones for blocks when asked. */
function navigate(record: ConfigRecord, path: readonly Ident[], table: ConfigTable, chain: string[], create: boolean): ConfigRecord {
  let cur = record;
  for (const part of path) {
    const entry = cur.entries.get(part.name);
    if (entry === undefined) {
      if (!create) fail('config', `config ${cur.name} has no record '${part.name}'${suggest(part.name, [...cur.entries.keys()])}`, part.span);
      const nested = newRecord(`${cur.name}.${part.name}`, cur, null);
      cur.entries.set(part.name, { kind: 'record', record: nested, span: part.span });
      cur = nested;
      continue;
    }
    if (entry.kind !== 'record') fail('config', `${cur.name}.${part.name} is a value, not a record`, part.span, [{ message: 'defined here', span: entry.span }]);
    cur = entry.record;
  }
  void table;
  void chain;
  return cur;
}

function lookupEntry(record: ConfigRecord, key: string): ConfigRecord | null {
  for (let r: ConfigRecord | null = record; r; r = r.parent) if (r.entries.has(key)) return r;
  return null;
}

/** The value of `key` in `record` (or, failing that, its enclosing records), evaluated once. */
export function configGet(record: ConfigRecord, key: string, span: Span): Value {
  const owner = lookupEntry(record, key);
  if (!owner) fail('name', `config ${record.name} has no value '${key}'${suggest(key, allKeys(record))}`, span);
  const entry = owner.entries.get(key)!;
  switch (entry.kind) {
    case 'record':
      return entry.record;
    case 'done':
      return entry.value;
    case 'evaluating':
      fail('config', `config value ${owner.name}.${key} depends on itself`, entry.span);
    // eslint-disable-next-line no-fallthrough
    case 'lazy': {
      settleDependencies(owner, key);
      const now = owner.entries.get(key)!;
      if (now.kind === 'done') return now.value;
      owner.entries.set(key, { kind: 'evaluating', span: entry.span });
      try {
        const value = evalConfigExpr(entry.expr, entry.scope);
        owner.entries.set(key, { kind: 'done', value, span: entry.span });
        return value;
      } catch (e) {
        owner.entries.set(key, entry);
        throw e;
      }
    }
  }
}

/** The record an expression names without evaluating anything (`c`, `c.text`), else null. */
function recordOf(e: Expr, scope: ConfigRecord): ConfigRecord | null {
  if (e.kind === 'name') {
    const entry = lookupEntry(scope, e.name)?.entries.get(e.name);
    return entry?.kind === 'record' ? entry.record : null;
  }
  if (e.kind === 'member') {
    const obj = recordOf(e.object, scope);
    const entry = obj ? lookupEntry(obj, e.property.name)?.entries.get(e.property.name) : undefined;
    return entry?.kind === 'record' ? entry.record : null;
  }
  return null;
}

/** The config entries an expression reads directly: (owner record, key) pairs. */
function directDependencies(expr: Expr, scope: ConfigRecord): [ConfigRecord, string][] {
  const out: [ConfigRecord, string][] = [];
  const visit = (e: Expr): void => {
    if (e.kind === 'name') {
      const owner = lookupEntry(scope, e.name);
      if (owner) out.push([owner, e.name]);
    } else if (e.kind === 'member') {
      const obj = recordOf(e.object, scope);
      const owner = obj ? lookupEntry(obj, e.property.name) : null;
      if (owner) out.push([owner, e.property.name]);
      else visit(e.object);
    } else if (e.kind === 'unary') visit(e.operand);
    else if (e.kind === 'binary') {
      visit(e.left);
      visit(e.right);
    } else if (e.kind === 'list') e.items.forEach(visit);
  };
  visit(expr);
  return out;
}

/**
 * Evaluates the lazy values `key` depends on, deepest first, with an explicit stack: a chain of
 * thousands of values (`v2 = v1 + 1`, ...) then evaluates one link at a time instead of
 * recursing through the whole chain and overflowing the JavaScript stack. Errors (and cycles)
 * are left for the ordinary evaluation to report, which now recurses only a step or two.
 */
function settleDependencies(owner: ConfigRecord, key: string): void {
  const stack: [ConfigRecord, string][] = [[owner, key]];
  const expanded = new Set<string>();
  const id = (r: ConfigRecord, k: string) => `${r.name}\u0000${k}`;
  const onStack = new Set<string>([id(owner, key)]);
  while (stack.length > 0) {
    const [r, k] = stack[stack.length - 1]!;
    const entry = r.entries.get(k);
    const pending =
      entry?.kind === 'lazy' && !expanded.has(id(r, k))
        ? directDependencies(entry.expr, entry.scope).filter(([dr, dk]) => dr.entries.get(dk)?.kind === 'lazy' && !onStack.has(id(dr, dk)))
        : [];
    if (entry?.kind === 'lazy') expanded.add(id(r, k));
    if (pending.length > 0) {
      for (const [dr, dk] of pending) onStack.add(id(dr, dk));
      stack.push(...pending);
      continue;
    }
    stack.pop();
    onStack.delete(id(r, k));
    if (stack.length > 0 && r.entries.get(k)?.kind === 'lazy') {
      try {
        configGet(r, k, entry!.span);
      } catch {
        // reported, with its proper context, when the value that needs it is evaluated
      }
    }
  }
}

function allKeys(record: ConfigRecord): string[] {
  const keys: string[] = [];
  for (let r: ConfigRecord | null = record; r; r = r.parent) keys.push(...r.entries.keys());
  return keys;
}

/** Config expressions: literals, names of other values, member access and arithmetic. */
export function evalConfigExpr(expr: Expr, scope: ConfigRecord): Value {
  switch (expr.kind) {
    case 'number':
      return num(expr.value, expr.isInt);
    case 'string':
      return { kind: 'str', value: expr.value };
    case 'bool':
      return { kind: 'bool', value: expr.value };
    case 'name':
      return configGet(scope, expr.name, expr.span);
    case 'member': {
      const obj = evalConfigExpr(expr.object, scope);
      if (obj.kind !== 'config') fail('config', `${describe(obj)} has no field '${expr.property.name}'`, expr.property.span);
      return configGet(obj, expr.property.name, expr.property.span);
    }
    case 'unary': {
      const v = evalConfigExpr(expr.operand, scope);
      if (expr.op === '-' && v.kind === 'num') return withOrigins(num(scaleDim(v.value, -1), v.isInt), v);
      if (expr.op === '!' && v.kind === 'bool') return withOrigins({ kind: 'bool', value: !v.value }, v);
      return fail('config', `cannot apply '${expr.op}' to ${describe(v)}`, expr.span);
    }
    case 'binary':
      return arith(expr.op, evalConfigExpr(expr.left, scope), evalConfigExpr(expr.right, scope), expr.span);
    case 'list':
      return { kind: 'list', items: expr.items.map((e) => evalConfigExpr(e, scope)) };
    default:
      return fail('config', `a config value must be a number, string, boolean, list or arithmetic; this is a ${expr.kind}`, expr.span);
  }
}

/** Arithmetic and comparisons on compile-time values; the result keeps its operands' origins. */
export function arith(op: string, a: Value, b: Value, span: Span): Value {
  return withOrigins(arithBare(op, a, b, span), a, b);
}

function arithBare(op: string, a: Value, b: Value, span: Span): Value {
  if (a.kind === 'num' && b.kind === 'num') {
    const isInt = a.isInt && b.isInt;
    const x = a.value;
    const y = b.value;
    switch (op) {
      case '+':
        return num(addDims(x, y), isInt);
      case '-':
        return num(subDims(x, y), isInt);
      case '*':
        return num(mulDims(x, y), isInt);
      case '/': {
        if (isConst(y) && y === 0) fail('config', 'division by zero', span);
        if (isInt) {
          const q = divDims(x, y);
          if (q !== null) return num(q, true);
        }
        if (isConst(x) && isConst(y)) return num(x / y, false);
        return fail('config', 'this division is not exact for every value of the symbolic dimensions', span);
      }
      case '%':
        if (isConst(x) && isConst(y) && y !== 0) return num(((x % y) + y) % y, isInt);
        return fail('config', "'%' needs two constant numbers, the right one non-zero", span);
    }
    if (isConst(x) && isConst(y)) {
      const r = op === '==' ? x === y : op === '!=' ? x !== y : op === '<' ? x < y : op === '<=' ? x <= y : op === '>' ? x > y : op === '>=' ? x >= y : null;
      if (r !== null) return { kind: 'bool', value: r };
    }
  }
  if (a.kind === 'bool' && b.kind === 'bool') {
    if (op === '&&') return { kind: 'bool', value: a.value && b.value };
    if (op === '||') return { kind: 'bool', value: a.value || b.value };
    if (op === '==') return { kind: 'bool', value: a.value === b.value };
    if (op === '!=') return { kind: 'bool', value: a.value !== b.value };
  }
  if (a.kind === 'str' && b.kind === 'str') {
    if (op === '+') return { kind: 'str', value: a.value + b.value };
    if (op === '==') return { kind: 'bool', value: a.value === b.value };
    if (op === '!=') return { kind: 'bool', value: a.value !== b.value };
  }
  return fail('config', `cannot apply '${op}' to ${describe(a)} and ${describe(b)}`, span);
}

/** A value given as text (`--set k=v`, a checkpoint's config.json): number, boolean or string. */
export type OverrideValue = number | boolean | string;

export function parseOverride(text: string): OverrideValue {
  const t = text.trim();
  if (t === 'true') return true;
  if (t === 'false') return false;
  if (/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/.test(t)) return Number(t);
  return t.replace(/^"(.*)"$/, '$1');
}

/** Sets `a.b.c` to a literal; the key must exist (a typo is an error, with suggestions). */
export function applyOverride(record: ConfigRecord, dotted: string, value: OverrideValue, origin: string, mustExist = true, pristine?: ConfigRecord): void {
  const parts = dotted.split('.');
  let cur = record;
  for (const p of parts.slice(0, -1)) {
    const e = cur.entries.get(p);
    if (!e || e.kind !== 'record') throw new OverrideError(`${origin}: config ${cur.name} has no record '${p}'${suggest(p, [...cur.entries.keys()])}`);
    cur = e.record;
  }
  const key = parts[parts.length - 1]!;
  const existing = cur.entries.get(key);
  if (!existing && mustExist) {
    throw new OverrideError(`${origin}: config ${cur.name} has no value '${key}'${suggest(key, [...cur.entries.keys()], flatKeys(record))}`);
  }
  if (existing?.kind === 'record') throw new OverrideError(`${origin}: ${cur.name}.${key} is a record; set one of its values instead`);
  if (existing && pristine) checkOverrideKind(pristine, dotted, value, origin);
  const span = existing?.span ?? { file: origin, start: 0, end: 0, line: 1, col: 1 };
  const from = [origin];
  const v: Value =
    typeof value === 'number' ? { kind: 'num', value, isInt: Number.isInteger(value), from } : typeof value === 'boolean' ? { kind: 'bool', value, from } : { kind: 'str', value, from };
  cur.entries.set(key, { kind: 'done', value: v, span });
}

/**
 * An override must be the kind of value the spec has there: a number for a number (an integer
 * for an integer), a boolean for a boolean. Caught here, `--set text.layers=abc` is a usage
 * error naming the key, not a type error deep inside the module the value flows into. The
 * spec's value is evaluated in `pristine`, an untouched instance of the same config, because
 * evaluating caches results, and the record being overridden must not cache a value computed
 * from what a later override replaces.
 */
function checkOverrideKind(pristine: ConfigRecord, dotted: string, value: OverrideValue, origin: string): void {
  const parts = dotted.split('.');
  const span = { file: origin, start: 0, end: 0, line: 1, col: 1 };
  let owner = pristine;
  let current: Value;
  try {
    for (const p of parts.slice(0, -1)) {
      const r = configGet(owner, p, span);
      if (r.kind !== 'config') return;
      owner = r;
    }
    current = configGet(owner, parts[parts.length - 1]!, span);
  } catch {
    return; // the spec's own value does not evaluate; the override replaces it
  }
  const want =
    current.kind === 'num' ? (current.isInt ? 'an integer' : 'a number') : current.kind === 'bool' ? 'true or false' : current.kind === 'str' ? 'a string' : null;
  const ok =
    current.kind === 'num'
      ? typeof value === 'number' && Number.isFinite(value) && (!current.isInt || Number.isSafeInteger(value))
      : current.kind === 'bool'
        ? typeof value === 'boolean'
        : current.kind === 'str'
          ? typeof value === 'string'
          : true;
  if (!ok && want) throw new OverrideKindError(`${origin}: ${owner.name}.${parts[parts.length - 1]} must be ${want} (the spec's value is ${describe(current)}), got ${JSON.stringify(value)}`);
}

export class OverrideError extends Error {}

/** An override of the wrong kind (a string where the spec has an integer): never ignored. */
export class OverrideKindError extends OverrideError {}

/** Every dotted key of a record, for listing and suggestions. */
export function flatKeys(record: ConfigRecord, prefix = ''): string[] {
  const out: string[] = [];
  for (const [k, e] of record.entries) {
    if (e.kind === 'record') out.push(...flatKeys(e.record, `${prefix}${k}.`));
    else out.push(`${prefix}${k}`);
  }
  return out;
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      // A swap of two neighbours is one typo, not two.
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  return d[a.length]![b.length]!;
}

/** ", did you mean ...?" for near misses (also matching a dotted key's last part). */
export function suggest(name: string, candidates: readonly string[], dotted: readonly string[] = []): string {
  const close = [...new Set(candidates)].filter((c) => editDistance(c, name) <= Math.max(1, Math.floor(name.length / 3)));
  const byTail = dotted.filter((k) => k.split('.').pop() === name);
  const all = [...new Set([...byTail, ...close])].slice(0, 4);
  return all.length ? `; did you mean ${all.map((c) => `'${c}'`).join(' or ')}?` : '';
}
