// Backward of kl_div on selected rows, scaled by g / rows (other rows get 0):
// wrt 'logits': softmax(logits) - p; wrt 'target': p * (log p - log_softmax(logits) - KL_row).
import { shapeToString } from '../ir/dims.js';
import { VJP_TORCH, wrtIndex } from './util/torch.js';
import type { TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { KL_DIV_TORCH, forEachMaskedRow, klInfer } from './kl_div.js';
import { expectArity, fail } from './util/shape.js';
import { lossReduction } from './util/loss.js';
import { lowerKlDivGrad } from './wgsl/loss.js';

export const klDivGradOp: OpDef = {
  name: 'kl_div_grad',
  fusion: 'custom',
  infer(inputs, attrs) {
    expectArity('kl_div_grad', inputs, 4);
    const [z, t, m, g] = inputs as [TensorType, TensorType, TensorType, TensorType];
    klInfer('kl_div_grad', z, t, m);
    if (g.shape.length !== 0 || g.dtype !== z.dtype) fail(`kl_div_grad: g must be a ${z.dtype} scalar, got ${shapeToString(g.shape)}`, 3);
    const wrt = attrs['wrt'];
    if (wrt !== 'logits' && wrt !== 'target') fail(`kl_div_grad: wrt must be 'logits' or 'target', got ${JSON.stringify(wrt)}`);
    lossReduction('kl_div_grad', attrs);
    return z;
  },
  reference([z, t, m, g], attrs, out, ctx) {
    const V = z!.shape[z!.shape.length - 1]!;
    const toLogits = attrs['wrt'] === 'logits';
    const rows: [number, number, number, number][] = [];
    const n = forEachMaskedRow(z!, t!, m!, (o, lz, lt, kl) => rows.push([o, lz, lt, kl]));
    const scale = lossReduction('kl_div_grad', attrs) === 'sum' ? g!.data[0]! : g!.data[0]! / n;
    const zs = z!.data;
    const ts = t!.data;
    const y = alloc(ctx, out.dtype, out.shape);
    for (const [o, lz, lt, kl] of rows)
      for (let v = 0; v < V; v++) {
        const logp = ts[o + v]! - lt;
        const p = Math.exp(logp);
        const logq = zs[o + v]! - lz;
        // A p = 0 class gets 0 from the target side while the row is finite (torch's xlogy
        // backward would give 0/0 there; Kiln keeps the limit), NaN once the row is not.
        y.data[o + v] = scale * (toLogits ? Math.exp(logq) - p : p === 0 && Number.isFinite(kl) ? 0 : p * (logp - logq - kl));
      }
    return y;
  },
  torch: {
    expr: (c) =>
      `_vjp(lambda z, t: _kl_div(z, t, ${c.inputs[2]!}, "${lossReduction('kl_div_grad', c.attrs)}"), [${c.inputs[0]!}, ${c.inputs[1]!}], ${c.inputs[3]!}, ${wrtIndex('kl_div_grad', c.attrs['wrt'], ['logits', 'target'])})`,
    helpers: { _vjp: VJP_TORCH, _kl_div: KL_DIV_TORCH },
  },
  kernel: { kind: 'custom', lower: (ctx) => lowerKlDivGrad(ctx, ctx.attrs['wrt'] === 'target' ? 'target' : 'logits', lossReduction('kl_div_grad', ctx.attrs)) },
};
