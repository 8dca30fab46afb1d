// NaN and inf go through every op as they go through PyTorch: each case of
// test/golden/nonfinite_ops.json (made by test/golden/make_nonfinite.py with torch) runs on the
// reference executor and on WebGPU (fused kernels; with subgroup lanes and with one lane per
// group), forward and backward. A NaN must be NaN, an inf the same inf, a finite value finite
// and within 1e-5 absolute + 1e-4 relative (f32 kernels with their own exp/erf).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import type { Attrs, DType } from '../../../compiler/ir/graph.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { runReference } from '../../../compiler/exec/reference.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { getDevice } from '../../../runtime/node/device.js';
import { WebGpuExecutor } from '../../../compiler/exec/webgpu.js';
import { input, param } from './harness.js';

type Enc = number | 'nan' | 'inf' | '-inf';
interface GoldenCase {
  name: string;
  op: string;
  attrs: Attrs;
  inputs: { name: string; dtype: DType; shape: number[]; data: Enc[] }[];
  output: { shape: number[]; data: Enc[] };
  cotangent?: Enc[];
  grads?: Record<string, Enc[]>;
}

const golden = JSON.parse(readFileSync(new URL('../../golden/nonfinite_ops.json', import.meta.url), 'utf8')) as { cases: GoldenCase[] };
const dec = (v: Enc): number => (v === 'nan' ? NaN : v === 'inf' ? Infinity : v === '-inf' ? -Infinity : v);

/** Where got differs from torch's want: NaN for NaN, inf for inf, finite values within tolerance. */
function mismatches(got: ArrayLike<number>, want: readonly Enc[]): string[] {
  const bad: string[] = [];
  want.forEach((e, i) => {
    const w = dec(e);
    const g = got[i]!;
    const ok = Number.isNaN(w) ? Number.isNaN(g) : !Number.isFinite(w) ? g === w : Number.isFinite(g) && Math.abs(g - w) <= 1e-5 + 1e-4 * Math.abs(w);
    if (!ok) bad.push(`[${i}] got ${g}, torch ${w}`);
  });
  if (got.length !== want.length) bad.push(`length ${got.length}, torch ${want.length}`);
  return bad;
}

function build(c: GoldenCase) {
  const b = new GraphBuilder();
  const ids = c.inputs.map((x) => (x.dtype === 'f32' ? param(b, x.name, x.shape) : input(b, x.name, x.dtype, x.shape)));
  const y = b.add(c.op, ids, c.attrs);
  const ct = input(b, '__cotangent', 'f32', c.output.shape);
  b.totalLoss = b.add('sum', [b.add('mul', [y, ct])], { axes: null, keepdims: false });
  const graph = c.grads ? differentiate(b.build()) : b.build();
  const feeds = new Map<string, HostTensor>(
    c.inputs.map((x) => [x.name, { dtype: x.dtype, shape: x.shape, data: x.dtype === 'f32' ? Float32Array.from(x.data, dec) : Int32Array.from(x.data, dec) }]),
  );
  const cot = c.cotangent ?? c.output.data.map(() => 1);
  feeds.set('__cotangent', { dtype: 'f32', shape: c.output.shape, data: Float32Array.from(cot, dec) });
  const wanted = [y, ...graph.gradients.map((g) => g.node)];
  const expected: [number, string, Enc[]][] = [[y, 'output', c.output.data], ...graph.gradients.map((g): [number, string, Enc[]] => [g.node, `d/d${g.name}`, c.grads![g.name]!])];
  return { graph, feeds, wanted, expected };
}

function check(results: Map<number, HostTensor>, expected: [number, string, Enc[]][]): string[] {
  return expected.flatMap(([id, what, want]) => mismatches(results.get(id)!.data, want).map((m) => `${what} ${m}`));
}

describe('non-finite values as PyTorch propagates them', () => {
  it('the golden file covers the ops and both directions', () => {
    expect(golden.cases.length).toBeGreaterThan(30);
    expect(golden.cases.filter((c) => c.grads).length).toBeGreaterThan(25);
  });

  it.each(golden.cases.map((c) => [c.name, c] as const))('reference: %s', (_name, c) => {
    const { graph, feeds, wanted, expected } = build(c);
    expect(check(runReference(graph, feeds, wanted, { precision: 'f32' }), expected)).toEqual([]);
  });

  it.each(golden.cases.map((c) => [c.name, c] as const))('webgpu: %s', async (_name, c) => {
    const { graph, feeds, wanted, expected } = build(c);
    const kd = await getDevice();
    // One lane per group as well, except for attention (its kernels take ~20 s each to compile
    // on lavapipe, and test/compiler/ops/kernels/attention.test.ts covers that variant).
    for (const traits of c.op === 'attention' ? [{}] : [{}, { subgroupSize: undefined }]) {
      const ex = new WebGpuExecutor(kd, graph, { traits });
      try {
        const lanes = 'subgroupSize' in traits ? 'one lane per group' : `subgroup ${kd.subgroupSize ?? 'none'}`;
        expect(check(await ex.run(feeds, wanted), expected), lanes).toEqual([]);
      } finally {
        ex.destroy();
      }
    }
  });
});
