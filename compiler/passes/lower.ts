// Lowering: a fused program with its symbols bound (B, T from the fed shapes) becomes kernels
// (WGSL, workgroups, bindings) and a memory plan. One compiled program per binding; the
// executor caches them by binding.
import { evalDim, type SymbolBindings } from '../ir/dims.js';
import { evalAttrs, type Graph } from '../ir/graph.js';
import { DEFAULT_TRAITS, type DeviceTraits } from '../codegen/kernel.js';
import { generateGroup, UnlowerableError, type CodegenOptions, type ConcreteNode, type GroupKernel } from '../codegen/fused.js';
import { getOp } from '../ops/registry.js';
import { categoryOf } from './fusion-rules.js';
import { fuse, type FusedProgram, type FuseOptions } from './fuse.js';
import { planMemory, type MemoryPlan } from './plan.js';
import { CHUNKED_OPS } from './loss-heads.js';
import { isFloat, numel } from '../../runtime/tensor.js';

export interface CompiledProgram {
  readonly program: FusedProgram;
  readonly bindings: SymbolBindings;
  /** one per group, in dispatch order. */
  readonly kernels: readonly GroupKernel[];
  readonly plan: MemoryPlan;
  readonly node: (id: number) => ConcreteNode;
}

/** Nodes with shapes and attrs evaluated under `bindings`, computed on first use. */
export function concreteNodes(graph: Graph, bindings: SymbolBindings): (id: number) => ConcreteNode {
  const memo = new Map<number, ConcreteNode>();
  return (id) => {
    let c = memo.get(id);
    if (!c) {
      const n = graph.nodes[id]!;
      c = { id, op: n.op, inputs: n.inputs, attrs: evalAttrs(n.attrs, bindings), dtype: n.type.dtype, shape: n.type.shape.map((d) => evalDim(d, bindings)) };
      memo.set(id, c);
    }
    return c;
  };
}

/** Bytes of a value as stored: 4 per element (f32, i32, bool as i32), 2 for f16 storage. */
export function storedBytes(n: ConcreteNode, floatBytes = 4): number {
  return numel(n.shape) * (isFloat(n.dtype) ? floatBytes : 4);
}

/** Kernels and memory plan for a fused program under concrete symbol values. */
export function lowerProgram(program: FusedProgram, bindings: SymbolBindings, device: DeviceTraits = DEFAULT_TRAITS, opts: CodegenOptions = {}): CompiledProgram {
  const node = concreteNodes(program.graph, bindings);
  const kernels: GroupKernel[] = [];
  const missing = new Map<string, number>();
  for (const g of program.groups) {
    try {
      kernels.push(generateGroup(g, node, device, opts));
    } catch (e) {
      if (!(e instanceof UnlowerableError)) throw e;
      const op = node(g.anchor).op;
      if (!missing.has(op)) missing.set(op, g.anchor);
    }
  }
  if (missing.size > 0) {
    const list = [...missing].map(([op, id]) => `${op} (first at node ${id}${program.graph.nodes[id]!.label ? `, ${program.graph.nodes[id]!.label}` : ''})`);
    throw new UnlowerableError(`cannot run on WebGPU: no kernel yet for ${list.join(', ')}`);
  }
  const plan = planMemory(program, (id) => storedBytes(node(id), opts.floatStorage === 'f16' ? 2 : 4));
  return { program, bindings, kernels, plan, node };
}

/** Ops the program needs that have no WebGPU kernel (yet). */
export function opsWithoutKernels(program: FusedProgram): string[] {
  const out = new Set<string>();
  for (const g of program.groups) {
    const n = program.graph.nodes[g.anchor]!;
    // The loss heads' fused ops run as their chunked expansion (compiler/passes/loss-heads.ts).
    if (categoryOf(n) === 'custom' && getOp(n.op).kernel?.kind !== 'custom' && !CHUNKED_OPS.has(n.op)) out.add(n.op);
  }
  return [...out];
}

export { fuse, type FuseOptions };
