// sum / mean / max and sum_to kernels against the f64 reference.
//
// Tolerance: a sum of n f32 values accumulated in f32 errs by at most (n-1)·u·Σ|x| (u = 2^-24)
// whatever the order; the typical error is far smaller (random rounding, ~u·√n·|partial sums|).
// We allow 1e-6·Σ|x| + 1e-7 per output (Σ|x| over that output's inputs, from the same reference
// on |x|): above the realistic error for the n <= 10^5 used here, while a wrong index or a lost
// term (an O(|x|) error) fails. max and integer sums are exact.
import { describe, it } from 'vitest';
import fc from 'fast-check';
import type { HostTensor } from '../../../../runtime/tensor.js';
import { expectClose, f32t, gpu, i32t, outType, randInts, randn, reference, VARIANTS, type Variant } from './helpers.js';

const shapeArb = fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 0, maxLength: 4 });

function abs(x: HostTensor): HostTensor {
  return f32t(x.shape, Array.from(x.data, Math.abs));
}

async function checkReduce(op: 'sum' | 'mean' | 'max', x: HostTensor, attrs: Record<string, unknown>, variant: Variant): Promise<void> {
  const a = attrs as never;
  const out = outType(op, [x], a);
  const got = await gpu(op, [x], a, out, variant);
  const want = reference(op, [x], a, out);
  const what = `${op} ${x.dtype}[${x.shape}] ${JSON.stringify(attrs)} ${variant}`;
  if (op === 'max' || x.dtype === 'i32') {
    expectClose(got, want, 0, what);
    return;
  }
  const scale = reference(op, [abs(x)], a, out);
  expectClose(got, want, (i) => 1e-6 * scale.data[i]! + 1e-7, what);
}

describe('reduce kernels', () => {
  for (const variant of VARIANTS) {
    it(`sum / mean / max over any axes, keepdims (${variant})`, async () => {
      await fc.assert(
        fc.asyncProperty(
          shapeArb,
          fc.constantFrom('sum', 'mean', 'max'),
          fc.boolean(),
          fc.integer({ min: 0, max: 2 ** 31 - 1 }),
          fc.boolean(),
          async (shape, op, keepdims, seed, ints) => {
            const rank = shape.length;
            // A random subset of axes, some written negative; an empty draw reduces everything.
            const axes = [...Array(rank).keys()].filter((i) => (seed >> i) & 1).map((a) => (a % 2 ? a - rank : a));
            const n = shape.reduce((p, d) => p * d, 1);
            const int = ints && op !== 'mean';
            const x = int ? i32t(shape, randInts(n, seed, -1000, 1000)) : f32t(shape, randn(n, seed));
            const attrs = axes.length > 0 ? { axis: axes, keepdims } : { keepdims };
            await checkReduce(op, x, attrs, variant);
          },
        ),
        { numRuns: 8 },
      );
    });
  }

  it('long sums: 10^5 values to one, and 4096 rows of 300', async () => {
    const big = f32t([100_003], randn(100_003, 7));
    await checkReduce('sum', big, {}, 'device');
    await checkReduce('mean', big, {}, 'portable');
    await checkReduce('max', big, {}, 'device');
    const rows = f32t([4096, 300], randn(4096 * 300, 8, -3, 5));
    await checkReduce('sum', rows, { axis: [-1] }, 'device');
    await checkReduce('sum', rows, { axis: [0] }, 'device');
  });

  it('max of all -inf is -inf; i32 max over negatives', async () => {
    const x = f32t([3, 4], new Array(12).fill(-Infinity));
    await checkReduce('max', x, { axis: [1] }, 'device');
    await checkReduce('max', i32t([2, 5], [-5, -9, -2147483648, -7, -3, -1, -2, -3, -4, -5]), { axis: [1] }, 'device');
  });

  for (const variant of VARIANTS) {
    it(`sum_to: unbroadcast to any broadcast-compatible shape (${variant})`, async () => {
      await fc.assert(
        fc.asyncProperty(shapeArb, fc.integer({ min: 0, max: 2 ** 31 - 1 }), async (shape, seed) => {
          // The target drops some leading axes and keeps each other axis or sets it to 1.
          const drop = seed % (shape.length + 1);
          const target = shape.slice(drop).map((d, i) => ((seed >> (i + 3)) & 1 ? 1 : d));
          const x = f32t(shape, randn(shape.reduce((p, d) => p * d, 1), seed));
          const attrs = { shape: target };
          const out = outType('sum_to', [x], attrs);
          const got = await gpu('sum_to', [x], attrs, out, variant);
          const want = reference('sum_to', [x], attrs, out);
          const scale = reference('sum_to', [abs(x)], attrs, out);
          expectClose(got, want, (i) => 1e-6 * scale.data[i]! + 1e-7, `sum_to [${shape}] -> [${target}] ${variant}`);
        }),
        { numRuns: 8 },
      );
    });
  }

  it('sum_to: bias gradient shape [B, T, D] -> [D] with many rows', async () => {
    const x = f32t([3, 1000, 24], randn(3 * 1000 * 24, 3));
    const attrs = { shape: [24] };
    const out = outType('sum_to', [x], attrs);
    const want = reference('sum_to', [x], attrs, out);
    const scale = reference('sum_to', [abs(x)], attrs, out);
    for (const v of VARIANTS) expectClose(await gpu('sum_to', [x], attrs, out, v), want, (i) => 1e-6 * scale.data[i]! + 1e-7, `sum_to bias ${v}`);
  });
});
