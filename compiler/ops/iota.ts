// iota(n): the positions 0, 1, ..., n-1 (torch.arange(n)). With a scalar position fed at run
// time it selects a slice of a fixed-capacity buffer by comparison instead of by shape: a KV
// cache written at `pos` is where(eq(iota(C), pos), new, cache), so one compiled kernel serves
// every position.
import type { OpDef } from './types.js';
import type { Dim } from '../ir/dims.js';
import { alloc } from './util/ref.js';
import { attrDType, expectArity, fail, isDim } from './util/shape.js';
import { grid1d, wgslType } from '../codegen/kernel.js';

const WG = 64;

export const iotaOp: OpDef = {
  name: 'iota',
  fusion: 'custom',
  surface: {
    inputs: [],
    attrs: { n: { type: 'int' }, dtype: { type: 'dtype', default: 'i32' } },
    doc: 'iota(n, dtype = i32): the positions 0, 1, ..., n-1 (torch.arange(n))',
  },
  infer(inputs, attrs) {
    expectArity('iota', inputs, 0);
    const n = attrs['n'];
    if (!isDim(n)) fail(`iota: n must be a dimension, got ${JSON.stringify(n)}`);
    const dtype = attrDType('iota', attrs, 'dtype', 'i32');
    if (dtype === 'bool') fail('iota: dtype bool has no positions past 1');
    return { dtype, shape: [n] };
  },
  reference(_inputs, _attrs, out, ctx) {
    const y = alloc(ctx, out.dtype, out.shape);
    for (let i = 0; i < y.data.length; i++) y.data[i] = i;
    return y;
  },
  torch: { expr: (c) => `torch.arange(${c.dim(c.attrs['n'] as Dim)}, dtype=${c.dtype(c.output.dtype)}, device=dev)` },
  kernel: {
    kind: 'custom',
    lower(ctx) {
      const n = ctx.output.shape[0]!;
      const t = wgslType(ctx.output.dtype);
      return {
        label: `iota ${n}`,
        code: `@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg, ${WG}u);
  if (i >= ${n}u) { return; }
  store(i, ${t}(i));
}`,
        workgroups: grid1d(n, WG, ctx.device),
      };
    },
  },
};
