// softmax / log_softmax / softmax_grad and the norm kernels against the f64 reference.
//
// Tolerances are |err| <= rel * scale + abs, where scale is the same expression evaluated with
// every term's absolute value (so cancellation cannot make the bound meaningless):
// - f32 sums of n <= 4096 terms: realistic error ~u·sqrt(n)·scale (u = 6e-8), < 4e-6·scale;
// - WGSL exp is accurate to 3 + 2|x| ULP, so exp of |x| <= 10 errs by < 23 ULP = 1.4e-6 relative;
// - sqrt/division: a few ULP.
// rel = 1e-5 leaves margin over all of these; an indexing or formula error is O(scale).
import { describe, it } from 'vitest';
import fc from 'fast-check';
import type { HostTensor } from '../../../../runtime/tensor.js';
import { expectClose, f32t, gpu, outType, randn, reference, VARIANTS, type Variant } from './helpers.js';

const REL = 1e-5;
const seedArb = fc.integer({ min: 0, max: 2 ** 31 - 1 });
const shapeArb = fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 4 });

async function compare(op: string, inputs: HostTensor[], attrs: Record<string, unknown>, variant: Variant, scale: (want: HostTensor) => (i: number) => number): Promise<void> {
  const a = attrs as never;
  const out = outType(op, inputs, a);
  const want = reference(op, inputs, a, out);
  const got = await gpu(op, inputs, a, out, variant);
  const s = scale(want);
  expectClose(got, want, (i) => REL * s(i) + 1e-7, `${op} [${inputs[0]!.shape}] ${JSON.stringify(attrs)} ${variant}`);
}

/** [outer, n, inner] split of a shape around an axis. */
function split(shape: readonly number[], axis: number): { outer: number; n: number; inner: number } {
  const outer = shape.slice(0, axis).reduce((p, d) => p * d, 1);
  const inner = shape.slice(axis + 1).reduce((p, d) => p * d, 1);
  return { outer, n: shape[axis]!, inner };
}

/** Per element, the sum over its row (along axis) of f(element index). */
function rowAbsSum(shape: readonly number[], axis: number, f: (at: number) => number): Float64Array {
  const { outer, n, inner } = split(shape, axis);
  const out = new Float64Array(outer * n * inner);
  for (let o = 0; o < outer; o++)
    for (let j = 0; j < inner; j++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += f((o * n + i) * inner + j);
      for (let i = 0; i < n; i++) out[(o * n + i) * inner + j] = s;
    }
  return out;
}

describe('softmax kernels', () => {
  for (const variant of VARIANTS) {
    it(`softmax / log_softmax along any axis (${variant})`, async () => {
      await fc.assert(
        fc.asyncProperty(shapeArb, seedArb, fc.boolean(), async (shape, seed, log) => {
          const axis = (seed % shape.length) - (seed & 1 ? shape.length : 0);
          const x = f32t(shape, randn(shape.reduce((p, d) => p * d, 1), seed, -5, 5));
          // softmax: relative to the output; log_softmax: to |x - max| + |log s| <= ~20.
          await compare(log ? 'log_softmax' : 'softmax', [x], { axis }, variant, (w) => (i) => (log ? Math.abs(w.data[i]!) + 1 : w.data[i]!));
        }),
        { numRuns: 8 },
      );
    });
  }

  it('long rows (4096 classes), few rows; -inf entries', async () => {
    const x = f32t([3, 4096], randn(3 * 4096, 5, -8, 8));
    for (const op of ['softmax', 'log_softmax']) await compare(op, [x], {}, 'device', (w) => (i) => (op === 'log_softmax' ? Math.abs(w.data[i]!) + 1 : w.data[i]!));
    const m = f32t([4, 40], Array.from(randn(160, 6, -3, 3), (v, i) => (i % 7 === 3 || i % 40 < 2 ? -Infinity : v)));
    for (const v of VARIANTS) await compare('softmax', [m], { axis: 1 }, v, (w) => (i) => w.data[i]!);
  });

  for (const variant of VARIANTS) {
    it(`softmax_grad, softmax and log_softmax (${variant})`, async () => {
      await fc.assert(
        fc.asyncProperty(shapeArb, seedArb, fc.boolean(), async (shape, seed, log) => {
          const axis = seed % shape.length;
          const n = shape.reduce((p, d) => p * d, 1);
          const y = f32t(shape, randn(n, seed, log ? -6 : 0, log ? 0 : 1));
          const g = f32t(shape, randn(n, seed + 1));
          const ys = y.data;
          const gs = g.data;
          // |dx| <= |y| (|g| + sum|g y|) (softmax), |g| + exp(y) sum|g| (log_softmax).
          const s = rowAbsSum(shape, axis, (at) => Math.abs(gs[at]!) * (log ? 1 : Math.abs(ys[at]!)));
          const scale = log ? (i: number) => Math.abs(gs[i]!) + Math.exp(ys[i]!) * s[i]! : (i: number) => Math.abs(ys[i]!) * (Math.abs(gs[i]!) + s[i]!);
          await compare('softmax_grad', [y, g], { axis, log }, variant, () => scale);
        }),
        { numRuns: 8 },
      );
    });
  }
});

/** Per row of [R, D]: mean and 1/sqrt(var + eps) (or rms) in f64. */
function stats(x: HostTensor, D: number, eps: number, centred: boolean): { mu: Float64Array; rs: Float64Array } {
  const R = x.data.length / D;
  const mu = new Float64Array(R);
  const rs = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    let m = 0;
    if (centred) for (let i = 0; i < D; i++) m += x.data[r * D + i]! / D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (x.data[r * D + i]! - m) ** 2;
    mu[r] = m;
    rs[r] = 1 / Math.sqrt(v / D + eps);
  }
  return { mu, rs };
}

const normShape = fc.tuple(fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 0, maxLength: 2 }), fc.integer({ min: 1, max: 300 }));

describe('norm kernels', () => {
  for (const variant of VARIANTS) {
    it(`layer_norm, rms_norm and their x / weight gradients (${variant})`, async () => {
      await fc.assert(
        fc.asyncProperty(normShape, seedArb, fc.boolean(), async ([lead, D], seed, layer) => {
          const shape = [...lead, D];
          const n = shape.reduce((p, d) => p * d, 1);
          // An offset so layer_norm's centring matters.
          const x = f32t(shape, randn(n, seed, 1, 4));
          const w = f32t([D], randn(D, seed + 1, -2, 2));
          const b = f32t([D], randn(D, seed + 2));
          const g = f32t(shape, randn(n, seed + 3));
          const eps = layer ? 1e-5 : 1e-6;
          const { mu, rs } = stats(x, D, eps, layer);
          const xs = x.data;
          const ws = w.data;
          const gs = g.data;
          const row = (i: number): number => Math.floor(i / D);
          // |x - mu| rs, except that centring in f32 errs by ~u (|x| + |mu|): that is the scale.
          const xh = (i: number): number => (Math.abs(xs[i]!) + Math.abs(mu[row(i)]!)) * rs[row(i)]!;
          const op = layer ? 'layer_norm' : 'rms_norm';
          await compare(op, layer ? [x, w, b] : [x, w], { eps }, variant, () => (i) => xh(i) * Math.abs(ws[i % D]!) + (layer ? Math.abs(b.data[i % D]!) : 0));
          // wrt x: r (|g w| + mean|g w| + |xh| mean|g w xh|) (rms: no centring, same bound).
          const m1 = rowAbsSum(shape, shape.length - 1, (at) => Math.abs(gs[at]! * ws[at % D]!) / D);
          const m2 = rowAbsSum(shape, shape.length - 1, (at) => (Math.abs(gs[at]! * ws[at % D]!) * xh(at)) / D);
          const gradX = (i: number): number => rs[row(i)]! * (Math.abs(gs[i]! * ws[i % D]!) + m1[i]! + xh(i) * m2[i]!);
          await compare(`${op}_grad`, [x, w, g], { eps, wrt: 'x' }, variant, () => gradX);
          // wrt weight: sum over rows of |g xh|.
          const colAbs = new Float64Array(D);
          for (let i = 0; i < n; i++) colAbs[i % D]! += Math.abs(gs[i]!) * xh(i);
          await compare(`${op}_grad`, [x, w, g], { eps, wrt: 'weight' }, variant, () => (c) => colAbs[c]!);
        }),
        { numRuns: 4 },
      );
    });
  }

  it('hidden-size rows: 4096 features; weight gradient over 700 rows', async () => {
    const D = 4096;
    const x = f32t([2, D], randn(2 * D, 11, -3, 5));
    const w = f32t([D], randn(D, 12));
    const b = f32t([D], randn(D, 13));
    await compare('layer_norm', [x, w, b], { eps: 1e-5 }, 'device', (want) => (i) => Math.abs(want.data[i]!) + 3);
    await compare('rms_norm', [x, w], { eps: 1e-6 }, 'device', (want) => (i) => Math.abs(want.data[i]!) + 1);
    const R = 700;
    const x2 = f32t([R, 48], randn(R * 48, 14, -2, 2));
    const g2 = f32t([R, 48], randn(R * 48, 15));
    const w2 = f32t([48], randn(48, 16));
    // Row sums of |g xh| are ~R/2; the bound is on that scale.
    for (const op of ['layer_norm_grad', 'rms_norm_grad']) await compare(op, [x2, w2, g2], { eps: 1e-5, wrt: 'weight' }, 'device', () => () => R);
  });
});
