// The memory plan as a report: what a training or inference step holds on the device, by kind,
// and what the device limits make of it. `kiln plan` prints it; nothing is allocated.
import type { Graph } from '../ir/graph.js';
import type { FusedProgram } from './fuse.js';
import type { MemoryPlan } from './plan.js';

export interface Limits {
  /** maxStorageBufferBindingSize: larger tensors are split across bindings. */
  readonly maxBindingBytes: number;
  /** maxBufferSize: no buffer may be larger. */
  readonly maxBufferBytes: number;
}

/** WebGPU's defaults for a device that asks for nothing (what a browser grants without asking). */
export const DEFAULT_LIMITS: Limits = { maxBindingBytes: 128 * 2 ** 20, maxBufferBytes: 4 * 2 ** 30 };

export interface MemoryReport {
  /** bytes of the parameters the step reads (only those get buffers). */
  readonly weights: number;
  /** parameters the step reads, of them trainable, and declared ones it never reads. */
  readonly params: number;
  readonly trainableParams: number;
  readonly unusedParams: number;
  readonly inputs: number;
  readonly gradients: number;
  /** AdamW: two moments (f32) per trainable parameter; 0 without --train. */
  readonly optimizer: number;
  /** requested values other than gradients (losses, outputs). */
  readonly outputs: number;
  /** intermediates: the planned slots, the liveness lower bound, one buffer each. */
  readonly activations: { readonly slots: number; readonly peakLive: number; readonly naive: number; readonly count: number };
  readonly peak: number;
  readonly dispatches: number;
  readonly ops: number;
  /** tensors past one storage binding: the executor splits them across `parts` bindings. */
  readonly split: readonly { readonly name: string; readonly bytes: number; readonly parts: number }[];
  /** what cannot be allocated at all (past maxBufferSize). */
  readonly warnings: readonly string[];
}

export function memoryReport(program: FusedProgram, plan: MemoryPlan, opts: { train: boolean; limits?: Limits; describe?: (node: number) => string }): MemoryReport {
  const graph: Graph = program.graph;
  const limits = opts.limits ?? DEFAULT_LIMITS;
  const describe = opts.describe ?? ((n: number) => graph.nodes[n]!.label ?? `node ${n}`);
  const gradientNodes = new Set(graph.gradients.map((g) => g.node));
  let params = 0;
  let trainable = 0;
  let unused = 0;
  const read = new Set(program.sources);
  for (const p of graph.params) {
    // Parameter shapes come from the config: constants.
    const count = p.type.shape.reduce<number>((a, d) => a * (d as number), 1);
    if (!read.has(p.node)) unused += count;
    else params += count;
    if (p.trainable && read.has(p.node)) trainable += count;
  }
  let weights = 0;
  let inputs = 0;
  let gradients = 0;
  let outputs = 0;
  const warnings: string[] = [];
  const split: { name: string; bytes: number; parts: number }[] = [];
  for (const v of plan.values.values()) {
    if (v.kind === 'param') weights += v.bytes;
    else if (v.kind === 'input') inputs += v.bytes;
    else if (v.kind === 'requested') {
      if (gradientNodes.has(v.node)) gradients += v.bytes;
      else outputs += v.bytes;
    }
    if (v.bytes > limits.maxBindingBytes) split.push({ name: describe(v.node), bytes: v.bytes, parts: Math.ceil(v.bytes / (Math.floor(limits.maxBindingBytes / 256) * 256)) });
    if (v.bytes > limits.maxBufferBytes) warnings.push(`${describe(v.node)} (${mib(v.bytes)}) is larger than the largest buffer (${mib(limits.maxBufferBytes)}): it cannot be allocated`);
  }
  for (const s of plan.slots)
    if (s.bytes > limits.maxBufferBytes) warnings.push(`slot ${s.id} (${mib(s.bytes)}) is larger than the largest buffer (${mib(limits.maxBufferBytes)})`);
  // The optimiser keeps its moments in f32 whatever the storage dtype (mixed precision).
  const optimizer = opts.train ? 2 * 4 * trainable : 0;
  const t = plan.totals;
  const peak = weights + inputs + gradients + outputs + t.slots + optimizer;
  return {
    weights,
    params,
    trainableParams: trainable,
    unusedParams: unused,
    inputs,
    gradients,
    optimizer,
    outputs,
    activations: { slots: t.slots, peakLive: t.peakLive, naive: t.naive, count: [...plan.values.values()].filter((v) => v.kind === 'temp').length },
    peak,
    dispatches: program.groups.length,
    ops: program.unfusedOps,
    split,
    warnings,
  };
}

export function mib(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** The report as aligned text lines. */
export function formatReport(r: MemoryReport): string[] {
  const row = (name: string, bytes: number, note = ''): string => `  ${name.padEnd(16)} ${mib(bytes).padStart(11)}  ${note}`;
  const fmt = (n: number): string => n.toLocaleString('en-US');
  const lines = [
    row('weights', r.weights, `${fmt(r.params)} parameters, ${fmt(r.trainableParams)} trainable${r.unusedParams ? ` (${fmt(r.unusedParams)} more declared but not read: no buffer)` : ''}`),
    row('inputs', r.inputs),
    row('activations', r.activations.slots, `${fmt(r.activations.count)} intermediates in planned slots (live at most ${mib(r.activations.peakLive)}; one buffer each: ${mib(r.activations.naive)})`),
  ];
  if (r.gradients > 0) lines.push(row('gradients', r.gradients));
  if (r.optimizer > 0) lines.push(row('optimiser state', r.optimizer, 'AdamW: 2 f32 moments per trainable parameter'));
  if (r.outputs > 0) lines.push(row('outputs', r.outputs, 'losses and requested outputs'));
  lines.push(row('peak', r.peak, 'everything above, allocated up front'));
  lines.push('', `  ${fmt(r.dispatches)} kernels for ${fmt(r.ops)} ops`);
  if (r.split.length > 0) {
    // One line per family: layer indices folded, so 32 layers' gate_proj weights are one line.
    const families = new Map<string, { bytes: number; parts: number; count: number }>();
    for (const t of r.split) {
      const key = `${t.name.replace(/\.\d+\./g, '.*.')}\u0000${t.bytes}`;
      const f = families.get(key);
      if (f) f.count++;
      else families.set(key, { bytes: t.bytes, parts: t.parts, count: 1 });
    }
    lines.push('', `tensors larger than one storage binding (${r.split.length}; each is split across bindings):`);
    for (const [key, f] of families) lines.push(`  ${key.split('\u0000')[0]}${f.count > 1 ? ` (x${f.count})` : ''}: ${mib(f.bytes)}, ${f.parts} bindings`);
  }
  if (r.warnings.length > 0) lines.push('', 'warnings:', ...r.warnings.map((w) => `  ${w}`));
  return lines;
}
