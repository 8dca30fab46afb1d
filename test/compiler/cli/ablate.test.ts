// `kiln ablate` (issue 12 §4): the three rows train in-process with kiln train's code, the same
// seeds and steps for each, and one table comes out; bad usage and bad input end with exit 2 / 1
// and a message. The run here is 3 steps of 1 seed (the figures at so few steps mean nothing;
// the test checks the rows are the three models and the table is what the runs measured).
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ablationText, sampleSd, type AblationTable } from '../../../compiler/cli/ablate.js';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';

async function ablate(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = new Output(true);
  const code = await main(['ablate', ...args], out);
  return { code, out: out.out.join('\n'), err: out.err.join('\n') };
}

describe('kiln ablate', () => {
  it('trains LLaVA, VW-LMM and VW-LMM pif with the same seeds and steps; --json gives the table', async () => {
    // 3 steps: the stage's warmup (ceil(0.03 * 3) = 1 step) runs step 1 at learning rate 0.
    const r = await ablate(['models/vwlmm.kiln', '--seeds', '1', '--steps', '3', '--json']);
    expect(r.code, r.err).toBe(0);
    const t = JSON.parse(r.out) as AblationTable;
    expect(t).toMatchObject({ config: 'tiny', seeds: 1, steps: 3, recipe: { data: 'builtin:shapes?stage=mix', template: 'mistral', 'batch-size': '16', lr: '2e-3' } });
    expect(t.rows.map((x) => x.sets)).toEqual([
      ['vm_weight=0', 'pif=false'],
      ['vm_weight=1', 'pif=false'],
      ['vm_weight=1', 'pif=true'],
    ]);
    // builtin:shapes' held-out questions and their image-blind baseline (README: 37.1%).
    expect(t.baseline_accuracy).toBeCloseTo(0.371, 3);
    expect(t.answers).toBeGreaterThan(0);
    for (const row of t.rows) {
      expect(row.runs.map((x) => x.seed)).toEqual([0]);
      expect(row.accuracy.mean).toBe(row.runs[0]!.accuracy);
      expect(row.accuracy.sd).toBeNull();
      expect(row.accuracy.mean).toBeGreaterThanOrEqual(0);
      expect(row.accuracy.mean).toBeLessThanOrEqual(1);
      expect(Object.keys(row.train).sort()).toEqual(['lm', 'vm']);
      expect(Object.keys(row.heldout).sort()).toEqual(['lm', 'vm']);
      expect(row.wall_s).toBeGreaterThan(row.runs[0]!.train_s);
    }
    const [llava, vw, pif] = t.rows.map((x) => x.runs[0]!) as [AblationTable['rows'][0]['runs'][0], AblationTable['rows'][0]['runs'][0], AblationTable['rows'][0]['runs'][0]];
    // Same seed, same batches: step 3's LM term differs by what step 2's VM gradient changed
    // (vm_weight 0 against 1), and pif changes the forward itself.
    expect(vw.train['lm']).not.toBe(llava.train['lm']);
    expect(Math.abs(pif.train['lm']! - vw.train['lm']!)).toBeGreaterThan(1e-3);
    // The text form of the same table.
    const text = ablationText(t);
    expect(text).toContain('image-blind baseline');
    expect(text).toContain('VW-LMM pif (vm_weight 1)');
  }, 900_000);

  it('formats accuracy as mean ± sample sd over seeds', () => {
    expect(sampleSd([0.61, 0.62, 0.63])).toBeCloseTo(0.01, 12);
    expect(sampleSd([0.5])).toBeNull();
    const run = (seed: number, accuracy: number) => ({ seed, accuracy, train: { lm: 1, vm: 0.5 }, heldout: { lm: 2, vm: 0.25 }, wall_s: 10, train_s: 8 });
    const row = (name: string, accs: number[]) => ({
      name,
      sets: [],
      accuracy: { mean: accs.reduce((a, x) => a + x, 0) / accs.length, sd: sampleSd(accs) },
      train: { lm: 1, vm: 0.5 },
      heldout: { lm: 2, vm: 0.25 },
      wall_s: 10,
      runs: accs.map((a, i) => run(i, a)),
    });
    const table: AblationTable = {
      spec: 's.kiln', config: 'tiny', backend: 'webgpu', adapter: 'x', seeds: 3, steps: 5, recipe: { data: 'd', template: 't', 'batch-size': '16', lr: '2e-3' },
      heldout: 'h', answers: 10, baseline_accuracy: 0.371, rows: [row('A', [0.61, 0.62, 0.63])],
    };
    const lines = ablationText(table).split('\n');
    expect(lines.find((l) => l.startsWith('A '))).toMatch(/^A\s+62\.0% ± 1\.0\s+1\.0000\s+0\.5000\s+2\.0000\s+0\.2500\s+10\.0$/);
    expect(lines.at(-1)).toMatch(/^image-blind baseline\s+37\.1%$/);
  });

  it.each([
    [['--seeds', '0'], '--seeds 0: expected an integer >= 1'],
    [['--seeds', '1.5'], '--seeds 1.5: expected an integer >= 1'],
    [['--steps', 'many'], '--steps many: expected an integer >= 1'],
    [['--config', 'tinny'], "no such config; did you mean 'tiny'"],
    [['--set', 'pif=true'], "--set pif=true: the ablation's rows set pif themselves"],
    [['--backend', 'tpu'], '--backend tpu: expected webgpu or cpu'],
  ])('%j is bad usage (exit 2)', async (flags, message) => {
    const r = await ablate(['models/vwlmm.kiln', ...flags]);
    expect(r.code).toBe(2);
    expect(r.err).toContain(message);
    expect(r.err).not.toMatch(/\n\s+at /);
  });

  it('a spec without the pif value is bad input (exit 1), before anything trains', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-ablate-spec-'));
    cpSync('models', dir, { recursive: true });
    const spec = join(dir, 'vwlmm.kiln');
    writeFileSync(spec, readFileSync(spec, 'utf8').replace(/^\s*pif = false\n/m, '').replace(/if c\.pif \{/, 'if false {'));
    const r = await ablate([spec, '--steps', '1']);
    expect(r.code).toBe(1);
    expect(r.err).toContain('kiln ablate needs the config values vm_weight and pif');
    expect(r.err).toContain("has no value 'pif'");
  });
});
