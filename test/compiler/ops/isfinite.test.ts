// isfinite (torch.isfinite) on the reference and in a WebGPU kernel: NaN, +-inf, the largest
// finite f32, the smallest subnormal and zeros, fused with a consumer as the optimiser uses it.
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { WebGpuExecutor } from '../../../compiler/exec/webgpu.js';
import { getDevice } from '../../../runtime/node/device.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { input } from './harness.js';

const VALUES = [NaN, Infinity, -Infinity, 3.4028234663852886e38, -3.4028234663852886e38, 1.4e-45, 0, -0, 1, -2.5];
const WANT = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1];

describe('isfinite', () => {
  const b = new GraphBuilder();
  const x = input(b, 'x', 'f32', [VALUES.length]);
  const ok = b.add('isfinite', [x]);
  // where(isfinite(x), x, 7) as the guarded update reads it: one fused elementwise kernel.
  const guarded = b.add('where', [ok, x, b.add('fill', [], { value: 7, shape: [], dtype: 'f32' })]);
  const graph = b.build();
  const feeds = new Map<string, HostTensor>([['x', { dtype: 'f32', shape: [VALUES.length], data: Float32Array.from(VALUES) }]]);
  const guardedWant = VALUES.map((v, i) => (WANT[i] ? Math.fround(v) : 7));

  it('on the reference', () => {
    const r = runReference(graph, feeds, [ok, guarded], { precision: 'f32' });
    expect([...r.get(ok)!.data]).toEqual(WANT);
    expect([...r.get(guarded)!.data]).toEqual(guardedWant);
  });

  it('in a WebGPU kernel', async () => {
    const exec = new WebGpuExecutor(await getDevice(), graph);
    try {
      const r = await exec.run(feeds, [ok, guarded]);
      expect([...r.get(ok)!.data]).toEqual(WANT);
      expect([...r.get(guarded)!.data]).toEqual(guardedWant);
    } finally {
      exec.destroy();
    }
  });
});
