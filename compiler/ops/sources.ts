// The graph's sources: declared inputs (fed by name) and parameters (fed by checkpoint name).
// The executor binds their values; they have no reference computation and no VJP.
import type { Attrs, TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { attrDType, attrDims, attrString, expectArity } from './util/shape.js';

function sourceOp(name: 'input' | 'param'): OpDef {
  return {
    name,
    fusion: 'source',
    infer(inputs: readonly TensorType[], attrs: Attrs): TensorType {
      expectArity(name, inputs, 0);
      attrString(name, attrs, 'name');
      return { dtype: attrDType(name, attrs, 'dtype'), shape: attrDims(name, attrs, 'shape') };
    },
    reference() {
      throw new Error(`${name} nodes are bound by the executor, not computed`);
    },
    torch: { expr: (c) => c.source(name, attrString(name, c.attrs, 'name')) },
  };
}

export const inputOp = sourceOp('input');
export const paramOp = sourceOp('param');
