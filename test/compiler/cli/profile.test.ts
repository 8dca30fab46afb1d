// `kiln profile` as a user runs it: a kernel table from timestamp queries, JSON, a Chrome trace.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';

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
