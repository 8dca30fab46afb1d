// Source text -> AST. The grammar (grammar/kiln.ne) does the parsing; this file turns every way
// it can fail into one 'parse' diagnostic that says what was found and what would have fitted.
import nearley from 'nearley';
import compiled, { EMPTY, KilnLexer, LexError, List } from '../../grammar/kiln.gen.js';
import type { KilnToken } from '../../grammar/kiln.gen.js';
import { DiagnosticError } from '../diagnostics.js';
import type { Span, SpecFile, TopDecl } from './ast.js';

/** Deepest nesting of brackets, and of objects in the syntax tree, accepted: later passes recurse
 *  over the tree, so a pathological input (`((((...`, `- - - ...`, `a+a+...`) must fail here
 *  rather than overflow their stacks. */
export const MAX_BRACKETS = 256;
export const MAX_DEPTH = 1024;
/** Larger inputs are refused outright: nearley keeps its chart for an unfinished construct, and a
 *  1 MB single expression already takes ~0.6 GB. Real specs are a few kilobytes. */
export const MAX_INPUT = 2 * 1024 * 1024;

const grammar = nearley.Grammar.fromCompiled(compiled);

// nearley's internals, which its typings leave out: the chart, to read what it expected.
interface State {
  rule: { name: string; symbols: unknown[] };
  dot: number;
  reference: number;
  isComplete: boolean;
}
interface Column {
  states: State[];
  scannable: State[];
}
interface Chart {
  table: Column[];
  current: number;
  reportError: () => string;
  reportLexerError: () => string;
}

function spanAt(file: string, text: string, offset: number): Span {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  return { file, start: offset, end: offset, line, col: offset - before.lastIndexOf('\n') };
}

function fail(message: string, span: Span): never {
  throw new DiagnosticError([{ code: 'parse', message, span }]);
}

/** Parses one spec file. Throws DiagnosticError (code 'parse') and nothing else, for any text. */
export function parseSpec(text: string, file: string): SpecFile {
  try {
    const decls = finish(run(text, file)) as TopDecl[];
    return { kind: 'file', file, decls, span: { file, start: 0, end: text.length, line: 1, col: 1 } };
  } catch (e) {
    if (e instanceof DiagnosticError) throw e;
    // A bug in the front end (or an exhausted stack): still a diagnostic, never a crash.
    fail(`internal parser error: ${e instanceof Error ? e.message : String(e)}`, spanAt(file, text, 0));
  }
}

/** How many parses the grammar finds for `text` (tests: anything but 1 on valid input is a bug). */
export function countParses(text: string, file = '<input>'): number {
  return feed(text, file).results.length;
}

function feed(text: string, file: string): nearley.Parser {
  if (text.length > MAX_INPUT) {
    fail(`input too large (${text.length} characters; at most ${MAX_INPUT})`, spanAt(file, text, 0));
  }
  const lexer = new KilnLexer(file, MAX_BRACKETS);
  const parser = new nearley.Parser(grammar, { lexer });
  const chart = parser as unknown as Chart;
  // Its own reports walk every expected state's history: slow, and we build a shorter one.
  chart.reportError = chart.reportLexerError = () => '';
  try {
    parser.feed(text);
  } catch (e) {
    if (lexer.failure instanceof LexError) fail(lexer.failure.message, lexer.failure.span);
    const token = (e as { token?: KilnToken }).token;
    if (!token) throw e;
    const column = chart.table[chart.current]!;
    // A newline ends the if statement, so an `else` on the next line reads as a name.
    const hint = /\}[ \t]*(\/\/[^\n]*)?\n\s*else\s*$/.test(text.slice(0, token.span.start)) ? " (an 'else' goes on the line of the '}' before it)" : '';
    fail(`unexpected ${describe(token)}; ${expected(column)}${hint}`, token.span);
  }
  if (parser.results.length === 0) {
    fail(`unexpected end of input; ${expected(chart.table[chart.current]!)}`, lexer.lastEnd);
  }
  return parser;
}

function run(text: string, file: string): unknown {
  const { results } = feed(text, file);
  if (results.length > 1) {
    fail(`internal error: the grammar is ambiguous here (${results.length} parses)`, spanAt(file, text, 0));
  }
  return results[0];
}

function describe(t: KilnToken): string {
  switch (t.type) {
    case 'ident':
      return `identifier '${t.text}'`;
    case 'kw':
      return `keyword '${t.text}'`;
    case 'number':
      return `number ${t.text}`;
    case 'string':
      return `string ${t.text.length > 32 ? t.text.slice(0, 29) + '..."' : t.text}`;
    case 'sep':
      return t.text === ';' ? "';'" : 'newline';
    default:
      return `'${t.text}'`;
  }
}

const BINARY_RULES = new Set(['Or', 'And', 'CmpOp', 'AddOp', 'MulOp']);
const EXPR_RULES = new Set(['Primary', 'UnaryOp']);
const WORDS = ['an identifier', 'an expression', 'a number', 'a string', 'an operator', 'a newline', 'end of input'];

/** "expected X" / "expected one of: X, Y", folding the many ways to start an expression or to
 *  continue one into a word each. */
function expected(column: Column): string {
  const quoted = new Set<string>();
  const words = new Set<string>();
  let operators = 0;
  for (const s of column.scannable) {
    const sym = s.rule.symbols[s.dot] as { literal?: string; type?: string };
    if (EXPR_RULES.has(s.rule.name)) words.add('an expression');
    else if (sym.type === 'ident' || sym.type === 'kw') words.add('an identifier');
    else if (sym.type === 'number') words.add('a number');
    else if (sym.type === 'string') words.add('a string');
    else if (sym.type === 'sep') words.add('a newline');
    else if (sym.literal !== undefined) {
      if (BINARY_RULES.has(s.rule.name)) operators++;
      quoted.add(`'${sym.literal}'`);
    }
  }
  if (words.has('an expression')) ['an identifier', 'a number', 'a string'].forEach((w) => words.delete(w));
  if (operators > 1) {
    words.add('an operator');
    for (const s of column.scannable) {
      const sym = s.rule.symbols[s.dot] as { literal?: string };
      if (BINARY_RULES.has(s.rule.name)) quoted.delete(`'${sym.literal}'`);
    }
  }
  if (column.states.some((s) => s.isComplete && s.reference === 0 && s.rule.name === grammar.start)) {
    words.add('end of input');
  }
  const all = [...[...quoted].sort(), ...WORDS.filter((w) => words.has(w))];
  if (all.length === 0) return 'expected end of input';
  return all.length === 1 ? `expected ${all[0]}` : `expected one of: ${all.join(', ')}`;
}

/** Turns the grammar's cons lists into arrays and checks the tree's depth, without recursion. */
function finish(root: unknown): unknown[] {
  const decls = toArray(root as List);
  const stack: [unknown, number][] = decls.map((d) => [d, 1]);
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (node === null || typeof node !== 'object') continue;
    const rec = node as Record<string, unknown>;
    if (depth > MAX_DEPTH) fail(`nested too deeply (more than ${MAX_DEPTH} levels)`, rec.span as Span);
    for (const key of Object.keys(rec)) {
      if (key === 'span') continue;
      let v = rec[key];
      if (v instanceof List) v = rec[key] = toArray(v);
      if (Array.isArray(v)) for (const item of v) stack.push([item, depth + 1]);
      else stack.push([v, depth + 1]);
    }
  }
  return decls;
}

function toArray(l: List): unknown[] {
  const out: unknown[] = [];
  for (let c: List | null = l; c && c !== EMPTY; c = c.prev) out.push(c.item);
  return out.reverse();
}
