import { describe, expect, it } from 'vitest';
import { checkTexts, diagnose } from './helpers.js';
import { UsageError } from '../../../compiler/check/index.js';

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
  it('a repeat over a vocabulary-sized count is refused, not unrolled', () => {
    const files = base('    output y = proj(x)', 'module Stack(n) {\n  repeat layers[i in n] = Lin(2, 2)\n  forward(x) { return x }\n}');
    files['m.kiln'] = files['m.kiln'].replace('sub proj = Lin(c.d, c.inner.width)', 'sub proj = Lin(c.d, c.inner.width)\n  sub s = Stack(32000)');
    expect(diagnose(files, 'm.kiln')).toContain('repeat count 32000 is more than 4096 copies');
  });
});
