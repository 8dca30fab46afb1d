// `%` on tensors (docs/language.md): torch.remainder, written in a spec, on the reference and in a
// fused WebGPU kernel (forward and both gradients), against values torch gives.
import { describe, expect, it } from 'vitest';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { checkTexts } from '../check/helpers.js';
import { f32, runBoth } from '../../runtime/webgpu/compare.js';

const SPEC = `config c {
  k = 7 % 3
}
model M(c) {
  param a: f32[8] init zeros
  input b: f32[8]
  forward {
    let r = a % b
    output r = r
    output by_two = a % 2
    loss l = sum(r * r + (a % b) * c.k)
  }
}
`;

describe('% on tensors', () => {
  it('is torch.remainder in the reference and the kernel, with gradients', async () => {
    const m = checkTexts({ 'r.kiln': SPEC }, 'r.kiln');
    const g = differentiate(m.graph);
    const a = Float32Array.from([-3, 3, -3, 5.5, -5.5, 7.25, 3, -3]);
    const b = Float32Array.from([2, -2, -2, 2, 2, 0.5, Infinity, Infinity]);
    const feeds = new Map([
      ['a', f32([8], a)],
      ['b', f32([8], b)],
    ]);
    const r = g.outputs.find((o) => o.name === 'r')!.node;
    const two = g.outputs.find((o) => o.name === 'by_two')!.node;
    const grad = g.gradients[0]!.node;
    const { gpu, ref } = await runBoth(g, feeds, [r, two, grad]);
    // torch.remainder(a, b) and torch.remainder(a, 2); by inf: a when the signs agree, else inf.
    const want = [1, -1, -1, 1.5, 0.5, 0.25, 3, Infinity];
    expect([...ref.get(r)!.data]).toEqual(want);
    expect([...gpu.get(r)!.data]).toEqual(want);
    expect([...ref.get(two)!.data]).toEqual([1, 1, 1, 1.5, 0.5, 1.25, 1, 1]);
    expect([...gpu.get(two)!.data]).toEqual([1, 1, 1, 1.5, 0.5, 1.25, 1, 1]);
    // d/da sum(r^2 + k r) = 2 r + k (k = 7 % 3 = 1, the config's Python %), on the finite entries.
    const dA = want.slice(0, 7).map((v) => 2 * v + 1);
    expect([...ref.get(grad)!.data].slice(0, 7)).toEqual(dA);
    expect([...gpu.get(grad)!.data].slice(0, 7)).toEqual(dA);
  });
});
