// VW-LMM's VM loss: KLDivLoss(batchmean) of log_softmax(logits) against p = softmax(target_logits)
// over the rows where mask != 0: sum_rows sum_v p (log p - log_softmax(logits)) / rows. No row
// selected: 0 (the release divides 0 by 0). The target is not detached: both logits get gradient.
import type { Attrs, TensorType } from '../ir/graph.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { dimsEqual, shapeToString } from '../ir/dims.js';
import type { OpDef } from './types.js';
import { alloc, logSumExp } from './util/ref.js';
import { checkRows, lossReduction } from './util/loss.js';
import { expectArity, expectInt, fail } from './util/shape.js';
import { lowerKlDiv } from './wgsl/loss.js';

export function klInfer(op: string, logits: TensorType, target: TensorType, mask: TensorType): void {
  checkRows(op, logits, mask, 'mask', 2);
  expectInt(op, mask, 'mask', 2, true);
  if (target.dtype !== logits.dtype || target.shape.length !== logits.shape.length || !logits.shape.every((d, i) => dimsEqual(d, target.shape[i]!)))
    fail(`${op}: target_logits ${shapeToString(target.shape)} must have the shape of logits ${shapeToString(logits.shape)}`, 1);
}

/**
 * One class's term of torch's kl_div (log_target=False): xlogy(p, p) - p * log q. A class with
 * p = 0 contributes 0 (0 log 0 = 0), but NaN anywhere, or p = 0 against log q = -inf, is NaN as
 * in torch: a skipped term would hide a non-finite input.
 */
export function klTerm(p: number, logp: number, logq: number): number {
  return (p === 0 ? 0 : p * logp) - p * logq;
}

/** Visits each selected row with its log-sum-exps and its KL term; returns the row count. */
export function forEachMaskedRow(
  logits: HostTensor,
  target: HostTensor,
  mask: HostTensor,
  visit: (o: number, lseZ: number, lseT: number, kl: number) => void,
): number {
  const V = logits.shape[logits.shape.length - 1]!;
  const zs = logits.data;
  const ts = target.data;
  let n = 0;
  for (let r = 0; r < mask.data.length; r++) {
    if (mask.data[r] === 0) continue;
    n++;
    const o = r * V;
    const lz = logSumExp(zs, o, V, 1);
    const lt = logSumExp(ts, o, V, 1);
    let kl = 0;
    for (let v = 0; v < V; v++) {
      const logp = ts[o + v]! - lt;
      kl += klTerm(Math.exp(logp), logp, zs[o + v]! - lz);
    }
    visit(o, lz, lt, kl);
  }
  return n;
}

/**
 * The VW-LMM release's KLDivLoss(reduction="batchmean")(log_softmax(z[rows]), softmax(t[rows]))
 * over the rows where mask != 0 (F.kl_div's sum over those rows, / their count), 0 when none; in
 * float32. The target is not detached.
 */
export const KL_DIV_TORCH = `def _kl_div(logits, target_logits, mask, reduction="mean"):
    rows = mask.reshape(-1) != 0
    z = logits.reshape(-1, logits.shape[-1])[rows].to(torch.float32)
    t = target_logits.reshape(-1, target_logits.shape[-1])[rows].to(torch.float32)
    total = F.kl_div(F.log_softmax(z, dim=-1), F.softmax(t, dim=-1), reduction="sum")
    if reduction == "sum":
        return total
    return total / rows.sum().clamp(min=1)`;

export const klDivOp: OpDef = {
  name: 'kl_div',
  fusion: 'custom',
  surface: {
    inputs: ['logits', 'target_logits', 'mask'],
    attrs: {},
    doc: 'kl_div(logits, target_logits, mask): KL(softmax(target) || softmax(logits)) summed over rows where mask != 0, / rows; 0 if none',
  },
  infer(inputs, attrs) {
    expectArity('kl_div', inputs, 3);
    const [z, t, m] = inputs as [TensorType, TensorType, TensorType];
    klInfer('kl_div', z, t, m);
    lossReduction('kl_div', attrs);
    return { dtype: z.dtype, shape: [] };
  },
  vjp(b, node, g) {
    const ins = [...node.inputs, g];
    const sum: Attrs = lossReduction('kl_div', node.attrs) === 'sum' ? { reduction: 'sum' } : {};
    return [b.add('kl_div_grad', ins, { wrt: 'logits', ...sum }), b.add('kl_div_grad', ins, { wrt: 'target', ...sum }), null];
  },
  reference([z, t, m], attrs, out, ctx) {
    let total = 0;
    const n = forEachMaskedRow(z!, t!, m!, (_o, _lz, _lt, kl) => (total += kl));
    const y = alloc(ctx, out.dtype, []);
    y.data[0] = lossReduction('kl_div', attrs) === 'sum' ? total : n === 0 ? 0 : total / n;
    return y;
  },
  torch: {
    expr: (c) => `_kl_div(${c.inputs.join(', ')}, "${lossReduction('kl_div', c.attrs)}")`,
    helpers: { _kl_div: KL_DIV_TORCH },
  },
  kernel: { kind: 'custom', lower: (ctx) => lowerKlDiv(ctx, lossReduction('kl_div', ctx.attrs)) },
  // batchmean's denominator: rows where mask != 0.
  count(b, node) {
    const mask = node.inputs[2]!;
    const zero = b.add('fill', [], { value: 0, shape: [], dtype: b.type(mask).dtype === 'bool' ? 'bool' : 'i32' });
    return b.add('sum', [b.add('cast', [b.add('ne', [mask, zero])], { dtype: 'f32' })], { axes: null, keepdims: false });
  },
};
