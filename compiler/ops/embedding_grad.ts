// Backward of embedding: scatter-add of the cotangent rows into a [vocab, D] table.
import { dimsEqual, shapeToString } from '../ir/dims.js';
import type { TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { checkId } from './embedding.js';
import { attrDim, expectArity, expectFloat, expectInt, fail } from './util/shape.js';
import { lowerEmbeddingGrad } from './wgsl/gather.js';

export const embeddingGradOp: OpDef = {
  name: 'embedding_grad',
  fusion: 'custom',
  infer(inputs, attrs) {
    expectArity('embedding_grad', inputs, 2);
    const [ids, g] = inputs as [TensorType, TensorType];
    expectInt('embedding_grad', ids, 'ids', 0);
    expectFloat('embedding_grad', g, 'g', 1);
    const lead = g.shape.slice(0, -1);
    if (g.shape.length !== ids.shape.length + 1 || !lead.every((d, i) => dimsEqual(d, ids.shape[i]!)))
      fail(`embedding_grad: g ${shapeToString(g.shape)} must be ids ${shapeToString(ids.shape)} plus one feature dim`, 1);
    return { dtype: g.dtype, shape: [attrDim('embedding_grad', attrs, 'vocab'), g.shape[g.shape.length - 1]!] };
  },
  reference([ids, g], _attrs, out, ctx) {
    const [V, D] = out.shape as [number, number];
    const acc = new Float64Array(V * D);
    const is = ids!.data;
    const gs = g!.data;
    for (let n = 0; n < is.length; n++) {
      const id = is[n]!;
      checkId('embedding_grad', id, V, ids!.shape, n);
      for (let i = 0; i < D; i++) acc[id * D + i]! += gs[n * D + i]!;
    }
    const y = alloc(ctx, out.dtype, out.shape);
    y.data.set(acc);
    return y;
  },
  torch: {
    expr: (c) => `_embedding_grad(${c.inputs[0]!}, ${c.inputs[1]!}, ${c.dim(attrDim('embedding_grad', c.attrs, 'vocab'))})`,
    helpers: {
      _embedding_grad: `def _embedding_grad(ids, g, vocab):
    D = g.shape[-1]
    return torch.zeros(vocab, D, dtype=g.dtype, device=g.device).index_add_(0, ids.reshape(-1).to(torch.int64), g.reshape(-1, D))`,
    },
  },
  kernel: { kind: 'custom', lower: lowerEmbeddingGrad },
};
