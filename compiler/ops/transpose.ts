// Axis permutation: output axis i is input axis perm[i] (torch.permute).
import type { OpDef } from './types.js';
import { transposeMap } from '../codegen/views.js';
import { alloc, permute } from './util/ref.js';
import { attrInts, expectArity, fail, isFloatDType } from './util/shape.js';

function checkPerm(perm: readonly number[], rank: number): void {
  const sorted = [...perm].sort((a, b) => a - b);
  if (perm.length !== rank || sorted.some((p, i) => p !== i))
    fail(`transpose: perm [${perm.join(', ')}] is not a permutation of the ${rank} axes of x`, 0);
}

export const transposeOp: OpDef = {
  name: 'transpose',
  fusion: 'view',
  surface: { inputs: ['x'], attrs: { perm: { type: 'ints' } }, doc: 'transpose(x, perm): output axis i is input axis perm[i]' },
  infer(inputs, attrs) {
    expectArity('transpose', inputs, 1);
    const x = inputs[0]!;
    const perm = attrInts('transpose', attrs, 'perm');
    checkPerm(perm, x.shape.length);
    return { dtype: x.dtype, shape: perm.map((p) => x.shape[p]!) };
  },
  vjp(b, node, g) {
    if (!isFloatDType(node.type.dtype)) return [null];
    const perm = attrInts('transpose', node.attrs, 'perm');
    const inv = new Array<number>(perm.length);
    perm.forEach((p, i) => (inv[p] = i));
    return [b.add('transpose', [g], { perm: inv })];
  },
  reference([x], attrs, out, ctx) {
    const y = alloc(ctx, out.dtype, out.shape);
    permute(x!, attrInts('transpose', attrs, 'perm'), y);
    return y;
  },
  // An index map in the reader's accessor (compiler/codegen/views.ts); never a kernel of its own.
  torch: { expr: (c) => `${c.inputs[0]!}.permute(${attrInts('transpose', c.attrs, 'perm').join(', ')})` },
  kernel: { kind: 'view', map: (inShape, _out, attrs) => transposeMap(inShape, attrs['perm'] as number[]), perm: (attrs) => attrs['perm'] as number[] },
};
