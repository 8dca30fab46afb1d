// The contract every op file fulfils: one op, defined once, with its shape rule, its gradient
// rule (as graph ops), its reference implementation and (from the backend issue on) its kernel.
import type { GraphBuilder } from '../ir/builder.js';
import type { AttrValue, Attrs, DType, Node, TensorType } from '../ir/graph.js';
import type { HostTensor, TensorData } from '../../runtime/tensor.js';
import type { OpKernel } from '../codegen/kernel.js';
import type { Dim } from '../ir/dims.js';

export interface ReferenceContext {
  /** 'f32': float outputs are Float32Array, rounded like PyTorch f32; 'f64': Float64Array. */
  readonly precision: 'f32' | 'f64';
  alloc(dtype: DType, size: number): TensorData;
}

/** The concrete output type the executor asks for (symbolic dims already bound). */
export interface ConcreteType {
  readonly dtype: DType;
  readonly shape: readonly number[];
}

/** How a spec-language call maps onto the op: positional/keyword inputs and attributes. */
export interface AttrSpec {
  readonly type: 'number' | 'int' | 'bool' | 'string' | 'dims' | 'ints' | 'dtype';
  /** absent: the attribute is required. */
  readonly default?: AttrValue;
}
export interface Surface {
  /** input names in positional order; `name?` optional, `name*` a list (concat). */
  readonly inputs: readonly string[];
  readonly attrs: Readonly<Record<string, AttrSpec>>;
  /** one line for `kiln` help and diagnostics: `layer_norm(x, weight, bias, eps = 1e-5)`. */
  readonly doc: string;
}

/**
 * What an op's PyTorch rendering is given (compiler/export/torch.ts): its inputs as Python
 * expressions, its attributes (symbolic dims unevaluated: render them with `dim`), and the types.
 */
export interface TorchContext {
  readonly inputs: readonly string[];
  readonly attrs: Attrs;
  readonly inputTypes: readonly TensorType[];
  readonly output: TensorType;
  /** a dim as a Python int expression over the model's symbols (B, T, ...). */
  dim(d: Dim): string;
  /** a shape as a Python tuple expression. */
  shape(ds: readonly Dim[]): string;
  /** a Python literal for a number (inf, nan and integers written as Python reads them). */
  num(v: number): string;
  /** `torch.float32`, ... for a Kiln dtype. */
  dtype(d: DType): string;
  /** the Python expression of the model input or the parameter (by checkpoint name) `name`. */
  source(kind: 'input' | 'param', name: string): string;
}

/**
 * The op in PyTorch: a Python expression computing the output from the inputs, using `torch`,
 * `F` (torch.nn.functional), `dev` (the device of the model's inputs) and the Python functions in `helpers` (emitted once into model.py
 * when an op that names them is used; keyed by function name). The export refuses a graph with
 * an op that has no rendering (naming the op and its spec line).
 */
export interface TorchRendering {
  expr(ctx: TorchContext): string;
  readonly helpers?: Readonly<Record<string, string>>;
}

/**
 * Where an op stands in fusion (compiler/passes/fusion-rules.ts): a source (input, param), a
 * constant (a literal in every reader), a view (an index map in its reader's accessor), an
 * elementwise op (its IR, inlined as prologue or epilogue), a matmul (an anchor with an epilogue
 * and its own fast path), or a custom kernel (an anchor of its own template).
 */
export type FusionCategory = 'source' | 'const' | 'view' | 'elementwise' | 'matmul' | 'custom';

export interface OpDef {
  readonly name: string;
  /** The op's fusion category, declared here so no pass recovers it from the op's name. */
  readonly fusion: FusionCategory;
  /** present for ops a spec may call by name (internal backward ops have none). */
  readonly surface?: Surface;
  /** Output type from input types and attrs; throws ShapeError saying which dims disagree. */
  infer(inputs: readonly TensorType[], attrs: Attrs): TensorType;
  /**
   * Cotangents of the inputs given the cotangent of the output, built as graph ops with `b`
   * (so the backward graph is a graph like any other). null: no gradient flows to that input.
   * Absent: the op is not differentiable (integer outputs, sources).
   */
  vjp?(b: GraphBuilder, node: Node, cotangent: number): readonly (number | null)[];
  /** Computes the op on the CPU. Attrs arrive with symbolic dims already evaluated. */
  reference(inputs: readonly HostTensor[], attrs: Attrs, out: ConcreteType, ctx: ReferenceContext): HostTensor;
  /** How the op runs on WebGPU (compiler/codegen/kernel.ts). */
  readonly kernel?: OpKernel;
  /** How the op is written in PyTorch (`kiln export --target torch`). */
  readonly torch?: TorchRendering;
  /**
   * For a loss op that averages over items (cross_entropy: the non-ignored labels; kl_div: the
   * selected rows; mean: its elements): a node counting them in this call, an f32 scalar built
   * with `b` from the op's own inputs. Gradient accumulation weights micro-batches by it
   * (compiler/train/accumulate.ts). Absent: the op declares no such count.
   */
  count?(b: GraphBuilder, node: Node): number;
}
