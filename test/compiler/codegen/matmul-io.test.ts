// The matmul generator's extensions for fused code: A used transposed (weight gradients x^T g),
// broadcast batch offsets, and the accessor I/O mode (load0/load1/store), each on both tile kinds,
// against an f64 CPU matmul; and the fused path choosing the buffer fast path only when the
// operand layout allows it.
import { describe, expect, it } from 'vitest';
import { matmulWGSL, type MatmulSpec, type MatmulTile } from '../../../compiler/codegen/matmul.js';
import { getDevice } from '../../../runtime/node/device.js';
import { runKernel } from '../../../runtime/webgpu/buffers.js';
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { input } from '../ops/harness.js';
import { f32, runBoth, uniform, worst } from '../../runtime/webgpu/compare.js';
import { bindAll, dispatch, getPipeline, readFloat32, uploadBuffer } from '../../../runtime/webgpu/buffers.js';
import { fuse } from '../../../compiler/passes/fuse.js';
import { generateGroup, type ConcreteNode } from '../../../compiler/codegen/fused.js';
import { deviceTraits } from '../../../compiler/exec/webgpu.js';

/** C[z] = op(A)[z] @ op(B)[z] with A [batchA, M, K] (or [K, M]) and B [batchB, K, N] (or [N, K]). */
function cpu(spec: MatmulSpec, A: Float32Array, B: Float32Array, aBatch: (z: number) => number, bBatch: (z: number) => number): Float64Array {
  const { M, N, K } = spec;
  const batch = spec.batch ?? 1;
  const C = new Float64Array(batch * M * N);
  for (let z = 0; z < batch; z++)
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          const a = A[aBatch(z) * M * K + (spec.transposeA ? k * M + i : i * K + k)]!;
          const b = B[bBatch(z) * K * N + (spec.transposeB ? j * K + k : k * N + j)]!;
          s += a * b;
        }
        C[(z * M + i) * N + j] = s;
      }
  return C;
}

const TILES: (MatmulTile | undefined)[] = [undefined, { kind: 'cols', wg: 16, rm: 2, rn: 2 }];

async function check(spec: MatmulSpec, io: 'buffers' | 'accessors', aBatches: number, aBatch: (z: number) => number, bBatches: number, bBatch: (z: number) => number): Promise<void> {
  const kd = await getDevice();
  const A = uniform(aBatches * spec.M * spec.K, 1);
  const B = uniform(bBatches * spec.K * spec.N, 2);
  const k = matmulWGSL({ ...spec, io }, { subgroupSize: kd.subgroupSize });
  const code =
    io === 'buffers'
      ? k.code
      : [
          ...k.enables.map((e) => `enable ${e};`),
          '@group(0) @binding(0) var<storage, read> xa: array<f32>;',
          '@group(0) @binding(1) var<storage, read> xb: array<f32>;',
          '@group(0) @binding(2) var<storage, read_write> xc: array<f32>;',
          'fn load0(i: u32) -> f32 { return xa[i]; }',
          'fn load1(i: u32) -> f32 { return xb[i]; }',
          'fn store(i: u32, v: f32) { xc[i] = v; }',
          k.code,
        ].join('\n');
  const batch = spec.batch ?? 1;
  const [C] = await runKernel(kd.device, { code, label: k.label, bindings: [A, B, { output: batch * spec.M * spec.N }], workgroups: k.workgroups });
  const want = cpu(spec, A, B, aBatch, bBatch);
  expect(worst(C!, want, 1e-5, 1e-4).ratio, `${io} ${k.label}`).toBeLessThanOrEqual(1);
}

describe('matmul generator: transposed A, batch offsets, accessors', () => {
  it('A^T @ B and A^T @ B^T, both tile kinds, buffers and accessors', async () => {
    for (const tile of TILES)
      for (const io of ['buffers', 'accessors'] as const)
        for (const transposeB of [false, true]) {
          // Ragged sizes exercise the clamped edges and the K tail; multiples of 4 the vec4 loads of B.
          const [M, N, K] = transposeB === (io === 'buffers') ? [19, 13, 11] : [32, 16, 24];
          await check({ M, N, K, transposeA: true, transposeB, ...(tile ? { tile } : {}) }, io, 1, () => 0, 1, () => 0);
        }
  });

  it('broadcast batch offsets for A and B', async () => {
    // out batch [2, 3]: A batch [2, 1] (index z / 3), B batch [3] (index z % 3)
    const spec: MatmulSpec = { M: 9, N: 10, K: 7, batch: 6, batchOffsetA: '(bz / 3u) * 63u', batchOffsetB: '(bz % 3u) * 70u' };
    for (const tile of TILES) for (const io of ['buffers', 'accessors'] as const) await check({ ...spec, ...(tile ? { tile } : {}) }, io, 2, (z) => Math.floor(z / 3), 3, (z) => z % 3);
  });

  it('fused weight gradients take the buffer path with A transposed; a regrouped transpose does not', async () => {
    const b = new GraphBuilder();
    const g = input(b, 'g', 'f32', [2, 6, 5]);
    const x = input(b, 'x', 'f32', [2, 6, 4]);
    const flat = (t: number, d: number) => b.add('reshape', [t], { shape: [12, d] });
    const gw = b.add('matmul', [b.add('transpose', [flat(g, 5)], { perm: [1, 0] }), flat(x, 4)]); // [5, 4]
    // transpose then a reshape that regroups the matrix: not a plain A^T
    const odd = b.add('matmul', [b.add('reshape', [b.add('transpose', [g], { perm: [0, 2, 1] })], { shape: [5, 12] }), flat(x, 4)]);
    const feeds = new Map([['g', f32([2, 6, 5], uniform(60, 3))], ['x', f32([2, 6, 4], uniform(48, 4))]]);
    const { gpu, ref, executor } = await runBoth(b.build(), feeds, [gw, odd]);
    for (const id of [gw, odd]) expect(worst(gpu.get(id)!.data, ref.get(id)!.data, 1e-5, 1e-4).ratio).toBeLessThanOrEqual(1);
    const c = await executor.compiled(feeds, [gw, odd]);
    expect(c.kernels.map((k) => k.io)).toEqual(['buffers', 'accessors']);
    executor.destroy();
  });
});

describe('a matmul epilogue that updates a running sum in place', () => {
  // acc + x @ w written over acc (the loss heads' weight gradients, compiler/passes/plan.ts
  // accumulatorLinks): the epilogue reads acc through the generator's c_at(i), for C bound as
  // vec4 (N = 12) and as f32 (N = 10).
  it.each([12, 10])('reads the previous value through c_at (N = %i)', async (N) => {
    const [M, K] = [8, 16];
    const b = new GraphBuilder();
    const x = input(b, 'x', 'f32', [M, K]);
    const w = input(b, 'w', 'f32', [K, N]);
    const acc = input(b, 'acc', 'f32', [M, N]);
    const s = b.add('add', [acc, b.add('matmul', [x, w])], { accumulate: true });
    const graph = b.build();
    const program = fuse(graph, [s]);
    const group = program.groups.find((g) => g.kind === 'matmul')!;
    expect(group.outputs).toEqual([s]);
    const kd = await getDevice();
    const node = (id: number): ConcreteNode => {
      const n = graph.nodes[id]!;
      return { id, op: n.op, inputs: n.inputs, attrs: n.attrs, dtype: n.type.dtype, shape: n.type.shape as number[] };
    };
    const k = generateGroup(group, node, deviceTraits(kd), { aliases: new Map([[acc, s]]) });
    expect(k.io).toBe('buffers');
    expect(k.code).toContain('c_at(i)');
    expect(k.code.includes('read_write> c: array<vec4f>')).toBe(N % 4 === 0);
    const data = new Map([
      [x, uniform(M * K, 1)],
      [w, uniform(K * N, 2)],
      [s, uniform(M * N, 3)],
    ]);
    const device = kd.device;
    const buffers = k.bindings.map((r) => uploadBuffer(device, data.get(r.value)!));
    try {
      const pipeline = getPipeline(device, k.code);
      dispatch(device, pipeline, bindAll(device, pipeline, buffers), k.workgroups);
      const got = await readFloat32(device, buffers[k.bindings.findIndex((r) => r.value === s)]!, M * N);
      const prod = cpu({ M, N, K }, data.get(x)!, data.get(w)!, () => 0, () => 0);
      const want = Float64Array.from(prod, (v, i) => v + data.get(s)![i]!);
      expect(worst(got, want, 1e-6, 1e-5).ratio).toBeLessThanOrEqual(1);
    } finally {
      for (const buf of buffers) buf.destroy();
    }
  });
});
