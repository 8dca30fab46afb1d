// An elementwise op's reference, kernel and PyTorch rendering, all derived from its IR (./ir.ts),
// so the math of each op in compiler/ops/ is written once (the kernel is the IR itself: the code
// generator renders it with ./wgsl.ts where it places the op).
import type { Attrs, DType } from '../../ir/graph.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import type { ElementwiseKernel } from '../../codegen/kernel.js';
import type { ConcreteType, ReferenceContext, TorchContext, TorchRendering } from '../types.js';
import { alloc, broadcastIndex } from '../util/ref.js';
import type { Expr } from './ir.js';
import { compileJS } from './js.js';
import { exprTorch } from './torch.js';

/**
 * The op's value as IR over its operands, for concrete operand and output dtypes (an i32 op may
 * differ from its float form) and attributes with symbolic dims evaluated (unary_grad's fn).
 */
export type ExprOf = (attrs: Attrs, inputs: readonly DType[], output: DType) => Expr;

/**
 * Evaluates `e` at every element of `out`, each operand broadcast to the output shape (numpy
 * rules, as the op's infer checked). Float outputs go through ctx.alloc's array, so f32 mode
 * rounds each element once.
 */
export function evaluate(e: Expr, inputs: readonly HostTensor[], out: ConcreteType, ctx: ReferenceContext): HostTensor {
  if (inputs.length > 3) throw new Error(`expr: ${inputs.length} operands (at most 3)`);
  const f = compileJS(e, inputs.map((t) => t.dtype));
  const y = alloc(ctx, out.dtype, out.shape);
  const dst = y.data;
  const maps = inputs.map((t) => broadcastIndex(t.shape, out.shape));
  const [a, b, c] = inputs.map((t) => t.data);
  const [ia, ib, ic] = maps;
  // The common cases without index maps, so the reference stays fast on big tensors.
  if (!ia && !ib && !ic) {
    for (let i = 0; i < dst.length; i++) dst[i] = f(a ? a[i]! : 0, b ? b[i]! : 0, c ? c[i]! : 0);
    return y;
  }
  for (let i = 0; i < dst.length; i++)
    dst[i] = f(a ? a[ia ? ia[i]! : i]! : 0, b ? b[ib ? ib[i]! : i]! : 0, c ? c[ic ? ic[i]! : i]! : 0);
  return y;
}

/** The reference, WGSL kernel and PyTorch rendering of an elementwise op defined by `of`. */
export function fromExpr(of: ExprOf): {
  fusion: 'elementwise';
  reference(inputs: readonly HostTensor[], attrs: Attrs, out: ConcreteType, ctx: ReferenceContext): HostTensor;
  kernel: ElementwiseKernel;
  torch: TorchRendering;
} {
  return {
    fusion: 'elementwise',
    reference: (inputs, attrs, out, ctx) => evaluate(of(attrs, inputs.map((t) => t.dtype), out.dtype), inputs, out, ctx),
    kernel: { kind: 'elementwise', ir: of },
    torch: {
      expr: (c: TorchContext) => {
        const types = { inputs: c.inputTypes.map((t) => t.dtype), output: c.output.dtype };
        return exprTorch(of(c.attrs, types.inputs, types.output), c.inputs, types, c);
      },
    },
  };
}
