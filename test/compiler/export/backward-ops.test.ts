// The PyTorch renderings of the backward ops the model's differentiated graph does not reach
// (layer_norm_grad and patch_embed_grad sit in the frozen CLIP tower; softmax_grad, cross_entropy_grad
// and kl_div_grad are replaced there by the fused linear-loss heads): each on a small graph that
// needs it, differentiated by Kiln, rendered op by op (renderGraphFunction) and run by torch on
// random inputs, against Kiln's reference executor on the same inputs.
//
// Tolerance: both sides compute in float32 (the reference with precision 'f32'); the renderings are
// autograd's VJP of the forward op's rendering, Kiln's are its own formulas, so they differ by
// float32 rounding in a different summation order: 1e-5 relative Frobenius per gradient (measured
// at most ~1e-7). A wrong rendering (a missing term, the wrong axis) is off by O(1).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import type { Graph } from '../../../compiler/ir/graph.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { renderGraphFunction } from '../../../compiler/export/torch.js';
import { readSafetensors, writeSafetensors } from '../../../runtime/node/safetensors-file.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { relFrobenius } from '../../golden/compare.js';
import { runPython } from '../../helpers/torch-python.js';
import { host, input, param } from '../ops/harness.js';

/** A seeded stream of values in [-2, 2) (mulberry32), so a failure reproduces. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let z = Math.imul(a ^ (a >>> 15), a | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((((z ^ (z >>> 14)) >>> 0) / 4294967296) * 4 - 2);
  };
}

interface Case {
  /** the backward op the graph must contain. */
  op: string;
  build(b: GraphBuilder, feeds: Map<string, HostTensor>, r: () => number): void;
}

const f32 = (feeds: Map<string, HostTensor>, name: string, shape: number[], r: () => number, scale = 1) => {
  feeds.set(name, host('f32', shape, Array.from({ length: shape.reduce((a, d) => a * d, 1) }, () => r() * scale)));
};
/** sum(y * y): a loss whose cotangent 2y differs element by element (a constant one would hide axis mistakes). */
const squareSum = (b: GraphBuilder, y: number) => b.add('sum', [b.add('mul', [y, y])], { axis: null });

const CASES: Case[] = [
  {
    op: 'layer_norm_grad',
    build(b, feeds, r) {
      const [x, w, bias] = [param(b, 'x', [3, 5]), param(b, 'w', [5]), param(b, 'bias', [5])];
      f32(feeds, 'x', [3, 5], r, 2);
      f32(feeds, 'w', [5], r);
      f32(feeds, 'bias', [5], r);
      b.totalLoss = squareSum(b, b.add('layer_norm', [x, w, bias], { eps: 1e-5 }));
    },
  },
  {
    op: 'patch_embed_grad',
    build(b, feeds, r) {
      const [x, w] = [param(b, 'x', [2, 3, 8, 8]), param(b, 'w', [4, 3, 4, 4])];
      f32(feeds, 'x', [2, 3, 8, 8], r);
      f32(feeds, 'w', [4, 3, 4, 4], r, 0.3);
      b.totalLoss = squareSum(b, b.add('patch_embed', [x, w], { stride: 4 }));
    },
  },
  {
    op: 'softmax_grad',
    build(b, feeds, r) {
      // softmax over axis 0 and log_softmax over the last: both of softmax_grad's forms and an axis that is not the last.
      const [x, z] = [param(b, 'x', [4, 6]), param(b, 'z', [4, 6])];
      f32(feeds, 'x', [4, 6], r, 2);
      f32(feeds, 'z', [4, 6], r, 2);
      b.totalLoss = b.add('add', [squareSum(b, b.add('softmax', [x], { axis: 0 })), squareSum(b, b.add('log_softmax', [z], { axis: -1 }))]);
    },
  },
  {
    op: 'cross_entropy_grad',
    build(b, feeds, r) {
      const logits = param(b, 'logits', [5, 7]);
      const labels = input(b, 'labels', 'i32', [5]);
      f32(feeds, 'logits', [5, 7], r, 3);
      feeds.set('labels', host('i32', [5], [3, -100, 0, 6, 3]));
      b.totalLoss = b.add('cross_entropy', [logits, labels], { ignore_index: -100 });
    },
  },
  {
    op: 'kl_div_grad',
    build(b, feeds, r) {
      // Both sides trainable (the VM loss's target is not detached), one row masked out.
      const [logits, target] = [param(b, 'logits', [4, 7]), param(b, 'target', [4, 7])];
      const mask = input(b, 'mask', 'i32', [4]);
      f32(feeds, 'logits', [4, 7], r, 3);
      f32(feeds, 'target', [4, 7], r, 3);
      feeds.set('mask', host('i32', [4], [1, 0, 1, 1]));
      b.totalLoss = b.add('kl_div', [logits, target, mask]);
    },
  },
];

function toF32(t: HostTensor): HostTensor {
  return t.dtype === 'f32' ? { dtype: 'f32', shape: t.shape, data: Float32Array.from(t.data) } : t;
}

describe('backward op renderings not in the model graph', () => {
  it('each equals the reference executor on random inputs', { timeout: 300_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-backward-ops-'));
    const runs: { op: string; graph: Graph; feeds: Map<string, HostTensor>; fn: string; feedFile: string; outFile: string }[] = [];
    CASES.forEach((c, i) => {
      const b = new GraphBuilder();
      const feeds = new Map<string, HostTensor>();
      c.build(b, feeds, random(1000 + i));
      const graph = differentiate(b.build());
      expect(graph.nodes.map((n) => n.op), c.op).toContain(c.op);
      const fn = join(dir, `${c.op}.py`);
      writeFileSync(fn, renderGraphFunction(graph, graph.gradients.map((g) => g.node), 'grads'));
      const feedFile = join(dir, `${c.op}-feeds.safetensors`);
      writeSafetensors(feedFile, new Map([...feeds].map(([k, v]) => [k, toF32(v)])));
      runs.push({ op: c.op, graph, feeds, fn, feedFile, outFile: join(dir, `${c.op}-torch.safetensors`) });
    });
    // One Python process for all five (torch's import is most of the time).
    const pkg = join(dir, 'pkg');
    expect(await main(['export', 'models/vwlmm.kiln', '--config', 'tiny', '--target', 'torch', '--out', pkg], new Output(true))).toBe(0);
    runPython(['test/compiler/export/run_ops.py', pkg, JSON.stringify(runs.map((r) => ({ function: r.fn, feeds: r.feedFile, params: r.graph.params.map((p) => p.name), inputs: r.graph.inputs.map((x) => x.name), names: r.graph.gradients.map((g) => g.name), out: r.outFile })))]);
    const lines: string[] = [];
    for (const r of runs) {
      const ref = runReference(r.graph, r.feeds, r.graph.gradients.map((g) => g.node), { precision: 'f32' });
      const theirs = readSafetensors(r.outFile);
      let worst = 0;
      for (const g of r.graph.gradients) {
        const mine = ref.get(g.node)!;
        const t = theirs.get(g.name)!;
        expect(t.shape, `${r.op} ${g.name}`).toEqual(mine.shape);
        // Kiln's gradient must be more than noise, or a rendering returning zeros would pass.
        expect(Math.max(...[...mine.data].map(Math.abs)), `${r.op} ${g.name}`).toBeGreaterThan(1e-3);
        worst = Math.max(worst, relFrobenius(t.data, mine.data));
      }
      lines.push(`${r.op} ${worst.toExponential(2)} (${r.graph.gradients.map((g) => g.name).join(', ')})`);
      expect(worst, r.op).toBeLessThan(1e-5);
    }
    console.log(`backward op renderings vs the reference, worst gradient rel error: ${lines.join('; ')}`);
  });
});
