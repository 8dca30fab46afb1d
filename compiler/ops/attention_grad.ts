// Backward of attention, one cotangent per node (wrt = q, k or v), each recomputing the
// softmax from q and k: dV = P^T g; dS = P * (g v^T - rowsum(g * O)); dQ = scale dS k;
// dK = scale dS^T q. Grouped query heads sum into their shared kv head.
import type { TensorType } from '../ir/graph.js';
import { VJP_TORCH, wrtIndex } from './util/torch.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { ATTENTION_TORCH, attentionDims, attentionInfer, forEachRow, windowOf } from './attention.js';
import { shapesEqual, shapeToString } from '../ir/dims.js';
import { attrString, expectArity, fail } from './util/shape.js';
import { lowerAttentionGradQ } from './wgsl/attention.js';
import { lowerAttentionGradKV } from './wgsl/attention_kv.js';
import { numel } from '../../runtime/tensor.js';

function wrtOf(attrs: Readonly<Record<string, unknown>>): 'q' | 'k' | 'v' {
  const w = attrs['wrt'];
  if (w !== 'q' && w !== 'k' && w !== 'v') fail(`attention_grad: wrt must be 'q', 'k' or 'v', got ${JSON.stringify(w)}`);
  return w;
}

export const attentionGradOp: OpDef = {
  name: 'attention_grad',
  fusion: 'custom',
  infer(inputs, attrs) {
    expectArity('attention_grad', inputs, 4);
    const [q, k, v, g] = inputs as [TensorType, TensorType, TensorType, TensorType];
    attentionInfer('attention_grad', q, k, v, attrs);
    attrString('attention_grad', attrs, 'wrt');
    const o = [q.shape[0]!, q.shape[1]!, q.shape[2]!, v.shape[3]!];
    if (g.dtype !== q.dtype || !shapesEqual(g.shape, o))
      fail(`attention_grad: g ${shapeToString(g.shape)} must have the attention output's shape ${shapeToString(o)}`, 3);
    return { q, k, v }[wrtOf(attrs)];
  },
  reference([q, k, v, g], attrs, out, ctx) {
    const wrt = wrtOf(attrs);
    const d = attentionDims(q!, k!, v!, attrs);
    const acc = new Float64Array(numel(out.shape));
    const qs = q!.data;
    const ks = k!.data;
    const vs = v!.data;
    const gs = g!.data;
    const ds = new Float64Array(d.S);
    // Only the keys a row sees, each of them even at probability 0 (forEachRow: NaN reaches
    // what it reaches in the forward).
    forEachRow(q!, k!, d, (p, qo, ko, vo, _b, _h, _t, first, end) => {
      const go = (qo / d.D) * d.Dv;
      if (wrt === 'v') {
        for (let j = first; j < end; j++) {
          const pj = p[j]!;
          for (let i = 0; i < d.Dv; i++) acc[vo + j * d.Dv + i]! += pj * gs[go + i]!;
        }
        return;
      }
      // dP_j = g . v_j; rowsum(g * O) = sum_j P_j dP_j.
      let dot = 0;
      for (let j = first; j < end; j++) {
        let s = 0;
        for (let i = 0; i < d.Dv; i++) s += gs[go + i]! * vs[vo + j * d.Dv + i]!;
        ds[j] = s;
        dot += p[j]! * s;
      }
      for (let j = first; j < end; j++) {
        const dsj = p[j]! * (ds[j]! - dot) * d.scale;
        if (wrt === 'q') for (let i = 0; i < d.D; i++) acc[qo + i]! += dsj * ks[ko + j * d.D + i]!;
        else for (let i = 0; i < d.D; i++) acc[ko + j * d.D + i]! += dsj * qs[qo + i]!;
      }
    });
    const y = alloc(ctx, out.dtype, out.shape);
    y.data.set(acc);
    return y;
  },
  torch: {
    expr: (c) => {
      const scale = c.attrs['scale'];
      const s = typeof scale === 'number' ? c.num(scale) : 'None';
      const f = `lambda q, k, v: _attention(q, k, v, causal=${c.attrs['causal'] === true ? 'True' : 'False'}, window=${windowOf(c.attrs)}, scale=${s})`;
      return `_vjp(${f}, [${c.inputs.slice(0, 3).join(', ')}], ${c.inputs[3]!}, ${wrtIndex('attention_grad', c.attrs['wrt'], ['q', 'k', 'v'])})`;
    },
    helpers: { _vjp: VJP_TORCH, _attention: ATTENTION_TORCH },
  },
  kernel: {
    kind: 'custom',
    lower(ctx) {
      const wrt = wrtOf(ctx.attrs);
      return wrt === 'q' ? lowerAttentionGradQ(ctx) : lowerAttentionGradKV(ctx, wrt);
    },
  },
};
