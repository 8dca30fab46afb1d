// Batched matrix product [..., M, K] x [..., K, N] with broadcast batch dims (torch.matmul on
// rank >= 2). The reference runs i-k-j with an f64 row accumulator: contiguous inner loops and
// no per-element allocation, fast enough for the tiny models' forward and backward.
import { dimsEqual, dimToString, shapeToString } from '../ir/dims.js';
import type { TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { MATMUL_FORM, lowerMatmul } from '../codegen/matmul-op.js';
import { alloc, broadcastIndex } from './util/ref.js';
import { unbroadcast } from './util/grad.js';
import { broadcastShapes, expectArity, fail, isFloatDType, typeToString } from './util/shape.js';
import { numel } from '../../runtime/tensor.js';

function swapLast(rank: number): number[] {
  const p = [...Array(rank).keys()];
  [p[rank - 2], p[rank - 1]] = [p[rank - 1]!, p[rank - 2]!];
  return p;
}

/** y[M, N] (+)= a[M, K] b[K, N] for one batch entry, at the given offsets. */
export function matmulInto(
  a: ArrayLike<number>,
  aOff: number,
  b: ArrayLike<number>,
  bOff: number,
  y: { [i: number]: number },
  yOff: number,
  M: number,
  K: number,
  N: number,
  row: Float64Array,
): void {
  // A zero of a skips its row of b only when that row is finite: 0 * inf and 0 * NaN are NaN in
  // torch's matmul too, so a skip would hide a non-finite b. 0: not yet known, 1 finite, 2 not.
  const bFinite = new Uint8Array(K);
  for (let i = 0; i < M; i++) {
    row.fill(0, 0, N);
    const ai = aOff + i * K;
    for (let k = 0; k < K; k++) {
      const av = a[ai + k]!;
      const bk = bOff + k * N;
      if (av === 0) {
        if (bFinite[k] === 0) {
          bFinite[k] = 1;
          for (let j = 0; j < N; j++) if (!Number.isFinite(b[bk + j]!)) bFinite[k] = 2;
        }
        if (bFinite[k] === 1) continue;
      }
      for (let j = 0; j < N; j++) row[j]! += av * b[bk + j]!;
    }
    const yi = yOff + i * N;
    for (let j = 0; j < N; j++) y[yi + j] = row[j]!;
  }
}

export const matmulOp: OpDef = {
  name: 'matmul',
  fusion: 'matmul',
  surface: { inputs: ['a', 'b'], attrs: {}, doc: 'matmul(a, b): a @ b, [..., M, K] x [..., K, N], batch dims broadcast' },
  infer(inputs) {
    expectArity('matmul', inputs, 2);
    const [a, b] = inputs as [TensorType, TensorType];
    if (a.dtype !== b.dtype) fail(`matmul: dtypes differ: a is ${typeToString(a)}, b is ${typeToString(b)}`, 1);
    if (!isFloatDType(a.dtype)) fail(`matmul: operands must be float tensors, got ${typeToString(a)}`, 0);
    if (a.shape.length < 2) fail(`matmul: a must have rank >= 2, got ${shapeToString(a.shape)}`, 0);
    if (b.shape.length < 2) fail(`matmul: b must have rank >= 2, got ${shapeToString(b.shape)}`, 1);
    const k1 = a.shape[a.shape.length - 1]!;
    const k2 = b.shape[b.shape.length - 2]!;
    if (!dimsEqual(k1, k2))
      fail(
        `matmul: a ${shapeToString(a.shape)} has ${dimToString(k1)} columns (last dim) but b ${shapeToString(b.shape)} has ${dimToString(k2)} rows (dim -2)`,
        1,
      );
    const batch = broadcastShapes('matmul', [a.shape.slice(0, -2), b.shape.slice(0, -2)], ['a batch', 'b batch']);
    return { dtype: a.dtype, shape: [...batch, a.shape[a.shape.length - 2]!, b.shape[b.shape.length - 1]!] };
  },
  vjp(b, node, g) {
    const [x, w] = node.inputs as [number, number];
    const xs = b.type(x).shape;
    const ws = b.type(w).shape;
    const gx = b.add('matmul', [g, b.add('transpose', [w], { perm: swapLast(ws.length) })]);
    const gw = b.add('matmul', [b.add('transpose', [x], { perm: swapLast(xs.length) }), g]);
    return [unbroadcast(b, gx, xs), unbroadcast(b, gw, ws)];
  },
  reference([a, b], _attrs, out, ctx) {
    const r = out.shape.length;
    const M = out.shape[r - 2]!;
    const N = out.shape[r - 1]!;
    const K = a!.shape[a!.shape.length - 1]!;
    const batch = out.shape.slice(0, -2);
    const ia = broadcastIndex(a!.shape.slice(0, -2), batch);
    const ib = broadcastIndex(b!.shape.slice(0, -2), batch);
    const nb = numel(batch);
    const y = alloc(ctx, out.dtype, out.shape);
    const row = new Float64Array(N);
    for (let t = 0; t < nb; t++) {
      const ta = ia ? ia[t]! : t;
      const tb = ib ? ib[t]! : t;
      matmulInto(a!.data, ta * M * K, b!.data, tb * K * N, y.data, t * M * N, M, K, N, row);
    }
    return y;
  },
  // The tuned generator (compiler/codegen/matmul.ts) behind the load/store contract.
  torch: { expr: (c) => `torch.matmul(${c.inputs[0]!}, ${c.inputs[1]!})` },
  kernel: { kind: 'custom', lower: lowerMatmul, matmul: MATMUL_FORM },
};
