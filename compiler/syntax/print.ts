// AST -> canonical source: 2-space indent, one member or statement per line, a blank line between
// top-level declarations, parentheses only where precedence needs them. parseSpec(printSpec(f))
// gives f back (spans aside). Comments are not in the AST, so they do not survive.
import type {
  Arg,
  ConfigItem,
  Expr,
  IfStmt,
  IndexItem,
  ModuleDecl,
  ModuleMember,
  Path,
  StageItem,
  Stmt,
  StringLit,
  TensorTypeExpr,
  TopDecl,
  SpecFile,
} from './ast.js';

export function printSpec(file: SpecFile): string {
  const out: string[] = [];
  let prev: TopDecl | null = null;
  for (const d of file.decls) {
    // Imports stay together; everything else is set off by a blank line.
    if (prev && !(prev.kind === 'import' && d.kind === 'import')) out.push('');
    out.push(...printDecl(d));
    prev = d;
  }
  return out.length ? out.join('\n') + '\n' : '';
}

function printDecl(d: TopDecl): string[] {
  switch (d.kind) {
    case 'import':
      return [`import ${printString(d.path)}`];
    case 'config': {
      const base = d.base ? ` extends ${d.base.name}` : '';
      return block(`config ${d.name.name}${base}`, d.items.flatMap(printConfigItem));
    }
    default:
      return printModule(d);
  }
}

/** `head {` body `}`, or `head {}` when there is no body. */
function block(head: string, body: string[]): string[] {
  if (body.length === 0) return [`${head} {}`];
  return [`${head} {`, ...body.map((l) => '  ' + l), '}'];
}

function printConfigItem(item: ConfigItem): string[] {
  if (item.kind === 'entry') return [`${printPath(item.path)} = ${printExpr(item.value)}`];
  return block(item.name.name, item.entries.flatMap(printConfigItem));
}

function printModule(m: ModuleDecl): string[] {
  const params = m.params.length ? `(${m.params.map((p) => p.name).join(', ')})` : '';
  return block(`${m.kind} ${m.name.name}${params}`, m.members.flatMap(printMember));
}

function printMember(m: ModuleMember): string[] {
  switch (m.kind) {
    case 'param': {
      const init = m.init ? ` init ${printExpr(m.init)}` : '';
      return [`param ${m.name.name}: ${printType(m.type)}${init}${ckpt(m.ckpt)}`];
    }
    case 'sub':
      return [`sub ${m.name.name} = ${m.module.name}(${printArgs(m.args)})${ckpt(m.ckpt)}`];
    case 'repeat': {
      const head = `repeat ${m.name.name}[${m.index.name} in ${printExpr(m.count)}]`;
      return [`${head} = ${m.module.name}(${printArgs(m.args)})${ckpt(m.ckpt)}`];
    }
    case 'input':
      return [`input ${m.name.name}: ${printType(m.type)}`];
    case 'forward': {
      const params = m.params ? `(${m.params.map((p) => p.name).join(', ')})` : '';
      return block(`forward${params}`, m.body.flatMap(printStmt));
    }
    case 'checkpoint':
      return [`checkpoint ${m.sub.name} from ${printString(m.prefix)}`];
    case 'unused':
      return [`unused ${m.patterns.map(printString).join(', ')}`];
    case 'buffer':
      return [`buffer ${printString(m.pattern)} = ${printExpr(m.value)}`];
    case 'tie':
      return [`tie ${printPath(m.param)} = ${printPath(m.to)}${m.when ? ` when ${printExpr(m.when)}` : ''}`];
    case 'train': {
      const freeze = m.freeze.length ? [`freeze ${m.freeze.map(printPath).join(', ')}`] : [];
      const stages = m.stages.flatMap((s) => block(`stage ${s.name.name}`, s.items.map(printStageItem)));
      return block('train', [...freeze, ...stages]);
    }
  }
}

function ckpt(s: StringLit | null): string {
  return s ? ` ckpt ${printString(s)}` : '';
}

function printType(t: TensorTypeExpr): string {
  return `${t.dtype}[${t.dims.map(printExpr).join(', ')}]`;
}

function printStageItem(item: StageItem): string {
  switch (item.kind) {
    case 'trainable':
    case 'freeze':
      return `${item.kind} ${item.paths.map(printPath).join(', ')}`;
    case 'optimizer':
    case 'schedule':
      return `${item.kind} ${printExpr(item.call)}`;
    case 'setting':
      return `${item.name.name} = ${printExpr(item.value)}`;
  }
}

function printStmt(s: Stmt): string[] {
  switch (s.kind) {
    case 'let':
      return [`let ${s.name.name} = ${printExpr(s.value)}`];
    case 'assign':
      return [`${s.name.name} = ${printExpr(s.value)}`];
    case 'for':
      return block(`for ${s.variable.name} in ${printExpr(s.from)} .. ${printExpr(s.to)}`, s.body.flatMap(printStmt));
    case 'if':
      return printIf(s);
    case 'return':
      return [`return ${printExpr(s.value)}`];
    case 'output':
      return [`output ${s.name.name} = ${printExpr(s.value)}`];
    case 'loss': {
      const weight = s.weight ? ` weight ${printExpr(s.weight)}` : '';
      return [`loss ${s.name.name}${weight} = ${printExpr(s.value)}`];
    }
  }
}

/** `else` stays on the closing brace's line: the grammar ends the statement at a newline there. */
function printIf(s: IfStmt): string[] {
  const lines = block(`if ${printExpr(s.cond)}`, s.then.flatMap(printStmt));
  if (s.else === null) return lines;
  const only = s.else.length === 1 ? s.else[0]! : null;
  const tail = only?.kind === 'if' ? printIf(only) : block('', s.else.flatMap(printStmt)).map((l, i) => (i === 0 ? l.trimStart() : l));
  const last = lines.pop()!;
  return [...lines, `${last} else ${tail[0]}`, ...tail.slice(1)];
}

function printPath(p: Path): string {
  return p.parts.map((i) => i.name).join('.');
}

// ---- expressions ----

const BINARY_PREC: Record<string, number> = {
  '||': 1,
  '&&': 2,
  '==': 3,
  '!=': 3,
  '<': 3,
  '<=': 3,
  '>': 3,
  '>=': 3,
  '+': 4,
  '-': 4,
  '*': 5,
  '/': 5,
  '%': 5,
  '@': 5,
};
const UNARY = 6;
const POSTFIX = 7;

function prec(e: Expr): number {
  if (e.kind === 'binary') return BINARY_PREC[e.op]!;
  if (e.kind === 'unary') return UNARY;
  return POSTFIX;
}

/** e, parenthesised when its own precedence is below `min`. */
function operand(e: Expr, min: number): string {
  const s = printExpr(e);
  return prec(e) < min ? `(${s})` : s;
}

export function printExpr(e: Expr): string {
  switch (e.kind) {
    case 'number':
      return e.text;
    case 'string':
      return printString(e);
    case 'bool':
      return e.value ? 'true' : 'false';
    case 'name':
      return e.name;
    case 'member':
      return `${operand(e.object, POSTFIX)}.${e.property.name}`;
    case 'call':
      return `${operand(e.callee, POSTFIX)}(${printArgs(e.args)})`;
    case 'index':
      return `${operand(e.object, POSTFIX)}[${e.items.map(printIndexItem).join(', ')}]`;
    case 'unary':
      return `${e.op}${operand(e.operand, UNARY)}`;
    case 'binary': {
      // Left-associative: a right operand of the same precedence needs parentheses.
      const p = BINARY_PREC[e.op]!;
      return `${operand(e.left, p)} ${e.op} ${operand(e.right, p + 1)}`;
    }
    case 'list':
      return `[${e.items.map(printExpr).join(', ')}]`;
  }
}

function printArgs(args: Arg[]): string {
  return args.map((a) => (a.name ? `${a.name.name} = ${printExpr(a.value)}` : printExpr(a.value))).join(', ');
}

function printIndexItem(item: IndexItem): string {
  if (item.kind === 'at') return printExpr(item.index);
  return `${item.start ? printExpr(item.start) : ''}:${item.stop ? printExpr(item.stop) : ''}`;
}

// Control characters, line separators and lone surrogates are escaped so the output is plain,
// valid UTF-8 text that reads back as the same string.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const ESCAPE = /[\\"\u0000-\u001f\u007f-\u009f\u2028\u2029]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
const SHORT: Record<string, string> = { '\\': '\\\\', '"': '\\"', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function printString(s: StringLit): string {
  const body = s.value.replace(ESCAPE, (c) => SHORT[c] ?? `\\u{${c.charCodeAt(0).toString(16)}}`);
  return `"${body}"`;
}
