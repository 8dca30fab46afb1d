// Made-up batches: valid under the model's contract, deterministic by seed.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { loadSpec } from '../../compiler/syntax/load.js';
import { checkModel } from '../../compiler/check/index.js';
import { inputContract } from '../../compiler/passes/input-contract.js';
import { syntheticBatch } from '../../data/synthetic.js';

const contract = () => inputContract(checkModel(loadSpec('models/vwlmm.kiln', (p) => readFileSync(p, 'utf8')).files, { config: 'tiny' }).graph);

describe('syntheticBatch', () => {
  it('gives a batch the tiny VW-LMM accepts: one placeholder per row, ids in the vocabulary, some labels ignored', () => {
    const b = syntheticBatch(contract(), new Map([['B', 3], ['T', 10]]), 4);
    const ids = b.get('input_ids')!;
    expect(ids.shape).toEqual([3, 10]);
    for (let r = 0; r < 3; r++) {
      const row = [...ids.data.slice(r * 10, r * 10 + 10)];
      expect(row.filter((v) => v === -200)).toHaveLength(1);
      expect(row.every((v) => v === -200 || (v >= 0 && v < 1000))).toBe(true);
    }
    expect([...b.get('labels')!.data].filter((v) => v === -100).length).toBeGreaterThan(0);
    expect(b.get('pixel_values')!.shape).toEqual([3, 3, 28, 28]);
    expect(syntheticBatch(contract(), new Map([['B', 3], ['T', 10]]), 4)).toEqual(b);
  });

  it('names the input whose dims it cannot size', () => {
    expect(() => syntheticBatch(contract(), new Map([['B', 1]]))).toThrow(/input input_ids: cannot size dim T/);
  });
});
