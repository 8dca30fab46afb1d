// `kiln ablate`: the paper's central comparison in small (arXiv 2403.07720, the ablation of the VM
// loss and of pseudo image features). The tiny model is trained from its seeded initialisers on
// builtin:shapes three ways, with the same seeds, steps and data for each:
//   LLaVA      vm_weight 0: the LM loss alone (LLaVA-1.5's objective)
//   VW-LMM     vm_weight 1: LM loss + the visual-word (VM) loss
//   VW-LMM pif vm_weight 1 and pif: the decoder reads softmax(vm_head(v)) @ embed_tokens
// and one table compares them: held-out answer accuracy (mean ± sample sd over seeds), the final
// step's LM and VM terms, the held-out terms, wall time per run, beside the image-blind baseline.
// Each run is `kiln train`'s own code in this process (prepareTraining, the Trainer, the held-out
// evaluation of train-eval.ts), with `npm run demo`'s data recipe; nothing is written to disk.
import { UsageError } from '../check/index.js';
import { KilnError } from '../../runtime/errors.js';
import { Trainer } from '../train/trainer.js';
import { checkOptions, defineCommand, specArg, specOptions, type Args, type OptionValues } from './args.js';
import type { Output } from './output.js';
import { Output as CapturedOutput } from './output.js';
import { loadAndCheck } from './spec.js';
import { evaluateHeldoutData, heldoutData } from './train-eval.js';
import { prepareTraining, trainerOptions, type TrainValues } from './train.js';

/** Optimiser steps per run by default: 9 runs of 500 steps take about 25 minutes on lavapipe (2 cores). */
export const DEFAULT_STEPS = 500;
export const DEFAULT_SEEDS = 3;

/** `npm run demo`'s data recipe (see README): the captions teach reading the picture. */
export const ABLATION_DATA = { data: 'builtin:shapes?stage=mix', template: 'mistral', 'batch-size': '16', lr: '2e-3' } as const;

/** The rows: config values set on top of the spec config and --set. */
export const ABLATION_ROWS: readonly { readonly name: string; readonly sets: readonly string[] }[] = [
  { name: 'LLaVA (vm_weight 0)', sets: ['vm_weight=0', 'pif=false'] },
  { name: 'VW-LMM (vm_weight 1)', sets: ['vm_weight=1', 'pif=false'] },
  { name: 'VW-LMM pif (vm_weight 1)', sets: ['vm_weight=1', 'pif=true'] },
];

const ablateOptions = {
  seeds: { type: 'string', arg: 'N', help: `seeds 0 .. N-1 for every row (default ${DEFAULT_SEEDS})` },
  steps: { type: 'string', arg: 'K', help: `optimiser steps per run (default ${DEFAULT_STEPS})` },
  backend: { type: 'string', arg: 'NAME', help: 'webgpu (default when an adapter exists) or cpu (the reference executor)' },
  ...specOptions,
  config: { ...specOptions.config, help: 'the config to build (default tiny)' },
  set: { ...specOptions.set, help: "override a config value (repeatable); vm_weight and pif are the rows': --set may not give them" },
} as const;

export const ablateCommand = defineCommand({
  summary: 'train the tiny model on builtin:shapes as LLaVA (vm_weight 0), VW-LMM and VW-LMM with pif over N seeds; one table',
  usage: 'SPEC [--config tiny] [--seeds N] [--steps K] [--backend NAME] [--json]',
  description: `Trains the model on builtin:shapes three ways with the same seeds and steps, and prints one table:
  LLaVA (vm_weight 0)        the LM loss alone, LLaVA-1.5's objective
  VW-LMM (vm_weight 1)       LM + visual-word (VM) loss
  VW-LMM pif (vm_weight 1)   with pseudo image features: the decoder reads softmax(vm_head(v)) @ E
Columns: held-out answer accuracy (mean ± sample sd over the seeds), the last step's train LM and
VM terms, the held-out LM and VM terms after the last step (means over seeds), wall time per run
(data, compiling, training and evaluation; mean over seeds); beside the image-blind baseline.
Each run is kiln train with ${ABLATION_DATA.data} --template ${ABLATION_DATA.template}
--batch-size ${ABLATION_DATA['batch-size']} --lr ${ABLATION_DATA.lr} --seed S (npm run demo's recipe), in this process;
no checkpoint is written.`,
  args: [specArg],
  options: ablateOptions,
  examples: [
    { run: 'kiln ablate models/vwlmm.kiln', does: `the three rows over ${DEFAULT_SEEDS} seeds of ${DEFAULT_STEPS} steps` },
    { run: 'kiln ablate models/vwlmm.kiln --seeds 1 --steps 20 --json', does: 'a quick look, as JSON' },
  ],
  run: runAblate,
});

function intFlag(flag: string, v: string | undefined, min: number, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new UsageError(`--${flag} ${v}: expected an integer >= ${min}`);
  return n;
}

/** One run's figures. */
export interface AblationRun {
  readonly seed: number;
  readonly accuracy: number;
  /** the last optimiser step's (unweighted) terms. */
  readonly train: Record<string, number>;
  /** the held-out terms after the last step. */
  readonly heldout: Record<string, number>;
  /** the whole run: reading the data, building the backend (compiling), training, the held-out evaluation. */
  readonly wall_s: number;
  /** the Trainer's loop alone. */
  readonly train_s: number;
}

/** One row over its seeds. */
export interface AblationRow {
  readonly name: string;
  readonly sets: readonly string[];
  readonly accuracy: { readonly mean: number; readonly sd: number | null };
  readonly train: Record<string, number>;
  readonly heldout: Record<string, number>;
  readonly wall_s: number;
  readonly runs: readonly AblationRun[];
}

export interface AblationTable {
  readonly spec: string;
  readonly config: string;
  readonly backend: string;
  readonly adapter: string;
  readonly seeds: number;
  readonly steps: number;
  readonly recipe: Record<string, string>;
  readonly heldout: string;
  readonly answers: number;
  readonly baseline_accuracy: number | null;
  readonly rows: readonly AblationRow[];
}

const mean = (xs: readonly number[]): number => xs.reduce((a, x) => a + x, 0) / xs.length;
/** Sample standard deviation (n - 1); null for one seed. */
export function sampleSd(xs: readonly number[]): number | null {
  if (xs.length < 2) return null;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1));
}
function meanTerms(rs: readonly Record<string, number>[]): Record<string, number> {
  return Object.fromEntries(Object.keys(rs[0] ?? {}).map((k) => [k, mean(rs.map((r) => r[k]!))]));
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
const fmt = (x: number | undefined): string => (x === undefined ? '-' : Math.abs(x) >= 1e-3 || x === 0 ? x.toFixed(4) : x.toExponential(2));

/** The table as text: one line per row, the baseline under it. */
export function ablationText(t: AblationTable): string {
  const cols = ['accuracy', 'train lm', 'train vm', 'held-out lm', 'held-out vm', 'wall s'];
  const nameWidth = Math.max(...t.rows.map((r) => r.name.length), 'image-blind baseline'.length);
  const acc = (r: AblationRow) => `${pct(r.accuracy.mean)} ± ${r.accuracy.sd === null ? '-' : (100 * r.accuracy.sd).toFixed(1)}`;
  const lines = [
    `${t.spec} --config ${t.config}: ${t.steps} steps x ${t.seeds} seed${t.seeds > 1 ? 's' : ''} (0..${t.seeds - 1}) per row on ${t.backend} (${t.adapter}); data ${t.recipe['data']} --template ${t.recipe['template']} --batch-size ${t.recipe['batch-size']} --lr ${t.recipe['lr']}`,
    `held-out: ${t.heldout}, ${t.answers} answers (right when every answer token is the greedy prediction under teacher forcing); accuracy mean ± sample sd over seeds, points`,
    `${''.padEnd(nameWidth)}  ${cols[0]!.padStart(13)}  ${cols.slice(1).map((c) => c.padStart(11)).join('  ')}`,
  ];
  for (const r of t.rows) {
    lines.push(
      `${r.name.padEnd(nameWidth)}  ${acc(r).padStart(13)}  ${[r.train['lm'], r.train['vm'], r.heldout['lm'], r.heldout['vm']].map((x) => fmt(x).padStart(11)).join('  ')}  ${r.wall_s.toFixed(1).padStart(11)}`,
    );
  }
  if (t.baseline_accuracy !== null) lines.push(`${'image-blind baseline'.padEnd(nameWidth)}  ${pct(t.baseline_accuracy).padStart(13)}`);
  return lines.join('\n');
}

async function runAblate(values: OptionValues<typeof ablateOptions>, args: Args, out: Output): Promise<number> {
  const spec = args[0]!;
  const seeds = intFlag('seeds', values.seeds, 1, DEFAULT_SEEDS);
  const steps = intFlag('steps', values.steps, 1, DEFAULT_STEPS);
  if (values.backend !== undefined && values.backend !== 'cpu' && values.backend !== 'webgpu') throw new UsageError(`--backend ${values.backend}: expected webgpu or cpu`);
  const userSets = values.set ?? [];
  for (const s of userSets) {
    const key = s.split('=', 1)[0]!.trim();
    if (key === 'vm_weight' || key === 'pif') throw new UsageError(`--set ${s}: the ablation's rows set ${key} themselves`);
  }
  const config = values.config ?? 'tiny';
  // Every row's model checks before anything trains: a spec without vm_weight or pif fails here.
  for (const row of ABLATION_ROWS) {
    const sets = [...userSets, ...row.sets];
    try {
      loadAndCheck(spec, checkOptions({ ...values, config, set: sets }, []), out);
    } catch (e) {
      if (e instanceof UsageError && /has no value '(vm_weight|pif)'/.test(e.message)) {
        throw new KilnError(`${spec}: kiln ablate needs the config values vm_weight and pif (models/vwlmm.kiln has them): ${e.message}`);
      }
      throw e;
    }
  }

  // Seed by seed, every row within a seed: an interrupted run has already compared the rows on
  // the seeds it finished (the table so far goes to stderr after each seed).
  const runs: AblationRun[][] = ABLATION_ROWS.map(() => []);
  let backendName = '';
  let adapter = '';
  let heldName = '';
  let answers = 0;
  let baseline: number | null = null;
  const tableOf = (done: number): AblationTable => ({
    spec,
    config,
    backend: backendName,
    adapter,
    seeds: done,
    steps,
    recipe: { ...ABLATION_DATA },
    heldout: heldName,
    answers,
    baseline_accuracy: baseline,
    rows: ABLATION_ROWS.map((row, i) => {
      const rs = runs[i]!;
      const accs = rs.map((r) => r.accuracy);
      return {
        name: row.name,
        sets: row.sets,
        accuracy: { mean: mean(accs), sd: sampleSd(accs) },
        train: meanTerms(rs.map((r) => r.train)),
        heldout: meanTerms(rs.map((r) => r.heldout)),
        wall_s: mean(rs.map((r) => r.wall_s)),
        runs: rs,
      };
    }),
  });
  for (let seed = 0; seed < seeds; seed++) {
    for (const [i, row] of ABLATION_ROWS.entries()) {
      const trainValues: TrainValues = {
        ...ABLATION_DATA,
        config,
        set: [...userSets, ...row.sets],
        steps: String(steps),
        seed: String(seed),
        ...(values.model !== undefined ? { model: values.model } : {}),
        ...(values.stage !== undefined ? { stage: values.stage } : {}),
        ...(values.backend !== undefined ? { backend: values.backend } : {}),
      };
      const t0 = performance.now();
      // kiln train's notes (the run's banner, a missing adapter) stay out of the table's output.
      const quiet = new CapturedOutput(true);
      quiet.sources = out.sources;
      const ctx = await prepareTraining(trainValues, spec, quiet);
      try {
        const held = await heldoutData(ctx, quiet);
        if (!held) throw new KilnError(`${ABLATION_DATA.data} gave no held-out split to evaluate`);
        const trainer = new Trainer(ctx.backend, ctx.data, trainerOptions(ctx), []);
        const summary = await trainer.run();
        const result = await evaluateHeldoutData(ctx, held);
        const wall = (performance.now() - t0) / 1000;
        const run: AblationRun = { seed, accuracy: result.accuracy, train: { ...(trainer.last?.terms ?? {}) }, heldout: { ...result.terms }, wall_s: wall, train_s: summary.wall_s };
        runs[i]!.push(run);
        backendName = ctx.backend.name;
        adapter = ctx.backend.adapter;
        heldName = held.name;
        answers = result.total;
        baseline = held.baseline?.accuracy ?? null;
        out.stderr(
          `${row.name}, seed ${seed}: accuracy ${pct(run.accuracy)}, last step lm ${fmt(run.train['lm'])} vm ${fmt(run.train['vm'])}, held-out lm ${fmt(run.heldout['lm'])} vm ${fmt(run.heldout['vm'])}, ${run.wall_s.toFixed(1)} s`,
        );
      } finally {
        ctx.backend.destroy();
      }
    }
    if (seed + 1 < seeds) out.stderr(`after ${seed + 1} of ${seeds} seeds:\n${ablationText(tableOf(seed + 1))}`);
  }
  const table = tableOf(seeds);
  out.stdout(values.json ? JSON.stringify(table) : ablationText(table));
  return 0;
}
