// Concatenation along one axis; every other dim must agree.
import { addDims, dimsEqual, dimToString, shapeToString, type Dim } from '../ir/dims.js';
import type { OpDef } from './types.js';
import { grid1d, wgslType, type KernelBody, type LowerContext } from '../codegen/kernel.js';
import { alloc, splitAt } from './util/ref.js';
import { attrInt, expectArity, fail, isFloatDType, normAxis } from './util/shape.js';
import { numel } from '../../runtime/tensor.js';

/** One invocation per output element: find the input its row along `axis` comes from. */
function lowerConcat(ctx: LowerContext): KernelBody {
  const out = ctx.output.shape;
  const axis = normAxis('concat', attrInt('concat', ctx.attrs, 'axis', 0), out.length);
  const { n: total, inner } = splitAt(out, axis);
  const size = numel(out);
  const WG = 64;
  const t = wgslType(ctx.output.dtype);
  const branches: string[] = [];
  let at = 0;
  ctx.inputs.forEach((x, k) => {
    const n = x.shape[axis]!;
    const src = `(o * ${n}u + j - ${at}u) * ${inner}u + e`;
    branches.push(k === ctx.inputs.length - 1 ? `  { v = load${k}(${src}); }` : `  if (j < ${at + n}u) { v = load${k}(${src}); } else`);
    at += n;
  });
  const code = `@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_id(gid, nwg, ${WG}u);
  if (i >= ${size}u) { return; }
  let e = i % ${inner}u;
  let j = (i / ${inner}u) % ${total}u;
  let o = i / ${inner * total}u;
  var v: ${t};
${branches.join('\n')}
  store(i, v);
}`;
  return { label: `concat ${ctx.inputs.length}x axis ${axis}`, code, workgroups: grid1d(size, WG, ctx.device) };
}

export const concatOp: OpDef = {
  name: 'concat',
  fusion: 'custom',
  surface: { inputs: ['inputs*'], attrs: { axis: { type: 'int', default: 0 } }, doc: 'concat([a, b, ...], axis = 0): join along axis' },
  infer(inputs, attrs) {
    expectArity('concat', inputs, 1, Infinity);
    const first = inputs[0]!;
    const rank = first.shape.length;
    const axis = normAxis('concat', attrInt('concat', attrs, 'axis', 0), rank);
    let total: Dim = 0;
    inputs.forEach((t, k) => {
      if (t.dtype !== first.dtype) fail(`concat: dtypes differ: input 0 is ${first.dtype}, input ${k} is ${t.dtype}`, k);
      if (t.shape.length !== rank)
        fail(`concat: input 0 ${shapeToString(first.shape)} and input ${k} ${shapeToString(t.shape)} differ in rank`, k);
      t.shape.forEach((d, i) => {
        if (i !== axis && !dimsEqual(d, first.shape[i]!))
          fail(
            `concat: input 0 ${shapeToString(first.shape)} and input ${k} ${shapeToString(t.shape)} differ at axis ${i} ` +
              `(${dimToString(first.shape[i]!)} vs ${dimToString(d)}); only axis ${axis} may differ`,
            k,
          );
      });
      total = addDims(total, t.shape[axis]!);
    });
    const shape = [...first.shape];
    shape[axis] = total;
    return { dtype: first.dtype, shape };
  },
  vjp(b, node, g) {
    if (!isFloatDType(node.type.dtype)) return node.inputs.map(() => null);
    const axis = normAxis('concat', attrInt('concat', node.attrs, 'axis', 0), node.type.shape.length);
    let start: Dim = 0;
    return node.inputs.map((i) => {
      const stop = addDims(start, b.type(i).shape[axis]!);
      const s = b.add('slice', [g], { axis, start, stop });
      start = stop;
      return s;
    });
  },
  reference(inputs, attrs, out, ctx) {
    const axis = normAxis('concat', attrInt('concat', attrs, 'axis', 0), out.shape.length);
    const y = alloc(ctx, out.dtype, out.shape);
    const { outer, n: total, inner } = splitAt(out.shape, axis);
    let at = 0;
    for (const x of inputs) {
      const n = x.shape[axis]!;
      for (let o = 0; o < outer; o++) y.data.set(x.data.subarray(o * n * inner, (o + 1) * n * inner), (o * total + at) * inner);
      at += n;
    }
    return y;
  },
  torch: { expr: (c) => `torch.cat([${c.inputs.join(', ')}], dim=${normAxis('concat', attrInt('concat', c.attrs, 'axis', 0), c.output.shape.length)})` },
  kernel: { kind: 'custom', lower: lowerConcat },
};
