// The command line's usage surface through the real `kiln` process (bin/kiln.js, commander):
// every command's --help exits 0, names each option once and shows an example of that command;
// an unknown option exits 2 naming the nearest one; a missing argument or option value exits 2.
import { describe, expect, it } from 'vitest';
import { commands } from '../../../compiler/cli/commands.js';
import { kilnProcess as kiln } from '../../helpers/kiln-process.js';

/** The long flags of --help's option lines (two spaces in; wrapped description lines are further in). */
const flagsOf = (help: string): string[] =>
  help
    .split('\n')
    .map((l) => /^ {2}(--[a-z0-9-]+)/.exec(l)?.[1])
    .filter((f): f is string => f !== undefined);

describe.each(Object.keys(commands))('kiln %s --help', (name) => {
  it('exits 0 with its usage, each option once and an example of the command', () => {
    const r = kiln([name, '--help']);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(new RegExp(`^Usage: kiln ${name} `));
    const flags = flagsOf(r.out);
    expect(flags.filter((f, i) => flags.indexOf(f) !== i)).toEqual([]);
    // Every declared option is listed: the table and the help cannot drift apart.
    expect(new Set(flags)).toEqual(new Set(Object.keys(commands[name]!.options).map((o) => `--${o}`)));
    expect(r.out).toMatch(new RegExp(`\\nExamples:\\n  # .+\\n  \\$ kiln ${name}( |$)`, 'm'));
  }, 60_000);
});

describe('kiln usage errors', () => {
  it('kiln --help lists every command and the exit codes; kiln alone exits 2 with the same text', () => {
    const r = kiln(['--help']);
    expect(r.code).toBe(0);
    for (const name of Object.keys(commands)) expect(r.out).toMatch(new RegExp(`^  ${name} `, 'm'));
    expect(r.out).toContain('Exit codes: 0 ok; 1 bad input');
    const bare = kiln([]);
    expect(bare.code).toBe(2);
    expect(bare.err).toContain('Commands:');
  }, 60_000);

  it.each([
    ['check', ['check', 'models/vwlmm.kiln', '--confg', 'tiny'], '--confg', '--config'],
    ['train', ['train', 'models/vwlmm.kiln', '--batch-sise', '2'], '--batch-sise', '--batch-size'],
    ['generate', ['generate', 'models/vwlmm.kiln', '--max-token', '4'], '--max-token', '--max-tokens'],
    ['graph', ['graph', 'models/vwlmm.kiln', '--expnd', 'model'], '--expnd', '--expand'],
  ])('an unknown option on %s exits 2 and names the nearest', (_name, args, bad, near) => {
    const r = kiln(args);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toContain(`kiln: unknown option '${bad}'`);
    expect(r.err).toContain(`(Did you mean ${near}?)`);
    expect(r.err).not.toMatch(/\n\s+at .*\.(ts|js|mjs):\d+/);
  }, 60_000);

  it('an unknown command names the nearest; a missing SPEC, option value or extra argument exits 2', () => {
    const c = kiln(['compil', 'models/vwlmm.kiln']);
    expect(c.code).toBe(2);
    expect(c.err).toContain("unknown command 'compil'");
    expect(c.err).toContain('(Did you mean compile?)');
    const spec = kiln(['loss', '--checkpoint', 'x']);
    expect(spec.code).toBe(2);
    expect(spec.err).toContain("kiln: missing required argument 'SPEC'");
    const value = kiln(['check', 'models/vwlmm.kiln', '--config']);
    expect(value.code).toBe(2);
    expect(value.err).toContain("option '--config <NAME>' argument missing");
    const extra = kiln(['check', 'models/vwlmm.kiln', 'models/clip.kiln']);
    expect(extra.code).toBe(2);
    expect(extra.err).toContain('too many arguments');
  }, 60_000);

  it('--set repeats: each value applies', () => {
    const r = kiln(['check', 'models/vwlmm.kiln', '--config', 'tiny', '--set', 'text.layers=1', '--set', 'vision.layers=1', '--json']);
    expect(r.code, r.err).toBe(0);
    const names = (JSON.parse(r.out) as { parameters: { name: string }[] }).parameters.map((p) => p.name);
    expect(names.some((n) => n.startsWith('model.layers.1.'))).toBe(false);
    expect(names.some((n) => n.startsWith('model.layers.0.'))).toBe(true);
    expect(names.some((n) => /vision_tower\..*\.layers\.1\./.test(n))).toBe(false);
    expect(names.some((n) => /vision_tower\..*\.layers\.0\./.test(n))).toBe(true);
  }, 60_000);
});
