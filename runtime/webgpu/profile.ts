// Kernel timing with WebGPU timestamp queries: a profiled run encodes each dispatch in its own
// compute pass whose beginning and end write a timestamp, resolves them into a buffer and reads
// them back with the outputs. Times are the GPU's own clock in nanoseconds, so they measure the
// kernels, not the host's encoding or the queue's latency. The extra pass boundaries cost a
// little on real GPUs (no overlap between neighbouring dispatches, which storage-buffer barriers
// mostly forbid anyway); the profile says so rather than hiding it.
import type { DispatchDecl } from '../artefact.js';
import { KilnError } from '../errors.js';

/** One timed dispatch. */
export interface KernelCall {
  readonly entry: string;
  /** index in the entry's dispatch list. */
  readonly step: number;
  /** the WGSL file: the same file is the same kernel. */
  readonly kernel: string;
  /** the ops fused into it and its output type (`matmul+add f32[2,32,64]`). */
  readonly label: string;
  /** GPU timestamps in ns (same clock across runs). */
  readonly begin: number;
  readonly end: number;
  /** which profiled run of the entry it belongs to (0-based). */
  readonly run: number;
}

/** A row of the profile table: one kernel over every call. */
export interface KernelRow {
  readonly kernel: string;
  readonly ops: string;
  readonly entry: string;
  readonly calls: number;
  /** milliseconds. */
  readonly total_ms: number;
  readonly mean_ms: number;
  /** share of the summed kernel time of the profile, 0..1. */
  readonly share: number;
}

/** Timestamp queries per query set: WebGPU caps a set at 4096. */
export const QUERIES_PER_SET = 4096;

/**
 * Collects the timings of profiled runs (ArtefactProgram.run with `{ profiler }`).
 * Throws a KilnError at the first run when the device lacks `timestamp-query`.
 */
export class KernelProfiler {
  readonly calls: KernelCall[] = [];
  private readonly runs = new Map<string, number>();

  /** Records one run of `entry`: `ns` holds begin and end of each dispatch, in order. */
  record(entry: string, dispatches: readonly DispatchDecl[], ns: BigUint64Array): void {
    const run = this.runs.get(entry) ?? 0;
    this.runs.set(entry, run + 1);
    dispatches.forEach((d, s) => {
      const begin = Number(ns[2 * s]!);
      const end = Number(ns[2 * s + 1]!);
      this.calls.push({ entry, step: s, kernel: d.kernel, label: d.label, begin, end: Math.max(begin, end), run });
    });
  }

  /** Runs recorded for `entry`. */
  runsOf(entry: string): number {
    return this.runs.get(entry) ?? 0;
  }

  /** One row per (entry, kernel), the largest total first. */
  table(): KernelRow[] {
    const rows = new Map<string, { kernel: string; ops: string; entry: string; calls: number; ns: number }>();
    let all = 0;
    for (const c of this.calls) {
      const key = `${c.entry}\u0000${c.kernel}`;
      const r = rows.get(key) ?? { kernel: c.kernel, ops: c.label, entry: c.entry, calls: 0, ns: 0 };
      r.calls++;
      r.ns += c.end - c.begin;
      all += c.end - c.begin;
      rows.set(key, r);
    }
    return [...rows.values()]
      .map((r) => ({ kernel: r.kernel, ops: r.ops, entry: r.entry, calls: r.calls, total_ms: r.ns / 1e6, mean_ms: r.ns / 1e6 / r.calls, share: all > 0 ? r.ns / all : 0 }))
      .sort((a, b) => b.total_ms - a.total_ms || (a.kernel < b.kernel ? -1 : 1));
  }

  /** Kernel time of one run of `entry` in ms, averaged over its runs. */
  meanRunMs(entry: string): number {
    const runs = this.runsOf(entry);
    if (runs === 0) return 0;
    return this.calls.filter((c) => c.entry === entry).reduce((a, c) => a + (c.end - c.begin), 0) / 1e6 / runs;
  }

  /**
   * The calls as a Chrome trace (the JSON object format; opens in Perfetto and chrome://tracing):
   * one complete event per dispatch on the GPU's timeline, one track per entry.
   */
  chromeTrace(): { traceEvents: object[]; displayTimeUnit: 'ms' } {
    const t0 = this.calls.reduce((m, c) => Math.min(m, c.begin), Infinity);
    const tracks = [...new Set(this.calls.map((c) => c.entry))];
    const events: object[] = tracks.map((entry, tid) => ({ name: 'thread_name', ph: 'M', pid: 1, tid, args: { name: entry } }));
    events.push({ name: 'process_name', ph: 'M', pid: 1, tid: 0, args: { name: 'kiln GPU' } });
    for (const c of this.calls) {
      events.push({ name: c.label, cat: c.kernel, ph: 'X', pid: 1, tid: tracks.indexOf(c.entry), ts: (c.begin - t0) / 1e3, dur: (c.end - c.begin) / 1e3, args: { step: c.step, run: c.run } });
    }
    return { traceEvents: events, displayTimeUnit: 'ms' };
  }
}

/** Refuses profiling on a device without timestamp queries. */
export function requireTimestamps(device: GPUDevice, adapterName: string): void {
  if (!device.features.has('timestamp-query')) throw new KilnError(`profiling needs the WebGPU feature 'timestamp-query', which ${adapterName} does not offer`);
}
