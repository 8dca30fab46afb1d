import { dimToString } from '../../../compiler/ir/dims.js';
import { describe, expect, it } from 'vitest';
import { checkTexts, diagnose } from './helpers.js';
import { UsageError } from '../../../compiler/check/index.js';
import { KilnError } from '../../../runtime/errors.js';

const base = (body: string, extra = '') => ({
  'm.kiln': `config small {
  d = 8
  h = 2
  inner { width = d * 2 }
}
${extra}
module Lin(a, b) {
  param weight: f32[b, a] init normal(0.02)
  forward(x) {
    return linear(x, weight)
  }
}

model M(c) {
  input x: f32[B, T, c.d]
  sub proj = Lin(c.d, c.inner.width)
  forward {
${body}
  }
}
`,
});

describe('checker diagnostics', () => {
  it('checks a valid model', () => {
    const m = checkTexts(base('    output y = proj(x)\n    loss l = mean(proj(x) * proj(x), axis = [0, 1, 2])'), 'm.kiln');
    expect(m.graph.outputs[0]!.name).toBe('y');
    expect(m.graph.params[0]!.type.shape).toEqual([16, 8]);
  });

  it('a shape mismatch names the dims and where each operand came from', () => {
    const text = diagnose(base('    output y = proj(x) + x'), 'm.kiln');
    expect(text).toMatch(/^m\.kiln:18:16: error\[shape\]: add: cannot broadcast/);
    expect(text).toContain('16');
    expect(text).toContain('8');
    expect(text).toContain('    output y = proj(x) + x\n');
    expect(text).toMatch(/\| {16}\^{11}$/m);
    expect(text).toContain('note: m.kiln:15:3: x is f32[B, T, 8], from here');
  });

  it('an unknown name points at it with a suggestion', () => {
    const text = diagnose(base('    output y = prj(x)'), 'm.kiln');
    expect(text).toContain("m.kiln:18:16: error[name]: unknown function 'prj'");
  });

  it('an unknown config value suggests near misses', () => {
    const files = base('    output y = proj(x)');
    files['m.kiln'] = files['m.kiln'].replace('sub proj = Lin(c.d, c.inner.width)', 'sub proj = Lin(c.d, c.inner.widht)');
    expect(diagnose(files, 'm.kiln')).toContain("config small.inner has no value 'widht'; did you mean 'width'?");
  });

  it('a config value that depends on itself is reported, not looped on', () => {
    const files = base('    output y = proj(x)');
    files['m.kiln'] = files['m.kiln'].replace('d = 8', 'd = h * e\n  e = d');
    expect(diagnose(files, 'm.kiln')).toMatch(/config value small\.d depends on itself/);
  });

  it('wrong argument counts name the module', () => {
    const files = base('    output y = proj(x, x)');
    expect(diagnose(files, 'm.kiln')).toContain('Lin takes 1 input(s), got 2');
  });

  it('a loss must be a scalar', () => {
    expect(diagnose(base('    loss l = proj(x)'), 'm.kiln')).toContain('loss l must be a scalar');
  });

  it('--set of an unknown key is a usage error with suggestions', () => {
    expect(() => checkTexts(base('    output y = proj(x)'), 'm.kiln', { overrides: [{ key: 'inner.widht', value: 3, origin: '--set inner.widht=3' }] })).toThrow(UsageError);
    expect(() => checkTexts(base('    output y = proj(x)'), 'm.kiln', { overrides: [{ key: 'inner.widht', value: 3, origin: '--set inner.widht=3' }] })).toThrow(/did you mean 'width'/);
  });

  it("a checkpoint's graph-changing value the spec lacks (pif) is bad input, not skipped", () => {
    const o = { key: 'pif', value: true, origin: 'field "architectures" of c.json', optional: true };
    expect(() => checkTexts(base('    output y = proj(x)'), 'm.kiln', { overrides: [{ ...o, needed: true }] })).toThrow(KilnError);
    expect(() => checkTexts(base('    output y = proj(x)'), 'm.kiln', { overrides: [{ ...o, needed: true }] })).toThrow(
      /field "architectures" of c\.json: config small has no value 'pif'.*another model than the checkpoint's/,
    );
    // An optional key the spec lacks that changes nothing is skipped.
    expect(checkTexts(base('    output y = proj(x)'), 'm.kiln', { overrides: [o] }).graph.outputs).toHaveLength(1);
  });

  it('an unknown --config lists the configs', () => {
    expect(() => checkTexts(base('    output y = proj(x)'), 'm.kiln', { config: 'smal' })).toThrow(/no such config; did you mean 'small'/);
  });

  it('a parameter shape may not use symbolic dims', () => {
    const files = base('    output y = proj(x)');
    files['m.kiln'] = files['m.kiln'].replace('f32[b, a]', 'f32[b, Q]');
    expect(diagnose(files, 'm.kiln')).toContain("unknown name 'Q' in a parameter shape");
  });

  it('two parameters with one checkpoint name are rejected', () => {
    const files = base('    output y = proj(x)', '');
    files['m.kiln'] = files['m.kiln'].replace('sub proj = Lin(c.d, c.inner.width)', 'sub proj = Lin(c.d, c.inner.width) ckpt "p"\n  sub proj2 = Lin(c.d, c.d) ckpt "p"');
    expect(diagnose(files, 'm.kiln')).toContain("two parameters load from the checkpoint name 'p.weight'");
  });
});

describe('unrolling limits', () => {
  it('if picks its branch from config values when the graph is built; else if chains', () => {
    const body = (cond: string) => `    let out = x
    if ${cond} {
      out = proj(x)
    } else if c.d == 8 {
      out = x * 2
    } else {
      out = x + proj(x)
    }
    output y = out`;
    expect(checkTexts(base(body('c.h == 2')), 'm.kiln').graph.params[0]!.type.shape).toEqual([16, 8]);
    const shapeOf = (m: ReturnType<typeof checkTexts>) => m.graph.nodes[m.graph.outputs[0]!.node]!.type.shape.map((d) => dimToString(d));
    expect(shapeOf(checkTexts(base(body('c.h == 2')), 'm.kiln'))).toEqual(['B', 'T', '16']);
    expect(shapeOf(checkTexts(base(body('c.h != 2')), 'm.kiln'))).toEqual(['B', 'T', '8']);
    // The last branch (a shape error) is checked only when taken.
    expect(diagnose(base(body('c.h != 2')), 'm.kiln', { overrides: [{ key: 'd', value: 16, origin: '--set d=16' }] })).toContain('add: cannot broadcast');
  });

  it('an if on a tensor is refused with file:line:col and a caret under the condition', () => {
    const text = diagnose(base('    if x > 0 {\n      output y = x\n    }'), 'm.kiln');
    expect(text).toMatch(/^m\.kiln:18:8: error\[type\]: if: the condition must be true or false when the graph is built \(a config value\), got a tensor/);
    expect(text).toContain('use where(cond, a, b)');
    expect(text).toContain('    if x > 0 {\n');
    expect(text).toMatch(/\| {8}\^{5}$/m);
  });

  it('an if on a number is refused', () => {
    const text = diagnose(base('    if c.d {\n      output y = x\n    }'), 'm.kiln');
    expect(text).toMatch(/^m\.kiln:18:8: error\[type\]: if: the condition must be true or false/);
    expect(text).toMatch(/\| {8}\^{3}$/m);
  });

  it("an if block's lets are its own; assignments reach the enclosing ones", () => {
    const text = diagnose(base('    if true {\n      let t = x\n    }\n    output y = t'), 'm.kiln');
    expect(text).toContain("m.kiln:21:16: error[name]: unknown name 't'");
  });

  it('a repeat over a vocabulary-sized count is refused, not unrolled', () => {
    const files = base('    output y = proj(x)', 'module Stack(n) {\n  repeat layers[i in n] = Lin(2, 2)\n  forward(x) { return x }\n}');
    files['m.kiln'] = files['m.kiln'].replace('sub proj = Lin(c.d, c.inner.width)', 'sub proj = Lin(c.d, c.inner.width)\n  sub s = Stack(32000)');
    expect(diagnose(files, 'm.kiln')).toContain('repeat count 32000 is more than 4096 copies');
  });
});
