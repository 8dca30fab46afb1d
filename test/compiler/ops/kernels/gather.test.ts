// rope, embedding, embedding_grad, splice and splice_grad kernels against the reference.
// Gathers and copies are exact (tolerance 0); rope and embedding_grad's sums are explained below.
import { describe, it } from 'vitest';
import fc from 'fast-check';
import type { HostTensor } from '../../../../runtime/tensor.js';
import { expectClose, f32t, gpu, i32t, outType, randInts, randn, reference, VARIANTS } from './helpers.js';

const seedArb = fc.integer({ min: 0, max: 2 ** 31 - 1 });
const numel = (s: readonly number[]): number => s.reduce((p, d) => p * d, 1);

/**
 * rope against the f32 reference (HF's f32 tables): the kernel's sin/cos are within ~1 ULP of the
 * correctly rounded values, and a*c - b*s then differs by a few ULP of |a| + |b|; 1e-6 (~16 ULP)
 * catches any wrong frequency or position (those are O(1)).
 */
async function checkRope(shape: number[], attrs: Record<string, unknown>, seed: number): Promise<void> {
  const x = f32t(shape, randn(numel(shape), seed, -2, 2));
  const a = attrs as never;
  const out = outType('rope', [x], a);
  const want = reference('rope', [x], a, out, 'f32');
  const D = shape[shape.length - 1]!;
  const xs = x.data;
  const tol = (i: number): number => 1e-6 * (Math.abs(xs[i]!) + Math.abs(xs[i % D < D / 2 ? i + D / 2 : i - D / 2]!));
  for (const v of VARIANTS) expectClose(await gpu('rope', [x], a, out, v), want, tol, `rope [${shape}] ${JSON.stringify(attrs)} ${v}`);
}

describe('rope kernel', () => {
  it('any [..., T, D], theta, offset, inverse', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 0, maxLength: 2 }),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 12 }),
        fc.record({ theta: fc.constantFrom(10000, 500000, 100), offset: fc.integer({ min: 0, max: 3000 }), inverse: fc.boolean() }),
        seedArb,
        async (lead, T, halfD, attrs, seed) => checkRope([...lead, T, 2 * halfD], attrs, seed),
      ),
      { numRuns: 5 },
    );
  });

  it('a run-time position input (the decode step) rotates as the same offset given as an attribute', async () => {
    for (const [shape, offset, pos] of [
      [[1, 2, 1, 8], 0, 7],
      [[1, 4, 3, 16], 5, 1234],
    ] as const) {
      const x = f32t([...shape], randn(numel(shape), pos, -2, 2));
      const p: HostTensor = { dtype: 'i32', shape: [], data: Int32Array.of(pos) };
      const want = reference('rope', [x], { theta: 10000, offset: offset + pos } as never, outType('rope', [x], { theta: 10000 } as never), 'f32');
      const out = outType('rope', [x, p], { theta: 10000, offset } as never);
      const D = shape[shape.length - 1]!;
      const xs = x.data;
      const tol = (i: number): number => 1e-6 * (Math.abs(xs[i]!) + Math.abs(xs[i % D < D / 2 ? i + D / 2 : i - D / 2]!));
      expectClose(reference('rope', [x, p], { theta: 10000, offset } as never, out, 'f32'), want, () => 0, `rope reference pos ${pos}`);
      for (const v of VARIANTS) expectClose(await gpu('rope', [x, p], { theta: 10000, offset } as never, out, v), want, tol, `rope [${shape}] pos ${pos} ${v}`);
    }
  });

  it('a per-row position input [B] (left-padded prompts) rotates each batch row as its own offset, negative ones too', async () => {
    const shape = [3, 2, 5, 8];
    const offset = 2;
    const pos = [0, -4, 37];
    const x = f32t(shape, randn(numel(shape), 11, -2, 2));
    const p: HostTensor = { dtype: 'i32', shape: [3], data: Int32Array.from(pos) };
    const per = numel(shape) / 3;
    // Each row alone with its offset as an attribute: the expected value, row by row.
    const rows = pos.map((q, b) => reference('rope', [f32t([1, 2, 5, 8], x.data.slice(b * per, (b + 1) * per))], { theta: 10000, offset: offset + q } as never, outType('rope', [f32t([1, 2, 5, 8], new Float32Array(per))], { theta: 10000 } as never), 'f32'));
    const want: HostTensor = { dtype: 'f32', shape, data: Float32Array.from(rows.flatMap((r) => Array.from(r.data))) };
    const out = outType('rope', [x, p], { theta: 10000, offset } as never);
    const xs = x.data;
    const tol = (i: number): number => 1e-6 * (Math.abs(xs[i]!) + Math.abs(xs[i % 8 < 4 ? i + 4 : i - 4]!));
    expectClose(reference('rope', [x, p], { theta: 10000, offset } as never, out, 'f32'), want, () => 0, 'rope reference pos [B]');
    for (const v of VARIANTS) expectClose(await gpu('rope', [x, p], { theta: 10000, offset } as never, out, v), want, tol, `rope pos [B] ${v}`);
  });

  it('long positions: angles up to ~9000 rad at the highest frequency', async () => {
    await checkRope([4096, 4], { offset: 5000 }, 3);
    await checkRope([2, 300, 128], { theta: 10000 }, 4);
  });
});

describe('embedding kernels', () => {
  it('embedding: gathers rows exactly', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 6 }), { maxLength: 3 }), fc.integer({ min: 1, max: 50 }), fc.integer({ min: 1, max: 70 }), seedArb, async (lead, V, D, seed) => {
        const ids = i32t(lead, randInts(numel(lead), seed, 0, V));
        const w = f32t([V, D], randn(V * D, seed + 1));
        const out = outType('embedding', [ids, w], {});
        const want = reference('embedding', [ids, w], {}, out);
        for (const v of VARIANTS) expectClose(await gpu('embedding', [ids, w], {}, out, v), want, 0, `embedding [${lead}] V${V} D${D} ${v}`);
      }),
      { numRuns: 5 },
    );
  });

  it('embedding: more outputs than 65535 workgroups of 64 hold (a real folded dispatch)', async () => {
    const ids = i32t([70_000], randInts(70_000, 3, 0, 10));
    const w = f32t([10, 64], randn(640, 4));
    const out = outType('embedding', [ids, w], {});
    expectClose(await gpu('embedding', [ids, w], {}, out), reference('embedding', [ids, w], {}, out), 0, 'embedding 70000x64');
  });

  // Each output is a sum of the g rows whose id matches (in position order, in f32): error below
  // ~n·u·Σ|g| for n matches; 1e-6·Σ|g| + 1e-7 is loose for the <= 300 matches here, while a
  // missed or extra row is O(|g|).
  it('embedding_grad: sums the g rows of each id (collisions, unused ids, wide rows)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 2 }), fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 40 }), seedArb, async (lead, V, D, seed) => {
        const n = numel(lead);
        const ids = i32t(lead, randInts(n, seed, 0, V));
        const g = f32t([...lead, D], randn(n * D, seed + 1));
        await checkEmbeddingGrad(ids, g, V);
      }),
      { numRuns: 5 },
    );
    // Wider than one lane's accumulators (2 column chunks on 8 lanes), and 300 ids over 3 rows.
    await checkEmbeddingGrad(i32t([5], [2, 0, 2, 2, 1]), f32t([5, 2100], randn(5 * 2100, 9)), 4);
    await checkEmbeddingGrad(i32t([300], randInts(300, 10, 0, 3)), f32t([300, 9], randn(2700, 11)), 3);
  });
});

async function checkEmbeddingGrad(ids: HostTensor, g: HostTensor, V: number): Promise<void> {
  const attrs = { vocab: V };
  const out = outType('embedding_grad', [ids, g], attrs);
  const want = reference('embedding_grad', [ids, g], attrs, out);
  const scale = reference('embedding_grad', [ids, f32t(g.shape, Array.from(g.data, Math.abs))], attrs, out);
  for (const v of VARIANTS) {
    expectClose(await gpu('embedding_grad', [ids, g], attrs, out, v), want, (i) => 1e-6 * scale.data[i]! + 1e-7, `embedding_grad [${ids.shape}] V${V} ${v}`);
  }
}

describe('splice kernels', () => {
  const TOKEN = -200;
  it('splice and splice_grad (seq, insert): the placeholder found per row at run time', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 0, max: 6 }),
        fc.constantFrom([], [1], [5], [2, 3], [300]),
        seedArb,
        async (B, T, P, rest, seed) => {
          // One placeholder per row, anywhere (first and last positions included).
          const pos = randInts(B, seed, 0, T);
          const ids = i32t([B, T], Array.from(randInts(B * T, seed + 1, 0, 1000), (v, i) => (i % T === pos[Math.floor(i / T)] ? TOKEN : v)));
          const R = numel(rest);
          const seq = f32t([B, T, ...rest], randn(B * T * R, seed + 2));
          const ins = f32t([B, P, ...rest], randn(B * P * R, seed + 3));
          const attrs = { token: TOKEN };
          const out = outType('splice', [seq, ins, ids], attrs);
          const want = reference('splice', [seq, ins, ids], attrs, out);
          const g = f32t(out.shape, randn(numel(out.shape), seed + 4));
          for (const v of VARIANTS) {
            const what = `B${B} T${T} P${P} [${rest}] ${v}`;
            expectClose(await gpu('splice', [seq, ins, ids], attrs, out, v), want, 0, `splice ${what}`);
            for (const part of ['seq', 'insert'] as const) {
              const ga = { token: TOKEN, part, shape: part === 'seq' ? seq.shape : ins.shape };
              const gout = outType('splice_grad', [g, ids], ga);
              const gwant = reference('splice_grad', [g, ids], ga, gout);
              expectClose(await gpu('splice_grad', [g, ids], ga, gout, v), gwant, 0, `splice_grad ${part} ${what}`);
            }
          }
        },
      ),
      { numRuns: 5 },
    );
  });
});
