import { describe, expect, it } from 'vitest';
import { DiagnosticError, renderDiagnostic } from '../../../compiler/diagnostics.js';
import { parseSpec } from '../../../compiler/syntax/parse.js';
import { spanProblem } from './helpers.js';

function diagnose(text: string, file = 'bad.kiln') {
  try {
    parseSpec(text, file);
  } catch (e) {
    if (!(e instanceof DiagnosticError)) throw e;
    expect(e.diagnostics).toHaveLength(1);
    const d = e.diagnostics[0]!;
    expect(d.code).toBe('parse');
    expect(spanProblem(d.span, text, file)).toBeNull();
    return { where: `${d.span!.line}:${d.span!.col}`, message: d.message, rendered: renderDiagnostic(d, new Map([[file, text]])) };
  }
  throw new Error(`parsed: ${JSON.stringify(text)}`);
}

describe('parse diagnostics', () => {
  it.each([
    ['missing colon', 'module A(c) {\n  param w f32[3]\n}', '2:11', "unexpected keyword 'f32'; expected ':'"],
    ['missing value', 'config a {\n  x =\n}', '3:1', "unexpected '}'; expected an expression"],
    ['statement at top level', 'let x = 1', '1:1', "unexpected keyword 'let'; expected one of: 'config', 'import', 'model', 'module', end of input"],
    ['missing comma', 'module A(c) {\n  sub s = Linear(c.hidden c.x)\n}', '2:27', "unexpected identifier 'c'; expected one of: '(', ')', ',', '.', '[', an operator"],
    ['unknown dtype', 'module A { param x: f64[3] }', '1:21', "unexpected identifier 'f64'; expected one of: 'bf16', 'bool', 'f16', 'f32', 'i32'"],
    ['unquoted import', 'import common.kiln', '1:8', "unexpected identifier 'common'; expected a string"],
    ['empty index', 'model M { forward { return x[] } }', '1:30', "unexpected ']'; expected one of: ':', an expression"],
    ['semicolon in a call', 'config a { x = f(a;b) }', '1:19', "unexpected ';'; expected one of: '(', ')', ',', '.', '=', '[', an operator"],
    ['for without a block', 'model M { forward { for i in 0 .. 3 h = 1 } }', '1:37', "unexpected identifier 'h'; expected one of: '(', '.', '[', '{', an operator"],
    ['optimizer without a call', 'model M { train { stage s { optimizer adamw } } }', '1:45', "unexpected '}'; expected one of: '(', '.', '['"],
    ['extra brace', 'module A {}\n}', '2:1', "unexpected '}'; expected one of: a newline, end of input"],
    ['two numbers', 'config a { x = 1 2 }', '1:18', "unexpected number 2; expected one of: '(', '.', '[', '}', an operator, a newline"],
    ['string where a name goes', 'config "a" {}', '1:8', 'unexpected string "a"; expected an identifier'],
    ['if without a block', 'model M { forward { if c.a return x } }', '1:28', "unexpected keyword 'return'; expected one of: '(', '.', '[', '{', an operator"],
    ['else on its own line', 'model M { forward {\n  if c.a {\n  }\n  else { return x }\n} }', '4:8', "unexpected '{'; expected '=' (an 'else' goes on the line of the '}' before it)"],
  ])('%s', (_, text, where, message) => {
    const d = diagnose(text);
    expect(d.message).toBe(message);
    expect(d.where).toBe(where);
  });

  it.each([
    ['unexpected character', 'config a { x = 1 # 2 }', '1:18', "unexpected character '#'"],
    ['NUL byte', 'config a\0 {}', '1:9', 'unexpected character U+0000'],
    ['non-ASCII', 'config a { x = 1 } é', '1:20', "unexpected character 'é' (U+00E9)"],
    ['astral character', 'config 😀', '1:8', "unexpected character '😀' (U+1F600)"],
    ['unterminated string', 'config a { x = "abc\n}', '1:16', 'unterminated string literal'],
    ['unterminated string at end', 'import "abc', '1:8', 'unterminated string literal'],
    ['bad escape', 'import "a\\qb"', '1:10', "invalid escape '\\q' in string"],
    ['escape past Unicode', 'import "\\u{110000}"', '1:9', "invalid escape '\\u{110000}' in string: not a Unicode code point"],
  ])('lexer: %s', (_, text, where, message) => {
    const d = diagnose(text);
    expect(d.message).toBe(message);
    expect(d.where).toBe(where);
  });

  it('points just past the last token at an unexpected end of input', () => {
    const d = diagnose('module A {\n  forward(x) {\n    return f(x,   // more to come\n\n');
    expect(d.message).toBe("unexpected end of input; expected one of: ')', an expression");
    expect(d.where).toBe('3:34');
  });

  it('renders a parse error with the source line and a caret under the token', () => {
    const d = diagnose('module Linear(d_in, d_out) {\n  param weight f32[d_out, d_in]\n}\n', 'models/x.kiln');
    expect(d.rendered).toBe(
      [
        "models/x.kiln:2:16: error[parse]: unexpected keyword 'f32'; expected ':'",
        '  --> models/x.kiln:2:16',
        '    |',
        '  2 |   param weight f32[d_out, d_in]',
        '    |                ^^^',
      ].join('\n'),
    );
  });

  it('renders an end-of-input error with a caret after the last token', () => {
    const d = diagnose('config tiny {\n  vision.width = 32 *\n', 'v.kiln');
    expect(d.rendered).toBe(
      [
        'v.kiln:2:22: error[parse]: unexpected end of input; expected an expression',
        '  --> v.kiln:2:22',
        '    |',
        '  2 |   vision.width = 32 *',
        '    |                      ^',
      ].join('\n'),
    );
  });
});
