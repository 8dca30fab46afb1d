// runtime/nonfinite.ts: the scan, and the walk back to the op that made the first non-finite
// value, on the reference (every node observed) and on WebGPU (only kernel outputs observed: the
// op inside a fused kernel is found by evaluating the kernel's ops from its inputs).
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../compiler/ir/builder.js';
import { checkFinite, scanNonFinite } from '../../runtime/nonfinite.js';
import { runReference, traceReference } from '../../compiler/exec/reference.js';
import { traceOnWebGpu } from '../../compiler/exec/webgpu-run.js';
import { input, param } from '../compiler/ops/harness.js';
import type { HostTensor } from '../../runtime/tensor.js';

describe('scanNonFinite', () => {
  it('counts NaN and both infinities and reports the first', () => {
    expect(scanNonFinite(Float32Array.from([1, 2, 3]))).toBeNull();
    expect(scanNonFinite(Float32Array.from([1, -Infinity, NaN, Infinity]))).toEqual({ count: 3, index: 1, value: -Infinity });
    expect(scanNonFinite(Int32Array.from([1, 2]))).toBeNull();
  });
});

describe('checkFinite', () => {
  // exp(100) overflows f32: the inf begins at exp, which the WebGPU kernel fuses into the sum.
  const b = new GraphBuilder();
  const x = input(b, 'x', 'f32', [8]);
  const w = param(b, 'w', [8]);
  const e = b.add('exp', [x]);
  const s = b.add('sum', [b.add('mul', [e, w])], { axes: null, keepdims: false });
  b.totalLoss = s;
  const graph = b.build();
  const feeds = (x0: number) =>
    new Map<string, HostTensor>([
      ['x', { dtype: 'f32', shape: [8], data: Float32Array.from([x0, 1, 2, 3, 0, -1, -2, 0.5]) }],
      ['w', { dtype: 'f32', shape: [8], data: Float32Array.from([0.5, 1, 1, 1, 1, 1, 1, 1]) }],
    ]);
  const named = [{ node: s, what: 'the sum' }];

  it('finite results: no error and no diagnostic run', async () => {
    const f = feeds(1);
    const results = runReference(graph, f, [s], { precision: 'f32' });
    const err = await checkFinite(graph, results, named, () => {
      throw new Error('the diagnostic run must not happen');
    });
    expect(err).toBeNull();
  });

  it('reference: names exp, the op that produced inf from finite inputs', async () => {
    const f = feeds(100);
    const err = await checkFinite(graph, runReference(graph, f, [s], { precision: 'f32' }), named, () => traceReference(graph, f, [s], 'f32'));
    expect(err).not.toBeNull();
    expect(err!.origin.sources).toEqual([]);
    expect(err!.origin.op).toMatchObject({ node: e, op: 'exp', reads: ['x'], spot: { count: 1, index: 0, value: Infinity } });
    expect(err!.message).toContain('the sum is not finite: Infinity');
    expect(err!.message).toContain('first op to produce a non-finite value from finite inputs: exp');
  });

  it('webgpu: names exp inside the fused kernel, and the kernel', async () => {
    const f = feeds(100);
    const trace = await traceOnWebGpu(graph, f, [s]);
    // The sum is the only value a kernel writes: exp and mul are fused into it.
    expect(trace.values.has(e)).toBe(false);
    const err = await checkFinite(graph, new Map([[s, trace.values.get(s)!]]), named, () => trace);
    expect(err!.origin.op).toMatchObject({ node: e, op: 'exp' });
    expect(err!.origin.op!.kernel!.nodes).toContain(e);
    expect(err!.message).toMatch(/exp \(node \d+\) reading 'x' in kernel step 0 \(/);
  });

  it('a non-finite source is named first', async () => {
    const f = feeds(NaN);
    const err = await checkFinite(graph, runReference(graph, f, [s], { precision: 'f32' }), named, () => traceReference(graph, f, [s], 'f32'));
    expect(err!.origin.sources).toEqual([{ kind: 'input', name: 'x', spot: { count: 1, index: 0, value: NaN }, shape: [8] }]);
    expect(err!.message).toContain("it comes from the batch: input tensor 'x' holds one NaN (at [0])");
  });
});
