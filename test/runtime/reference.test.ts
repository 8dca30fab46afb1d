import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../compiler/ir/builder.js';
import { addDims, subDims } from '../../compiler/ir/dims.js';
import { bindSymbols, runReference } from '../../compiler/exec/reference.js';
import { B, T, host, input, param } from '../compiler/ops/harness.js';

function feeds(o: Record<string, ReturnType<typeof host>>): Map<string, ReturnType<typeof host>> {
  return new Map(Object.entries(o));
}

describe('runReference', () => {
  it('binds symbols from input shapes, including dims like T + 2', () => {
    const b = new GraphBuilder();
    const ids = input(b, 'input_ids', 'i32', [B, T]);
    input(b, 'long', 'f32', [B, addDims(T, 2)]);
    const g = b.build();
    const bound = bindSymbols(g, feeds({ input_ids: host('i32', [2, 5], new Array(10).fill(0)), long: host('f32', [2, 7], new Array(14).fill(0)) }));
    expect([...bound]).toEqual([
      ['B', 2],
      ['T', 5],
    ]);
    const onlyLong = bindSymbols(g, feeds({ long: host('f32', [3, 9], new Array(27).fill(0)) }));
    expect(onlyLong.get('T')).toBe(7);
    void ids;
  });

  it('says which input disagrees with its declaration, and how', () => {
    const b = new GraphBuilder();
    input(b, 'input_ids', 'i32', [B, T]);
    input(b, 'labels', 'i32', [B, T]);
    const g = b.build();
    const ids = host('i32', [2, 5], new Array(10).fill(0));
    expect(() => bindSymbols(g, feeds({ input_ids: host('f32', [2, 5], new Array(10).fill(0)) }))).toThrow(
      'input input_ids: expected i32[B, T], got f32[2, 5]',
    );
    expect(() => bindSymbols(g, feeds({ input_ids: host('i32', [10], new Array(10).fill(0)) }))).toThrow('input input_ids: expected i32[B, T], got i32[10]');
    expect(() => bindSymbols(g, feeds({ input_ids: ids, labels: host('i32', [2, 6], new Array(12).fill(0)) }))).toThrow(
      /input (labels|input_ids): expected i32\[B, T\], got i32\[2, [56]\] \(T is [56] from the other inputs\)/,
    );
  });

  it('checks params and reports missing feeds', () => {
    const b = new GraphBuilder();
    const w = param(b, 'lm_head.weight', [2, 3]);
    const x = input(b, 'x', 'f32', [B, 3]);
    const y = b.add('linear', [x, w]);
    const g = b.build();
    const xv = host('f32', [1, 3], [1, 2, 3]);
    expect(() => runReference(g, feeds({ x: xv }), [y], { precision: 'f32' })).toThrow('param lm_head.weight: no value was fed');
    expect(() => runReference(g, feeds({ x: xv, 'lm_head.weight': host('f32', [3, 2], [0, 0, 0, 0, 0, 0]) }), [y], { precision: 'f32' })).toThrow(
      'param lm_head.weight: expected f32[2, 3], got f32[3, 2]',
    );
  });

  it('evaluates dim-valued attrs and only what the wanted nodes need', () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [B, T]);
    const ids = input(b, 'ids', 'i32', [B, T]);
    const head = b.add('slice', [x], { axis: 1, start: 0, stop: subDims(T, 1) });
    const bad = b.add('embedding', [ids, b.add('fill', [], { value: 0, shape: [2, 2], dtype: 'f32' })]);
    const g = b.build();
    const stats = { evaluated: [] as number[], peakLive: 0 };
    const out = runReference(g, feeds({ x: host('f32', [1, 3], [1, 2, 3]), ids: host('i32', [1, 3], [9, 9, 9]) }), [head], { precision: 'f64', stats });
    expect([...out.get(head)!.data]).toEqual([1, 2]);
    expect(out.get(head)!.shape).toEqual([1, 2]);
    expect(stats.evaluated).toEqual([x, head]);
    void bad;
  });

  it('frees intermediates after their last use', () => {
    const b = new GraphBuilder();
    let v = input(b, 'x', 'f32', [4]);
    for (let i = 0; i < 10; i++) v = b.add(i % 2 ? 'exp' : 'neg', [v]);
    const stats = { evaluated: [] as number[], peakLive: 0 };
    runReference(b.build(), feeds({ x: host('f32', [4], [0, 1, 2, 3]) }), [v], { precision: 'f32', stats });
    expect(stats.evaluated).toHaveLength(11);
    expect(stats.peakLive).toBeLessThanOrEqual(2);
  });

  it('rounds to f32 in f32 mode and keeps f64 in f64 mode', () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [1]);
    const y = b.add('div', [x, b.add('fill', [], { value: 3, shape: [], dtype: 'f32' })]);
    const f = feeds({ x: host('f32', [1], [1]) });
    const r32 = runReference(b.build(), f, [y], { precision: 'f32' }).get(y)!;
    const r64 = runReference(b.build(), f, [y], { precision: 'f64' }).get(y)!;
    expect(r32.data).toBeInstanceOf(Float32Array);
    expect(r32.data[0]).toBe(Math.fround(1 / 3));
    expect(r64.data[0]).toBe(1 / 3);
  });
});
