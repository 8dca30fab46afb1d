// fast-check arbitraries for whole spec ASTs: every declaration, member, statement and expression
// kind, with spans set to a dummy (tests compare with stripSpans). They respect the invariants the
// parser guarantees (non-empty path and pattern lists, numbers as their literal text), which is
// all printSpec relies on.
import fc from 'fast-check';
import { KEYWORDS } from '../../../grammar/kiln.gen.js';
import type * as A from '../../../compiler/syntax/ast.js';

const S: A.Span = { file: 'gen.kiln', start: 0, end: 0, line: 1, col: 1 };
const RESERVED = new Set([...KEYWORDS, 'true', 'false']);
const BINARY_OPS: A.BinaryOp[] = ['+', '-', '*', '/', '%', '@', '==', '!=', '<', '<=', '>', '>=', '&&', '||'];
const DTYPES: A.DTypeName[] = ['f32', 'f16', 'bf16', 'i32', 'bool'];

export interface SpecArbitraries {
  file: fc.Arbitrary<A.SpecFile>;
  expr: fc.Arbitrary<A.Expr>;
}

/** `keywordNames`: names may also be keywords (which the grammar accepts as names). */
export function specArbitraries(opts: { keywordNames: boolean }): SpecArbitraries {
  const plain = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,6}$/).filter((n) => !RESERVED.has(n));
  const nameText = opts.keywordNames ? fc.oneof(plain, fc.constantFrom(...KEYWORDS)) : plain;
  const ident = nameText.map((name): A.Ident => ({ kind: 'ident', name, span: S }));
  const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: null });

  const numberText = fc.oneof(
    fc.nat({ max: 1_000_000 }).map(String),
    fc.tuple(fc.nat(999), fc.nat(999)).map(([a, b]) => `${a}.${b}`),
    fc.tuple(fc.nat(99), fc.constantFrom('e', 'E', 'e-', 'e+', 'E+'), fc.nat(330)).map(([a, e, x]) => `${a}${e}${x}`),
    fc.constantFrom('0', '007', '1e-5', '10000.0', '99999999999999999999'),
  );
  const number = numberText.map(
    (text): A.NumberLit => ({ kind: 'number', value: Number(text), isInt: !/[.eE]/.test(text), text, span: S }),
  );
  const strValue = fc.oneof(
    fc.string({ maxLength: 8 }),
    fc.string({ unit: 'binary', maxLength: 6 }),
    fc
      .array(fc.constantFrom('"', '\\', '\n', '\r', '\t', '\0', '\u2028', '\ud800', '\udc00', 'é', '😀', '{i}', '*'), {
        maxLength: 5,
      })
      .map((a) => a.join('')),
  );
  const str = strValue.map((value): A.StringLit => ({ kind: 'string', value, span: S }));
  const bool = fc.boolean().map((value): A.BoolLit => ({ kind: 'bool', value, span: S }));
  const nameRef = nameText.map((name): A.NameRef => ({ kind: 'name', name, span: S }));
  const leaf: fc.Arbitrary<A.Expr> = fc.oneof(number, str, bool, nameRef);

  const { expr } = fc.letrec<{ expr: A.Expr }>((tie) => {
    const e = tie('expr');
    const arg = fc.record({ name: opt(ident), value: e, span: fc.constant(S) });
    const indexItem: fc.Arbitrary<A.IndexItem> = fc.oneof(
      fc.record({ kind: fc.constant('at' as const), index: e, span: fc.constant(S) }),
      fc.record({ kind: fc.constant('slice' as const), start: opt(e), stop: opt(e), span: fc.constant(S) }),
    );
    return {
      expr: fc.oneof(
        { maxDepth: 3, depthIdentifier: 'expr' },
        { arbitrary: leaf, weight: 4 },
        fc.record({ kind: fc.constant('member' as const), object: e, property: ident, span: fc.constant(S) }),
        fc.record({ kind: fc.constant('call' as const), callee: e, args: fc.array(arg, { maxLength: 3 }), span: fc.constant(S) }),
        fc.record({
          kind: fc.constant('index' as const),
          object: e,
          items: fc.array(indexItem, { minLength: 1, maxLength: 3 }),
          span: fc.constant(S),
        }),
        fc.record({ kind: fc.constant('unary' as const), op: fc.constantFrom('-' as const, '!' as const), operand: e, span: fc.constant(S) }),
        fc.record({ kind: fc.constant('binary' as const), op: fc.constantFrom(...BINARY_OPS), left: e, right: e, span: fc.constant(S) }),
        fc.record({ kind: fc.constant('list' as const), items: fc.array(e, { maxLength: 3 }), span: fc.constant(S) }),
      ),
    };
  });

  const args = fc.array(fc.record({ name: opt(ident), value: expr, span: fc.constant(S) }), { maxLength: 3 });
  const call = fc.record({ kind: fc.constant('call' as const), callee: expr, args, span: fc.constant(S) });
  const path = fc.record({ parts: fc.array(ident, { minLength: 1, maxLength: 3 }), span: fc.constant(S) });
  const paths = fc.array(path, { minLength: 1, maxLength: 3 });
  const type = fc.record({
    kind: fc.constant('tensor_type' as const),
    dtype: fc.constantFrom(...DTYPES),
    dims: fc.array(expr, { maxLength: 3 }),
    span: fc.constant(S),
  });

  const { stmt } = fc.letrec<{ stmt: A.Stmt }>((tie) => ({
    stmt: fc.oneof(
      { maxDepth: 2, depthIdentifier: 'stmt' },
      fc.record({ kind: fc.constant('let' as const), name: ident, value: expr, span: fc.constant(S) }),
      fc.record({ kind: fc.constant('assign' as const), name: ident, value: expr, span: fc.constant(S) }),
      fc.record({ kind: fc.constant('return' as const), value: expr, span: fc.constant(S) }),
      fc.record({ kind: fc.constant('output' as const), name: ident, value: expr, span: fc.constant(S) }),
      fc.record({ kind: fc.constant('loss' as const), name: ident, weight: opt(expr), value: expr, span: fc.constant(S) }),
      fc.record({
        kind: fc.constant('for' as const),
        variable: ident,
        from: expr,
        to: expr,
        body: fc.array(tie('stmt'), { maxLength: 3 }),
        span: fc.constant(S),
      }),
      fc.record({
        kind: fc.constant('if' as const),
        cond: expr,
        then: fc.array(tie('stmt'), { maxLength: 3 }),
        // `else if` is an else holding one if; arbitrary else bodies cover it.
        else: opt(fc.array(tie('stmt'), { maxLength: 3 })),
        span: fc.constant(S),
      }),
    ),
  }));

  const stageItem: fc.Arbitrary<A.StageItem> = fc.oneof(
    fc.record({ kind: fc.constantFrom('trainable' as const, 'freeze' as const), paths, span: fc.constant(S) }),
    fc.record({ kind: fc.constantFrom('optimizer' as const, 'schedule' as const), call, span: fc.constant(S) }),
    fc.record({ kind: fc.constant('setting' as const), name: ident, value: expr, span: fc.constant(S) }),
  );
  const stage = fc.record({
    kind: fc.constant('stage' as const),
    name: ident,
    items: fc.array(stageItem, { maxLength: 4 }),
    span: fc.constant(S),
  });

  const member: fc.Arbitrary<A.ModuleMember> = fc.oneof(
    fc.record({ kind: fc.constant('param' as const), name: ident, type, init: opt(expr), ckpt: opt(str), span: fc.constant(S) }),
    fc.record({ kind: fc.constant('sub' as const), name: ident, module: ident, args, ckpt: opt(str), span: fc.constant(S) }),
    fc.record({
      kind: fc.constant('repeat' as const),
      name: ident,
      index: ident,
      count: expr,
      module: ident,
      args,
      ckpt: opt(str),
      span: fc.constant(S),
    }),
    fc.record({ kind: fc.constant('input' as const), name: ident, type, span: fc.constant(S) }),
    fc.record({
      kind: fc.constant('forward' as const),
      params: opt(fc.array(ident, { maxLength: 3 })),
      body: fc.array(stmt, { maxLength: 4 }),
      span: fc.constant(S),
    }),
    fc.record({ kind: fc.constant('checkpoint' as const), sub: ident, prefix: str, span: fc.constant(S) }),
    fc.record({ kind: fc.constant('unused' as const), patterns: fc.array(str, { minLength: 1, maxLength: 3 }), span: fc.constant(S) }),
    fc.record({
      kind: fc.constant('train' as const),
      freeze: fc.array(path, { maxLength: 3 }),
      stages: fc.array(stage, { maxLength: 2 }),
      span: fc.constant(S),
    }),
  );

  const { configItem } = fc.letrec<{ configItem: A.ConfigItem }>((tie) => ({
    configItem: fc.oneof(
      { maxDepth: 2, depthIdentifier: 'config' },
      fc.record({ kind: fc.constant('entry' as const), path, value: expr, span: fc.constant(S) }),
      fc.record({
        kind: fc.constant('block' as const),
        name: ident,
        entries: fc.array(tie('configItem'), { maxLength: 3 }),
        span: fc.constant(S),
      }),
    ),
  }));

  const decl: fc.Arbitrary<A.TopDecl> = fc.oneof(
    fc.record({ kind: fc.constant('import' as const), path: str, span: fc.constant(S) }),
    fc.record({
      kind: fc.constant('config' as const),
      name: ident,
      base: opt(ident),
      items: fc.array(configItem, { maxLength: 4 }),
      span: fc.constant(S),
    }),
    fc.record({
      kind: fc.constantFrom('module' as const, 'model' as const),
      name: ident,
      params: fc.array(ident, { maxLength: 3 }),
      members: fc.array(member, { maxLength: 5 }),
      span: fc.constant(S),
    }),
  );

  const file = fc.record({
    kind: fc.constant('file' as const),
    file: fc.constant('gen.kiln'),
    decls: fc.array(decl, { maxLength: 4 }),
    span: fc.constant(S),
  });
  return { file, expr };
}
