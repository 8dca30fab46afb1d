// The fusion pass on graphs small enough to say what it must do (CPU only): which ops share a
// kernel, by which rule, and that it never makes a cycle or loses a value.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { fuse, type FusedProgram } from '../../../compiler/passes/fuse.js';
import { EPILOGUE_RULES, PROLOGUE_RULES, rulesTable } from '../../../compiler/passes/fusion-rules.js';
import { categoryOf } from '../../../compiler/passes/fusion-rules.js';
import { reachable } from '../../../compiler/ir/graph.js';
import { input } from '../ops/harness.js';
import { build, recipe } from './random-graphs.js';

/** Each group as "op:rule" for its non-prologue members, and its prologue ops. */
function shape(p: FusedProgram): string[] {
  return p.groups.map((g) => g.members.map((m) => `${p.graph.nodes[m.node]!.op}${m.placement === 'prologue' ? '<' : m.placement === 'epilogue' ? '>' : ''}:${m.rule}`).join(' '));
}

describe('fusion rules', () => {
  it('are a table a reader can print: every rule names what it fuses and why', () => {
    expect(rulesTable().length).toBe(PROLOGUE_RULES.length + EPILOGUE_RULES.length);
    for (const row of rulesTable()) for (const cell of row) expect(cell.length).toBeGreaterThan(0);
  });

  it('an MLP block: bias and GELU ride on the first linear, the residual on the second', () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [2, 8, 16]);
    const w1 = input(b, 'w1', 'f32', [32, 16]);
    const b1 = input(b, 'b1', 'f32', [32]);
    const w2 = input(b, 'w2', 'f32', [16, 32]);
    const h = b.add('gelu', [b.add('linear', [x, w1, b1])]);
    const y = b.add('add', [x, b.add('linear', [h, w2])]);
    const p = fuse(b.build(), [y]);
    expect(shape(p)).toEqual(['linear:anchor gelu>:matmul-epilogue', 'linear:anchor add>:matmul-epilogue']);
    expect(p.groups[0]!.outputs).toEqual([h]);
    expect(p.unfusedOps).toBe(4);
  });

  it('an elementwise chain with views and constants is one loop; views and fills never get kernels', () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [4, 6]);
    const y = input(b, 'y', 'f32', [6]);
    const t = b.add('transpose', [b.add('exp', [x])], { perm: [1, 0] });
    const s = b.add('mul', [t, b.add('fill', [], { value: 2, shape: [], dtype: 'f32' })]);
    const z = b.add('tanh', [b.add('add', [b.add('transpose', [s], { perm: [1, 0] }), y])]);
    const p = fuse(b.build(), [z]);
    expect(p.groups.length).toBe(1);
    expect(p.groups[0]!.kind).toBe('elementwise');
    expect(p.groups[0]!.inputs).toEqual([x, y]);
    const rules = new Set(p.groups[0]!.members.map((m) => m.rule));
    expect(rules).toEqual(new Set(['loop', 'single-use', 'view', 'constant']));
  });

  it('recomputes a cheap producer for each reader instead of giving it a buffer', () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [5]);
    const e = b.add('neg', [x]);
    const u = b.add('mul', [e, input(b, 'y', 'f32', [5])]);
    const v = b.add('sigmoid', [e]);
    const p = fuse(b.build(), [u, v]);
    expect(p.groups.length).toBe(2);
    for (const g of p.groups) expect(g.members.find((m) => m.node === e)?.rule).toBe('recompute');
    // Reading two buffers is not cheap: x * y with two readers is computed once, and its readers
    // join that loop (fusion on write), so x * y is never written either.
    const b2 = new GraphBuilder();
    const x2 = input(b2, 'x', 'f32', [5]);
    const m = b2.add('mul', [x2, input(b2, 'y', 'f32', [5])]);
    const p2 = fuse(b2.build(), [b2.add('exp', [m]), b2.add('log', [m])]);
    expect(shape(p2)).toEqual(['mul:loop exp>:loop-chain log>:loop-chain']);
    expect(p2.groups[0]!.outputs).not.toContain(m);
  });

  it('keeps elementwise producers out of matmul operands', () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [3, 4]);
    const m = b.add('matmul', [b.add('tanh', [x]), input(b, 'w', 'f32', [4, 2])]);
    const p = fuse(b.build(), [m]);
    expect(shape(p)).toEqual(['tanh:loop', 'matmul:anchor']);
  });

  it('never fuses into a cycle: m + sum(m) cannot ride on the matmul of m, which the sum reads', () => {
    const b = new GraphBuilder();
    const m = b.add('matmul', [input(b, 'a', 'f32', [4, 3]), input(b, 'w', 'f32', [3, 5])]);
    const s = b.add('sum', [m], { axis: [1], keepdims: true });
    const c = b.add('add', [m, s]);
    // sum(m) * 2 reads the reduction element for element: an epilogue of the reduction.
    const d = b.add('mul', [s, b.add('fill', [], { value: 2, shape: [], dtype: 'f32' })]);
    const p = fuse(b.build(), [c, d]);
    expect(shape(p)).toEqual(['matmul:anchor', 'sum:anchor fill<:constant mul>:custom-epilogue', 'add:loop']);
  });

  it('covers every op exactly once as an anchor or epilogue, or inlines it, in dependency order (random graphs)', () => {
    fc.assert(
      fc.property(recipe(['unary', 'binary', 'where', 'transpose', 'slice', 'reshape', 'broadcast', 'reduce', 'matmul', 'linear'], 25), (r) => {
        const { graph, wanted } = build(r);
        const p = fuse(graph, wanted);
        const owner = new Map<number, number>();
        const inlined = new Set<number>();
        p.groups.forEach((g, k) => {
          for (const m of g.members) {
            if (m.placement === 'prologue') inlined.add(m.node);
            else {
              expect(owner.has(m.node)).toBe(false);
              owner.set(m.node, k);
            }
          }
        });
        for (const id of reachable(graph, wanted)) {
          if (categoryOf(graph.nodes[id]!) === 'source') continue;
          expect(owner.has(id) || inlined.has(id), `node ${id} ${graph.nodes[id]!.op}`).toBe(true);
        }
        p.groups.forEach((g, k) => {
          for (const i of g.inputs) if (owner.has(i)) expect(owner.get(i)!).toBeLessThan(k);
          for (const o of g.outputs) expect(owner.get(o)).toBe(k);
        });
        for (const w of wanted) expect(owner.has(w) || categoryOf(graph.nodes[w]!) === 'source').toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});
