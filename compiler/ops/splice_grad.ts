// Backward of splice: cuts the cotangent of the spliced sequence back into its parts. part
// 'seq' -> [B, T, ...] with a zero row at the placeholder (its embedding was dropped);
// part 'insert' -> [B, P, ...]. `shape` is that part's shape.
import { dimsEqual, shapeToString } from '../ir/dims.js';
import { VJP_TORCH } from './util/torch.js';
import { SPLICE_TORCH } from './splice.js';
import type { TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { placeholderPositions } from './splice.js';
import { attrDims, attrInt, expectArity, expectInt, fail } from './util/shape.js';
import { lowerSpliceGrad } from './wgsl/gather.js';

export const spliceGradOp: OpDef = {
  name: 'splice_grad',
  fusion: 'custom',
  infer(inputs, attrs) {
    expectArity('splice_grad', inputs, 2);
    const [g, ids] = inputs as [TensorType, TensorType];
    expectInt('splice_grad', ids, 'ids', 1);
    attrInt('splice_grad', attrs, 'token');
    const part = attrs['part'];
    if (part !== 'seq' && part !== 'insert') fail(`splice_grad: part must be 'seq' or 'insert', got ${JSON.stringify(part)}`);
    const shape = attrDims('splice_grad', attrs, 'shape');
    const ok =
      shape.length === g.shape.length &&
      dimsEqual(shape[0]!, g.shape[0]!) &&
      shape.slice(2).every((d, i) => dimsEqual(d, g.shape[i + 2]!)) &&
      (part === 'insert' || dimsEqual(shape[1]!, ids.shape[1]!));
    if (!ok) fail(`splice_grad: part ${part} ${shapeToString(shape)} does not fit g ${shapeToString(g.shape)} and ids ${shapeToString(ids.shape)}`, 0);
    return { dtype: g.dtype, shape };
  },
  reference([g, ids], attrs, out, ctx) {
    const at = placeholderPositions('splice_grad', ids!, attrInt('splice_grad', attrs, 'token'));
    const [B, L] = g!.shape as [number, number];
    const T = ids!.shape[1]!;
    const P = L - T + 1;
    const R = g!.data.length / Math.max(B * L, 1);
    const y = alloc(ctx, out.dtype, out.shape);
    for (let b = 0; b < B; b++) {
      const s = at[b]!;
      const go = b * L * R;
      if (attrs['part'] === 'insert') {
        y.data.set(g!.data.subarray(go + s * R, go + (s + P) * R), b * P * R);
        continue;
      }
      const yo = b * T * R;
      y.data.set(g!.data.subarray(go, go + s * R), yo);
      y.data.fill(0, yo + s * R, yo + (s + 1) * R);
      y.data.set(g!.data.subarray(go + (s + P) * R, go + L * R), yo + (s + 1) * R);
    }
    return y;
  },
  // The cotangent of splice's `part` input by autograd through splice's own rendering; the
  // other part only lends its shape (the spliced length is T - 1 + P).
  torch: {
    expr: (c) => {
      const part = c.attrs['part'] === 'insert' ? 'insert' : 'seq';
      return `_splice_grad(${c.inputs[0]!}, ${c.inputs[1]!}, ${attrInt('splice_grad', c.attrs, 'token')}, "${part}", ${c.shape(attrDims('splice_grad', c.attrs, 'shape'))})`;
    },
    helpers: {
      _vjp: VJP_TORCH,
      _splice: SPLICE_TORCH,
      _splice_grad: `def _splice_grad(g, ids, token, part, shape):
    B, L = g.shape[0], g.shape[1]
    T = ids.shape[1]
    seq = torch.zeros((B, T) + tuple(g.shape[2:]), dtype=g.dtype, device=g.device)
    ins = torch.zeros((B, L - T + 1) + tuple(g.shape[2:]), dtype=g.dtype, device=g.device)
    out = _vjp(lambda s, i: _splice(s, i, ids, token), [seq, ins], g, 0 if part == "seq" else 1)
    return out.reshape(shape)`,
    },
  },
  kernel: {
    kind: 'custom',
    lower: (ctx) => lowerSpliceGrad(ctx, attrInt('splice_grad', ctx.attrs, 'token'), ctx.attrs['part'] === 'insert' ? 'insert' : 'seq'),
  },
};

