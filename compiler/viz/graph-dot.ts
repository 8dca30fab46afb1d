// A graph as Graphviz DOT: modules collapsed into one box each unless expanded, expanded modules
// as nested clusters, and the kernels fusion made outlined. The picture groups nodes by the
// scope the checker and the passes gave them (Node.scope), so it shows the spec's structure
// whatever the passes did to the graph.
import { shapeToString } from '../ir/dims.js';
import { GRAD_SCOPE, OPTIMIZER_SCOPE, reachable, type Graph, type Node } from '../ir/graph.js';

export interface DotOptions {
  /** module paths shown op by op (`model`, `model.layers.0.self_attn`, `optimizer`), or `all`. */
  readonly expand?: readonly string[];
  /** node -> index of the kernel that computes it, for the nodes fusion placed. */
  readonly kernelOf?: ReadonlyMap<number, number>;
  /** node -> how many kernels compute it, where it is more than one (chunked loss heads). */
  readonly kernelCount?: ReadonlyMap<number, number>;
  /** the picture's title (spec, config, entry). */
  readonly title?: string;
}

/** A scope split into the module path's levels: `model.layers.0.mlp` -> [`model`, `model.layers.0`, `model.layers.0.mlp`]. */
export function scopeLevels(path: string): string[] {
  if (path === '') return [];
  const parts = path.split('.');
  const levels: string[] = [];
  let cur = '';
  for (let i = 0; i < parts.length; i++) {
    cur = cur ? `${cur}.${parts[i]}` : parts[i]!;
    // A stack's item is one level (`layers.0`), not a `layers` level holding items.
    if (i + 1 < parts.length && /^\d+$/.test(parts[i + 1]!)) continue;
    levels.push(cur);
  }
  return levels;
}

interface Scope {
  readonly grad: boolean;
  /** the module path, or `optimizer` for the optimiser's nodes. */
  readonly path: string;
}

function parseScope(n: Node): Scope {
  const s = n.scope ?? '';
  if (s === OPTIMIZER_SCOPE) return { grad: false, path: 'optimizer' };
  if (s.startsWith(GRAD_SCOPE)) return { grad: true, path: s.slice(GRAD_SCOPE.length) };
  return { grad: false, path: s };
}

/** Every module path some node of `nodes` belongs to, at every level (`optimizer` included). */
export function modulePaths(graph: Graph, nodes: readonly number[] = graph.nodes.map((n) => n.id)): string[] {
  const out = new Set<string>();
  for (const id of nodes) for (const l of scopeLevels(parseScope(graph.nodes[id]!).path)) out.add(l);
  return [...out].sort();
}

/** The graph's roots: what its entry reads back or writes (outputs, losses, gradients, updates). */
export function graphRoots(graph: Graph): number[] {
  const roots = [...graph.outputs, ...graph.losses, ...graph.gradients, ...(graph.updates ?? [])].map((v) => v.node);
  if (graph.totalLoss !== null) roots.push(graph.totalLoss);
  return [...new Set(roots)];
}

const quote = (s: string): string => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;

const plural = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`;

const typeText = (n: Node): string => `${n.type.dtype}${shapeToString(n.type.shape)}`;

function opText(n: Node): string {
  if (n.op === 'input' || n.op === 'param') return String(n.attrs['name']);
  if (n.op === 'fill' && n.type.shape.length === 0) return String(n.attrs['value']);
  return n.label && n.label !== n.op ? `${n.op}\n${n.label}` : n.op;
}

/** A displayed box: one node, or a collapsed module (forward, backward or the optimiser). */
interface Unit {
  readonly key: string;
  readonly id: string;
  /** the expanded modules it sits in, outermost first. */
  readonly container: readonly string[];
  readonly nodes: number[];
  readonly module?: { path: string; grad: boolean };
}

/**
 * Renders the part of `graph` that its roots read as DOT.
 * Deterministic: the same graph and options give the same text.
 */
export function graphToDot(graph: Graph, opts: DotOptions = {}): string {
  const expand = new Set(opts.expand ?? []);
  const all = expand.has('all');
  // A module is shown op by op when it or anything inside it was asked for.
  const expanded = (path: string): boolean => all || [...expand].some((e) => e === path || e.startsWith(`${path}.`));
  const live = reachable(graph, graphRoots(graph));
  const units = new Map<string, Unit>();
  const unitOf = new Map<number, Unit>();
  for (const id of live) {
    const n = graph.nodes[id]!;
    const sc = parseScope(n);
    const levels = scopeLevels(sc.path);
    const container: string[] = [];
    let key = `n${id}`;
    let module: Unit['module'];
    for (const level of levels) {
      if (!expanded(level)) {
        key = `${sc.grad ? GRAD_SCOPE : ''}${level}`;
        module = { path: level, grad: sc.grad };
        break;
      }
      container.push(level);
    }
    let u = units.get(key);
    if (!u) {
      u = { key, id: `u${units.size}`, container, nodes: [], ...(module ? { module } : {}) };
      units.set(key, u);
    }
    u.nodes.push(id);
    unitOf.set(id, u);
  }

  const lines: string[] = ['digraph kiln {', '  rankdir=TB;', '  node [fontname="Helvetica", fontsize=10];', '  edge [fontname="Helvetica", fontsize=8, color="#555555"];'];
  if (opts.title) lines.push(`  labelloc=t; label=${quote(opts.title)};`);
  const kernel = (id: number): string => {
    const k = opts.kernelOf?.get(id);
    if (k === undefined) return '';
    const count = opts.kernelCount?.get(id);
    return count && count > 1 ? `k${k} (+${count - 1} more)` : `k${k}`;
  };
  const unitLine = (u: Unit): string => {
    if (u.module) {
      const ops = u.nodes.filter((i) => graph.nodes[i]!.op !== 'param');
      const params = u.nodes.filter((i) => graph.nodes[i]!.op === 'param');
      const count = params.reduce((a, i) => a + graph.nodes[i]!.type.shape.reduce<number>((x, d) => x * (typeof d === 'number' ? d : 1), 1), 0);
      const kernels = new Set(ops.map((i) => opts.kernelOf?.get(i)).filter((k) => k !== undefined));
      const parts = [`${u.module.grad ? 'backward of ' : ''}${u.module.path}`, `${plural(ops.length, 'op')}${kernels.size ? ` in ${plural(kernels.size, 'kernel')}` : ''}`];
      if (params.length) parts.push(`${plural(params.length, 'param')}, ${count.toLocaleString('en-US')} values`);
      const fill = u.module.path === 'optimizer' ? '#fdf1d6' : u.module.grad ? '#f6dede' : '#dde8f6';
      return `${u.id} [shape=box, style="rounded,filled", fillcolor="${fill}", label=${quote(parts.join('\n'))}];`;
    }
    const n = graph.nodes[u.nodes[0]!]!;
    const k = kernel(n.id);
    const label = `${opText(n)}\n${typeText(n)}${k ? `\n${k}` : ''}`;
    if (n.op === 'input') return `${u.id} [shape=invhouse, style=filled, fillcolor="#e4f4e4", label=${quote(label)}];`;
    if (n.op === 'param') return `${u.id} [shape=note, label=${quote(label)}];`;
    if (n.op === 'fill') return `${u.id} [shape=plaintext, label=${quote(n.type.shape.length === 0 ? opText(n) : `fill ${String(n.attrs['value'])}\n${typeText(n)}`)}];`;
    const grad = parseScope(n).grad;
    return `${u.id} [shape=ellipse${grad ? ', style=filled, fillcolor="#f6dede"' : ''}, label=${quote(label)}];`;
  };

  // Nested clusters for the expanded modules; inside each, fused kernels whose displayed nodes
  // all sit there are outlined as their own cluster.
  interface Box {
    readonly path: string;
    readonly children: Map<string, Box>;
    readonly units: Unit[];
  }
  const root: Box = { path: '', children: new Map(), units: [] };
  for (const u of units.values()) {
    let box = root;
    for (const level of u.container) {
      let child = box.children.get(level);
      if (!child) {
        child = { path: level, children: new Map(), units: [] };
        box.children.set(level, child);
      }
      box = child;
    }
    box.units.push(u);
  }
  const opUnitsOfKernel = new Map<number, Unit[]>();
  for (const u of units.values()) {
    if (u.module) continue;
    const k = opts.kernelOf?.get(u.nodes[0]!);
    if (k !== undefined) opUnitsOfKernel.set(k, [...(opUnitsOfKernel.get(k) ?? []), u]);
  }
  let clusters = 0;
  const emit = (box: Box, indent: string): void => {
    const outlined = new Map<number, Unit[]>();
    for (const u of box.units) {
      const k = u.module ? undefined : opts.kernelOf?.get(u.nodes[0]!);
      const members = k === undefined ? [] : opUnitsOfKernel.get(k)!;
      if (k !== undefined && members.length > 1 && members.every((m) => m.container.join('/') === u.container.join('/'))) {
        outlined.set(k, [...(outlined.get(k) ?? []), u]);
        continue;
      }
      lines.push(`${indent}${unitLine(u)}`);
    }
    for (const [k, members] of [...outlined].sort(([a], [b]) => a - b)) {
      lines.push(`${indent}subgraph cluster_${clusters++} {`, `${indent}  label=${quote(`kernel k${k}`)}; style=dashed; color="#888888"; fontsize=8;`);
      for (const u of members) lines.push(`${indent}  ${unitLine(u)}`);
      lines.push(`${indent}}`);
    }
    for (const child of box.children.values()) {
      lines.push(`${indent}subgraph cluster_${clusters++} {`, `${indent}  label=${quote(child.path)}; style="rounded"; color="#3b6ea8";`);
      emit(child, `${indent}  `);
      lines.push(`${indent}}`);
    }
  };
  emit(root, '  ');

  // Edges between displayed units, one per pair, labelled by the first tensor that crosses.
  const edges = new Map<string, { from: Unit; to: Unit; type: string; count: number }>();
  for (const id of live) {
    const to = unitOf.get(id)!;
    for (const i of graph.nodes[id]!.inputs) {
      const from = unitOf.get(i)!;
      if (from === to) continue;
      const key = `${from.id}->${to.id}`;
      const e = edges.get(key);
      if (e) e.count++;
      else edges.set(key, { from, to, type: typeText(graph.nodes[i]!), count: 1 });
    }
  }
  // What the entry reads back: named outputs and losses, and the gradients and updates as one sink each.
  const sinks: { name: string; nodes: number[] }[] = [
    ...graph.outputs.map((o) => ({ name: `output ${o.name}`, nodes: [o.node] })),
    ...graph.losses.map((l) => ({ name: `loss ${l.name}${l.weight !== 1 ? ` (x${l.weight})` : ''}`, nodes: [l.node] })),
    ...(graph.totalLoss !== null && graph.losses.length > 1 ? [{ name: 'loss', nodes: [graph.totalLoss] }] : []),
    ...(graph.gradients.length ? [{ name: `gradients (${graph.gradients.length} tensors)`, nodes: graph.gradients.map((g) => g.node) }] : []),
    ...(graph.updates?.length ? [{ name: `updated state (${graph.updates.length} tensors)`, nodes: graph.updates.map((g) => g.node) }] : []),
  ];
  sinks.forEach((s, i) => {
    lines.push(`  sink${i} [shape=doubleoctagon, style=filled, fillcolor="#eeeeee", label=${quote(s.name)}];`);
    for (const u of new Set(s.nodes.map((n) => unitOf.get(n)!))) lines.push(`  ${u.id} -> sink${i};`);
  });
  for (const e of edges.values()) {
    const label = e.count > 1 ? `${e.type} (+${e.count - 1})` : e.type;
    lines.push(`  ${e.from.id} -> ${e.to.id} [label=${quote(label)}];`);
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}
