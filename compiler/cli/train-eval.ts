// Held-out evaluation and loss.png for `kiln train`, as a trainer hook: the held-out split is
// evaluated before the first step, every --eval-every steps and after the last one (both loss
// terms over the whole split, answer accuracy under teacher forcing, per question type beside the
// image-blind baseline for builtin:shapes); at the end loss.png (train and held-out terms over
// steps) is written to --out and a summary table printed, and the final `--json` summary gets
// `heldout`.
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../check/index.js';
import { KilnError } from '../../runtime/errors.js';
import type { BlindBaseline } from '../../data/shapes.js';
import { evalBatchSize, evaluateHeldout, termKinds, type HeldoutResult } from '../train/heldout.js';
import type { HeldoutSummary, StepRecord, TrainHook, TrainSummary } from '../train/trainer.js';
import { drawLossPlot, plotFontsAvailable, type HeldoutPoint, type TrainPoint } from './loss-plot.js';
import { prepareData, type PreparedData } from './data-source.js';
import type { Output } from './output.js';
import type { TrainContext } from './train.js';

/** Rows per held-out forward pass at most (logits read back: rows * L * vocab * 4 bytes). */
const EVAL_ROWS = 32;

/** The held-out data of a run and what its accuracy is read beside. */
export interface HeldoutData {
  readonly prepared: PreparedData;
  /** what it is, for the output ("builtin:shapes?split=heldout", a file). */
  readonly name: string;
  /** the image-blind baseline on these questions (builtin:shapes stage 2), else null. */
  readonly baseline: BlindBaseline | null;
}

/**
 * The held-out split for `ctx`'s data: builtin:shapes with the same options and split=heldout;
 * for other data, `--eval-data` read by the same pipeline with the training tokenizer and
 * template; null when there is none (a LLaVA JSON without --eval-data, or --batch).
 * Training on builtin:shapes' split=heldout or all leaves nothing held out: null, with a note.
 * @throws UsageError when --eval-data is given with builtin data or --batch.
 */
export async function heldoutData(ctx: TrainContext, out: Output): Promise<HeldoutData | null> {
  const v = ctx.values;
  const evalData = v['eval-data'];
  if (!ctx.prepared) {
    if (evalData !== undefined) throw new UsageError('--eval-data needs --data (with --batch FILE there is no tokenizer or template to read it with)');
    return null;
  }
  const train = ctx.prepared;
  if (train.builtin) {
    if (evalData !== undefined) throw new UsageError('--eval-data does not apply to builtin:shapes: its held-out split is evaluated (split=heldout)');
    if (train.builtin.split !== 'train') {
      out.stderr(`note: --data ${v.data} trains on split=${train.builtin.split}, which holds the held-out pictures, so there is no held-out evaluation (split=train, the default, keeps them out)`);
      return null;
    }
    const [name, query = ''] = v.data!.split('?', 2) as [string, string?];
    const params = new URLSearchParams(query);
    params.set('split', 'heldout');
    // Accuracy and its baseline are about the questions: a mix is evaluated on its questions.
    if (params.get('stage') === 'mix') params.set('stage', '2');
    const data = `${name}?${params.toString()}`;
    const prepared = await prepareData(ctx.model, { data, maxLength: maxLength(ctx), onBadImage: 'fail', imagePlacement: 'front', reuse: train });
    return { prepared, name: data, baseline: prepared.builtin!.stage === 2 ? prepared.builtin!.baseline : null };
  }
  if (evalData === undefined) return null;
  const prepared = await prepareData(ctx.model, { data: evalData, maxLength: maxLength(ctx), onBadImage: 'fail', imagePlacement: 'front', reuse: train });
  if (prepared.samples.length === 0) throw new KilnError('no record of the held-out data is usable', { file: evalData });
  return { prepared, name: evalData, baseline: null };
}

/** --max-length as the training data was read with (default 2048, LLaVA-1.5's). */
function maxLength(ctx: TrainContext): number {
  const v = ctx.values['max-length'];
  return v === undefined ? 2048 : Number(v);
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
const fmt = (x: number): string => (Math.abs(x) >= 1e-3 || x === 0 ? x.toFixed(4) : x.toExponential(3));

/** Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees half a PNG. */
function writeAtomically(path: string, bytes: Uint8Array): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, bytes);
  renameSync(tmp, path);
}

/**
 * One held-out evaluation of `ctx`'s model with its parameters as they are now: both loss terms
 * over the whole split and answer accuracy (per question type for builtin:shapes' questions).
 */
export function evaluateHeldoutData(ctx: TrainContext, held: HeldoutData): Promise<HeldoutResult> {
  const p = held.prepared;
  const answerTypes = p.builtin && p.builtin.stage !== 1 ? new Map(p.builtin.all.map((s) => [s.id, s.questions.map((q) => q.type)])) : undefined;
  return evaluateHeldout(
    p.samples,
    {
      batchSize: evalBatchSize(p.samples.length, EVAL_ROWS),
      padId: p.tokenizer.padId,
      imageSize: p.imageSize,
      imageTokens: p.imageTokens,
      termKinds: termKinds(ctx.model.graph),
      ...(answerTypes ? { answerTypes } : {}),
    },
    (batch) => ctx.backend.forward(batch),
  );
}

/**
 * The hook: `every` 0 evaluates only before the first and after the last step. `json`: no
 * table on stdout (the summary line carries `heldout`). Without held-out data it still draws
 * loss.png from the train terms.
 */
export function evaluationHook(ctx: TrainContext, held: HeldoutData | null, out: Output, opts: { every: number; json: boolean }): TrainHook {
  const train: TrainPoint[] = [];
  const evals: { step: number; result: HeldoutResult }[] = [];
  const evaluate = async (step: number): Promise<void> => {
    if (!held) return;
    if (evals.at(-1)?.step === step) return;
    const t0 = performance.now();
    const result = await evaluateHeldoutData(ctx, held);
    evals.push({ step, result });
    if (!opts.json) {
      const terms = Object.entries(result.terms)
        .map(([k, x]) => `${k} ${fmt(x)}`)
        .join('  ');
      out.stderr(`held-out at step ${step}: ${terms}  answer accuracy ${pct(result.accuracy)} (${result.correct}/${result.total})${held.baseline ? `, image-blind baseline ${pct(held.baseline.accuracy)}` : ''}  [${((performance.now() - t0) / 1000).toFixed(1)} s]`);
    }
  };
  return {
    atStart: (trainer) => evaluate(trainer.step),
    afterStep: async (r: StepRecord) => {
      train.push({ step: r.step, terms: r.terms });
      if (opts.every > 0 && r.step % opts.every === 0 && r.step < ctx.totalSteps) await evaluate(r.step);
    },
    atEnd: async (summary: TrainSummary, trainer) => {
      await evaluate(trainer.step);
      const last = evals.at(-1);
      if (held && last) {
        const h: HeldoutSummary = {
          accuracy: last.result.accuracy,
          baseline_accuracy: held.baseline?.accuracy ?? null,
          terms: last.result.terms,
          answers: last.result.total,
          samples: last.result.samples,
          ...(last.result.perType ? { per_type: Object.fromEntries(Object.entries(last.result.perType).map(([k, t]) => [k, { accuracy: t.accuracy, baseline_accuracy: held.baseline?.perType[k]?.accuracy ?? null }])) } : {}),
        };
        summary.heldout = h;
      }
      if (train.length > 0 || evals.length > 0) {
        const heldout: HeldoutPoint[] = evals.map((e) => ({ step: e.step, terms: e.result.terms, accuracy: e.result.accuracy }));
        const png = drawLossPlot({
          train,
          heldout,
          ...(held?.baseline ? { baselineAccuracy: held.baseline.accuracy } : {}),
          caption: `${ctx.model.modelName} (config ${ctx.model.configName}) on ${ctx.values.data ?? ctx.values.batch}, seed ${ctx.seed}, ${ctx.backend.name} (${ctx.backend.adapter})${held ? `; held-out: ${held.name}` : ''}`,
        });
        mkdirSync(ctx.outDir, { recursive: true });
        const path = join(ctx.outDir, 'loss.png');
        writeAtomically(path, png);
        summary['loss_png'] = path;
        if (!opts.json && !plotFontsAvailable()) out.stderr('note: no system font was found, so loss.png has no text (install fonts-dejavu-core)');
      }
      if (!opts.json && held && last) out.stdout(summaryTable(evals, held, ctx.model.graph.losses.map((l) => l.name)));
    },
  };
}

/** The final table: held-out terms and accuracy at each evaluation, then accuracy per question type. */
export function summaryTable(evals: readonly { step: number; result: HeldoutResult }[], held: HeldoutData, terms: readonly string[]): string {
  const last = evals.at(-1)!;
  const lines = [`held-out: ${held.name}, ${last.result.samples} conversations, ${last.result.total} answers (right when every answer token is the greedy prediction under teacher forcing)`];
  lines.push(`  ${'step'.padStart(6)}  ${terms.map((t) => t.padStart(10)).join('  ')}  ${'accuracy'.padStart(9)}`);
  for (const e of evals) lines.push(`  ${String(e.step).padStart(6)}  ${terms.map((t) => fmt(e.result.terms[t] ?? NaN).padStart(10)).join('  ')}  ${pct(e.result.accuracy).padStart(9)}`);
  if (held.baseline) {
    lines.push(`  image-blind baseline (most frequent train answer per question type): ${pct(held.baseline.accuracy)}`);
    const per = last.result.perType ?? {};
    lines.push(`  ${'question'.padEnd(9)} ${'model'.padStart(7)} ${'baseline'.padStart(9)}`);
    for (const [type, b] of Object.entries(held.baseline.perType)) {
      const m = per[type];
      lines.push(`  ${type.padEnd(9)} ${(m ? pct(m.accuracy) : '-').padStart(7)} ${pct(b.accuracy).padStart(9)}`);
    }
    const margin = last.result.accuracy - held.baseline.accuracy;
    lines.push(`  final answer accuracy ${pct(last.result.accuracy)} against the image-blind ${pct(held.baseline.accuracy)} (${margin >= 0 ? '+' : ''}${(100 * margin).toFixed(1)} points)`);
  }
  return lines.join('\n');
}
