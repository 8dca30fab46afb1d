# The Kiln spec language. Compiled by `npm run grammar` into kiln.gen.js (never edit that).
#
# Newlines separate statements, so the lexer wrapper below decides which ones matter before the
# parser sees them: runs of newlines and ';' become one %sep token; a separator inside ( ) or [ ],
# after a token that cannot end an item (',', '=', an operator, an opening bracket), before '}'
# and at either end of the file is dropped. The grammar then needs %sep only between items and
# stays unambiguous (parse.ts treats more than one parse as a bug).
#
# Lists are built as cons cells (List) so every postprocessor is O(1): an Earley parser completes
# a rule at every column where it could end, and copying arrays there would be quadratic.
# parse.ts turns the cells into arrays in one pass.
#
# Keywords other than true/false may also be used as names (the models call things `weight`,
# `model`, `i32`); no construct starts with a bare name where a keyword could start another.

@preprocessor esmodule

@{%
import moo from 'moo';

export const KEYWORDS = [
  'import', 'config', 'extends', 'module', 'model', 'param', 'sub', 'repeat', 'input', 'forward',
  'let', 'for', 'in', 'return', 'output', 'loss', 'weight', 'init', 'ckpt', 'checkpoint', 'from',
  'unused', 'tie', 'when', 'if', 'else', 'buffer', 'train', 'freeze', 'stage', 'trainable', 'optimizer', 'schedule',
  'f32', 'f16', 'bf16', 'i32', 'bool',
];

const base = moo.compile({
  ws: /[ \t\r\f\v\uFEFF]+/,
  comment: /\/\/[^\n]*/,
  nl: { match: /\n/, lineBreaks: true },
  semi: ';',
  number: /(?:\d+\.\d+|\d+)(?:[eE][+-]?\d+)?/,
  string: /"(?:[^"\\\n]|\\["\\nrt]|\\u\{[0-9a-fA-F]{1,6}\})*"/,
  // Whatever a broken string spans, so the message can say why it is broken.
  badstring: /"(?:[^"\\\n]|\\[^\n])*"?/,
  ident: { match: /[A-Za-z_][A-Za-z0-9_]*/, type: moo.keywords({ kw: KEYWORDS, boolean: ['true', 'false'] }) },
  op: ['..', '==', '!=', '<=', '>=', '&&', '||', '(', ')', '[', ']', '{', '}', ',', ':', '.', '=',
       '+', '-', '*', '/', '%', '@', '<', '>', '!'],
  error: moo.error,
});

const TYPES = new Set(['ident', 'kw', 'boolean', 'number', 'string', 'op', 'sep']);
const CLOSE = { ')': '(', ']': '[', '}': '{' };
// A separator after one of these is a line continuation: nothing can end there.
const CONTINUES = new Set([',', '(', '[', '{', '=', ':', '.', '..', '+', '-', '*', '/', '%', '@',
  '==', '!=', '<', '<=', '>', '>=', '&&', '||', '!']);

// Keywords count as operands (they may be names), which can only loosen the prefix limit below.
const endsOperand = (t) => t && (t.type === 'op' ? t.text === ')' || t.text === ']' : t.type !== 'sep');

function charName(s) {
  const cp = s.codePointAt(0);
  const hex = 'U+' + cp.toString(16).toUpperCase().padStart(4, '0');
  return cp > 0x20 && cp < 0x7f ? `'${s}'` : cp > 0xa0 && !/\s/u.test(s) ? `'${s}' (${hex})` : hex;
}

/** The string's value, or the offset of an escape naming no Unicode code point. */
function unescape(body) {
  let bad = -1;
  const value = body.replace(/\\(u\{([0-9a-fA-F]+)\}|.)/g, (m, e, hex, at) => {
    if (hex === undefined) return { n: '\n', r: '\r', t: '\t' }[e] ?? e;
    const cp = parseInt(hex, 16);
    if (cp <= 0x10ffff) return String.fromCodePoint(cp);
    if (bad < 0) bad = at;
    return m;
  });
  return { value, bad };
}

/** Thrown by the lexer; parse.ts turns it into a DiagnosticError (kept out of here so the
 *  generated module needs nothing but moo). */
export class LexError extends Error {
  constructor(message, span) {
    super(message);
    this.span = span;
  }
}

/** moo plus the newline rules above, bracket-depth limit and spans; the nearley lexer interface. */
export class KilnLexer {
  constructor(file = '<input>', maxDepth = 200) {
    this.file = file;
    this.maxDepth = maxDepth;
    this.moo = base.clone();
    this.reset('');
  }
  reset(text) {
    this.moo.reset(text);
    this.stack = [];
    this.prev = null;
    this.peeked = undefined;
    this.failure = null;
    this.prefixRun = 0;
    this.lastEnd = { file: this.file, start: 0, end: 0, line: 1, col: 1 };
  }
  save() {
    return {};
  }
  has(type) {
    return TYPES.has(type);
  }
  formatError(token, message) {
    return `${message} at ${this.file}:${token.line}:${token.col}`;
  }
  span(t, len = t.text.length) {
    return { file: this.file, start: t.offset, end: t.offset + len, line: t.line, col: t.col };
  }
  /** The next token with whitespace, comments and bracketed newlines gone. */
  raw() {
    for (;;) {
      const t = this.moo.next();
      if (!t) return undefined;
      if (t.type === 'ws') continue;
      if (t.type === 'nl') {
        const top = this.stack[this.stack.length - 1];
        if (top === '(' || top === '[') continue;
      }
      if (t.type === 'error') {
        const ch = String.fromCodePoint(t.text.codePointAt(0));
        throw new LexError(`unexpected character ${charName(ch)}`, this.span(t, ch.length));
      }
      if (t.type === 'badstring') this.badString(t);
      t.span = this.span(t);
      if (t.type !== 'nl') this.lastEnd = { ...t.span, start: t.span.end, col: t.col + t.text.length };
      if (t.type === 'comment') continue;
      if (t.type === 'nl' || t.type === 'semi') t.type = 'sep';
      else if (t.type === 'string') this.string(t);
      else if (t.type === 'op') this.track(t);
      return t;
    }
  }
  track(t) {
    if (t.text === '(' || t.text === '[' || t.text === '{') {
      if (this.stack.length >= this.maxDepth) {
        throw new LexError(`brackets nested too deeply (more than ${this.maxDepth} levels)`, t.span);
      }
      this.stack.push(t.text);
    } else if (CLOSE[t.text]) {
      this.stack.pop();
    }
  }
  string(t) {
    const { value, bad } = unescape(t.text.slice(1, -1));
    if (bad >= 0) {
      const at = { ...t, offset: t.offset + 1 + bad, col: t.col + 1 + bad };
      const esc = /^\\u\{[0-9a-fA-F]+\}/.exec(t.text.slice(1 + bad))[0];
      throw new LexError(`invalid escape '${esc}' in string: not a Unicode code point`, this.span(at, esc.length));
    }
    t.str = value;
  }
  badString(t) {
    const m = /\\(?!["\\nrt]|u\{[0-9a-fA-F]{1,6}\})/.exec(t.text);
    if (!m || (t.text.length < 2 || !t.text.endsWith('"'))) {
      throw new LexError('unterminated string literal', this.span(t, 1));
    }
    const at = { ...t, offset: t.offset + m.index, col: t.col + m.index };
    throw new LexError(`invalid escape '${t.text.slice(m.index, m.index + 2)}' in string`, this.span(at, 2));
  }
  next() {
    try {
      return this.advance();
    } catch (e) {
      // nearley replaces errors thrown here with its own; parse.ts reads the original here.
      this.failure = e;
      throw e;
    }
  }
  advance() {
    let t = this.peeked !== undefined ? this.peeked : this.raw();
    this.peeked = undefined;
    while (t && t.type === 'sep') {
      let u = this.raw();
      while (u && u.type === 'sep') u = this.raw();
      const p = this.prev;
      const skip = !p || !u || (p.type === 'op' && CONTINUES.has(p.text)) || (u.type === 'op' && u.text === '}');
      if (skip) {
        t = u;
      } else {
        this.peeked = u;
        break;
      }
    }
    // Prefix operators nest like brackets, so they get the same limit.
    if (t && t.type === 'op' && (t.text === '-' || t.text === '!') && !endsOperand(this.prev)) {
      if (++this.prefixRun > this.maxDepth) {
        throw new LexError(`more than ${this.maxDepth} prefix operators in a row`, t.span);
      }
    } else {
      this.prefixRun = 0;
    }
    this.prev = t || null;
    return t;
  }
}

const lexer = new KilnLexer();

/** A cons cell: `prev` is the list so far (null for the first item). */
export class List {
  constructor(prev, item) {
    this.prev = prev;
    this.item = item;
    this.first = prev ? prev.first : item;
  }
}
export const EMPTY = new List(null, undefined);
EMPTY.first = null;

const one = ([x]) => new List(null, x);
const push = ([l, , x]) => new List(l, x);
const empty = () => EMPTY;
const nul = () => null;
const second = (d) => d[1];

/** The span from a's start to b's end; a and b are tokens or nodes. */
const sp = (a, b) => {
  const s = a.span, e = b.span;
  return { file: s.file, start: s.start, end: e.end, line: s.line, col: s.col };
};
const lastOf = (...xs) => xs.reduce((a, x) => x || a);
const ident = ([t]) => ({ kind: 'ident', name: t.text, span: t.span });
const bin = ([l, op, r]) => ({ kind: 'binary', op: op.text, left: l, right: r, span: sp(l, r) });
const stmt = (kind, fields, a, b) => ({ kind, ...fields, span: sp(a, b) });

/** The cells as an array; only for rules that complete once (they end in a closing brace). */
export function toArray(l) {
  const out = [];
  for (let c = l; c && c !== EMPTY; c = c.prev) out.push(c.item);
  return out.reverse();
}
// `freeze` lines may repeat; the AST keeps their paths together, apart from the stages.
function train(k, items, c) {
  const freeze = [], stages = [];
  for (const item of toArray(items)) {
    if (item.kind === 'stage') stages.push(item);
    else freeze.push(...toArray(item.paths));
  }
  return { kind: 'train', freeze, stages, span: sp(k, c) };
}
%}

@lexer lexer

File -> Decls {% id %}
Decls -> null {% empty %} | DeclList {% id %}
DeclList -> TopDecl {% one %} | DeclList %sep TopDecl {% push %}
TopDecl -> Import {% id %} | Config {% id %} | Module {% id %}

Import -> "import" Str {% ([k, s]) => ({ kind: 'import', path: s, span: sp(k, s) }) %}
Str -> %string {% ([t]) => ({ kind: 'string', value: t.str, span: t.span }) %}
StrList -> Str {% one %} | StrList "," Str {% push %}

# ---- configs ----

Config -> "config" Name Extends "{" ConfigItems "}"
  {% ([k, name, base, , items, c]) => ({ kind: 'config', name, base, items, span: sp(k, c) }) %}
Extends -> null {% nul %} | "extends" Name {% second %}
ConfigItems -> null {% empty %} | ConfigItemList {% id %}
ConfigItemList -> ConfigItem {% one %} | ConfigItemList %sep ConfigItem {% push %}
ConfigItem -> Path "=" Expr {% ([path, , value]) => ({ kind: 'entry', path, value, span: sp(path, value) }) %}
  | Name "{" ConfigItems "}" {% ([name, , entries, c]) => ({ kind: 'block', name, entries, span: sp(name, c) }) %}

Path -> PathParts {% ([l]) => ({ parts: l, span: sp(l.first, l.item) }) %}
PathParts -> Name {% one %} | PathParts "." Name {% push %}
PathList -> Path {% one %} | PathList "," Path {% push %}

# ---- modules ----

Module -> ModuleKw Name ModuleParams "{" Members "}"
  {% ([k, name, params, , members, c]) => ({ kind: k.text, name, params, members, span: sp(k, c) }) %}
ModuleKw -> "module" {% id %} | "model" {% id %}
ModuleParams -> null {% empty %} | ParamList {% id %}
ParamList -> "(" Names ")" {% second %}
Names -> null {% empty %} | NameList {% id %} | NameList "," {% id %}
NameList -> Name {% one %} | NameList "," Name {% push %}

Members -> null {% empty %} | MemberList {% id %}
MemberList -> Member {% one %} | MemberList %sep Member {% push %}
Member -> Param {% id %} | Sub {% id %} | Repeat {% id %} | Input {% id %} | Forward {% id %}
  | Checkpoint {% id %} | Unused {% id %} | Tie {% id %} | Buffer {% id %} | Train {% id %}

Param -> "param" Name ":" Type Init Ckpt
  {% ([k, name, , type, init, ckpt]) => stmt('param', { name, type, init, ckpt }, k, lastOf(type, init, ckpt)) %}
Init -> null {% nul %} | "init" Expr {% second %}
Ckpt -> null {% nul %} | "ckpt" Str {% second %}
Sub -> "sub" Name "=" Name "(" Args ")" Ckpt
  {% ([k, name, , module, , args, c, ckpt]) => stmt('sub', { name, module, args, ckpt }, k, ckpt || c) %}
Repeat -> "repeat" Name "[" Name "in" Expr "]" "=" Name "(" Args ")" Ckpt
  {% ([k, name, , index, , count, , , module, , args, c, ckpt]) =>
       stmt('repeat', { name, index, count, module, args, ckpt }, k, ckpt || c) %}
Input -> "input" Name ":" Type {% ([k, name, , type]) => stmt('input', { name, type }, k, type) %}
Forward -> "forward" ForwardParams Block {% ([k, params, b]) => stmt('forward', { params, body: b.body }, k, b) %}
ForwardParams -> null {% nul %} | ParamList {% id %}
Checkpoint -> "checkpoint" Name "from" Str {% ([k, sub, , prefix]) => stmt('checkpoint', { sub, prefix }, k, prefix) %}
Unused -> "unused" StrList {% ([k, l]) => stmt('unused', { patterns: l }, k, l.item) %}
Buffer -> "buffer" Str "=" Expr {% ([k, pattern, , value]) => stmt('buffer', { pattern, value }, k, value) %}
Tie -> "tie" Path "=" Path {% ([k, param, , to]) => stmt('tie', { param, to, when: null }, k, to) %}
  | "tie" Path "=" Path "when" Expr {% ([k, param, , to, , when]) => stmt('tie', { param, to, when }, k, when) %}

Type -> DType "[" Dims "]" {% ([d, , dims, c]) => ({ kind: 'tensor_type', dtype: d.text, dims, span: sp(d, c) }) %}
DType -> "f32" {% id %} | "f16" {% id %} | "bf16" {% id %} | "i32" {% id %} | "bool" {% id %}
Dims -> null {% empty %} | ExprList {% id %}

# ---- training ----

Train -> "train" "{" TrainItems "}" {% ([k, , items, c]) => train(k, items, c) %}
TrainItems -> null {% empty %} | TrainItemList {% id %}
TrainItemList -> TrainItem {% one %} | TrainItemList %sep TrainItem {% push %}
TrainItem -> "freeze" PathList {% ([k, l]) => stmt('freeze', { paths: l }, k, l.item) %} | Stage {% id %}
Stage -> "stage" Name "{" StageItems "}" {% ([k, name, , items, c]) => stmt('stage', { name, items }, k, c) %}
StageItems -> null {% empty %} | StageItemList {% id %}
StageItemList -> StageItem {% one %} | StageItemList %sep StageItem {% push %}
StageItem -> "trainable" PathList {% ([k, l]) => stmt('trainable', { paths: l }, k, l.item) %}
  | "freeze" PathList {% ([k, l]) => stmt('freeze', { paths: l }, k, l.item) %}
  | "optimizer" CallExpr {% ([k, call]) => stmt('optimizer', { call }, k, call) %}
  | "schedule" CallExpr {% ([k, call]) => stmt('schedule', { call }, k, call) %}
  | Name "=" Expr {% ([name, , value]) => stmt('setting', { name, value }, name, value) %}

# ---- statements ----

Block -> "{" Stmts "}" {% ([o, body, c]) => ({ body, span: sp(o, c) }) %}
Stmts -> null {% empty %} | StmtList {% id %}
StmtList -> Stmt {% one %} | StmtList %sep Stmt {% push %}
Stmt -> "let" Name "=" Expr {% ([k, name, , value]) => stmt('let', { name, value }, k, value) %}
  | Name "=" Expr {% ([name, , value]) => stmt('assign', { name, value }, name, value) %}
  | "for" Name "in" Expr ".." Expr Block
    {% ([k, variable, , from, , to, b]) => stmt('for', { variable, from, to, body: b.body }, k, b) %}
  | If {% id %}
  | "return" Expr {% ([k, value]) => stmt('return', { value }, k, value) %}
  | "output" Name "=" Expr {% ([k, name, , value]) => stmt('output', { name, value }, k, value) %}
  | "loss" Name LossWeight "=" Expr
    {% ([k, name, weight, , value]) => stmt('loss', { name, weight, value }, k, value) %}
LossWeight -> null {% nul %} | "weight" Expr {% second %}
# `else` must follow the closing brace on the same line: a newline there ends the statement.
If -> "if" Expr Block {% ([k, cond, b]) => stmt('if', { cond, then: b.body, else: null }, k, b) %}
  | "if" Expr Block "else" Block
    {% ([k, cond, b, , e]) => stmt('if', { cond, then: b.body, else: e.body }, k, e) %}
  | "if" Expr Block "else" If {% ([k, cond, b, , e]) => stmt('if', { cond, then: b.body, else: new List(null, e) }, k, e) %}

# ---- expressions, loosest first ----

Expr -> Or {% id %}
Or -> Or "||" And {% bin %} | And {% id %}
And -> And "&&" Cmp {% bin %} | Cmp {% id %}
Cmp -> Cmp CmpOp Add {% bin %} | Add {% id %}
CmpOp -> "==" {% id %} | "!=" {% id %} | "<" {% id %} | "<=" {% id %} | ">" {% id %} | ">=" {% id %}
Add -> Add AddOp Mul {% bin %} | Mul {% id %}
AddOp -> "+" {% id %} | "-" {% id %}
Mul -> Mul MulOp Unary {% bin %} | Unary {% id %}
MulOp -> "*" {% id %} | "/" {% id %} | "%" {% id %} | "@" {% id %}
Unary -> UnaryOp Unary {% ([op, operand]) => ({ kind: 'unary', op: op.text, operand, span: sp(op, operand) }) %}
  | Postfix {% id %}
UnaryOp -> "-" {% id %} | "!" {% id %}

Postfix -> CallExpr {% id %}
  | Postfix "." Name {% ([object, , property]) => ({ kind: 'member', object, property, span: sp(object, property) }) %}
  | Postfix "[" IndexItems "]" {% ([object, , items, c]) => ({ kind: 'index', object, items, span: sp(object, c) }) %}
  | Primary {% id %}
CallExpr -> Postfix "(" Args ")" {% ([callee, , args, c]) => ({ kind: 'call', callee, args, span: sp(callee, c) }) %}

Primary -> %number {% ([t]) => ({ kind: 'number', value: Number(t.text), isInt: !/[.eE]/.test(t.text), text: t.text, span: t.span }) %}
  | Str {% id %}
  | "true" {% ([t]) => ({ kind: 'bool', value: true, span: t.span }) %}
  | "false" {% ([t]) => ({ kind: 'bool', value: false, span: t.span }) %}
  | Name {% ([n]) => ({ kind: 'name', name: n.name, span: n.span }) %}
  | "(" Expr ")" {% ([o, e, c]) => ({ ...e, span: sp(o, c) }) %}
  | "[" ListItems "]" {% ([o, items, c]) => ({ kind: 'list', items, span: sp(o, c) }) %}

ListItems -> null {% empty %} | ExprList {% id %} | ExprList "," {% id %}
ExprList -> Expr {% one %} | ExprList "," Expr {% push %}

Args -> null {% empty %} | ArgList {% id %} | ArgList "," {% id %}
ArgList -> Arg {% one %} | ArgList "," Arg {% push %}
Arg -> Expr {% ([value]) => ({ name: null, value, span: value.span }) %}
  | Name "=" Expr {% ([name, , value]) => ({ name, value, span: sp(name, value) }) %}

IndexItems -> IndexItem {% one %} | IndexItems "," IndexItem {% push %}
IndexItem -> Expr {% ([index]) => ({ kind: 'at', index, span: index.span }) %}
  | MaybeExpr ":" MaybeExpr {% ([start, c, stop]) => ({ kind: 'slice', start, stop, span: sp(start || c, stop || c) }) %}
MaybeExpr -> null {% nul %} | Expr {% id %}

Name -> %ident {% ident %} | %kw {% ident %}
