// Identity in the forward pass; autodiff sends nothing through it (LLaVA's no_grad tower).
import type { OpDef } from './types.js';
import { expectArity } from './util/shape.js';
import { arg } from './expr/ir.js';

export const stopGradientOp: OpDef = {
  name: 'stop_gradient',
  fusion: 'elementwise',
  surface: { inputs: ['x'], attrs: {}, doc: 'stop_gradient(x): x, with no gradient flowing back (torch .detach())' },
  infer(inputs) {
    expectArity('stop_gradient', inputs, 1);
    return inputs[0]!;
  },
  vjp: () => [null],
  // Host tensors are never written after creation, so the value can be shared.
  reference: ([x]) => x!,
  kernel: { kind: 'elementwise', ir: () => arg(0) },
  torch: { expr: (c) => `${c.inputs[0]!}.detach()` },
};
