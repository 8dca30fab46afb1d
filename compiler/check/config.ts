// Configs: named records of numbers, strings, booleans and nested records, with inheritance.
// Values are expressions evaluated lazily in the record where they were written, so that an
// override (`text.hidden = 64`) flows into everything derived from it (`head_dim`, `projector_hidden`).
import type { ConfigDecl, ConfigItem, Expr, Ident, Span } from '../syntax/ast.js';
import { fail } from '../diagnostics.js';
import { addDims, divDims, isConst, mulDims, scaleDim, subDims } from '../ir/dims.js';
import type { ConfigRecord, Value } from './values.js';
import { describe, num } from './values.js';

export type ConfigTable = ReadonlyMap<string, ConfigDecl>;

function newRecord(name: string, parent: ConfigRecord | null, decl: ConfigDecl | null): ConfigRecord {
  return { kind: 'config', name, entries: new Map(), parent, decl };
}

/** A fresh instance of a config declaration, its base applied first. */
export function instantiateConfig(decl: ConfigDecl, table: ConfigTable, parent: ConfigRecord | null = null, name = decl.name.name, chain: string[] = []): ConfigRecord {
  if (chain.includes(decl.name.name)) {
    fail('config', `config inheritance cycle: ${[...chain, decl.name.name].join(' -> ')}`, decl.name.span);
  }
  const nextChain = [...chain, decl.name.name];
  let record: ConfigRecord;
  if (decl.base) {
    const base = table.get(decl.base.name);
    if (!base) fail('name', `unknown config '${decl.base.name}'${suggest(decl.base.name, [...table.keys()])}`, decl.base.span);
    record = instantiateConfig(base, table, parent, name, nextChain);
  } else {
    record = newRecord(name, parent, decl);
  }
  applyItems(record, decl.items, table, nextChain);
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
      if (expr.op === '-' && v.kind === 'num') return num(scaleDim(v.value, -1), v.isInt);
      if (expr.op === '!' && v.kind === 'bool') return { kind: 'bool', value: !v.value };
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

/** Arithmetic and comparisons on compile-time values (numbers and symbolic dims). */
export function arith(op: string, a: Value, b: Value, span: Span): Value {
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
export function applyOverride(record: ConfigRecord, dotted: string, value: OverrideValue, origin: string, mustExist = true): void {
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
  const span = existing?.span ?? { file: origin, start: 0, end: 0, line: 1, col: 1 };
  const v: Value =
    typeof value === 'number' ? { kind: 'num', value, isInt: Number.isInteger(value), origin } : typeof value === 'boolean' ? { kind: 'bool', value } : { kind: 'str', value };
  cur.entries.set(key, { kind: 'done', value: v, span });
}

export class OverrideError extends Error {}

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
