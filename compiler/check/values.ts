// The values a spec expression can evaluate to while the graph is built. Config arithmetic and
// dims are compile-time; tensors are graph nodes.
import type { ConfigDecl, ModuleDecl, Span } from '../syntax/ast.js';
import type { Dim } from '../ir/dims.js';
import type { DType } from '../ir/graph.js';
import { dimToString, isConst } from '../ir/dims.js';

export interface ConfigRecord {
  readonly kind: 'config';
  /** e.g. `vicuna7b.vision`, for messages. */
  readonly name: string;
  readonly entries: Map<string, ConfigEntryState>;
  /** names not found here are looked up in the parent (a nested record sees its config). */
  readonly parent: ConfigRecord | null;
  readonly decl: ConfigDecl | null;
}

export type ConfigEntryState =
  | { kind: 'lazy'; expr: import('../syntax/ast.js').Expr; scope: ConfigRecord; span: Span }
  | { kind: 'evaluating'; span: Span }
  | { kind: 'done'; value: Value; span: Span }
  | { kind: 'record'; record: ConfigRecord; span: Span };

export interface ModuleInstance {
  readonly kind: 'module';
  readonly decl: ModuleDecl;
  /** spec path: `model.layers.0.self_attn`. */
  readonly path: string;
  /** checkpoint prefix: `model.layers.0.self_attn.` ('' at the top). */
  readonly ckpt: string;
  readonly args: Map<string, Value>;
  /** param and submodule members by name. */
  readonly members: Map<string, Value>;
}

export type Value =
  | { kind: 'tensor'; id: number }
  /**
   * a compile-time number or symbolic dim; isInt false for floats. `from` names where an
   * outside value came from (`--set text.heads=5`, a config.json field), kept through arithmetic
   * so an error far downstream can name the origin, not only the spec line it flowed into.
   */
  | { kind: 'num'; value: Dim; isInt: boolean; from?: readonly string[] }
  | { kind: 'str'; value: string; from?: readonly string[] }
  | { kind: 'bool'; value: boolean; from?: readonly string[] }
  | { kind: 'dtype'; value: DType }
  | { kind: 'list'; items: Value[] }
  | ConfigRecord
  | ModuleInstance
  | { kind: 'modules'; items: ModuleInstance[]; name: string };

/** The origins of a value set from outside the spec, as a message suffix ('' for spec values). */
export function originOf(v: Value): string {
  const from = 'from' in v ? v.from : undefined;
  return from && from.length > 0 ? ` (from ${from.join(' and ')})` : '';
}

/** The union of the operands' origins, on a value computed from them. */
export function withOrigins(v: Value, ...operands: Value[]): Value {
  const from = [...new Set(operands.flatMap((o) => ('from' in o && o.from ? o.from : [])))];
  return from.length > 0 && (v.kind === 'num' || v.kind === 'str' || v.kind === 'bool') ? { ...v, from } : v;
}

export function describe(v: Value): string {
  return describeBare(v) + originOf(v);
}

function describeBare(v: Value): string {
  switch (v.kind) {
    case 'tensor':
      return 'a tensor';
    case 'num':
      return isConst(v.value) ? `the number ${v.value}` : `the dimension ${dimToString(v.value)}`;
    case 'str':
      return `the string "${v.value}"`;
    case 'bool':
      return `the boolean ${v.value}`;
    case 'dtype':
      return `the dtype ${v.value}`;
    case 'list':
      return 'a list';
    case 'config':
      return `the config ${v.name}`;
    case 'module':
      return `the module ${v.path || v.decl.name.name}`;
    case 'modules':
      return `the repeated module ${v.name}`;
  }
}

export const num = (value: Dim, isInt = true): Value => ({ kind: 'num', value, isInt });
