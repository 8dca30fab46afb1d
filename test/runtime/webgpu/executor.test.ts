// The plan executor's edges: tensors split across storage bindings (a small binding limit forces
// it), values no buffer can hold, and a lost device: each a KilnError naming the step, never a
// validation error or a hang.
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { KilnError } from '../../../runtime/errors.js';
import { getDevice } from '../../../runtime/node/device.js';
import { WebGpuExecutor } from '../../../compiler/exec/webgpu.js';
import { input, param } from '../../compiler/ops/harness.js';
import { f32, runBoth, uniform, worst } from './compare.js';

describe('WebGPU executor', () => {
  it('splits tensors larger than a storage binding across several bindings', async () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [30, 300]);
    const w = input(b, 'w', 'f32', [20, 300]);
    const y = input(b, 'y', 'f32', [300]);
    const e = b.add('mul', [b.add('tanh', [x]), y]); // 9000 floats: three bindings of 4096
    const l = b.add('linear', [e, w]); // the matmul through accessors: x and w are split
    const s = b.add('sum', [b.add('transpose', [e], { perm: [1, 0] })], { axis: [1] });
    const feeds = new Map([
      ['x', f32([30, 300], uniform(9000, 1))],
      ['w', f32([20, 300], uniform(6000, 2))],
      ['y', f32([300], uniform(300, 3))],
    ]);
    const wanted = [e, l, s];
    const { gpu, ref, executor } = await runBoth(b.build(), feeds, wanted, { traits: { maxStorageBindingBytes: 16384 } });
    try {
      for (const id of wanted) expect(worst(gpu.get(id)!.data, ref.get(id)!.data, 1e-5, 1e-4).ratio).toBeLessThanOrEqual(1);
      const c = await executor.compiled(feeds, wanted);
      const chunks = c.kernels.flatMap((k) => k.bindings.filter((bd) => bd.offset > 0));
      expect(chunks.length).toBeGreaterThanOrEqual(4);
      for (const k of c.kernels) for (const bd of k.bindings) expect(bd.length * 4).toBeLessThanOrEqual(16384);
    } finally {
      executor.destroy();
    }
  });

  it('stores floats as f16 with f32 math (split bindings included), within f16 rounding of the reference', async () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [30, 301]);
    const w = input(b, 'w', 'f32', [21, 301]);
    const bias = input(b, 'bias', 'f32', [21]);
    const h = b.add('gelu', [b.add('linear', [x, w, bias])]);
    const s = b.add('sum', [b.add('mul', [h, h])], { axis: [1] });
    const k = input(b, 'k', 'i32', [5]);
    const kk = b.add('mul', [k, k]); // integers stay i32
    const feeds = new Map([
      ['x', f32([30, 301], uniform(9030, 1))],
      ['w', f32([21, 301], uniform(6321, 2, -0.1, 0.1))],
      ['bias', f32([21], uniform(21, 3))],
      ['k', { dtype: 'i32' as const, shape: [5], data: Int32Array.from([1, -2, 300, 4, -50000]) }],
    ]);
    const wanted = [h, s, kk];
    const { gpu, ref, executor } = await runBoth(b.build(), feeds, wanted, { storage: 'f16', traits: { maxStorageBindingBytes: 8192 } });
    try {
      for (const id of [h, s]) expect(worst(gpu.get(id)!.data, ref.get(id)!.data, 2e-3, 1e-2).ratio).toBeLessThanOrEqual(1);
      expect([...gpu.get(kk)!.data]).toEqual([1, 4, 90000, 16, -1794967296]);
      const c = await executor.compiled(feeds, wanted);
      expect(c.kernels.some((kn) => kn.bindings.some((bd) => bd.elementBytes === 2 && bd.offset > 0))).toBe(true);
      expect(c.plan.values.get(x)!.bytes).toBe(9030 * 2);
    } finally {
      executor.destroy();
    }
  });

  it('uploads a parameter once per tensor fed, and again when a different tensor is fed', async () => {
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [4]);
    const w = param(b, 'w', [4]);
    const y = b.add('mul', [x, w]);
    const executor = new WebGpuExecutor(await getDevice(), b.build());
    const ones = f32([4], new Float32Array([1, 1, 1, 1]));
    const w1 = f32([4], new Float32Array([1, 2, 3, 4]));
    const w2 = f32([4], new Float32Array([5, 6, 7, 8]));
    expect([...(await executor.run(new Map([['x', ones], ['w', w1]]), [y])).get(y)!.data]).toEqual([1, 2, 3, 4]);
    expect([...(await executor.run(new Map([['x', ones], ['w', w2]]), [y])).get(y)!.data]).toEqual([5, 6, 7, 8]);
    w2.data.set([0, 0, 0, 1]); // changed in place: only invalidateParams() sends it again
    expect([...(await executor.run(new Map([['x', ones], ['w', w2]]), [y])).get(y)!.data]).toEqual([5, 6, 7, 8]);
    executor.invalidateParams();
    expect([...(await executor.run(new Map([['x', ones], ['w', w2]]), [y])).get(y)!.data]).toEqual([0, 0, 0, 1]);
    executor.destroy();
  });

  it('names the value and the step when a tensor is larger than any buffer, before allocating', async () => {
    const b = new GraphBuilder();
    const n = 2 ** 30 + 64; // 4 GiB + 256 B of f32
    const x = input(b, 'huge', 'f32', [n]);
    const z = b.add('neg', [x]);
    const executor = new WebGpuExecutor(await getDevice(), b.build());
    // Only the shape is read before the plan is checked; no data of that size is ever made.
    const feeds = new Map([['huge', { dtype: 'f32' as const, shape: [n], data: new Float32Array(1) }]]);
    await expect(executor.run(feeds, [z])).rejects.toThrow(KilnError);
    await expect(executor.run(feeds, [z])).rejects.toThrow(/input huge needs 4\.00 GiB, more than this device's largest buffer/);
  });

  it('reports a lost device as an error naming what was running, without hanging', async () => {
    const kd = await getDevice();
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [64]);
    const z = b.add('exp', [x]);
    const executor = new WebGpuExecutor(kd, b.build());
    const feeds = new Map([['x', f32([64], uniform(64, 5))]]);
    await executor.run(feeds, [z]);
    kd.device.destroy();
    await expect(executor.run(feeds, [z])).rejects.toThrow(/device lost during running 1 kernels.*destroyed/);
    // The next request gets a fresh device.
    expect(await getDevice()).not.toBe(kd);
  });
});
