// The matmul and linear ops as kernels of the contract (load0/load1[/load2] -> store), built on the
// tuned generator in matmul.ts. Fused code uses the same specs with io 'buffers' when both
// operands are plain buffers (compiler/codegen/fused.ts), and these lowerings otherwise.
import type { KernelBody, LowerContext, MatmulForm } from './kernel.js';
import { matmulWGSL, type MatmulSpec } from './matmul.js';
import { broadcastMap } from './views.js';
import { numel as prod } from '../../runtime/tensor.js';

export interface MatmulShape {
  readonly spec: MatmulSpec;
  /** module-scope WGSL the batch offsets need (broadcast batch dims). */
  readonly helpers: string;
}


/** A's and B's matrix offsets for output batch entry bz, when their batch dims broadcast. */
function batchOffset(name: string, own: readonly number[], out: readonly number[], size: number): { expr?: string; helper: string } {
  const n = prod(own);
  if (n === prod(out) && own.length === out.length) return { helper: '' };
  if (n === 1) return { expr: '0u', helper: '' };
  const { lets, index } = broadcastMap(own, out).wgsl('bz');
  return { expr: `${name}(bz) * ${size}u`, helper: `fn ${name}(bz: u32) -> u32 {\n  ${lets.join('\n  ')}\n  return ${index};\n}` };
}

/** [..., M, K] x [..., K, N] with numpy-broadcast batch dims. */
export function matmulShape(a: readonly number[], b: readonly number[], out: readonly number[]): MatmulShape {
  const M = a[a.length - 2]!;
  const K = a[a.length - 1]!;
  const N = b[b.length - 1]!;
  const outBatch = out.slice(0, -2);
  const batch = prod(outBatch);
  const oa = batchOffset('kmm_batch_a', a.slice(0, -2), outBatch, M * K);
  const ob = batchOffset('kmm_batch_b', b.slice(0, -2), outBatch, K * N);
  const spec: MatmulSpec = {
    M,
    N,
    K,
    batch,
    ...(oa.expr ? { batchOffsetA: oa.expr } : {}),
    ...(ob.expr === '0u' ? { broadcastB: true } : ob.expr ? { batchOffsetB: ob.expr } : {}),
  };
  return { spec, helpers: [oa.helper, ob.helper].filter(Boolean).join('\n') };
}

/** linear: x [..., K] with weight [N, K]: one [rows, K] x [N, K]^T product. */
export function linearShape(x: readonly number[], w: readonly number[]): MatmulShape {
  const K = x[x.length - 1]!;
  return { spec: { M: prod(x) / K, N: w[0]!, K, transposeB: true }, helpers: '' };
}

function body(ctx: LowerContext, shape: MatmulShape, epilogue: string | undefined): KernelBody {
  const k = matmulWGSL(
    { ...shape.spec, io: 'accessors', epilogue: { expr: epilogue ?? 'acc', helpers: shape.helpers } },
    { subgroupSize: ctx.device.subgroupSize, maxComputeWorkgroupsPerDimension: ctx.device.maxWorkgroupsPerDimension },
  );
  return { label: `${ctx.op} ${k.label}`, code: k.code, workgroups: k.workgroups, enables: k.enables };
}

/** matmul for the fused fast path: either operand may be read transposed. */
export const MATMUL_FORM: MatmulForm = { shape: matmulShape, transposableA: true };

/** linear for the fused fast path: operand 2 is the bias; x's rows are flattened, so never transposed. */
export const LINEAR_FORM: MatmulForm = { shape: (x, w) => linearShape(x, w), bias: 2, transposableA: false };

export function lowerMatmul(ctx: LowerContext): KernelBody {
  return body(ctx, matmulShape(ctx.inputs[0]!.shape, ctx.inputs[1]!.shape, ctx.output.shape), undefined);
}

export function lowerLinear(ctx: LowerContext): KernelBody {
  return body(ctx, linearShape(ctx.inputs[0]!.shape, ctx.inputs[1]!.shape), ctx.inputs.length > 2 ? 'acc + load2(col)' : undefined);
}
