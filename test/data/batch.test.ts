// Batches: right padding with the tokenizer's pad id, labels -100 on pads, attention mask,
// image and text-only rows mixed, seeded shuffling per epoch.
import { describe, expect, it } from 'vitest';
import { batches, collate, epochOrder } from '../../data/batch.js';

const sample = (id: string, ids: number[], labels: number[], image: boolean) => ({
  id,
  encoded: { inputIds: Int32Array.from(ids), labels: Int32Array.from(labels) },
  pixelValues: image ? new Float32Array(3 * 2 * 2).fill(0.5) : null,
});

describe('batches', () => {
  it('right-pads rows of different lengths; pads get the pad id, label -100 and mask 0', () => {
    const b = collate([sample('a', [1, -200, 5, 6, 2], [-100, -100, -100, 6, 2], true), sample('b', [1, 7, 2], [-100, 7, 2], false)], { padId: 0, imageSize: 2 });
    expect(b.inputIds.shape).toEqual([2, 5]);
    expect([...b.inputIds.data]).toEqual([1, -200, 5, 6, 2, 1, 7, 2, 0, 0]);
    expect([...b.labels.data]).toEqual([-100, -100, -100, 6, 2, -100, 7, 2, -100, -100]);
    expect([...b.attentionMask.data]).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
    expect(b.pixelValues.shape).toEqual([2, 3, 2, 2]);
    expect([...b.pixelValues.data.slice(0, 12)].every((v) => v === 0.5)).toBe(true);
    expect([...b.pixelValues.data.slice(12)].every((v) => v === 0)).toBe(true);
    expect(b.inputIds.dtype).toBe('i32');
  });

  it('shuffles with the seed: same seed same order, each epoch a different permutation of all samples', () => {
    expect(epochOrder(50, 1, 0)).toEqual(epochOrder(50, 1, 0));
    expect(epochOrder(50, 1, 0)).not.toEqual(epochOrder(50, 1, 1));
    expect(epochOrder(50, 1, 0)).not.toEqual(epochOrder(50, 2, 0));
    expect([...epochOrder(50, 1, 3)].sort((a, b) => a - b)).toEqual([...Array(50).keys()]);
    // a fixed value, so a change of generator is noticed (the order must be the same everywhere)
    expect(epochOrder(8, 0, 0).join(',')).toBe('2,0,6,5,7,3,1,4');
  });

  it('covers every sample once per epoch, last batch smaller unless dropped', () => {
    const s = Array.from({ length: 7 }, (_, i) => sample(`s${i}`, [1, i + 3], [-100, i + 3], i % 2 === 0));
    const got = [...batches(s, { batchSize: 3, seed: 5, epochs: 2, padId: 0, imageSize: 2 })];
    expect(got.map((g) => g.batch.ids.length)).toEqual([3, 3, 1, 3, 3, 1]);
    expect(got.slice(0, 3).flatMap((g) => g.batch.ids).sort()).toEqual(s.map((x) => x.id).sort());
    expect(got.map((g) => g.epoch)).toEqual([0, 0, 0, 1, 1, 1]);
    const dropped = [...batches(s, { batchSize: 3, seed: 5, epochs: 1, padId: 0, imageSize: 2, dropLast: true })];
    expect(dropped).toHaveLength(2);
  });
});
