import { describe, expect, it } from 'vitest';
import type { ForwardDecl, LossStmt, ModuleDecl, RepeatDecl, SpecFile, TrainDecl } from '../../../compiler/syntax/ast.js';
import { DiagnosticError } from '../../../compiler/diagnostics.js';
import { countParses, parseSpec } from '../../../compiler/syntax/parse.js';
import { MODEL_NAMES, modelSource, spanProblem, stripSpans } from './helpers.js';

const model = (f: SpecFile, name: string) => f.decls.find((d) => d.kind !== 'import' && d.name.name === name) as ModuleDecl;
const forward = (m: ModuleDecl) => m.members.find((x) => x.kind === 'forward') as ForwardDecl;

function parseError(text: string): { message: string; start: number } {
  try {
    parseSpec(text, 't.kiln');
  } catch (e) {
    expect(e).toBeInstanceOf(DiagnosticError);
    const d = (e as DiagnosticError).diagnostics[0]!;
    expect(d.code).toBe('parse');
    expect(spanProblem(d.span, text, 't.kiln')).toBeNull();
    return { message: d.message, start: d.span!.start };
  }
  throw new Error('parsed');
}

describe('parseSpec on the models', () => {
  it.each(MODEL_NAMES)('parses %s.kiln with exactly one parse', (name) => {
    const { path, text } = modelSource(name);
    expect(countParses(text, path)).toBe(1);
    const file = parseSpec(text, path);
    expect(file.kind).toBe('file');
    expect(file.decls.length).toBeGreaterThan(0);
  });

  it('gives every node a span that covers its source text', () => {
    const { path, text } = modelSource('vwlmm');
    const file = parseSpec(text, path);
    const stack: unknown[] = [file];
    let count = 0;
    while (stack.length) {
      const node = stack.pop();
      if (node === null || typeof node !== 'object') continue;
      const rec = node as Record<string, unknown>;
      if ('span' in rec) {
        count++;
        expect(spanProblem(rec.span as never, text, path)).toBeNull();
        if (rec.kind === 'ident') expect(text.slice((rec.span as { start: number }).start).startsWith(rec.name as string)).toBe(true);
      }
      for (const [k, v] of Object.entries(rec)) if (k !== 'span') stack.push(v);
    }
    expect(count).toBeGreaterThan(500);
    const vm = forward(model(file, 'VWLMM')).body.find((s) => s.kind === 'loss' && s.name.name === 'vm')!;
    expect(text.slice(vm.span.start, vm.span.end)).toBe(
      'loss vm weight c.vm_weight = kl_div(z[:, :-1, :], vm_head(words_x)[:, 1:, :], is_image[:, 1:])',
    );
  });

  it('represents for ranges, slices, loss weights and negative numbers as documented', () => {
    const file = parseSpec(modelSource('vwlmm').text, 'vwlmm.kiln');
    const losses = forward(model(file, 'VWLMM')).body.filter((s): s is LossStmt => s.kind === 'loss');
    expect(losses.map((l) => [l.name.name, l.weight && stripSpans(l.weight)])).toEqual([
      ['lm', null],
      ['vm', { kind: 'member', object: { kind: 'name', name: 'c' }, property: { kind: 'ident', name: 'vm_weight' } }],
    ]);
    const cfg = parseSpec('config c { a = -2\n b = 1e-5 }', 'c.kiln').decls[0]!;
    expect(stripSpans(cfg)).toMatchObject({
      items: [
        { path: { parts: [{ name: 'a' }] }, value: { kind: 'unary', op: '-', operand: { kind: 'number', value: 2, isInt: true, text: '2' } } },
        { value: { kind: 'number', value: 1e-5, isInt: false, text: '1e-5' } },
      ],
    });
    const clip = parseSpec(modelSource('clip').text, 'clip.kiln');
    const tower = forward(model(clip, 'ClipVisionTower'));
    expect(stripSpans(tower.body[1])).toMatchObject({
      kind: 'for',
      variable: { name: 'i' },
      from: { kind: 'number', value: 0 },
      to: { kind: 'call', callee: { kind: 'name', name: 'py_index' }, args: [{ value: { kind: 'member' } }, { value: { kind: 'binary', op: '+' } }] },
      body: [{ kind: 'assign', name: { name: 'h' }, value: { kind: 'call', callee: { kind: 'index' } } }],
    });
    expect(stripSpans(tower.body[2])).toEqual({
      kind: 'return',
      value: {
        kind: 'index',
        object: { kind: 'name', name: 'h' },
        items: [
          { kind: 'slice', start: null, stop: null },
          { kind: 'slice', start: { kind: 'number', value: 1, isInt: true, text: '1' }, stop: null },
          { kind: 'slice', start: null, stop: null },
        ],
      },
    });
    const repeat = model(clip, 'ClipVisionTower').members.find((m): m is RepeatDecl => m.kind === 'repeat')!;
    expect(stripSpans(repeat)).toMatchObject({ name: { name: 'layers' }, index: { name: 'i' }, ckpt: { value: 'encoder.layers.{i}' } });
  });

  it('keeps train freeze lines apart from stages', () => {
    const file = parseSpec(modelSource('vwlmm').text, 'vwlmm.kiln');
    const train = model(file, 'VWLMM').members.find((m): m is TrainDecl => m.kind === 'train')!;
    expect(train.freeze.map((p) => p.parts.map((i) => i.name).join('.'))).toEqual(['vision_tower']);
    expect(train.stages.map((s) => [s.name.name, s.items.map((i) => i.kind)])).toEqual([
      ['pretrain', ['trainable', 'optimizer', 'schedule', 'setting', 'setting']],
      ['finetune', ['trainable', 'optimizer', 'schedule', 'setting', 'setting']],
    ]);
  });
});

describe('parseSpec layout', () => {
  const cfg = (text: string) => stripSpans(parseSpec(text, 'l.kiln'));

  it('treats newlines and semicolons alike, and ignores them inside brackets and after operators', () => {
    const canonical = cfg('config c {\n  a = f(1, 2)\n  b = x + y\n}\n');
    expect(cfg('config c { a = f(1, 2); b = x + y }')).toEqual(canonical);
    expect(cfg('\n\n// lead\nconfig c {\n\n  a = f(\n    1,\n    2,\n  )\n\n  b = x +\n    y ;;\n}\n\n')).toEqual(canonical);
    expect(cfg('config c {\r\n  a = f(1, 2) // note\r\n  b = x + y\r\n}')).toEqual(canonical);
  });

  it('accepts trailing commas in argument, parameter and list brackets', () => {
    const text = 'module A(a, b,) {\n  sub s = M(a, k = [1, 2,],)\n}';
    expect(countParses(text)).toBe(1);
    expect(cfg(text)).toEqual(cfg('module A(a, b) {\n  sub s = M(a, k = [1, 2])\n}'));
  });

  it('needs a separator between statements', () => {
    expect(parseError('config c { a = 1 b = 2 }').message).toBe(
      "unexpected identifier 'b'; expected one of: '(', '.', '[', '}', an operator, a newline",
    );
  });

  it('accepts keywords as names where a name is expected', () => {
    const f = parseSpec('module weight(model) {\n  param in: i32[for]\n  forward(let) {\n    return let + model.weight\n  }\n}', 'k');
    expect(countParses('config for { in.let = return; weight { model = i32 } }')).toBe(1);
    expect(stripSpans(f)).toMatchObject({ decls: [{ name: { name: 'weight' }, params: [{ name: 'model' }] }] });
  });

  it('distinguishes forward without parameters from forward()', () => {
    const f = parseSpec('model M { forward {}\n forward() {} }', 'k').decls[0] as ModuleDecl;
    expect(f.params).toEqual([]);
    expect(f.members.map((m) => (m as ForwardDecl).params)).toEqual([null, []]);
  });

  it('parses an empty file and a file of comments', () => {
    expect(parseSpec('', 'e').decls).toEqual([]);
    expect(parseSpec('// nothing\n\n   // here', 'e').decls).toEqual([]);
  });
});

describe('parseSpec limits', () => {
  it('parses a 1 MB spec', () => {
    const body = MODEL_NAMES.map((n) => modelSource(n).text.replace(/^import .*$/gm, '')).join('\n');
    const copies = Math.ceil(1_000_000 / body.length);
    const text = body.repeat(copies);
    const file = parseSpec(text, 'big.kiln');
    expect(text.length).toBeGreaterThanOrEqual(1_000_000);
    // Every copy's declarations, none lost or merged.
    expect(file.decls.length).toBe(copies * parseSpec(body, 'one.kiln').decls.length);
  });

  it.each([
    ['deep brackets', 'config c { x = ' + '('.repeat(100_000) + '1' + ')'.repeat(100_000) + ' }', /brackets nested too deeply/],
    ['prefix operators', 'config c { x = ' + '-'.repeat(100_000) + '1 }', /prefix operators in a row/],
    ['long operator chains', 'config c { x = 1' + '+1'.repeat(20_000) + ' }', /nested too deeply/],
    ['long call chains', 'config c { x = f' + '()'.repeat(20_000) + ' }', /nested too deeply/],
    ['too large', ' '.repeat(3 * 1024 * 1024), /input too large/],
  ])('refuses %s with a diagnostic', (_, text, message) => {
    expect(parseError(text).message).toMatch(message);
  });

  it('accepts long flat lists', () => {
    const text = 'config c { x = [' + '1, '.repeat(50_000) + '] }';
    const item = parseSpec(text, 'l').decls[0] as { items: { value: { items: unknown[] } }[] };
    expect(item.items[0]!.value.items).toHaveLength(50_000);
  });
});
