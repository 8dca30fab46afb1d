// Errors that name their cause (issue 8 §5): one case of every class through the real `kiln`
// process, checking the exit code (0 ok, 1 bad input, 2 bad usage, 3 no WebGPU adapter when asked
// for one, never 70), the message, and that no JavaScript stack trace reaches the user.
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { kilnProcess as kiln } from '../../helpers/kiln-process.js';

const G = 'test/golden/llama_b2';
const dir = mkdtempSync(join(tmpdir(), 'kiln-errors-'));

const loss = (over: { checkpoint?: string; tower?: string | null; extra?: string[] } = {}) => [
  'loss', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', over.checkpoint ?? `${G}/llava`,
  ...(over.tower === null ? [] : ['--vision-tower', over.tower ?? `${G}/clip`]),
  '--batch', `${G}/batch.safetensors`, '--backend', 'cpu', ...(over.extra ?? []),
];

/** A copy of the golden LLaVA folder with its config.json edited. */
function llavaWith(name: string, edit: (json: Record<string, unknown>) => void): string {
  const d = join(dir, name);
  cpSync(`${G}/llava`, d, { recursive: true });
  const json = JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')) as Record<string, unknown>;
  edit(json);
  writeFileSync(join(d, 'config.json'), JSON.stringify(json));
  return d;
}

function spec(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

const trivialModel = (dim: string) => `model M(c) {\n  param w: f32[${dim}]\n  input a: f32[2]\n  forward {\n    output y = a\n  }\n}\n`;

// [class, args, env, exit code, parts of stderr]
const CASES: [string, () => string[], Record<string, string>, number, string[]][] = [
  ['a --set value that breaks a shape names the --set', () => ['check', 'models/vwlmm.kiln', '--config', 'tiny', '--set', 'text.heads=5'], {}, 1, ['(from --set text.heads=5)']],
  ['a --set value of the wrong kind is a usage error', () => ['check', 'models/vwlmm.kiln', '--config', 'tiny', '--set', 'text.layers=abc'], {}, 2, ['--set text.layers=abc', 'must be an integer', '"abc"']],
  [
    'a config.json value that breaks the spec is named with its file',
    () => loss({ checkpoint: llavaWith('odd-head', (j) => (j['head_dim'] = 5)) }),
    {},
    1,
    ['must be an even number', 'the values read from', 'odd-head/config.json'],
  ],
  ['a config.json without hidden_size names the field', () => loss({ checkpoint: llavaWith('no-hidden', (j) => delete j['hidden_size']) }), {}, 1, ['field "hidden_size" is missing', 'no default']],
  ['a checkpoint folder that does not exist says so', () => loss({ checkpoint: join(dir, 'nope') }), {}, 1, ['--checkpoint', 'nope: no such folder']],
  ['a vision tower folder that does not exist says so', () => loss({ tower: join(dir, 'nope-clip') }), {}, 1, ['--vision-tower', 'nope-clip: no such folder']],
  ['without --vision-tower, the tower tensors ask for the flag', () => loss({ tower: null }), {}, 1, ['pass it with --vision-tower DIR', 'mm_vision_tower says "../clip"']],
  ['--checkpoint and --vision-tower swapped', () => loss({ checkpoint: `${G}/clip`, tower: `${G}/llava` }), {}, 2, ['look swapped', `--checkpoint ${G}/llava --vision-tower ${G}/clip`]],
  ['--grads in a folder that cannot be created', () => loss({ extra: ['--grads', '/proc/kiln/grads.safetensors'] }), {}, 1, ['--grads /proc/kiln/grads.safetensors: cannot create the folder /proc/kiln']],
  ['--grads under a file', () => loss({ extra: ['--grads', 'package.json/grads.safetensors'] }), {}, 1, ['package.json is not a folder']],
  ['--grads where writing is refused', () => loss({ extra: ['--grads', '/sys/grads.safetensors'] }), {}, 1, ['--grads /sys/grads.safetensors: cannot write in /sys']],
  ['a dim past 2^53', () => ['check', spec('big.kiln', `config c {\n  d = 10000000000000000\n}\n${trivialModel('c.d')}`)], {}, 1, ['at most 2^53 - 1', '10000000000000000']],
  ['an absurd dim (1e23)', () => ['check', spec('huge.kiln', `config c {\n  d = 1e23\n}\n${trivialModel('c.d')}`)], {}, 1, ['at most 2^53 - 1', '1e+23']],
  ['an element count past 2^53', () => ['check', spec('count.kiln', `config c {\n  d = 100000000\n}\n${trivialModel('c.d, c.d, c.d')}`)], {}, 1, ['1.000e+24 elements']],
  ['--backend webgpu without an adapter exits 3', () => loss({ extra: ['--backend', 'webgpu'] }), { VK_ICD_FILENAMES: '/nonexistent/icd.json' }, 3, ['no WebGPU adapter found']],
];

describe('every class of bad input through the real kiln process', () => {
  it.each(CASES)('%s', (_name, args, env, code, parts) => {
    const r = kiln(args(), env);
    expect(r.code, r.err).toBe(code);
    for (const p of parts) expect(r.err).toContain(p);
    // No JavaScript stack frame ("    at f (file.ts:1:2)"), and never "internal error".
    expect(r.err).not.toMatch(/\n\s+at .*\.(ts|js|mjs):\d+/);
    expect(r.err).not.toContain('internal error');
  }, 60_000);

  it('3,000-link extends and value chains check without overflowing the stack', () => {
    const links = Array.from({ length: 3000 }, (_, i) => (i === 0 ? 'config c0 {\n  x = 1\n}' : `config c${i} extends c${i - 1} {\n  x = x${i - 1} + 1\n  x${i} = ${i + 1}\n}`));
    const ext = spec('extends.kiln', `${links.join('\n').replace('config c0 {\n  x = 1\n}', 'config c0 {\n  x = 1\n  x0 = 1\n}')}\n${trivialModel('c.x')}`);
    const a = kiln(['check', ext, '--config', 'c2999', '--json']);
    expect(a.err).toBe('');
    expect(JSON.parse(a.out).total).toBe(3000);
    const values = Array.from({ length: 3000 }, (_, i) => (i === 0 ? '  v0 = 1' : `  v${i} = v${i - 1} + 1`));
    const chain = spec('chain.kiln', `config c {\n${values.join('\n')}\n}\n${trivialModel('c.v2999')}`);
    const b = kiln(['check', chain, '--json']);
    expect(b.err).toBe('');
    expect(JSON.parse(b.out).total).toBe(3000);
    // The same chain written backwards (each value before the one it reads), and a cycle still named.
    const back = spec('back.kiln', `config c {\n${[...values].reverse().join('\n')}\n}\n${trivialModel('c.v2999')}`);
    expect(JSON.parse(kiln(['check', back, '--json']).out).total).toBe(3000);
    const cycle = kiln(['check', spec('cycle.kiln', `config c {\n  a = b + 1\n  b = a + 1\n}\n${trivialModel('c.a')}`)]);
    expect(cycle.code).toBe(1);
    expect(cycle.err).toContain('depends on itself');
  }, 60_000);

  it('no output file is left behind by a run refused before work', () => {
    const grads = join(dir, 'sub', 'grads.safetensors');
    const r = kiln(loss({ checkpoint: join(dir, 'nope'), extra: ['--grads', grads] }));
    expect(r.code).toBe(1);
    expect(existsSync(grads)).toBe(false);
  });
});
