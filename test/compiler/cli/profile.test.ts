// `kiln profile` as a user runs it: a kernel table from timestamp queries, JSON, a Chrome trace;
// and `--profile` on kiln train and kiln generate through the real process.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';
import { kilnProcess } from '../../helpers/kiln-process.js';

async function kiln(...argv: string[]) {
  const out = new Output(true);
  const code = await main(argv, out);
  return { code, stdout: out.out.join('\n'), stderr: out.err.join('\n') };
}

const spec = ['models/vwlmm.kiln', '--config', 'tiny'];

describe('kiln profile', () => {
  it('times the loss entry of the tiny model: every dispatch in the table and the trace', async () => {
    const trace = join(mkdtempSync(join(tmpdir(), 'kiln-profile-')), 'trace.json');
    const r = await kiln('profile', ...spec, '--entry', 'loss', '--batch-size', '1', '--seq', '8', '--runs', '2', '--json', '--trace', trace);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const p = JSON.parse(r.stdout);
    expect(p.entry).toBe('loss');
    expect(p.batch).toEqual([1, 8]);
    expect(p.runs).toBe(2);
    expect(p.dispatches_per_run).toBeGreaterThan(20);
    const calls = p.kernels.reduce((a: number, k: { calls: number }) => a + k.calls, 0);
    expect(calls).toBe(2 * p.dispatches_per_run);
    expect(p.kernel_ms_per_run).toBeGreaterThan(0);
    expect(p.kernels.some((k: { ops: string }) => k.ops.includes('attention'))).toBe(true);
    const events = JSON.parse(readFileSync(trace, 'utf8')).traceEvents.filter((e: { ph: string }) => e.ph === 'X');
    expect(events).toHaveLength(calls);
  });

  it('bad usage exits 2 before any GPU work', async () => {
    const r1 = await kiln('profile', ...spec, '--entry', 'decode');
    expect(r1.code).toBe(2);
    expect(r1.stderr).toContain('--entry decode: expected one of train_step, loss, eval');
    expect((await kiln('profile', ...spec, '--batch', 'b.safetensors', '--seq', '8')).code).toBe(2);
    expect((await kiln('profile', ...spec, '--runs', '0')).code).toBe(2);
  });
});

const G = 'test/golden/llama_b2';
const golden = ['--checkpoint', `${G}/llava`, '--vision-tower', `${G}/clip`, '--batch', `${G}/batch.safetensors`];

interface Row {
  kernel: string;
  ops: string;
  entry: string;
  calls: number;
  total_ms: number;
  share: number;
}

describe('--profile on kiln train and kiln generate', () => {
  it('kiln train --profile: the table names every kernel of the step, once per step, and its shares sum to 100%', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-train-profile-'));
    const steps = 3;
    const r = kilnProcess(['train', ...spec, ...golden, '--steps', String(steps), '--profile', '--out', join(dir, 'text')]);
    expect(r.code, r.err).toBe(0);
    const lines = r.out.split('\n');
    const head = lines.findIndex((l) => /^kernel\s+ops\s+calls\s+total ms\s+mean ms\s+share$/.test(l));
    expect(head, r.out).toBeGreaterThan(0);
    expect(lines[head - 1]).toMatch(new RegExp(`^profile on .+ \\(GPU timestamps\\): train_step ${steps} runs, [\\d.]+ ms in kernels and \\d+ dispatches per run$`));
    const body = lines.slice(head + 1).filter((l) => l.trim() !== '');
    const total = body.at(-1)!;
    expect(total).toMatch(new RegExp(`^total\\s+\\d+ kernels, ${steps} runs\\s+\\d+\\s+[\\d.]+\\s+[\\d.]+\\s+100\\.0%$`));
    const rows = body.slice(0, -1);
    for (const row of rows) expect(row).toMatch(/^(k\d+\.wgsl|\(\d+ more\))\s/);
    // Each printed share is rounded to 0.1%: the sum is 100% within half that per row.
    const shares = rows.map((l) => Number(/([\d.]+)%$/.exec(l)![1]));
    expect(Math.abs(shares.reduce((a, b) => a + b, 0) - 100)).toBeLessThanOrEqual(0.05 * rows.length + 1e-9);

    const j = kilnProcess(['train', ...spec, ...golden, '--steps', String(steps), '--profile', '--json', '--out', join(dir, 'json')]);
    expect(j.code, j.err).toBe(0);
    const last = JSON.parse(j.out.trim().split('\n').at(-1)!) as { summary: { steps: number }; profile: { entries: { entry: string; runs: number; dispatches_per_run: number }[]; kernels: Row[] } };
    expect(last.summary.steps).toBe(steps);
    const p = last.profile;
    expect(p.entries.map((e) => [e.entry, e.runs])).toEqual([['train_step', steps]]);
    // Every kernel of the step runs the same number of times in each step.
    for (const k of p.kernels) {
      expect(k.kernel).toMatch(/^kernels\/k\d+\.wgsl$/);
      expect(k.entry).toBe('train_step');
      expect(k.calls % steps, k.kernel).toBe(0);
    }
    expect(p.kernels.reduce((a, k) => a + k.calls, 0)).toBe(steps * p.entries[0]!.dispatches_per_run);
    // Shares are each kernel's fraction of the summed time: 1 up to float addition.
    expect(Math.abs(p.kernels.reduce((a, k) => a + k.share, 0) - 1)).toBeLessThan(1e-9);
    expect(p.kernels.some((k) => k.ops.includes('kl_div'))).toBe(true);
  }, 240_000);

  it('kiln generate --profile --json: the prefill once and one decode step per token after the first', () => {
    const r = kilnProcess(['generate', ...spec, ...golden, '--max-tokens', '4', '--profile', '--json']);
    expect(r.code, r.err).toBe(0);
    const g = JSON.parse(r.out) as { tokens: number[]; stop: string; profile: { entries: { entry: string; runs: number }[]; kernels: Row[] } };
    expect(g.stop).toBe('max-tokens');
    // The untimed warmup run (a prefill and a decode step) is not in the profile.
    expect(g.profile.entries.map((e) => [e.entry, e.runs])).toEqual([
      ['prefill', 1],
      ['decode', g.tokens.length - 1],
    ]);
    expect(Math.abs(g.profile.kernels.reduce((a, k) => a + k.share, 0) - 1)).toBeLessThan(1e-9);
  }, 240_000);

  it('--profile with --backend cpu is a usage error', () => {
    const r = kilnProcess(['train', ...spec, ...golden, '--steps', '1', '--profile', '--backend', 'cpu']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('--profile times WebGPU kernels');
  }, 60_000);
});
