// The CLI as a user meets it: exit codes, messages, and never a stack trace.
import { describe, expect, it } from 'vitest';
import { execFileSync, execSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';
import { readSafetensors, writeSafetensors } from '../../../runtime/node/safetensors-file.js';

async function kiln(...argv: string[]) {
  const out = new Output(true);
  const code = await main(argv, out);
  return { code, stdout: out.out.join('\n'), stderr: out.err.join('\n') };
}

const G = 'test/golden/llama_b2';
const lossArgs = (over: { checkpoint?: string; batch?: string } = {}) => [
  'loss', 'models/vwlmm.kiln', '--config', 'tiny',
  '--checkpoint', over.checkpoint ?? join(G, 'llava'), '--vision-tower', join(G, 'clip'),
  '--batch', over.batch ?? join(G, 'batch.safetensors'), '--json', '--backend', 'cpu',
];

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'kiln-cli-'));
}

describe('kiln command line', () => {
  it('a real process: usage errors exit 2, spec errors exit 1, with no stack trace', () => {
    const run = (args: string[]) => {
      try {
        return { code: 0, out: execFileSync('node', ['bin/kiln.js', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) };
      } catch (e) {
        const err = e as { status: number; stderr: string; stdout: string };
        return { code: err.status, out: err.stdout + err.stderr };
      }
    };
    const bad = join(tmp(), 'bad.kiln');
    writeFileSync(bad, 'config c {\n  x = 1 +\n}\n');
    const r1 = run(['check', bad]);
    expect(r1.code).toBe(1);
    expect(r1.out).toContain(`${bad}:3:1`);
    expect(r1.out).not.toMatch(/\n\s+at /);
    const r2 = run(['check', 'models/vwlmm.kiln', '--bogus']);
    expect(r2.code).toBe(2);
    expect(r2.out).not.toMatch(/\n\s+at /);
    const r3 = run(['check', 'models/vwlmm.kiln', '--config', 'tiny', '--json']);
    expect(r3.code).toBe(0);
    expect(JSON.parse(r3.out).total).toBeGreaterThan(200_000);
    // Far more than a pipe buffer: every byte must arrive before the process exits.
    // Through a shell pipe, where Node's stdout is asynchronous.
    const r4 = execSync('node bin/kiln.js check models/vwlmm.kiln --config vicuna7b --json | cat', { encoding: 'utf8' });
    expect(r4.length).toBeGreaterThan(65_536);
    expect(JSON.parse(r4).total).toBe(7_193_974_784);
  }, 60_000);

  it('no command or an unknown one prints the usage and exits 2', async () => {
    expect((await kiln()).code).toBe(2);
    const r = await kiln('compile-all');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("unknown command 'compile-all'");
  });

  it('check --json prints the parameter list and the total', async () => {
    const r = await kiln('check', 'models/vwlmm.kiln', '--config', 'vicuna7b', '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { parameters: { name: string; shape: number[]; count: number; trainable: boolean }[]; total: number };
    expect(j.total).toBe(6_738_415_616 + 303_507_456 + 20_979_712 + 131_072_000);
    expect(j.parameters.find((p) => p.name === 'vm_head.weight')).toEqual({ name: 'vm_head.weight', shape: [32000, 4096], count: 131_072_000, trainable: true });
  });

  it('check prints a table with totals per component', async () => {
    const r = await kiln('check', 'models/vwlmm.kiln', '--config', 'vicuna7b');
    expect(r.stdout).toMatch(/vision_tower\s+303,507,456\s+frozen/);
    expect(r.stdout).toMatch(/mm_projector\s+20,979,712\s+trainable/);
  });

  it('a missing spec file, an unknown config and a bad --set are usage errors', async () => {
    expect((await kiln('check', 'models/nope.kiln')).code).toBe(2);
    const c = await kiln('check', 'models/vwlmm.kiln', '--config', 'tiniest');
    expect(c.code).toBe(2);
    expect(c.stderr).toContain('no such config');
    const s = await kiln('check', 'models/vwlmm.kiln', '--set', 'layers=2');
    expect(s.code).toBe(2);
    expect(s.stderr).toMatch(/did you mean 'vision\.layers' or 'text\.layers'/);
    expect((await kiln('check', 'models/vwlmm.kiln', '--set', 'text.layers')).code).toBe(2);
  });

  it('loss: a truncated weight file names the file', async () => {
    const dir = tmp();
    for (const f of readdirSync(join(G, 'llava'))) copyFileSync(join(G, 'llava', f), join(dir, f));
    const bytes = readFileSync(join(dir, 'model.safetensors'));
    writeFileSync(join(dir, 'model.safetensors'), bytes.subarray(0, bytes.length - 100));
    const r = await kiln(...lossArgs({ checkpoint: dir }));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: .*model\.safetensors/);
  });

  it('loss: a malformed config.json names the file', async () => {
    const dir = tmp();
    for (const f of readdirSync(join(G, 'llava'))) copyFileSync(join(G, 'llava', f), join(dir, f));
    writeFileSync(join(dir, 'config.json'), '{"hidden_size": 48,');
    const r = await kiln(...lossArgs({ checkpoint: dir }));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('config.json');
  });

  it('loss: a checkpoint missing a tensor names the tensor', async () => {
    const dir = tmp();
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(G, 'llava', 'config.json'), join(dir, 'config.json'));
    const t = readSafetensors(join(G, 'llava', 'model.safetensors'));
    t.delete('vm_head.weight');
    writeSafetensors(join(dir, 'model.safetensors'), t);
    const r = await kiln(...lossArgs({ checkpoint: dir }));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('vm_head.weight');
  });

  it('loss: batch problems name the batch file and the tensor', async () => {
    const dir = tmp();
    const batch = readSafetensors(join(G, 'batch.safetensors'));
    const noLabels = new Map(batch);
    noLabels.delete('labels');
    writeSafetensors(join(dir, 'a.safetensors'), noLabels);
    const a = await kiln(...lossArgs({ batch: join(dir, 'a.safetensors') }));
    expect(a.code).toBe(1);
    expect(a.stderr).toMatch(/a\.safetensors: tensor 'labels'/);

    const ids = batch.get('input_ids')!;
    const twice = Int32Array.from(ids.data);
    twice[ids.shape[1]! - 1] = -200;
    writeSafetensors(join(dir, 'b.safetensors'), new Map([...batch, ['input_ids', { ...ids, data: twice }]]));
    const b = await kiln(...lossArgs({ batch: join(dir, 'b.safetensors') }));
    expect(b.code).toBe(1);
    expect(b.stderr).toContain('b.safetensors');
    expect(b.stderr).not.toContain('internal error');
  });
});
