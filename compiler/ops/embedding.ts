// Row gather: weight [V, D] at ids [...] -> [..., D] (torch.nn.functional.embedding).
import type { TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { describePosition } from '../../runtime/validate.js';
import { alloc } from './util/ref.js';
import { expectArity, expectFloat, expectInt, expectRank } from './util/shape.js';
import { body, entry, product, singleLanes } from './wgsl/lanes.js';

/** Throws, in the words of the host check (runtime/validate.ts), when ids[at] is no row of the table. */
export function checkId(op: string, id: number, vocab: number, shape: readonly number[], at: number): void {
  if (id < 0 || id >= vocab) throw new Error(`${op}: id ${id} at ${describePosition(shape, at)} is out of range for a vocabulary of ${vocab}`);
}

export const embeddingOp: OpDef = {
  name: 'embedding',
  fusion: 'custom',
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
      checkId('embedding', id, V, ids!.shape, n);
      y.data.set(w!.data.subarray(id * D, (id + 1) * D), n * D);
    }
    return y;
  },
  torch: { expr: (c) => `F.embedding(${c.inputs[0]!}, ${c.inputs[1]!})` },
  kernel: {
    kind: 'custom',
    lower(ctx) {
      // One invocation per output element. An out-of-range id (the reference throws) is clamped
      // into the table rather than read out of bounds.
      const [V, D] = ctx.inputs[1]!.shape as [number, number];
      const n = product(ctx.output.shape);
      const lanes = singleLanes(ctx.device);
      const stmts = `  let id = u32(clamp(load0(grp / ${D}u), 0i, ${Math.max(V - 1, 0)}i));\n  store(grp, load1(id * ${D}u + grp % ${D}u));`;
      return body(ctx, `${n}`, lanes, n, entry(lanes, n, stmts));
    },
  },
};

