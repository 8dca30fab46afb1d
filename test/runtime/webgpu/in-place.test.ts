// The rules that let an update overwrite its target's buffer (CPU only: fusion decisions).
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { fuse } from '../../../compiler/passes/fuse.js';
import { inPlaceUpdates } from '../../../compiler/passes/in-place.js';

function setup(kind: 'elementwise' | 'matmul-operand') {
  const b = new GraphBuilder();
  const p = b.add('param', [], { name: 'p', dtype: 'f32', shape: [8, 8] });
  const x = b.add('input', [], { name: 'x', dtype: 'f32', shape: [8, 8] });
  const two = b.add('fill', [], { value: 2, shape: [], dtype: 'f32' });
  // elementwise: p <- p * 2 + x, read where it is stored. matmul-operand: p <- x @ p, where
  // the template loads every element of p, so writing p in place would race.
  const u = kind === 'elementwise' ? b.add('add', [b.add('mul', [p, two]), x]) : b.add('matmul', [x, p]);
  const g = b.build();
  return { g, u, p };
}

describe('in-place updates', () => {
  it('an elementwise update reading its target where it stores is written in place', () => {
    const { g, u, p } = setup('elementwise');
    const program = fuse(g, [u]);
    expect(inPlaceUpdates(program, [{ node: u, target: p }], new Set()).get(u)).toBe(p);
  });

  it('not when the update is read back', () => {
    const { g, u, p } = setup('elementwise');
    expect(inPlaceUpdates(fuse(g, [u]), [{ node: u, target: p }], new Set([u])).size).toBe(0);
  });

  it('not when the kernel template loads the target (a matmul operand)', () => {
    const { g, u, p } = setup('matmul-operand');
    expect(inPlaceUpdates(fuse(g, [u]), [{ node: u, target: p }], new Set()).size).toBe(0);
  });

  it('not when a later kernel still reads the target', () => {
    const b = new GraphBuilder();
    const p = b.add('param', [], { name: 'p', dtype: 'f32', shape: [8, 8] });
    const x = b.add('input', [], { name: 'x', dtype: 'f32', shape: [8, 8] });
    const u = b.add('neg', [p]);
    // Requested after u, reading p through a matmul: a later kernel.
    const later = b.add('matmul', [x, p]);
    const program = fuse(b.build(), [u, later]);
    const order = program.groups.map((gr) => gr.outputs);
    const uStep = order.findIndex((o) => o.includes(u));
    const laterStep = order.findIndex((o) => o.includes(later));
    const got = inPlaceUpdates(program, [{ node: u, target: p }], new Set([later]));
    expect(uStep).toBeLessThan(laterStep);
    expect(got.size).toBe(0);
  });
});
