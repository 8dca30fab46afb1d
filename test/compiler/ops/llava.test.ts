import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { addDims, subDims } from '../../../compiler/ir/dims.js';
import { B, RUNS, T, cotangent, gradCheck, host, infer, input, run, t, values } from './harness.js';

describe('LLaVA op shape rules', () => {
  it('embedding gathers rows by i32 ids', () => {
    expect(infer('embedding', [t('i32', [B, T]), t('f32', [512, 64])])).toEqual(t('f32', [B, T, 64]));
    expect(() => infer('embedding', [t('f32', [B, T]), t('f32', [512, 64])])).toThrow('embedding: ids must be i32, got f32[B, T]');
    expect(() => infer('embedding', [t('i32', [B, T]), t('f32', [512])])).toThrow('embedding: weight must have rank 2, got f32[512]');
  });

  it('patch_embed divides the image into stride x stride patches', () => {
    expect(infer('patch_embed', [t('f32', [B, 3, 336, 336]), t('f32', [1024, 3, 14, 14])], { stride: 14 })).toEqual(t('f32', [B, 1024, 24, 24]));
    expect(() => infer('patch_embed', [t('f32', [B, 3, 30, 28]), t('f32', [32, 3, 7, 7])], { stride: 7 })).toThrow(
      'patch_embed: image height 30 (x dim 2) is not a multiple of the stride 7',
    );
    expect(() => infer('patch_embed', [t('f32', [B, 3, 28, 27]), t('f32', [32, 3, 7, 7])], { stride: 7 })).toThrow(
      'patch_embed: image width 27 (x dim 3) is not a multiple of the stride 7',
    );
    expect(() => infer('patch_embed', [t('f32', [B, 4, 28, 28]), t('f32', [32, 3, 7, 7])], { stride: 7 })).toThrow(
      'patch_embed: x [B, 4, 28, 28] has 4 channels (dim 1) but weight [32, 3, 7, 7] expects 3 (weight dim 1)',
    );
    expect(() => infer('patch_embed', [t('f32', [B, 3, 28, 28]), t('f32', [32, 3, 7, 7])], { stride: 4 })).toThrow(
      'patch_embed: weight [32, 3, 7, 7] must have a 4x4 kernel (dims 2, 3) to match stride 4',
    );
  });

  it('splice makes [B, T - 1 + P, ...]', () => {
    expect(infer('splice', [t('f32', [B, T, 64]), t('f32', [B, 576, 64]), t('i32', [B, T])], { token: -200 }).shape).toEqual([
      B,
      addDims(T, 575),
      64,
    ]);
    expect(infer('splice', [t('i32', [B, T]), t('i32', [B, 16]), t('i32', [B, T])], { token: -200 }).shape).toEqual([B, addDims(T, 15)]);
    expect(() => infer('splice', [t('f32', [B, T, 64]), t('f32', [B, 576, 32]), t('i32', [B, T])], { token: -200 })).toThrow(
      'splice: insert [B, 576, 32] and seq [B, T, 64] differ at dim 2 (32 vs 64)',
    );
    expect(() => infer('splice', [t('f32', [B, T, 64]), t('f32', [B, 576, 64]), t('i32', [B, 7])], { token: -200 })).toThrow(
      'splice: seq [B, T, 64] must start with the [B, T] of ids [B, 7]',
    );
    expect(() => infer('splice', [t('f32', [B, T, 64]), t('i32', [B, 576, 64]), t('i32', [B, T])], { token: -200 })).toThrow(
      'splice: dtypes differ: seq is f32, insert is i32',
    );
  });

  it('losses are scalars over [..., V] logits', () => {
    const L = subDims(addDims(T, 575), 1);
    expect(infer('cross_entropy', [t('f32', [B, L, 512]), t('i32', [B, L])], { ignore_index: -100 })).toEqual(t('f32', []));
    expect(() => infer('cross_entropy', [t('f32', [B, T, 512]), t('i32', [B, L])], {})).toThrow(
      'cross_entropy: labels [B, T + 574] must be logits [B, T, 512] without the class axis, [B, T]',
    );
    expect(() => infer('cross_entropy', [t('f32', [B, T, 512]), t('f32', [B, T])], {})).toThrow('cross_entropy: labels must be i32, got f32[B, T]');
    expect(infer('kl_div', [t('f32', [B, T, 512]), t('f32', [B, T, 512]), t('bool', [B, T])])).toEqual(t('f32', []));
    expect(infer('kl_div', [t('f32', [B, T, 512]), t('f32', [B, T, 512]), t('i32', [B, T])])).toEqual(t('f32', []));
    expect(() => infer('kl_div', [t('f32', [B, T, 512]), t('f32', [B, T, 256]), t('i32', [B, T])])).toThrow(
      'kl_div: target_logits [B, T, 256] must have the shape of logits [B, T, 512]',
    );
    expect(() => infer('kl_div', [t('f32', [B, T, 512]), t('f32', [B, T, 512]), t('f32', [B, T])])).toThrow('kl_div: mask must be i32 or bool, got f32[B, T]');
  });
});

describe('LLaVA op reference values', () => {
  it('embedding gathers and names an out-of-range id', () => {
    const b = new GraphBuilder();
    const ids = input(b, 'ids', 'i32', [B]);
    const w = input(b, 'w', 'f32', [3, 2]);
    const e = b.add('embedding', [ids, w]);
    const wv = host('f32', [3, 2], [0, 1, 10, 11, 20, 21]);
    expect(run(b.build(), { ids: host('i32', [3], [2, 0, 2]), w: wv }, e)).toEqual([20, 21, 0, 1, 20, 21]);
    expect(() => run(b.build(), { ids: host('i32', [2], [1, -200]), w: wv }, e)).toThrow(
      'embedding: id -200 at position 1 is out of range for a vocabulary of 3',
    );
  });

  it('splice puts the insert at each row\'s placeholder and rejects rows without exactly one', () => {
    const b = new GraphBuilder();
    const seq = input(b, 'seq', 'i32', [B, T]);
    const ins = input(b, 'ins', 'i32', [B, 2]);
    const ids = input(b, 'ids', 'i32', [B, T]);
    const s = b.add('splice', [seq, ins, ids], { token: -200 });
    const feed = (idv: number[]) => ({ seq: host('i32', [2, 3], [1, 2, 3, 4, 5, 6]), ins: host('i32', [2, 2], [7, 8, 9, 10]), ids: host('i32', [2, 3], idv) });
    expect(run(b.build(), feed([0, -200, 0, -200, 0, 0]), s)).toEqual([1, 7, 8, 3, 9, 10, 5, 6]);
    expect(() => run(b.build(), feed([0, -200, 0, 0, 0, 0]), s)).toThrow(
      'splice: row 1 of ids holds the placeholder -200 nowhere; each row needs it exactly once',
    );
    expect(() => run(b.build(), feed([-200, -200, 0, 0, -200, 0]), s)).toThrow('splice: row 0 of ids holds the placeholder -200 2 times');
  });

  it('cross_entropy averages over non-ignored labels and is 0 when all are ignored', () => {
    const b = new GraphBuilder();
    const z = input(b, 'z', 'f32', [3, 2]);
    const y = input(b, 'y', 'i32', [3]);
    const ce = b.add('cross_entropy', [z, y], { ignore_index: -100 });
    const zv = host('f32', [3, 2], [0, 0, 1, 3, 5, 5]);
    const lse = Math.log(Math.exp(1) + Math.exp(3));
    expect(run(b.build(), { z: zv, y: host('i32', [3], [1, -100, 0]) }, ce)[0]).toBeCloseTo((Math.log(2) + Math.log(2)) / 2, 15);
    expect(run(b.build(), { z: zv, y: host('i32', [3], [-100, 0, -100]) }, ce)[0]).toBeCloseTo(lse - 1, 15);
    expect(run(b.build(), { z: zv, y: host('i32', [3], [-100, -100, -100]) }, ce)).toEqual([0]);
    expect(() => run(b.build(), { z: zv, y: host('i32', [3], [0, 2, 0]) }, ce)).toThrow('cross_entropy: label 2 at position 1 is out of range for 2 classes');
  });

  it('kl_div is batchmean over masked rows and 0 for an empty mask', () => {
    const b = new GraphBuilder();
    const z = input(b, 'z', 'f32', [2, 2]);
    const tt = input(b, 't', 'f32', [2, 2]);
    const m = input(b, 'm', 'bool', [2]);
    const kl = b.add('kl_div', [z, tt, m]);
    const feeds = (mask: number[]) => ({ z: host('f32', [2, 2], [0, 0, 0, 1]), t: host('f32', [2, 2], [0, Math.log(3), 2, 2]), m: host('bool', [2], mask) });
    // Row 0: p = (1/4, 3/4) against q = (1/2, 1/2).
    const row0 = 0.25 * Math.log(0.5) + 0.75 * Math.log(1.5);
    expect(run(b.build(), feeds([1, 0]), kl)[0]).toBeCloseTo(row0, 15);
    const q1 = 1 / (1 + Math.E);
    const row1 = 0.5 * Math.log(0.5 / q1) + 0.5 * Math.log(0.5 / (1 - q1));
    expect(run(b.build(), feeds([1, 1]), kl)[0]).toBeCloseTo((row0 + row1) / 2, 15);
    expect(run(b.build(), feeds([0, 0]), kl)).toEqual([0]);
  });
});

describe('LLaVA op gradients (finite differences, f64)', () => {
  it('embedding scatters into the table (repeated ids accumulate)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 6 }), values(8), cotangent, (ids, ws, c) =>
        gradCheck(
          { params: { w: [[4, 2], ws] }, inputs: { ids: host('i32', [ids.length], ids) }, build: (b, v) => b.add('embedding', [v['ids']!, v['w']!]) },
          c,
        ),
      ),
      RUNS,
    );
  });

  it('patch_embed: weight and input', () => {
    fc.assert(
      fc.property(fc.constantFrom(1, 2), fc.integer({ min: 1, max: 2 }), values(64), values(24), cotangent, (k, ch, xs, ws, c) =>
        gradCheck(
          {
            params: { x: [[1, ch, 2 * k, 4 * k], xs.slice(0, ch * 8 * k * k)], w: [[3, ch, k, k], ws.slice(0, 3 * ch * k * k)] },
            build: (b, v) => b.add('patch_embed', [v['x']!, v['w']!], { stride: k }),
          },
          c,
        ),
      ),
      RUNS,
    );
  });

  it('splice: gradient flows to seq and insert', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 3 }), fc.nat(), fc.nat(), values(16), values(12), cotangent, (tt, p, a, b2, ss, is, c) => {
        const ids = [...Array(2 * tt)].map(() => 0);
        ids[a % tt] = -200;
        ids[tt + (b2 % tt)] = -200;
        gradCheck(
          {
            params: { s: [[2, tt, 2], ss.slice(0, 4 * tt)], ins: [[2, p, 2], is.slice(0, 4 * p)] },
            inputs: { ids: host('i32', [2, tt], ids) },
            build: (b, v) => b.add('splice', [v['s']!, v['ins']!, v['ids']!], { token: -200 }),
          },
          c,
        );
      }),
      RUNS,
    );
  });

  it('cross_entropy with ignored labels', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: -1, max: 2 }), { minLength: 4, maxLength: 4 }), values(12, -3, 3), cotangent, (ls, zs, c) =>
        gradCheck(
          {
            params: { z: [[2, 2, 3], zs] },
            inputs: { y: host('i32', [2, 2], ls.map((l) => (l < 0 ? -100 : l))) },
            build: (b, v) => b.add('cross_entropy', [v['z']!, v['y']!], { ignore_index: -100 }),
          },
          c,
        ),
      ),
      RUNS,
    );
  });

  it('kl_div into both logits and target logits', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 1 }), { minLength: 3, maxLength: 3 }), values(12, -3, 3), values(12, -3, 3), cotangent, (ms, zs, ts, c) =>
        gradCheck(
          {
            params: { z: [[3, 4], zs], t: [[3, 4], ts] },
            inputs: { m: host('i32', [3], ms) },
            build: (b, v) => b.add('kl_div', [v['z']!, v['t']!, v['m']!]),
          },
          c,
        ),
      ),
      RUNS,
    );
  });
});
