// The static memory plan: which buffer holds each value, decided before anything runs. Liveness
// over the dispatch list gives each intermediate an interval [written, last read]; intervals that
// do not overlap share a slot (greedy best fit by size). Parameters, inputs
// and requested values (losses, gradients, outputs) are pinned: a buffer each for the whole run.
// The plan is data (steps, slots, totals) that `kiln plan` prints and the executor follows.
import type { FusedProgram } from './fuse.js';

export type ValueKind = 'param' | 'input' | 'requested' | 'temp';

export interface PlanValue {
  readonly node: number;
  readonly bytes: number;
  readonly kind: ValueKind;
  /** dispatch step that writes it (-1: bound before the run). */
  readonly def: number;
  /** last dispatch step that reads it (Infinity: pinned to the end). */
  readonly lastUse: number;
}

export interface PlanStep {
  readonly group: number;
  readonly reads: readonly number[];
  readonly writes: readonly number[];
}

export interface Slot {
  readonly id: number;
  bytes: number;
  /** the temporaries it holds, in order; their intervals are disjoint. */
  readonly values: number[];
}

export interface MemoryTotals {
  readonly params: number;
  readonly inputs: number;
  readonly requested: number;
  /** bytes of all slots: what the intermediates cost with reuse. */
  readonly slots: number;
  /** the most intermediate bytes live at once (a lower bound for any reuse scheme). */
  readonly peakLive: number;
  /** every intermediate in a buffer of its own. */
  readonly naive: number;
}

export interface MemoryPlan {
  readonly steps: readonly PlanStep[];
  readonly values: ReadonlyMap<number, PlanValue>;
  /**
   * Steps of a running sum held in the buffer of its final value (accumulatorLinks): node ->
   * that final node. They have no slot of their own.
   */
  readonly sharedWith: ReadonlyMap<number, number>;
  readonly slots: readonly Slot[];
  /** temporaries -> slot id. */
  readonly slotOf: ReadonlyMap<number, number>;
  readonly totals: MemoryTotals;
}

/**
 * Running sums written in place: previous step -> the add that replaces it. An add marked
 * `accumulate` (the loss heads' weight gradients, compiler/passes/loss-heads.ts) whose running
 * value has no other reader may write over it: the add reads it only at the element it writes
 * (it is a matmul epilogue or an elementwise loop member, never a prologue: fusion-rules.ts
 * buffers it), as an optimiser update over its target does (in-place.ts). The code generator
 * reads the previous step through the add's binding (CodegenOptions.aliases).
 */
export function accumulatorLinks(program: FusedProgram): Map<number, number> {
  const graph = program.graph;
  const requested = new Set(program.requested);
  const readers = new Map<number, number>();
  for (const g of program.groups) for (const i of g.inputs) readers.set(i, (readers.get(i) ?? 0) + 1);
  const links = new Map<number, number>();
  for (const g of program.groups)
    for (const u of g.outputs) {
      const n = graph.nodes[u]!;
      const t = n.inputs[0];
      if (n.op !== 'add' || n.attrs['accumulate'] !== true || t === undefined || requested.has(t)) continue;
      if (readers.get(t) !== 1 || !g.inputs.includes(t) || graph.nodes[t]!.type.shape.length !== n.type.shape.length) continue;
      links.set(t, u);
    }
  return links;
}

/** Liveness and slot assignment; `bytesOf` gives a value's stored size. */
export function planMemory(program: FusedProgram, bytesOf: (node: number) => number): MemoryPlan {
  const graph = program.graph;
  const requested = new Set(program.requested);
  const steps: PlanStep[] = program.groups.map((g, s) => ({ group: s, reads: g.inputs, writes: g.outputs }));
  const def = new Map<number, number>();
  const last = new Map<number, number>();
  steps.forEach((st, s) => {
    for (const w of st.writes) def.set(w, s);
    for (const r of st.reads) last.set(r, s);
  });
  const values = new Map<number, PlanValue>();
  const add = (node: number, kind: ValueKind, d: number, l: number): void => {
    values.set(node, { node, bytes: bytesOf(node), kind, def: d, lastUse: l });
  };
  for (const src of program.sources) add(src, graph.nodes[src]!.op === 'param' ? 'param' : 'input', -1, Infinity);
  for (const [node, d] of def) {
    if (requested.has(node)) add(node, 'requested', d, Infinity);
    else add(node, 'temp', d, last.get(node) ?? d);
  }

  // A running sum lives in its final value's buffer, from the first step's write on.
  const links = accumulatorLinks(program);
  const sharedWith = new Map<number, number>();
  for (const t of links.keys()) {
    let f = links.get(t)!;
    while (links.has(f)) f = links.get(f)!;
    sharedWith.set(t, f);
  }
  for (const [t, f] of sharedWith) {
    const own = values.get(f)!;
    const first = values.get(t)!;
    if (first.def < own.def) values.set(f, { ...own, def: first.def });
  }
  const temps = [...values.values()].filter((v) => v.kind === 'temp' && !sharedWith.has(v.node));
  // Two greedy packings; the plan keeps the smaller. By size (largest first, each into the
  // smallest slot with no overlapping lifetime) usually wins; in dispatch order (best fit among
  // freed slots) wins when sizes are uniform.
  const candidates = [bySize(temps), inOrder(temps, steps.length)];
  const slots = candidates.reduce((a, b) => (total(b) < total(a) ? b : a));
  const slotOf = new Map<number, number>();
  for (const slot of slots) for (const v of slot.values) slotOf.set(v, slot.id);
  let peakLive = 0;
  let live = 0;
  // The most bytes live in any one step (a written value is live at its own step).
  const delta = new Map<number, number>();
  for (const v of values.values()) {
    if (v.kind !== 'temp' || sharedWith.has(v.node)) continue;
    delta.set(v.def, (delta.get(v.def) ?? 0) + v.bytes);
    delta.set(v.lastUse + 1, (delta.get(v.lastUse + 1) ?? 0) - v.bytes);
  }
  for (let s = 0; s <= steps.length; s++) {
    live += delta.get(s) ?? 0;
    peakLive = Math.max(peakLive, live);
  }
  const sum = (k: ValueKind): number => [...values.values()].filter((v) => v.kind === k).reduce((a, v) => a + v.bytes, 0);
  const totals: MemoryTotals = {
    params: sum('param'),
    inputs: sum('input'),
    requested: sum('requested'),
    slots: slots.reduce((a, s) => a + s.bytes, 0),
    peakLive,
    naive: sum('temp'),
  };
  return { steps, values, sharedWith, slots, slotOf, totals };
}

const total = (slots: readonly Slot[]): number => slots.reduce((a, s) => a + s.bytes, 0);
const overlaps = (a: PlanValue, b: PlanValue): boolean => a.def <= b.lastUse && b.def <= a.lastUse;

/** Largest first; each value into the smallest slot (all are at least as big) it can share. */
function bySize(temps: readonly PlanValue[]): Slot[] {
  const slots: Slot[] = [];
  const held: PlanValue[][] = [];
  const sorted = [...temps].sort((a, b) => b.bytes - a.bytes || a.def - b.def);
  for (const v of sorted) {
    let best = -1;
    for (let k = 0; k < slots.length; k++) {
      if ((best < 0 || slots[k]!.bytes < slots[best]!.bytes) && !held[k]!.some((u) => overlaps(u, v))) best = k;
    }
    if (best < 0) {
      best = slots.length;
      slots.push({ id: best, bytes: v.bytes, values: [] });
      held.push([]);
    }
    slots[best]!.values.push(v.node);
    held[best]!.push(v);
  }
  const def = new Map(temps.map((t) => [t.node, t.def]));
  for (const s of slots) s.values.sort((a, b) => def.get(a)! - def.get(b)!);
  return slots;
}

/** In dispatch order: free the slots whose value died, then best fit (or grow the largest free). */
function inOrder(temps: readonly PlanValue[], steps: number): Slot[] {
  const slots: Slot[] = [];
  const free = new Set<number>();
  const busyUntil = new Map<number, number>();
  const byDef = new Map<number, PlanValue[]>();
  for (const v of temps) byDef.set(v.def, [...(byDef.get(v.def) ?? []), v]);
  for (let s = 0; s < steps; s++) {
    for (const [slot, until] of busyUntil) {
      if (until < s) {
        busyUntil.delete(slot);
        free.add(slot);
      }
    }
    for (const v of byDef.get(s) ?? []) {
      let best: Slot | undefined;
      for (const id of free) {
        const c = slots[id]!;
        if (c.bytes >= v.bytes && (!best || c.bytes < best.bytes)) best = c;
      }
      if (!best) {
        // Growing the largest free slot costs less than a new one of the full size.
        for (const id of free) if (!best || slots[id]!.bytes > best.bytes) best = slots[id]!;
        if (best) best.bytes = v.bytes;
      }
      if (!best) {
        best = { id: slots.length, bytes: v.bytes, values: [] };
        slots.push(best);
      }
      free.delete(best.id);
      best.values.push(v.node);
      busyUntil.set(best.id, v.lastUse);
    }
  }
  return slots;
}

/** Checks the plan's invariants; returns what is wrong (empty when sound). Tests and --check use it. */
export function planProblems(plan: MemoryPlan): string[] {
  const problems: string[] = [];
  for (const slot of plan.slots) {
    const vs = slot.values.map((n) => plan.values.get(n)!).sort((a, b) => a.def - b.def);
    for (const v of vs) if (v.bytes > slot.bytes) problems.push(`slot ${slot.id} (${slot.bytes} B) is smaller than node ${v.node} (${v.bytes} B)`);
    for (let k = 1; k < vs.length; k++)
      if (vs[k]!.def <= vs[k - 1]!.lastUse) problems.push(`slot ${slot.id}: node ${vs[k - 1]!.node} [${vs[k - 1]!.def}, ${vs[k - 1]!.lastUse}] overlaps node ${vs[k]!.node} [${vs[k]!.def}, ${vs[k]!.lastUse}]`);
  }
  plan.steps.forEach((st, s) => {
    for (const r of st.reads) {
      const v = plan.values.get(r);
      if (!v) problems.push(`step ${s} reads node ${r}, which no step writes`);
      else if (v.def >= s) problems.push(`step ${s} reads node ${r} before step ${v.def} writes it`);
      else if (v.lastUse < s) problems.push(`step ${s} reads node ${r} after its last use ${v.lastUse}`);
    }
  });
  return problems;
}
