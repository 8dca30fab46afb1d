// `kiln graph`: SVG through Graphviz-in-wasm, DOT on stdout, and usage errors that say what to do.
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

describe('kiln graph', () => {
  it('writes an SVG with the collapsed modules and the kernel count', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'kiln-graph-')), 'g.svg');
    const r = await kiln('graph', ...spec, '--out', file, '--json');
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.format).toBe('svg');
    const svg = readFileSync(file, 'utf8');
    expect(svg).toMatch(/^<\?xml/);
    expect(svg).toContain('</svg>');
    expect(svg).toContain('mm_projector');
    expect(svg).toContain(`forward: ${info.kernels} kernels`);
  });

  it('--entry train_step draws the backward and optimiser boxes; --format dot prints DOT', async () => {
    const r = await kiln('graph', ...spec, '--entry', 'train_step', '--format', 'dot');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^digraph kiln \{/);
    expect(r.stdout).toMatch(/label="backward of model\\n\d+ ops in \d+ kernels"/);
    expect(r.stdout).toMatch(/label="optimizer\\n\d+ ops in \d+ kernels"/);
    expect(r.stdout).toContain('updated state (');
    expect(r.stdout).toContain('entry train_step');
  });

  it('an unknown module, two graph choices, an unknown entry or format: usage errors, exit 2', async () => {
    const r1 = await kiln('graph', ...spec, '--expand', 'modle', '--format', 'dot');
    expect(r1.code).toBe(2);
    expect(r1.stderr).toContain("--expand modle: no module of that path in the graph; did you mean 'model'?");
    expect((await kiln('graph', ...spec, '--train', '--entry', 'grads')).code).toBe(2);
    const r3 = await kiln('graph', ...spec, '--entry', 'decode');
    expect(r3.code).toBe(2);
    expect(r3.stderr).toContain('--entry decode: no such entry');
    const r4 = await kiln('graph', ...spec, '--format', 'png', '--out', 'x.png');
    expect(r4.code).toBe(2);
    expect((await kiln('graph', ...spec)).code).toBe(0);
    expect((await kiln('graph', ...spec, '--format', 'svg')).code).toBe(2);
  });
});
