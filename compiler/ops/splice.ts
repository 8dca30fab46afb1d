// LLaVA's image splice: per row b, the placeholder `token` at s in ids[b] is replaced by the P
// rows of insert[b]: out[b] = seq[b, :s] ++ insert[b] ++ seq[b, s+1:], [B, T - 1 + P, ...].
// Rows are equally long because each row holds exactly one placeholder (the reference checks).
import { addDims, dimsEqual, dimToString, shapeToString, subDims } from '../ir/dims.js';
import type { TensorType } from '../ir/graph.js';
import type { HostTensor } from '../../runtime/tensor.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { attrInt, expectArity, expectInt, fail, typeToString } from './util/shape.js';
import { lowerSplice } from './wgsl/gather.js';

/** The placeholder position of each row; throws when a row has none or several. */
export function placeholderPositions(op: string, ids: HostTensor, token: number): number[] {
  const [B, T] = ids.shape as [number, number];
  const at: number[] = [];
  for (let b = 0; b < B; b++) {
    let s = -1;
    let n = 0;
    for (let t = 0; t < T; t++)
      if (ids.data[b * T + t] === token) {
        n++;
        s = t;
      }
    if (n !== 1)
      throw new Error(`${op}: row ${b} of ids holds the placeholder ${token} ${n === 0 ? 'nowhere' : `${n} times`}; each row needs it exactly once`);
    at.push(s);
  }
  return at;
}

/**
 * The op in PyTorch: LLaVA's prepare_inputs_labels_for_multimodal for one placeholder per row, as
 * two gathers (so both the text embeddings and the image features get their gradient).
 */
export const SPLICE_TORCH = `def _splice(seq, ins, ids, token):
    hits = ids == token
    counts = hits.sum(dim=1)
    if bool((counts != 1).any()):
        b = int((counts != 1).nonzero()[0, 0])
        n = int(counts[b])
        raise ValueError(f"splice: row {b} of ids holds the placeholder {token} {'nowhere' if n == 0 else str(n) + ' times'}; each row needs it exactly once")
    B, T = ids.shape
    P = ins.shape[1]
    L = T - 1 + P
    s = hits.to(torch.int32).argmax(dim=1)[:, None]
    j = torch.arange(L, device=ids.device)[None, :]
    from_insert = (j >= s) & (j < s + P)
    seq_at = torch.where(j < s, j, j - P + 1).clamp(0, T - 1)
    ins_at = (j - s).clamp(0, P - 1)
    tail = (1,) * (seq.dim() - 2)
    def take(x, at):
        return torch.gather(x, 1, at.reshape(B, L, *tail).expand(B, L, *x.shape[2:]))
    return torch.where(from_insert.reshape(B, L, *tail), take(ins, ins_at), take(seq, seq_at))`;

export const spliceOp: OpDef = {
  name: 'splice',
  fusion: 'custom',
  surface: {
    inputs: ['seq', 'insert', 'ids'],
    attrs: { token: { type: 'int' } },
    doc: 'splice(seq, insert, ids, token): per row, replace the position of `token` in ids [B, T] by insert [B, P, ...] in seq [B, T, ...]',
  },
  infer(inputs, attrs) {
    expectArity('splice', inputs, 3);
    const [seq, ins, ids] = inputs as [TensorType, TensorType, TensorType];
    attrInt('splice', attrs, 'token');
    expectInt('splice', ids, 'ids', 2);
    if (ids.shape.length !== 2) fail(`splice: ids must be [B, T], got ${typeToString(ids)}`, 2);
    if (seq.shape.length < 2) fail(`splice: seq must be [B, T, ...], got ${typeToString(seq)}`, 0);
    if (seq.dtype !== ins.dtype) fail(`splice: dtypes differ: seq is ${seq.dtype}, insert is ${ins.dtype}`, 1);
    const s = shapeToString;
    if (!dimsEqual(seq.shape[0]!, ids.shape[0]!) || !dimsEqual(seq.shape[1]!, ids.shape[1]!))
      fail(`splice: seq ${s(seq.shape)} must start with the [B, T] of ids ${s(ids.shape)}`, 0);
    if (ins.shape.length !== seq.shape.length) fail(`splice: insert ${s(ins.shape)} must have the rank of seq ${s(seq.shape)}`, 1);
    if (!dimsEqual(ins.shape[0]!, seq.shape[0]!))
      fail(`splice: insert ${s(ins.shape)} has batch ${dimToString(ins.shape[0]!)} but seq ${s(seq.shape)} has ${dimToString(seq.shape[0]!)} (dim 0)`, 1);
    for (let i = 2; i < seq.shape.length; i++)
      if (!dimsEqual(ins.shape[i]!, seq.shape[i]!))
        fail(`splice: insert ${s(ins.shape)} and seq ${s(seq.shape)} differ at dim ${i} (${dimToString(ins.shape[i]!)} vs ${dimToString(seq.shape[i]!)})`, 1);
    const shape = [...seq.shape];
    shape[1] = addDims(subDims(seq.shape[1]!, 1), ins.shape[1]!);
    return { dtype: seq.dtype, shape };
  },
  vjp(b, node, g) {
    const [seq, ins, ids] = node.inputs as [number, number, number];
    const token = node.attrs['token']!;
    return [
      b.add('splice_grad', [g, ids], { token, part: 'seq', shape: [...b.type(seq).shape] }),
      b.add('splice_grad', [g, ids], { token, part: 'insert', shape: [...b.type(ins).shape] }),
      null,
    ];
  },
  reference([seq, ins, ids], attrs, out, ctx) {
    const token = attrInt('splice', attrs, 'token');
    const at = placeholderPositions('splice', ids!, token);
    const [B, T] = seq!.shape as [number, number];
    const P = ins!.shape[1]!;
    const R = seq!.data.length / Math.max(B * T, 1);
    const L = T - 1 + P;
    const y = alloc(ctx, out.dtype, out.shape);
    for (let b = 0; b < B; b++) {
      const s = at[b]!;
      const so = b * T * R;
      const yo = b * L * R;
      y.data.set(seq!.data.subarray(so, so + s * R), yo);
      y.data.set(ins!.data.subarray(b * P * R, (b + 1) * P * R), yo + s * R);
      y.data.set(seq!.data.subarray(so + (s + 1) * R, so + T * R), yo + (s + P) * R);
    }
    return y;
  },
  torch: {
    expr: (c) => `_splice(${c.inputs.join(', ')}, ${attrInt('splice', c.attrs, 'token')})`,
    helpers: {
      _splice: SPLICE_TORCH,
    },
  },
  kernel: { kind: 'custom', lower: (ctx) => lowerSplice(ctx, attrInt('splice', ctx.attrs, 'token')) },
};
