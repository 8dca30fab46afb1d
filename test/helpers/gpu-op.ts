// Runs one op's kernel, unfused, on the real WebGPU device and returns its output as a host
// tensor, so each kernel can be compared with the op's reference implementation.
import { getOp } from '../../compiler/ops/registry.js';
import { exprWGSL } from '../../compiler/ops/expr/wgsl.js';
import type { Attrs, DType } from '../../compiler/ir/graph.js';
import { wrapPlain, grid1d, LINEAR_ID, wgslType } from '../../compiler/codegen/kernel.js';
import type { DeviceTraits, KernelBody } from '../../compiler/codegen/kernel.js';
import { getDevice } from '../../runtime/node/device.js';
import { deviceTraits } from '../../compiler/exec/webgpu.js';
import { bindAll, createStorageBuffer, dispatch, getPipeline, readBuffer, uploadBuffer } from '../../runtime/webgpu/buffers.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { numel } from '../../runtime/tensor.js';

/** The device traits kernels are generated for (the executor's own). */
export const traitsOf = deviceTraits;

/** The body of an elementwise op as a standalone kernel (one invocation per output element). */
function elementwiseBody(expr: string, n: number, arity: number, outType: DType, device: DeviceTraits): KernelBody {
  const wg = 64;
  const args = Array.from({ length: arity }, (_, k) => `load${k}(i)`);
  void LINEAR_ID;
  return {
    label: 'elementwise',
    code: `@compute @workgroup_size(${wg}) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg, ${wg}u);
  if (i >= ${n}u) { return; }
  store(i, ${wgslType(outType)}(${expr.replace(/\$(\d+)/g, (_m, k: string) => args[Number(k)]!)}));
}`,
    workgroups: grid1d(n, wg, device),
  };
}

/** Lowers `op` for these inputs, runs it once, reads the output back. */
export async function runOpOnGpu(op: string, inputs: readonly HostTensor[], attrs: Attrs, out: { dtype: DType; shape: readonly number[] }): Promise<HostTensor> {
  const kd = await getDevice();
  const device = kd.device;
  const traits = traitsOf(kd);
  const def = getOp(op);
  const kernel = def.kernel;
  if (!kernel || kernel.kind === 'view') throw new Error(`${op} has no standalone kernel`);
  const n = numel(out.shape);
  const body =
    kernel.kind === 'custom'
      ? kernel.lower({ op, inputs: inputs.map((t) => ({ dtype: t.dtype, shape: t.shape })), output: out, attrs, device: traits })
      : elementwiseBody(
          exprWGSL(
            kernel.ir(attrs, inputs.map((t) => t.dtype), out.dtype),
            inputs.map((_, k) => `$${k}`),
            { inputs: inputs.map((t) => t.dtype), output: out.dtype },
          ),
          n,
          inputs.length,
          out.dtype,
          traits,
        );
  const code = wrapPlain(
    body,
    inputs.map((t) => ({ dtype: t.dtype, length: numel(t.shape) })),
    { dtype: out.dtype, length: n },
    traits,
  );
  const isInt = (d: DType) => d === 'i32' || d === 'bool';
  const buffers = inputs.map((t) => uploadBuffer(device, isInt(t.dtype) ? Int32Array.from(t.data) : Float32Array.from(t.data)));
  const outBuf = createStorageBuffer(device, n * 4);
  try {
    const pipeline = getPipeline(device, code, `${op} test`);
    dispatch(device, pipeline, bindAll(device, pipeline, [...buffers, outBuf]), body.workgroups as [number, number, number]);
    const bytes = await readBuffer(device, outBuf, Math.max(4, n * 4));
    const data = isInt(out.dtype) ? new Int32Array(bytes, 0, n) : new Float32Array(bytes, 0, n);
    return { dtype: out.dtype, shape: out.shape, data: data.slice() };
  } finally {
    for (const b of [...buffers, outBuf]) b.destroy();
  }
}
