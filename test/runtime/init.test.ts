import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { loadSpec } from '../../compiler/syntax/load.js';
import { checkModel } from '../../compiler/check/index.js';
import { initParams, seededRandom } from '../../compiler/exec/init.js';

describe('parameter initialisation', () => {
  it('follows each parameter\'s initialiser, reproducibly from a seed', () => {
    const files = loadSpec('models/vwlmm.kiln', (p: string) => readFileSync(p, 'utf8')).files;
    const m = checkModel(files, { config: 'tiny' });
    const a = initParams(m.graph.params, 3);
    const b = initParams(m.graph.params, 3);
    const norm = a.get('model.norm.weight')!;
    expect([...norm.data].every((v) => v === 1)).toBe(true);
    expect([...a.get('model.mm_projector.0.bias')!.data].every((v) => v === 0)).toBe(true);
    const w = Array.from(a.get('lm_head.weight')!.data);
    const mean = w.reduce((s, v) => s + v, 0) / w.length;
    const std = Math.sqrt(w.reduce((s, v) => s + (v - mean) ** 2, 0) / w.length);
    // 64,000 samples of N(0, 0.02): the sample std is within 1% of 0.02 with overwhelming odds.
    expect(Math.abs(std - 0.02)).toBeLessThan(2e-4);
    expect(Math.abs(mean)).toBeLessThan(2e-4);
    expect(Array.from(b.get('lm_head.weight')!.data)).toEqual(w);
    expect(Array.from(initParams(m.graph.params, 4).get('lm_head.weight')!.data)).not.toEqual(w);
  });

  it('the generator is uniform on [0, 1)', () => {
    const r = seededRandom(1);
    const xs = Array.from({ length: 100_000 }, r);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    expect(Math.abs(xs.reduce((a, b) => a + b, 0) / xs.length - 0.5)).toBeLessThan(0.005);
  });
});
