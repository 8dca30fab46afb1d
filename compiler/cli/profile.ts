// `kiln profile`: where the time of a step goes, kernel by kernel, timed on the GPU's own clock
// with WebGPU timestamp queries (runtime/webgpu/profile.ts). Runs the entry as `kiln train` runs
// it (the same WebGpuBackend, artefact and store), after warmup runs that compile the kernels.
import { writeFileSync } from 'node:fs';
import { UsageError } from '../check/index.js';
import { adamwHyper } from '../emit/entries.js';
import { initParams } from '../exec/init.js';
import { inputContract } from '../passes/input-contract.js';
import { WebGpuBackend } from '../train/backend.js';
import { getDevice } from '../../runtime/node/device.js';
import { KernelProfiler, type KernelRow } from '../../runtime/webgpu/profile.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { syntheticBatch } from '../../data/synthetic.js';
import { checkOptions, defineCommand, specArg, specOptions, type Args, type OptionValues } from './args.js';
import { loadBatch } from './model-inputs.js';
import { checkOutputPath } from './output-path.js';
import type { Output } from './output.js';
import { positiveInt } from './plan.js';
import { loadAndCheck } from './spec.js';

const ENTRIES = ['train_step', 'loss', 'eval'] as const;
type ProfiledEntry = (typeof ENTRIES)[number];

const profileOptions = {
  entry: { type: 'string', arg: 'NAME', help: 'train_step (default: forward, backward, clipping, AdamW), loss or eval' },
  batch: { type: 'string', arg: 'FILE', help: 'a safetensors batch (as kiln loss takes); default: a made-up valid batch of --batch-size rows of --seq tokens' },
  'batch-size': { type: 'string', arg: 'B', help: 'rows of the made-up batch (default 2)' },
  seq: { type: 'string', arg: 'T', help: 'tokens per row of the made-up batch (default 32)' },
  runs: { type: 'string', arg: 'N', help: 'timed runs (default 5)' },
  warmup: { type: 'string', arg: 'N', help: 'untimed runs first (default 1)' },
  top: { type: 'string', arg: 'K', help: 'rows of the table (default 20; the rest are summed in one line)' },
  trace: { type: 'string', arg: 'FILE', help: 'also write a Chrome trace (JSON; opens in Perfetto or chrome://tracing)' },
  ...specOptions,
  json: { type: 'boolean', help: 'the table and totals as JSON' },
} as const;

export const profileCommand = defineCommand({
  summary: 'time every kernel of a step on WebGPU (timestamp queries): a table, JSON or a Chrome trace',
  usage: 'SPEC [--entry train_step|loss|eval] [--batch FILE | --batch-size B --seq T] [options]',
  description:
    "Times every kernel of one entry on WebGPU with timestamp queries (the GPU's clock, not the host's) and prints a table: kernel, the ops fused into it, calls, total and mean time, and its share of the kernel time. The entry runs as kiln train runs it, on the spec's initial weights; warmup runs first (they compile the kernels and are not timed).",
  args: [specArg],
  options: profileOptions,
  examples: [
    { run: 'kiln profile models/vwlmm.kiln --config tiny', does: "the tiny model's training step, kernel by kernel" },
    { run: 'kiln profile models/vwlmm.kiln --config tiny --entry loss --seq 128 --trace step.json', does: 'the loss entry on longer rows, with a trace for Perfetto' },
  ],
  epilog:
    'Each dispatch runs in its own compute pass so that its start and end can be stamped: on a real GPU that forbids overlap between neighbouring kernels, so the sum can exceed an unprofiled step.',
  run: runProfile,
});

/**
 * The profile table as text: the top `top` kernels, then the rest in one line, then the total.
 * `runs`: the runs of the one profiled entry (the total's mean is per run); null when the rows
 * come from several entries, which then get a column of their own and no mean in the total.
 */
export function formatProfile(rows: readonly KernelRow[], top: number, runs: number | null): string {
  const shown = rows.slice(0, top);
  const rest = rows.slice(top);
  const ms = (x: number) => x.toFixed(3);
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const entries = new Set(rows.map((r) => r.entry)).size > 1;
  const table: string[][] = [[...(entries ? ['entry'] : []), 'kernel', 'ops', 'calls', 'total ms', 'mean ms', 'share']];
  for (const r of shown) table.push([...(entries ? [r.entry] : []), r.kernel.replace(/^kernels\//, ''), r.ops, String(r.calls), ms(r.total_ms), ms(r.mean_ms), pct(r.share)]);
  if (rest.length) {
    const total = rest.reduce((a, r) => a + r.total_ms, 0);
    const calls = rest.reduce((a, r) => a + r.calls, 0);
    table.push([...(entries ? [''] : []), `(${rest.length} more)`, '', String(calls), ms(total), ms(total / calls), pct(rest.reduce((a, r) => a + r.share, 0))]);
  }
  const all = rows.reduce((a, r) => a + r.total_ms, 0);
  const calls = String(rows.reduce((a, r) => a + r.calls, 0));
  table.push([...(entries ? [''] : []), 'total', runs === null ? `${rows.length} kernels` : `${rows.length} kernels, ${runs} runs`, calls, ms(all), runs === null ? '' : ms(all / Math.max(1, runs)), '100.0%']);
  const first = entries ? 1 : 0;
  const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => row[c]!.length)));
  const numeric = new Set([2, 3, 4, 5].map((c) => c + first));
  return table.map((row) => row.map((cell, c) => (numeric.has(c) ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd()).join('\n');
}

/** What `--profile` adds to train's and generate's --json output, under "profile". */
export interface ProfileJson {
  readonly adapter: string;
  /** per entry, in the order first run: its runs and, per run, kernel time and dispatches. */
  readonly entries: { entry: string; runs: number; kernel_ms_per_run: number; dispatches_per_run: number }[];
  /** the summed kernel time of every profiled run. */
  readonly kernel_ms: number;
  /** one row per (entry, kernel), the largest total first; shares sum to 1. */
  readonly kernels: KernelRow[];
}

/**
 * `--profile` on kiln train and kiln generate: what `profiler` timed over the command's runs, as
 * JSON and as text (a line per entry, then kiln profile's table).
 */
export function profileReport(profiler: KernelProfiler, adapter: string, top = 20): { json: ProfileJson; text: string } {
  const rows = profiler.table();
  const names = [...new Set(profiler.calls.map((c) => c.entry))];
  const entries = names.map((entry) => {
    const runs = profiler.runsOf(entry);
    return { entry, runs, kernel_ms_per_run: profiler.meanRunMs(entry), dispatches_per_run: profiler.calls.filter((c) => c.entry === entry).length / runs };
  });
  const json: ProfileJson = { adapter, entries, kernel_ms: rows.reduce((a, r) => a + r.total_ms, 0), kernels: rows };
  const per = entries.map((e) => `${e.entry} ${e.runs} run${e.runs === 1 ? '' : 's'}, ${e.kernel_ms_per_run.toFixed(2)} ms in kernels and ${e.dispatches_per_run} dispatches per run`).join('; ');
  const runs = entries.length === 1 ? entries[0]!.runs : null;
  const text = rows.length === 0 ? 'profile: no kernel ran on the GPU' : `profile on ${adapter} (GPU timestamps): ${per}\n${formatProfile(rows, top, runs)}`;
  return { json, text };
}

async function runProfile(values: OptionValues<typeof profileOptions>, args: Args, out: Output): Promise<number> {
  const spec = args[0]!;
  const entry = (values.entry ?? 'train_step') as ProfiledEntry;
  if (!ENTRIES.includes(entry)) throw new UsageError(`--entry ${values.entry}: expected one of ${ENTRIES.join(', ')}`);
  if (values.batch !== undefined && (values['batch-size'] !== undefined || values.seq !== undefined)) throw new UsageError('--batch FILE sets the batch: --batch-size and --seq are for the made-up one');
  const runs = positiveInt('runs', values.runs, 5);
  const warmup = values.warmup === '0' ? 0 : positiveInt('warmup', values.warmup, 1);
  const top = positiveInt('top', values.top, 20);
  const symbols = new Map([
    ['B', positiveInt('batch-size', values['batch-size'], 2)],
    ['T', positiveInt('seq', values.seq, 32)],
  ]);
  if (values.trace !== undefined) checkOutputPath('--trace', values.trace);
  const model = loadAndCheck(spec, checkOptions(values), out);
  if (model.graph.totalLoss === null) throw new UsageError(`model ${model.modelName} declares no loss: kiln profile runs its train_step, loss or eval entry`);
  const batch: Map<string, HostTensor> = values.batch !== undefined ? loadBatch(model, values.batch) : syntheticBatch(inputContract(model.graph), symbols);
  const kd = await getDevice();
  const hyper = adamwHyper(model);
  const backend = new WebGpuBackend(kd, model, hyper, initParams(model.graph.params, 0));
  let step = 0;
  const once = async (): Promise<void> => {
    // A tiny learning rate: the weights barely move, so every run does the same work.
    if (entry === 'train_step') await backend.step(batch, { lr: 1e-6, step: ++step, maxGradNorm: 1 });
    else if (entry === 'loss') await backend.evaluate(batch);
    else await backend.forward(batch);
  };
  const t0 = performance.now();
  for (let i = 0; i < warmup; i++) await once();
  const warmupMs = performance.now() - t0;
  const profiler = new KernelProfiler();
  backend.profiler = profiler;
  const t1 = performance.now();
  for (let i = 0; i < runs; i++) await once();
  const wallMs = (performance.now() - t1) / runs;
  backend.profiler = undefined;
  const rows = profiler.table();
  const kernelMs = profiler.meanRunMs(entry);
  if (values.trace !== undefined) writeFileSync(values.trace, JSON.stringify(profiler.chromeTrace()));
  const shape = [...batch.values()].find((t) => t.dtype === 'i32')?.shape ?? [];
  if (values.json) {
    out.stdout(JSON.stringify({ entry, adapter: kd.adapterName, batch: shape, runs, warmup_ms: warmupMs, wall_ms_per_run: wallMs, kernel_ms_per_run: kernelMs, dispatches_per_run: profiler.calls.length / runs, kernels: rows }));
    return 0;
  }
  out.stdout(`${model.modelName} (${model.configName}) ${entry} on ${kd.adapterName}, batch [${shape.join(', ')}]: ${profiler.calls.length / runs} dispatches per run`);
  out.stdout(`warmup ${(warmupMs / 1000).toFixed(2)} s (${warmup} run${warmup === 1 ? '' : 's'}: compiling and the first dispatches); per timed run ${wallMs.toFixed(1)} ms wall, ${kernelMs.toFixed(1)} ms in kernels`);
  out.stdout(formatProfile(rows, top, runs));
  if (values.trace !== undefined) out.stdout(`trace: ${values.trace}`);
  return 0;
}
