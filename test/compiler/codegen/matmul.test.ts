// The matmul generator on real WebGPU against an f64 CPU matmul.
//
// Tolerance: entries are uniform in [-1, 1], so an output is a sum of K products with standard
// deviation sqrt(K)/3. f32 accumulation of K terms errs by at most ~K*u times the partial-sum
// magnitude (u = 6e-8), i.e. ~2e-8 * K * sqrt(K); with K <= 300 here that is < 6e-6 * sqrt(K), so
// |got - ref| <= 1e-4 * sqrt(K) leaves a 15x margin while any indexing bug (an O(1) error) fails.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { matmulWGSL, chooseMatmulTile, type MatmulSpec, type MatmulTile } from '../../../compiler/codegen/matmul.js';
import { getDevice } from '../../../runtime/node/device.js';
import { runKernel, type HostArray, type OutputSpec } from '../../../runtime/webgpu/buffers.js';

function rand(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32) * 2 - 1;
  });
}

/** f64 reference: C[b] = A[b] @ (B[b] or B[b]^T). */
function cpuMatmul(spec: MatmulSpec, A: Float32Array, B: Float32Array): Float64Array {
  const { M, N, K } = spec;
  const batch = spec.batch ?? 1;
  const C = new Float64Array(batch * M * N);
  for (let z = 0; z < batch; z++) {
    const ao = z * M * K;
    const bo = spec.broadcastB ? 0 : z * K * N;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += A[ao + i * K + k]! * B[bo + (spec.transposeB ? j * K + k : k * N + j)]!;
        C[z * M * N + i * N + j] = s;
      }
    }
  }
  return C;
}

async function gpuMatmul(spec: MatmulSpec, A: Float32Array, B: Float32Array, extra: HostArray[] = []): Promise<Float32Array> {
  const kd = await getDevice();
  const kernel = matmulWGSL(spec, { subgroupSize: kd.subgroupSize });
  const bindings: (HostArray | OutputSpec)[] = [A, B, { output: (spec.batch ?? 1) * spec.M * spec.N }, ...extra];
  const [C] = await runKernel(kd.device, { code: kernel.code, label: kernel.label, bindings, workgroups: kernel.workgroups });
  return C!;
}

function maxError(got: Float32Array, want: Float64Array, epi: (x: number, idx: number) => number = (x) => x): number {
  expect(got.length).toBe(want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - epi(want[i]!, i)));
  return Number.isNaN(worst) ? Infinity : worst;
}

async function check(spec: MatmulSpec, seed = 1): Promise<void> {
  const batch = spec.batch ?? 1;
  const A = rand(batch * spec.M * spec.K, seed);
  const B = rand((spec.broadcastB ? 1 : batch) * spec.K * spec.N, seed + 1);
  const err = maxError(await gpuMatmul(spec, A, B), cpuMatmul(spec, A, B));
  expect(err, JSON.stringify(spec)).toBeLessThanOrEqual(1e-4 * Math.sqrt(spec.K));
}

describe('matmul codegen on WebGPU', () => {
  it('matches an f64 matmul on random shapes, both kernels, plain and transposed B', async () => {
    const kd = await getDevice();
    const kinds: ('auto' | 'cols' | 'bcast')[] = kd.subgroupSize ? ['auto', 'cols', 'bcast'] : ['auto', 'cols'];
    const sg = kd.subgroupSize ?? 8;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          M: fc.integer({ min: 1, max: 70 }),
          N: fc.integer({ min: 1, max: 70 }),
          K: fc.integer({ min: 1, max: 90 }),
          transposeB: fc.boolean(),
          batch: fc.integer({ min: 1, max: 2 }),
          broadcastB: fc.boolean(),
          kind: fc.constantFrom(...kinds),
          rm: fc.integer({ min: 1, max: 2 }),
        }),
        async ({ kind, rm, ...spec }) => {
          let tile: MatmulTile | undefined;
          if (kind === 'cols') tile = { kind, wg: 16, rm, rn: 2 };
          if (kind === 'bcast') tile = { kind, sg, wg: 2 * sg, rm, rn: spec.transposeB ? sg : 8 };
          await check(tile ? { ...spec, tile } : spec, spec.M * 7 + spec.N);
        },
      ),
      { numRuns: 14, seed: 20240521 },
    );
  });

  it('handles sizes that are tile multiples and large K (the fast path, no tails)', async () => {
    await check({ M: 64, N: 64, K: 256 });
    await check({ M: 64, N: 64, K: 256, transposeB: true });
  });

  it('handles odd sizes on every edge at once', async () => {
    await check({ M: 37, N: 29, K: 301 });
    await check({ M: 37, N: 29, K: 301, transposeB: true });
    await check({ M: 1, N: 77, K: 45, transposeB: true }); // a decode step: one row
  });

  it('applies an epilogue with extra bindings (bias + ReLU, as the fusion pass will)', async () => {
    const kd = await getDevice();
    const spec: MatmulSpec = {
      M: 33,
      N: 20,
      K: 17,
      transposeB: true,
      batch: 2,
      broadcastB: true,
      epilogue: { expr: 'relu(acc + bias[col]) + f32(batch)', bindings: [{ name: 'bias', type: 'f32' }], helpers: 'fn relu(x: f32) -> f32 { return max(x, 0.0); }' },
    };
    const A = rand(2 * 33 * 17, 5);
    const B = rand(20 * 17, 6);
    const bias = rand(20, 7);
    const want = cpuMatmul(spec, A, B);
    const got = await gpuMatmul(spec, A, B, [bias]);
    const err = maxError(got, want, (x, idx) => Math.max(x + bias[idx % 20]!, 0) + Math.floor(idx / (33 * 20)));
    expect(err).toBeLessThanOrEqual(1e-4 * Math.sqrt(17));
    expect(matmulWGSL(spec, { subgroupSize: kd.subgroupSize }).bindings).toEqual(['a', 'b', 'c', 'bias']);
  });

  it('chooses per shape: broadcast tiles for big M, column tiles for decoding and no subgroups', () => {
    expect(chooseMatmulTile({ M: 2048, N: 2048, K: 2048 }, { subgroupSize: 8 }).kind).toBe('bcast');
    expect(chooseMatmulTile({ M: 1, N: 4096, K: 4096, transposeB: true }, { subgroupSize: 8 }).kind).toBe('cols');
    expect(chooseMatmulTile({ M: 512, N: 512, K: 512 }, {}).kind).toBe('cols');
    expect(() => matmulWGSL({ M: 0, N: 1, K: 1 })).toThrow(/M must be a positive integer/);
  });
});
