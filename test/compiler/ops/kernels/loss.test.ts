// cross_entropy, kl_div and their gradients against the f64 reference.
//
// Tolerances: per-row log-sum-exps in f32 err by ~u·(|max| + sqrt(V)) (u = 6e-8) and WGSL's exp
// by <= 3 + 2|x| ULP, so each row's term is within ~1e-6·(its magnitude + 1); the mean over rows
// adds ~u·sqrt(rows). The losses allow 2e-5·(|loss| + 1). Gradient elements are g/n times a
// softmax difference: 1e-5 relative plus a floor of 1e-6·|g|/n for the entries that cancel
// (softmax - 1 near 1), and for kl's target gradient p·(log p - log q - kl) a floor growing with p
// (|log q| <= ~20 here). A wrong row, class or count is off by O(|g|/n).
import { describe, it } from 'vitest';
import fc from 'fast-check';
import type { HostTensor } from '../../../../runtime/tensor.js';
import { expectClose, f32t, gpu, i32t, outType, randInts, randn, reference, VARIANTS } from './helpers.js';

const seedArb = fc.integer({ min: 0, max: 2 ** 31 - 1 });
const leadArb = fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 2 });
const numel = (s: readonly number[]): number => s.reduce((p, d) => p * d, 1);

async function checkCrossEntropy(logits: HostTensor, labels: HostTensor, ignore: number): Promise<void> {
  const attrs = { ignore_index: ignore };
  const out = outType('cross_entropy', [logits, labels], attrs);
  const want = reference('cross_entropy', [logits, labels], attrs, out);
  const g = f32t([], [1.7]);
  const gout = outType('cross_entropy_grad', [logits, labels, g], attrs);
  const gwant = reference('cross_entropy_grad', [logits, labels, g], attrs, gout);
  const n = Math.max(1, Array.from(labels.data).filter((l) => l !== ignore).length);
  const what = `[${logits.shape}] ignore ${ignore}`;
  for (const v of VARIANTS) {
    expectClose(await gpu('cross_entropy', [logits, labels], attrs, out, v), want, 2e-5 * (Math.abs(want.data[0]!) + 1), `cross_entropy ${what} ${v}`);
    const got = await gpu('cross_entropy_grad', [logits, labels, g], attrs, gout, v);
    expectClose(got, gwant, (i) => 1e-5 * Math.abs(gwant.data[i]!) + (1e-6 * 1.7) / n, `cross_entropy_grad ${what} ${v}`);
  }
}

async function checkKl(z: HostTensor, t: HostTensor, mask: HostTensor, variants = VARIANTS): Promise<void> {
  const out = outType('kl_div', [z, t, mask], {});
  const want = reference('kl_div', [z, t, mask], {}, out);
  const g = f32t([], [0.6]);
  const n = Math.max(1, Array.from(mask.data).filter((m) => m !== 0).length);
  const p = reference('softmax', [t], { axis: -1 }, { dtype: 'f32', shape: t.shape });
  const what = `[${z.shape}] ${mask.dtype} mask`;
  for (const v of variants) {
    expectClose(await gpu('kl_div', [z, t, mask], {}, out, v), want, 2e-5 * (Math.abs(want.data[0]!) + 1), `kl_div ${what} ${v}`);
    for (const wrt of ['logits', 'target'] as const) {
      const gout = outType('kl_div_grad', [z, t, mask, g], { wrt });
      const gwant = reference('kl_div_grad', [z, t, mask, g], { wrt }, gout);
      const got = await gpu('kl_div_grad', [z, t, mask, g], { wrt }, gout, v);
      expectClose(got, gwant, (i) => 1e-5 * Math.abs(gwant.data[i]!) + (1e-6 * 0.6 * (1 + 20 * p.data[i]!)) / n, `kl_div_grad ${wrt} ${what} ${v}`);
    }
  }
}

describe('loss kernels', () => {
  it('cross_entropy and its gradient: ignored rows, any ignore_index', async () => {
    await fc.assert(
      fc.asyncProperty(leadArb, fc.integer({ min: 1, max: 60 }), fc.constantFrom(-100, 0, 3), seedArb, async (lead, V, ignore, seed) => {
        const n = numel(lead);
        const logits = f32t([...lead, V], randn(n * V, seed, -4, 4));
        // About a third of the rows ignored.
        const labels = i32t(lead, Array.from(randInts(n, seed + 1, 0, V), (l, i) => ((seed >> i % 30) & 3) === 0 ? ignore : l));
        await checkCrossEntropy(logits, labels, ignore);
      }),
      { numRuns: 5 },
    );
  });

  it('cross_entropy: every row ignored gives 0 and a zero gradient; a 32000-class vocabulary', async () => {
    await checkCrossEntropy(f32t([2, 3, 5], randn(30, 1)), i32t([2, 3], new Array(6).fill(-100)), -100);
    await checkCrossEntropy(f32t([3, 32000], randn(96000, 2, -6, 6)), i32t([3], [31999, -100, 17]), -100);
  });

  it('kl_div and its gradients wrt logits and target: i32 and bool masks, empty mask', async () => {
    await fc.assert(
      fc.asyncProperty(leadArb, fc.integer({ min: 1, max: 60 }), fc.boolean(), seedArb, async (lead, V, asBool, seed) => {
        const n = numel(lead);
        const z = f32t([...lead, V], randn(n * V, seed, -4, 4));
        const t = f32t([...lead, V], randn(n * V, seed + 1, -4, 4));
        const bits = Array.from(randInts(n, seed + 2, 0, 2));
        const mask: HostTensor = { dtype: asBool ? 'bool' : 'i32', shape: lead, data: Int32Array.from(bits, (b, i) => (asBool ? b : b * (i + 1))) };
        await checkKl(z, t, mask, ['device', 'portable']);
      }),
      { numRuns: 3 },
    );
    await checkKl(f32t([4, 7], randn(28, 3)), f32t([4, 7], randn(28, 4)), i32t([4], [0, 0, 0, 0]), ['device', 'folded']);
    // -inf target logits: classes with p = 0 contribute 0 (xlogy).
    const t = f32t([2, 6], Array.from(randn(12, 5), (v, i) => (i % 3 === 1 ? -Infinity : v)));
    await checkKl(f32t([2, 6], randn(12, 6)), t, i32t([2], [1, 1]), ['device', 'folded']);
  });

  it('kl_div: a 32000-class row', async () => {
    await checkKl(f32t([2, 32000], randn(64000, 7, -5, 5)), f32t([2, 32000], randn(64000, 8, -5, 5)), i32t([2], [1, 1]), ['device']);
  });
});
