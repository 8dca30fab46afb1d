// Appends nodes to a graph, inferring each node's type with its op's shape rule. The checker
// builds forward graphs with it and autodiff builds backward graphs with the same calls.
import type { Span } from '../syntax/ast.js';
import { getOp } from '../ops/registry.js';
import type { Attrs, Graph, LossTerm, NamedValue, Node, ParamInfo, TensorType } from './graph.js';

export { ShapeError } from './shape_error.js';

export class GraphBuilder {
  readonly nodes: Node[];
  readonly inputs: NamedValue[];
  readonly params: ParamInfo[];
  readonly outputs: NamedValue[];
  readonly losses: LossTerm[];
  readonly gradients: NamedValue[];
  readonly symbols: string[];
  readonly updates: NamedValue[];
  totalLoss: number | null;
  /** the scope given to nodes added from now on (Node.scope); a pass sets it as it goes. */
  scope: string | undefined = undefined;
  /** hash-consing: the same op on the same inputs and attrs is one node. */
  private readonly memo = new Map<string, number>();

  constructor(base?: Graph) {
    this.nodes = base ? [...base.nodes] : [];
    this.inputs = base ? [...base.inputs] : [];
    this.params = base ? [...base.params] : [];
    this.outputs = base ? [...base.outputs] : [];
    this.losses = base ? [...base.losses] : [];
    this.gradients = base ? [...base.gradients] : [];
    this.symbols = base ? [...base.symbols] : [];
    this.updates = base ? [...(base.updates ?? [])] : [];
    this.totalLoss = base ? base.totalLoss : null;
    for (const n of this.nodes) if (isPure(n.op)) this.memo.set(keyOf(n.op, n.inputs, n.attrs), n.id);
  }

  type(id: number): TensorType {
    const n = this.nodes[id];
    if (!n) throw new Error(`no node ${id}`);
    return n.type;
  }

  node(id: number): Node {
    const n = this.nodes[id];
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** Adds `op(inputs; attrs)`; throws ShapeError when the op's shape rule rejects it. */
  add(op: string, inputs: readonly number[], attrs: Attrs = {}, meta: { span?: Span; label?: string; scope?: string } = {}): number {
    const def = getOp(op);
    const pure = isPure(op);
    const key = pure ? keyOf(op, inputs, attrs) : '';
    if (pure) {
      const hit = this.memo.get(key);
      if (hit !== undefined) return hit;
    }
    const type = def.infer(
      inputs.map((i) => this.type(i)),
      attrs,
    );
    const id = this.nodes.length;
    const scope = meta.scope ?? this.scope;
    this.nodes.push({ id, op, inputs: [...inputs], attrs, type, ...(meta.span ? { span: meta.span } : {}), ...(meta.label ? { label: meta.label } : {}), ...(scope ? { scope } : {}) });
    if (pure) this.memo.set(key, id);
    return id;
  }

  build(): Graph {
    return {
      nodes: this.nodes,
      inputs: this.inputs,
      params: this.params,
      outputs: this.outputs,
      losses: this.losses,
      totalLoss: this.totalLoss,
      gradients: this.gradients,
      symbols: this.symbols,
      ...(this.updates.length > 0 ? { updates: this.updates } : {}),
    };
  }
}

function isPure(op: string): boolean {
  return op !== 'input' && op !== 'param';
}

function keyOf(op: string, inputs: readonly number[], attrs: Attrs): string {
  return `${op}(${inputs.join(',')})${JSON.stringify(attrs, (_k, v: unknown) => (v instanceof Map ? [...v] : v))}`;
}
