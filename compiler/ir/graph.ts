// The IR: one graph type for forward, backward and fused programs. A node is one op with one
// output; nodes are kept in topological order and a node's id is its index. Passes are
// functions from Graph to Graph.
import type { Span } from '../syntax/ast.js';
import { evalDim, isSymDim, type Dim, type SymbolBindings } from './dims.js';

import type { DType } from '../../runtime/tensor.js';

export type { DType };

export interface TensorType {
  readonly dtype: DType;
  readonly shape: readonly Dim[];
}

/** Attribute values: JSON-like data, where any number in a dim position may be a symbolic Dim. */
export type AttrValue = number | string | boolean | null | Dim | readonly AttrValue[];
export type Attrs = Readonly<Record<string, AttrValue>>;

export interface Node {
  readonly id: number;
  readonly op: string;
  readonly inputs: readonly number[];
  readonly attrs: Attrs;
  readonly type: TensorType;
  /** where in the spec the value was written (for diagnostics and `kiln inspect`). */
  readonly span?: Span;
  /** a readable name: the spec variable, parameter or `grad(...)`. */
  readonly label?: string;
  /**
   * The module instance whose forward (or parameter list) made the node, as its spec path
   * (`model.layers.0.self_attn`); absent at the model's own level. Backward nodes carry
   * `GRAD_SCOPE` + the scope of the forward node they differentiate, optimiser nodes
   * `OPTIMIZER_SCOPE`. Pictures and profiles group by it; no pass depends on it.
   */
  readonly scope?: string;
}

/** Prefix of the scope of backward nodes (`∇model.layers.0`). */
export const GRAD_SCOPE = '∇';
/** The scope of the optimiser's nodes. */
export const OPTIMIZER_SCOPE = '@optimizer';

export type Initializer =
  | { kind: 'zeros' }
  | { kind: 'ones' }
  | { kind: 'normal'; std: number; mean: number }
  | { kind: 'uniform'; low: number; high: number }
  | { kind: 'constant'; value: number };

export interface ParamInfo {
  /** the checkpoint name: `model.layers.0.self_attn.q_proj.weight`. */
  readonly name: string;
  /** the node whose op is `param`. */
  readonly node: number;
  readonly type: TensorType;
  readonly init: Initializer;
  readonly trainable: boolean;
  /** the model's top-level submodule this parameter belongs to (`vision_tower`, `model`, ...). */
  readonly component: string;
  /** the module path in the spec: `model.layers.0.self_attn.q_proj`. */
  readonly path: string;
  /**
   * the module types from the model down to the one that declares the parameter
   * (`['VWLMM', 'LlamaModel', 'LlamaDecoderLayer', 'RMSNorm']`); absent for graphs built by hand.
   */
  readonly modules?: readonly string[];
  readonly span?: Span;
}

export interface NamedValue {
  readonly name: string;
  readonly node: number;
}

export interface LossTerm extends NamedValue {
  readonly weight: number;
}

export interface Graph {
  readonly nodes: readonly Node[];
  readonly inputs: readonly NamedValue[];
  readonly params: readonly ParamInfo[];
  readonly outputs: readonly NamedValue[];
  readonly losses: readonly LossTerm[];
  /** the weighted sum of the loss terms, when there are any. */
  readonly totalLoss: number | null;
  /** d(totalLoss)/d(param) for each trainable parameter, filled in by autodiff. */
  readonly gradients: readonly NamedValue[];
  /** symbolic dims the inputs introduce, in order of first appearance (B, T, ...). */
  readonly symbols: readonly string[];
  /**
   * State written back after a step: the input or parameter `name` takes the value of `node`
   * (optimiser updates, KV caches). Every update reads the old values, then all are written.
   */
  readonly updates?: readonly NamedValue[];
}

export function emptyGraph(): Graph {
  return { nodes: [], inputs: [], params: [], outputs: [], losses: [], totalLoss: null, gradients: [], symbols: [] };
}

/** Ids of every node some root depends on, in topological order. */
export function reachable(graph: Graph, roots: readonly number[]): number[] {
  const seen = new Uint8Array(graph.nodes.length);
  const stack = [...roots];
  while (stack.length > 0) {
    const id = stack.pop()!;
    if (seen[id]) continue;
    seen[id] = 1;
    for (const i of graph.nodes[id]!.inputs) if (!seen[i]) stack.push(i);
  }
  const out: number[] = [];
  for (let i = 0; i < seen.length; i++) if (seen[i]) out.push(i);
  return out;
}

/** Number of users of each node. */
export function useCounts(graph: Graph): Uint32Array {
  const counts = new Uint32Array(graph.nodes.length);
  for (const n of graph.nodes) for (const i of n.inputs) counts[i]!++;
  for (const v of [...graph.outputs, ...graph.losses, ...graph.gradients, ...(graph.updates ?? [])]) counts[v.node]!++;
  if (graph.totalLoss !== null) counts[graph.totalLoss]!++;
  return counts;
}

/** An attribute with its symbolic dims evaluated under `b` (lists element by element). */
export function evalAttr(v: AttrValue, b: SymbolBindings): AttrValue {
  if (isSymDim(v)) return evalDim(v, b);
  if (Array.isArray(v)) return v.map((x: AttrValue) => evalAttr(x, b));
  return v;
}

/** Every attribute of a node evaluated under `b`: what kernels and reference implementations see. */
export function evalAttrs(attrs: Attrs, b: SymbolBindings): Attrs {
  const out: Record<string, AttrValue> = {};
  for (const [k, v] of Object.entries(attrs)) out[k] = evalAttr(v, b);
  return out;
}
