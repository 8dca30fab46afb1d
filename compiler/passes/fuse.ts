// Fusion: from a graph (forward, backward, optimiser: it does not care which) to kernel groups,
// by the rules in fusion-rules.ts. Two decisions, in topological order:
//   1. which values get a buffer: every other value is inlined, as a prologue, where it is read;
//   2. which kernel computes each buffered value: an anchor (matmul, custom op) starts a group;
//      an elementwise value joins the group of an operand as an epilogue when it reads that
//      group's values element for element and joining makes no cycle; else it starts a loop.
// Symbols may still be free: grouping depends on shapes only through symbolic equality.
import { shapesEqual } from '../ir/dims.js';
import { reachable, type Graph, type Node } from '../ir/graph.js';
import { categoryOf, epilogueRuleFor, prologueRuleFor, type Category } from './fusion-rules.js';
import { getOp } from '../ops/registry.js';

export type Placement = 'anchor' | 'prologue' | 'epilogue';

export interface Member {
  readonly node: number;
  readonly placement: Placement;
  /** the rule that placed it (fusion-rules.ts), or 'anchor' / 'loop' / 'requested'. */
  readonly rule: string;
}

export interface FusedGroup {
  readonly id: number;
  /** the anchor's category: 'matmul', 'custom', or a loop ('elementwise', 'view', 'const'). */
  readonly kind: Category;
  readonly anchor: number;
  /** in node order, the anchor included. */
  readonly members: readonly Member[];
  /** buffered values it reads (sources and other groups' outputs), in node order. */
  readonly inputs: readonly number[];
  /** buffered values it writes: its members read by other groups or requested. */
  readonly outputs: readonly number[];
}

export interface FusedProgram {
  readonly graph: Graph;
  readonly requested: readonly number[];
  /** in dispatch order. */
  readonly groups: readonly FusedGroup[];
  /** input and param nodes the program reads. */
  readonly sources: readonly number[];
  /** ops the program computes (reachable, not sources): the dispatch count without fusion. */
  readonly unfusedOps: number;
}

export interface FuseOptions {
  /** storage bindings one kernel may use (WebGPU's guaranteed minimum is 8). */
  readonly maxBindings?: number;
  /**
   * Output node -> input node it may be written over in place (an optimiser update and its
   * target): counted as one binding when a kernel would hold both. The caller checks the program
   * against the updates actually written in place (bindingsOf) and fuses again without this when
   * a kernel would exceed maxBindings.
   */
  readonly sharedBindings?: ReadonlyMap<number, number>;
}

interface Building {
  id: number;
  kind: Category;
  anchor: number;
  members: Map<number, Member>;
  inputs: Set<number>;
  deps: Set<number>;
}

/** Whether the node is a view that permutes axes (its op declares a perm: transpose). */
function permutes(node: Node): boolean {
  const kernel = getOp(node.op).kernel;
  return kernel?.kind === 'view' && kernel.perm !== undefined;
}

/** The values whose operand `of` reads element for element: reshapes and unbroadcast operands. */
function identityOperand(node: Node, operand: Node): boolean {
  const kernel = getOp(node.op).kernel;
  if (kernel?.kind === 'view' && kernel.flat) return true;
  return categoryOf(node) === 'elementwise' && shapesEqual(operand.type.shape, node.type.shape);
}

export function fuse(graph: Graph, requested: readonly number[], opts: FuseOptions = {}): FusedProgram {
  const maxBindings = opts.maxBindings ?? 8;
  const nodes = graph.nodes;
  const order = reachable(graph, requested);
  const isRequested = new Set(requested);
  const inOrder = new Uint8Array(nodes.length);
  for (const id of order) inOrder[id] = 1;
  const users: number[][] = nodes.map(() => []);
  for (const id of order) for (const i of new Set(nodes[id]!.inputs)) users[i]!.push(id);

  // ---- 1. buffers or inline ----------------------------------------------------------------
  const buffered = new Uint8Array(nodes.length);
  const inlineRule = new Map<number, string>();
  /** why a value that could have been inlined got a buffer (a rule with fuse: false). */
  const bufferRule = new Map<number, string>();
  const leaves = new Map<number, Set<number>>();
  const ops = new Map<number, number>();
  const isInline = (id: number): boolean => inlineRule.has(id);

  // A view that gets no buffer is transparent: its readers read the producer.
  const readersOf = (id: number, acc: Set<number>): Set<number> => {
    for (const u of users[id]!) {
      if (categoryOf(nodes[u]!) === 'view' && !isRequested.has(u)) readersOf(u, acc);
      else acc.add(u);
    }
    return acc;
  };

  for (const id of order) {
    const node = nodes[id]!;
    const cat = categoryOf(node);
    let inline = false;
    if (cat !== 'source' && cat !== 'matmul' && cat !== 'custom' && !isRequested.has(id)) {
      const readers = [...readersOf(id, new Set())].map((u) => categoryOf(nodes[u]!));
      const lv = new Set<number>();
      let n = cat === 'elementwise' ? 1 : 0;
      for (const i of node.inputs) {
        if (isInline(i)) {
          for (const l of leaves.get(i)!) lv.add(l);
          n += ops.get(i)!;
        } else lv.add(i);
      }
      leaves.set(id, lv);
      ops.set(id, n);
      const first = node.inputs[0] === undefined ? undefined : nodes[node.inputs[0]]!;
      const operand = first === undefined ? undefined : categoryOf(first);
      const firstKernel = first === undefined ? undefined : getOp(first.op).kernel;
      const operandPartial = firstKernel?.kind === 'custom' && firstKernel.inPlace !== undefined;
      const rule = prologueRuleFor({ producer: cat, permutes: permutes(node), operand, operandPartial, readers, exprOps: n, exprBuffers: lv.size, accumulate: node.attrs['accumulate'] === true });
      // An inline expression's buffers are bindings of whichever kernel reads it, with that
      // kernel's output and one more operand: a longer chain (a sum over every gradient's norm)
      // gets a buffer here instead of a kernel past the device's binding limit.
      if (rule?.fuse && (cat !== 'elementwise' || lv.size + 2 <= maxBindings)) {
        inline = true;
        inlineRule.set(id, rule.name);
      } else if (rule) bufferRule.set(id, rule.name);
    }
    if (!inline) buffered[id] = 1;
  }

  // ---- 2. groups -----------------------------------------------------------------------------
  const groups: Building[] = [];
  const groupOf = new Int32Array(nodes.length).fill(-1);

  const dependsOn = (h: number, g: number): boolean => {
    const seen = new Set<number>();
    const stack = [h];
    while (stack.length) {
      const x = stack.pop()!;
      if (x === g) return true;
      if (seen.has(x)) continue;
      seen.add(x);
      for (const d of groups[x]!.deps) stack.push(d);
    }
    return false;
  };

  const addLeaf = (g: Building, leaf: number): void => {
    g.inputs.add(leaf);
    const h = groupOf[leaf]!;
    if (h >= 0 && h !== g.id) g.deps.add(h);
  };

  /** Inline trees under `roots` become load-side members of g. */
  const addPrologue = (g: Building, roots: readonly number[]): void => {
    const stack = [...roots];
    while (stack.length) {
      const id = stack.pop()!;
      if (!isInline(id)) {
        addLeaf(g, id);
        continue;
      }
      if (g.members.has(id)) continue;
      g.members.set(id, { node: id, placement: 'prologue', rule: inlineRule.get(id)! });
      stack.push(...nodes[id]!.inputs);
    }
  };

  const newGroup = (anchor: number, kind: Category, rule: string): Building => {
    const g: Building = { id: groups.length, kind, anchor, members: new Map(), inputs: new Set(), deps: new Set() };
    groups.push(g);
    g.members.set(anchor, { node: anchor, placement: 'anchor', rule });
    groupOf[anchor] = g.id;
    addPrologue(g, nodes[anchor]!.inputs);
    return g;
  };

  /** Joins m to an operand's group as an epilogue, when a rule allows; false when none does. */
  const attachEpilogue = (m: number): boolean => {
    // The inline tree under m: each buffered leaf with whether every step to it is identity.
    const occurrences: { leaf: number; identity: boolean }[] = [];
    const inlineNodes = new Set<number>();
    const walk = (id: number, parent: Node, identity: boolean): void => {
      const ident = identity && identityOperand(parent, nodes[id]!);
      if (!isInline(id)) {
        // A transposed store holds the group's value in another layout: never element for element.
        occurrences.push({ leaf: id, identity: ident && bufferRule.get(id) !== 'transposed-store' });
        return;
      }
      inlineNodes.add(id);
      for (const i of nodes[id]!.inputs) walk(i, nodes[id]!, ident);
    };
    for (const i of nodes[m]!.inputs) walk(i, nodes[m]!, true);
    const candidates = [...new Set(occurrences.filter((o) => o.identity && groupOf[o.leaf]! >= 0).map((o) => groupOf[o.leaf]!))].sort((a, b) => b - a);
    for (const gid of candidates) {
      const g = groups[gid]!;
      const rule = epilogueRuleFor(g.kind, categoryOf(nodes[m]!));
      if (!rule) continue;
      if (occurrences.some((o) => groupOf[o.leaf] === gid && !o.identity)) continue;
      const others = occurrences.filter((o) => groupOf[o.leaf] !== gid).map((o) => o.leaf);
      if (others.some((l) => groupOf[l]! >= 0 && dependsOn(groupOf[l]!, gid))) continue;
      const inputSet = new Set([...g.inputs, ...others]);
      const inputs = inputSet.size;
      // Each value the kernel would publish is a binding too: members read outside the group
      // (as far as is known now: a reader not yet in the group counts) and requested ones; an
      // output that may overwrite one of the inputs in place (opts.sharedBindings) shares its binding.
      const joined = (id: number): boolean => id === m || inlineNodes.has(id) || g.members.has(id);
      let outputs = 0;
      let shared = 0;
      // A value read outside only by updates of this kernel's inputs is counted with them: such an
      // update joins next (where(ok, new, old) of a moment after its new value) and takes its place.
      const sharesWithInput = (id: number): boolean => {
        const target = opts.sharedBindings?.get(id);
        return target !== undefined && inputSet.has(target);
      };
      for (const id of [...g.members.keys(), m]) {
        if (g.members.get(id)?.placement === 'prologue') continue;
        const outside = users[id]!.filter((u) => !joined(u));
        if (!isRequested.has(id) && outside.length === 0) continue;
        outputs++;
        if (sharesWithInput(id) || (!isRequested.has(id) && outside.every(sharesWithInput))) shared++;
      }
      // Without shared bindings, room for an output and one more operand is kept (inputs + 2).
      if ((shared > 0 ? inputs + outputs - shared : Math.max(inputs + 2, inputs + outputs)) > maxBindings) continue;
      // Store-side: m and the inline nodes whose trees reach this group's values.
      const reaches = (id: number): boolean => groupOf[id] === gid || (isInline(id) && nodes[id]!.inputs.some(reaches));
      for (const id of inlineNodes) {
        if (g.members.has(id)) continue;
        g.members.set(id, { node: id, placement: reaches(id) ? 'epilogue' : 'prologue', rule: inlineRule.get(id)! });
      }
      g.members.set(m, { node: m, placement: 'epilogue', rule: rule.name });
      groupOf[m] = gid;
      for (const l of others) addLeaf(g, l);
      return true;
    }
    return false;
  };

  /** A transposed store joins the kernel of the custom op it transposes, written scattered. */
  const attachTransposedStore = (m: number): boolean => {
    const o = nodes[m]!.inputs[0]!;
    const gid = groupOf[o]!;
    if (gid < 0 || groups[gid]!.kind !== 'custom') return false;
    groups[gid]!.members.set(m, { node: m, placement: 'epilogue', rule: 'transposed-store' });
    groupOf[m] = gid;
    return true;
  };

  for (const id of order) {
    if (!buffered[id]) continue;
    const cat = categoryOf(nodes[id]!);
    if (cat === 'source') continue;
    if (bufferRule.get(id) === 'transposed-store' && attachTransposedStore(id)) continue;
    if (cat === 'matmul' || cat === 'custom') newGroup(id, cat, 'anchor');
    else if (!attachEpilogue(id)) newGroup(id, cat, isRequested.has(id) && cat !== 'elementwise' ? 'requested' : 'loop');
  }

  // ---- outputs and dispatch order ----------------------------------------------------------
  const readElsewhere = new Set<number>();
  for (const g of groups) for (const i of g.inputs) readElsewhere.add(i);
  const ordered = topoOrder(groups);
  const renumber = new Map(ordered.map((g, k) => [g.id, k]));
  const sources = new Set<number>();
  const out: FusedGroup[] = ordered.map((g) => {
    for (const i of g.inputs) if (categoryOf(nodes[i]!) === 'source') sources.add(i);
    const members = [...g.members.values()].sort((a, b) => a.node - b.node);
    const outputs = members.filter((m) => m.placement !== 'prologue' && (readElsewhere.has(m.node) || isRequested.has(m.node))).map((m) => m.node);
    if (outputs.length === 0) throw new Error(`fuse: the kernel of node ${g.anchor} (${nodes[g.anchor]!.op}) writes nothing anyone reads`);
    return { id: renumber.get(g.id)!, kind: g.kind, anchor: g.anchor, members, inputs: [...g.inputs].sort((a, b) => a - b), outputs };
  });
  for (const r of requested) if (categoryOf(nodes[r]!) === 'source') sources.add(r);
  const unfusedOps = order.filter((id) => categoryOf(nodes[id]!) !== 'source').length;
  return { graph, requested: [...requested], groups: out, sources: [...sources].sort((a, b) => a - b), unfusedOps };
}

/** Kahn's algorithm over group dependencies, earliest anchor first among the ready ones. */
function topoOrder(groups: readonly Building[]): Building[] {
  const indeg = groups.map((g) => g.deps.size);
  const dependents: number[][] = groups.map(() => []);
  for (const g of groups) for (const d of g.deps) dependents[d]!.push(g.id);
  const ready = groups.filter((g) => indeg[g.id] === 0).map((g) => g.id);
  const out: Building[] = [];
  while (ready.length) {
    let best = 0;
    for (let k = 1; k < ready.length; k++) if (groups[ready[k]!]!.anchor < groups[ready[best]!]!.anchor) best = k;
    const id = ready.splice(best, 1)[0]!;
    out.push(groups[id]!);
    for (const d of dependents[id]!) if (--indeg[d]! === 0) ready.push(d);
  }
  if (out.length !== groups.length) throw new Error('fuse: the kernel groups have a cycle (a fusion rule let one through)');
  return out;
}

/**
 * Storage bindings of each kernel of `program` (in dispatch order) when the updates in `inPlace`
 * (update node -> target) are written over their targets: an output aliasing an input of the
 * same kernel is one read_write binding.
 */
export function bindingsOf(program: FusedProgram, inPlace: ReadonlyMap<number, number>): number[] {
  return program.groups.map((g) => {
    const inputs = new Set(g.inputs);
    const shared = g.outputs.filter((o) => inPlace.has(o) && inputs.has(inPlace.get(o)!)).length;
    return g.inputs.length + g.outputs.length - shared;
  });
}
