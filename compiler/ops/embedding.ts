// Row gather: weight [V, D] at ids [...] -> [..., D] (torch.nn.functional.embedding).
import type { TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { alloc } from './util/ref.js';
import { expectArity, expectFloat, expectInt, expectRank } from './util/shape.js';

export function checkId(op: string, id: number, vocab: number, at: number): void {
  if (id < 0 || id >= vocab) throw new Error(`${op}: id ${id} at position ${at} is out of range for a vocabulary of ${vocab}`);
}

export const embeddingOp: OpDef = {
  name: 'embedding',
  surface: { inputs: ['ids', 'weight'], attrs: {}, doc: 'embedding(ids, weight): rows of weight [V, D] at i32 ids [...] -> [..., D]' },
  infer(inputs) {
    expectArity('embedding', inputs, 2);
    const [ids, w] = inputs as [TensorType, TensorType];
    expectInt('embedding', ids, 'ids', 0);
    expectRank('embedding', w, 'weight', 1, 2);
    expectFloat('embedding', w, 'weight', 1);
    return { dtype: w.dtype, shape: [...ids.shape, w.shape[1]!] };
  },
  vjp(b, node, g) {
    const [ids, w] = node.inputs as [number, number];
    return [null, b.add('embedding_grad', [ids, g], { vocab: b.type(w).shape[0]! })];
  },
  reference([ids, w], _attrs, out, ctx) {
    const [V, D] = w!.shape as [number, number];
    const y = alloc(ctx, out.dtype, out.shape);
    const is = ids!.data;
    for (let n = 0; n < is.length; n++) {
      const id = is[n]!;
      checkId('embedding', id, V, n);
      y.data.set(w!.data.subarray(id * D, (id + 1) * D), n * D);
    }
    return y;
  },
};

