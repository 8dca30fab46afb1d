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

describe('one value updating several targets', () => {
  it('is written in place into one target only; the others are copied from it', () => {
    const b = new GraphBuilder();
    const a = b.add('input', [], { name: 'a', dtype: 'f32', shape: [4] });
    const c = b.add('input', [], { name: 'c', dtype: 'f32', shape: [4] });
    // Hash-consing makes both zeros one node: the accumulators' reset in gradient accumulation.
    const zero = b.add('fill', [], { value: 0, shape: [4], dtype: 'f32' });
    expect(b.add('fill', [], { value: 0, shape: [4], dtype: 'f32' })).toBe(zero);
    const program = fuse(b.build(), [zero]);
    const inPlace = inPlaceUpdates(program, [{ node: zero, target: a }, { node: zero, target: c }], new Set());
    expect([...inPlace]).toEqual([[zero, a]]);
  });

  it('on WebGPU: both targets hold the new value after the step', async () => {
    const { compileArtefact } = await import('../../../compiler/emit/artefact.js');
    const { DEFAULT_TRAITS } = await import('../../../compiler/codegen/kernel.js');
    const { getDevice } = await import('../../../runtime/node/device.js');
    const { ArtefactProgram } = await import('../../../runtime/webgpu/program.js');
    const b = new GraphBuilder();
    const names = ['acc1', 'acc2'];
    const accs = names.map((name) => {
      const id = b.add('input', [], { name, dtype: 'f32', shape: [4] });
      b.inputs.push({ name, node: id });
      return id;
    });
    const x = b.add('input', [], { name: 'x', dtype: 'f32', shape: [4] });
    b.inputs.push({ name: 'x', node: x });
    const sum = b.add('add', [b.add('add', [accs[0]!, accs[1]!]), x]);
    for (const name of names) b.updates.push({ name, node: b.add('fill', [], { value: 0, shape: [4], dtype: 'f32' }) });
    const { artefact } = compileArtefact([{ name: 'e', graph: b.build(), outputs: [{ name: 'sum', node: sum }], applyUpdates: true }], { bindings: new Map(), traits: DEFAULT_TRAITS });
    expect(artefact.manifest.entries['e']!.updates.map((u) => u.inPlace)).toEqual([true, false]);
    const program = await ArtefactProgram.load(await getDevice(), artefact);
    try {
      const f32 = (...v: number[]) => ({ dtype: 'f32' as const, shape: [4], data: Float32Array.of(...v) });
      program.store.write(new Map([['acc1', f32(1, 2, 3, 4)], ['acc2', f32(100, 200, 300, 400)]]));
      const x1 = new Map([['x', f32(10, 10, 10, 10)]]);
      expect([...(await program.run('e', x1)).get('sum')!.data]).toEqual([111, 212, 313, 414]);
      // Both accumulators were reset: the second step sees x alone.
      expect([...(await program.run('e', x1)).get('sum')!.data]).toEqual([10, 10, 10, 10]);
      const state = await program.store.read(names);
      for (const n of names) expect([...state.get(n)!.data], n).toEqual([0, 0, 0, 0]);
    } finally {
      program.destroy();
    }
  });
});
