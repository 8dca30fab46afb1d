import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { countParses, parseSpec } from '../../../compiler/syntax/parse.js';
import { printSpec } from '../../../compiler/syntax/print.js';
import { specArbitraries } from './arbitraries.js';
import { MODEL_NAMES, modelSource, stripSpans } from './helpers.js';

// KILN_PROPERTY_RUNS=20000 for a longer local run.
const RUNS = Number(process.env.KILN_PROPERTY_RUNS) || 300;

describe('printSpec', () => {
  it.each(MODEL_NAMES)('prints %s.kiln so that it parses back to the same AST', (name) => {
    const { path, text } = modelSource(name);
    const ast = parseSpec(text, path);
    const printed = printSpec(ast);
    expect(countParses(printed)).toBe(1);
    const again = parseSpec(printed, path);
    expect(stripSpans(again)).toEqual(stripSpans(ast));
    // Canonical: printing the reparsed tree changes nothing.
    expect(printSpec(again)).toBe(printed);
  });

  it('formats canonically', () => {
    const src = `import "a.kiln"
import "b.kiln"
config c extends b { x.y=1+2*3 ; v { w = -(1) } }
module M(a,b) { param w: f32[a,b] init normal(0.02) ckpt "w"
forward(x) { let h = (x+1)*2
for i in 0..a { h = f(h, k = [1, 2])[:, 1:, :-1] }
loss l weight 0.5 = !(a < b) || c && d
return h } }`;
    expect(printSpec(parseSpec(src, 'f.kiln'))).toBe(`import "a.kiln"
import "b.kiln"

config c extends b {
  x.y = 1 + 2 * 3
  v {
    w = -1
  }
}

module M(a, b) {
  param w: f32[a, b] init normal(0.02) ckpt "w"
  forward(x) {
    let h = (x + 1) * 2
    for i in 0 .. a {
      h = f(h, k = [1, 2])[:, 1:, :-1]
    }
    loss l weight 0.5 = !(a < b) || c && d
    return h
  }
}
`);
  });

  it('keeps else (and else if) on the closing brace\'s line', () => {
    const src = `module M {
  forward(x) {
    if c.a { x = f(x) } else if !c.b {
    let y = x
    } else { return x }
    if c.d {}
    if c.e {} else {}
    return x
  }
}`;
    const printed = printSpec(parseSpec(src, 'f.kiln'));
    expect(printed).toBe(`module M {
  forward(x) {
    if c.a {
      x = f(x)
    } else if !c.b {
      let y = x
    } else {
      return x
    }
    if c.d {}
    if c.e {} else {}
    return x
  }
}
`);
    expect(countParses(printed)).toBe(1);
    expect(stripSpans(parseSpec(printed, 'f.kiln'))).toEqual(stripSpans(parseSpec(src, 'f.kiln')));
  });

  it('parenthesises by precedence and left associativity', () => {
    for (const src of ['a - (b - c)', '(a - b) - c', '-(a + b)', '(-a).b', 'a * (b + c)', '(a || b) && c', '(a < b) == c', '--a', 'a - -1']) {
      const file = parseSpec(`config c {\n  x = ${src}\n}`, 'p.kiln');
      const printed = printSpec(file);
      expect(stripSpans(parseSpec(printed, 'p.kiln'))).toEqual(stripSpans(file));
    }
    expect(printSpec(parseSpec('config c { x = (a - b) - c }', 'p'))).toContain('x = a - b - c');
    expect(printSpec(parseSpec('config c { x = a - (b - c) }', 'p'))).toContain('x = a - (b - c)');
  });

  it('escapes strings so that they read back the same', () => {
    const value = 'q"b\\s\nr\rt\tz\0\u2028\ud800é😀';
    const file = parseSpec('import ""', 'p');
    (file.decls[0] as { path: { value: string } }).path.value = value;
    const printed = printSpec(file);
    expect(printed).toBe('import "q\\"b\\\\s\\nr\\rt\\tz\\u{0}\\u{2028}\\u{d800}é😀"\n');
    expect((parseSpec(printed, 'p').decls[0] as { path: { value: string } }).path.value).toBe(value);
  });

  for (const keywordNames of [false, true]) {
    it(`round-trips random ASTs (names ${keywordNames ? 'may be' : 'avoid'} keywords)`, () => {
      const { file } = specArbitraries({ keywordNames });
      fc.assert(
        fc.property(file, (ast) => {
          const printed = printSpec(ast);
          expect(countParses(printed)).toBe(1);
          expect(stripSpans(parseSpec(printed, 'gen.kiln'))).toEqual(stripSpans(ast));
        }),
        { numRuns: RUNS },
      );
    });
  }
});
