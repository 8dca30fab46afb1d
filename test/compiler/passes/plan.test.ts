// The memory plan's invariants on random graphs (CPU only): no two values live at the same time
// share a slot, every slot holds its largest value, every read comes after its write and before
// the value's last use; and peak-live <= slots <= one-buffer-each. Then `kiln plan` on vicuna7b.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { fuse } from '../../../compiler/passes/fuse.js';
import { concreteNodes, storedBytes } from '../../../compiler/passes/lower.js';
import { planMemory, planProblems } from '../../../compiler/passes/plan.js';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';
import { build, recipe } from './random-graphs.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { buildMiniVwlmm, TINY } from './mini_vwlmm.js';

async function kiln(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = new Output(true);
  const code = await main(args, out);
  return { code, out: out.out.join('\n'), err: out.err.join('\n') };
}

describe('memory plan', () => {
  it('never shares a slot between values live at once (random graphs)', () => {
    fc.assert(
      fc.property(recipe(['unary', 'binary', 'where', 'transpose', 'slice', 'reshape', 'broadcast', 'reduce', 'matmul', 'linear'], 30), (r) => {
        const { graph, wanted } = build(r);
        const program = fuse(graph, wanted);
        const node = concreteNodes(graph, new Map());
        const plan = planMemory(program, (id) => storedBytes(node(id)));
        expect(planProblems(plan)).toEqual([]);
        const t = plan.totals;
        expect(t.peakLive).toBeLessThanOrEqual(t.slots);
        expect(t.slots).toBeLessThanOrEqual(t.naive);
        for (const v of plan.values.values()) {
          if (v.kind === 'temp') expect(plan.slotOf.has(v.node)).toBe(true);
          else expect(plan.slotOf.has(v.node)).toBe(false);
        }
        for (const w of wanted) expect(plan.values.get(w)?.kind ?? 'source').not.toBe('temp');
      }),
      { numRuns: 300 },
    );
  });

  it('reuses buffers across the mini VW-LMM training step', () => {
    const g = differentiate(buildMiniVwlmm(TINY, (n) => !n.startsWith('vision_tower')).build());
    const program = fuse(g, [g.totalLoss!, ...g.gradients.map((x) => x.node)]);
    const node = concreteNodes(g, new Map([['B', 2], ['T', 20]]));
    const plan = planMemory(program, (id) => storedBytes(node(id)));
    expect(planProblems(plan)).toEqual([]);
    expect(plan.totals.slots).toBeLessThan(plan.totals.naive / 2);
    expect(program.groups.length).toBeLessThan(program.unfusedOps / 2);
  });
});

describe('kiln plan', () => {
  // The step never reads CLIP's last layer and post-layernorm (LLaVA takes the second-to-last
  // layer's features), so those parameters get no buffer and count as unused.
  it('vicuna7b: weights are 4 bytes per parameter; --train adds gradients and two AdamW moments', async () => {
    const check = await kiln(['check', 'models/vwlmm.kiln', '--config', 'vicuna7b', '--json']);
    const total = (JSON.parse(check.out) as { total: number }).total;
    const fwd = await kiln(['plan', 'models/vwlmm.kiln', '--config', 'vicuna7b', '--json']);
    expect(fwd.err).toBe('');
    const f = JSON.parse(fwd.out) as Record<string, number> & { activations: { slots: number; naive: number }; split: { name: string; parts: number }[] };
    expect(f['params']! + f['unusedParams']!).toBe(total);
    const clipLayer = 4 * (1024 * 1024 + 1024) + (1024 * 4096 + 4096) + (4096 * 1024 + 1024) + 2 * 2 * 1024;
    expect(f['unusedParams']).toBe(clipLayer + 2 * 1024);
    expect(f['weights']).toBe(4 * f['params']!);
    expect(f['gradients']).toBe(0);
    expect(f['optimizer']).toBe(0);
    expect(f.activations.slots).toBeLessThan(f.activations.naive);
    expect(f.split).toContainEqual(expect.objectContaining({ name: 'model.embed_tokens.weight', parts: 4 }));

    const train = JSON.parse((await kiln(['plan', 'models/vwlmm.kiln', '--config', 'vicuna7b', '--train', '--json'])).out) as Record<string, number> & { activations: { slots: number } };
    const trainable = train['trainableParams']!;
    expect(trainable).toBeGreaterThan(0.9 * total);
    expect(train['gradients']).toBe(4 * trainable);
    expect(train['optimizer']).toBe(8 * trainable);
    expect(train['peak']).toBe(train['weights']! + train['inputs']! + train['gradients']! + train['outputs']! + train['optimizer']! + train.activations.slots);
    expect(train['dispatches']).toBeLessThan(train['ops']!);

    const half = JSON.parse((await kiln(['plan', 'models/vwlmm.kiln', '--config', 'vicuna7b', '--train', '--dtype', 'f16', '--json'])).out) as Record<string, number>;
    expect(half['weights']).toBe(2 * f['params']!);
    expect(half['gradients']).toBe(2 * trainable);
    expect(half['optimizer']).toBe(8 * trainable);
  });

  it('prints the table and the split tensors, and lists dispatches with --steps', async () => {
    const r = await kiln(['plan', 'models/vwlmm.kiln', '--config', 'vicuna7b', '--train', '--batch-size', '2', '--seq', '512']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/training step, B = 2, T = 512/);
    for (const row of ['weights', 'activations', 'gradients', 'optimiser state', 'peak']) expect(r.out).toContain(`  ${row}`);
    expect(r.out).toMatch(/model\.layers\.\*\.mlp\.gate_proj\.weight \(x32\): 172\.0 MiB, 2 bindings/);
    const steps = await kiln(['plan', 'models/vwlmm.kiln', '--config', 'tiny', '--train', '--steps', '--seq', '16']);
    expect(steps.out).toMatch(/dispatches:\n\s+0 /);
    expect(steps.out).toMatch(/slot \d+/);
    expect(steps.out).toMatch(/linear\+add {2}\[.*add out \(matmul-epilogue\)\]/);
    expect((await kiln(['plan', 'models/vwlmm.kiln', '--seq', '0'])).code).toBe(2);
    const rules = await kiln(['plan', 'models/vwlmm.kiln', '--rules']);
    expect(rules.out).toMatch(/^prologue single-use: elementwise -> elementwise\|custom\|view: fuse when the value has one reader$/m);
  });
});
