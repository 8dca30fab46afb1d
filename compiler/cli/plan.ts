// `kiln plan`: fuses the model's step, plans its memory and prints what it would hold on the
// device (weights, activations, gradients, optimiser state, peak) and where tensors meet the
// device limits, without allocating anything or touching a GPU.
import { UsageError } from '../check/index.js';
import { DEFAULT_TRAITS } from '../codegen/kernel.js';
import { compileArtefact, type EntrySpec } from '../emit/artefact.js';
import { defaultEntries } from '../emit/entries.js';
import { LOSS_CHUNK_BYTES } from '../passes/loss-heads.js';
import { formatReport, memoryReport, mib } from '../passes/plan-report.js';
import { rulesTable } from '../passes/fusion-rules.js';
import { checkOptions, defineCommand, onePositional, specOptions, type Args, type OptionValues } from './args.js';
import type { Output } from './output.js';
import { loadAndCheck } from './spec.js';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { readArtefact } from '../../runtime/node/artefact-files.js';
import { MANIFEST_FILE, storedElementBytes, type Manifest } from '../../runtime/artefact.js';
import { numel, type DType } from '../../runtime/tensor.js';

export const DEFAULT_BATCH = 1;
export const DEFAULT_SEQ = 2048;

const planOptions = {
  train: { type: 'boolean', help: 'plan a training step (forward + backward; gradients of the trainable parameters of --stage), else a forward pass' },
  dtype: { type: 'string', arg: 'f32|f16', help: 'float tensors stored as f16 (optimiser moments stay f32)' },
  'batch-size': { type: 'string', arg: 'B', help: `the batch symbol B (default ${DEFAULT_BATCH})` },
  seq: { type: 'string', arg: 'T', help: `the sequence symbol T, tokens of input_ids (default ${DEFAULT_SEQ})` },
  'loss-chunk-bytes': {
    type: 'string',
    arg: 'N',
    help: `the LM and VM heads' losses run in row chunks whose logits take at most N bytes (default ${LOSS_CHUNK_BYTES}), so their [rows, vocab] logits and gradients are never held whole`,
  },
  steps: { type: 'boolean', help: 'also list every kernel: its ops, the fusion rule that put each there, and the buffers it reads and writes' },
  rules: { type: 'boolean', help: 'print the fusion rules and exit (no SPEC needed)' },
  ...specOptions,
} as const;

export const planCommand = defineCommand({
  summary: 'print the device memory plan of a step (weights, activations, gradients, peak)',
  usage: '[SPEC | DIR] [options]',
  description: `Prints the device memory plan of one step: weights, activations (intermediates in reused buffers), gradients and AdamW state with --train, and the peak; tensors too large for one storage binding are listed (they are split). Allocates nothing. Given an artefact folder from \`kiln compile\` (DIR, holding its manifest) instead of SPEC: the plan that artefact runs.`,
  args: [{ name: 'SPEC', help: 'a .kiln file, or an artefact folder from kiln compile', required: false }],
  options: planOptions,
  examples: [
    { run: 'kiln plan models/vwlmm.kiln --config vicuna7b --train --dtype f16', does: 'what a 7B training step holds on the device, with f16 storage' },
    { run: 'kiln plan models/vwlmm.kiln --config tiny --train --batch-size 2 --seq 32 --steps', does: 'and every kernel with the fusion rule behind it' },
    { run: 'kiln plan --rules', does: 'the fusion rules' },
  ],
  run: runPlan,
});

/** A flag's positive integer value, or `fallback` when it is absent. */
export function positiveInt(flag: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${flag} ${v}: expected a positive integer`);
  return n;
}

async function runPlan(values: OptionValues<typeof planOptions>, positionals: Args, out: Output): Promise<number> {
  if (values.rules) {
    const rows = rulesTable();
    if (values.json) out.stdout(JSON.stringify(rows.map(([placement, name, producer, consumer, decision, when, why]) => ({ placement, name, producer, consumer, decision, when, why }))));
    else out.stdout(rows.map(([placement, name, producer, consumer, decision, when, why]) => `${placement} ${name}: ${producer} -> ${consumer}: ${decision} when ${when}\n    (${why})`).join('\n'));
    return 0;
  }
  const spec = onePositional(positionals, 'SPEC (a .kiln file)');
  if (existsSync(join(spec, MANIFEST_FILE)) && statSync(spec).isDirectory()) return printArtefactPlan(spec, values.json === true, out);
  if (values.dtype !== undefined && values.dtype !== 'f16' && values.dtype !== 'f32') throw new UsageError(`--dtype ${values.dtype}: expected f32 or f16`);
  const floatBytes = values.dtype === 'f16' ? 2 : 4;
  const bindings = new Map([
    ['B', positiveInt('batch-size', values['batch-size'], DEFAULT_BATCH)],
    ['T', positiveInt('seq', values.seq, DEFAULT_SEQ)],
  ]);
  const model = loadAndCheck(spec, checkOptions(values), out);
  const train = values.train === true;
  if (train && model.graph.totalLoss === null) throw new UsageError(`--train: model ${model.modelName} declares no loss`);
  const chunkBytes = positiveInt('loss-chunk-bytes', values['loss-chunk-bytes'], LOSS_CHUNK_BYTES);
  for (const s of model.graph.symbols) if (!bindings.has(s)) throw new UsageError(`the model's inputs use a symbol ${s} that kiln plan cannot set (only B and T)`);
  // The plan is the one `kiln compile` writes and the runtime runs: the entry is compiled (kernels
  // generated, nothing allocated) and its fused program and buffer plan are reported. --train
  // plans the grads entry (forward + backward); optimiser moments are counted beside it.
  const entry: EntrySpec = train
    ? defaultEntries(model, ['grads'])[0]!
    : {
        name: 'forward',
        graph: model.graph,
        outputs: [
          ...model.graph.outputs,
          ...model.graph.losses.map((l) => ({ name: `loss:${l.name}`, node: l.node })),
          ...(model.graph.totalLoss !== null ? [{ name: 'loss', node: model.graph.totalLoss }] : []),
        ],
      };
  const compiled = compileArtefact([entry], { bindings: new Map([...bindings].filter(([k]) => model.graph.symbols.includes(k))), traits: DEFAULT_TRAITS, floatStorage: floatBytes === 2 ? 'f16' : 'f32', lossChunkBytes: chunkBytes }).entries.get(entry.name)!.compiled;
  const { program, plan } = compiled;
  const graph = program.graph;
  const node = compiled.node;
  const names = new Map<number, string>([...graph.params, ...graph.inputs, ...graph.gradients.map((g) => ({ name: `grad ${g.name}`, node: g.node })), ...graph.outputs, ...graph.losses].map((v) => [v.node, v.name]));
  const describe = (n: number): string => names.get(n) ?? `${graph.nodes[n]!.label ?? graph.nodes[n]!.op} [${node(n).shape.join(', ')}]`;
  const report = memoryReport(program, plan, { train, describe });
  const steps = values.steps
    ? plan.steps.map((st, s) => {
        const g = program.groups[s]!;
        const where = (n: number): string => {
          const v = plan.values.get(n)!;
          return v.kind === 'temp' ? `slot ${plan.slotOf.get(n)}` : v.kind;
        };
        const ops = g.members.filter((m) => m.placement !== 'prologue').map((m) => graph.nodes[m.node]!.op).join('+');
        const members = g.members.map((m) => ({ node: m.node, op: graph.nodes[m.node]!.op, placement: m.placement, rule: m.rule }));
        return { step: s, kernel: ops, members, reads: st.reads.map((n) => ({ node: n, name: describe(n), buffer: where(n) })), writes: st.writes.map((n) => ({ node: n, name: describe(n), buffer: where(n) })) };
      })
    : undefined;
  if (values.json) {
    out.stdout(JSON.stringify({ model: model.modelName, config: model.configName, train, dtype: floatBytes === 2 ? 'f16' : 'f32', bindings: Object.fromEntries(bindings), ...report, ...(steps ? { steps } : {}) }));
    return 0;
  }
  const head = `${model.modelName} (config ${model.configName}${model.stage ? `, stage ${model.stage.name}` : ''}): ${train ? 'training step' : 'forward pass'}, B = ${bindings.get('B')}, T = ${bindings.get('T')}, ${floatBytes === 2 ? 'f16' : 'f32'} storage`;
  const lines = [head, '', ...formatReport(report)];
  if (steps) {
    lines.push('', 'dispatches:');
    for (const st of steps) {
      const fused = st.members.filter((m) => m.placement !== 'anchor').map((m) => `${m.op} ${m.placement === 'prologue' ? 'in' : 'out'} (${m.rule})`);
      lines.push(`  ${String(st.step).padStart(5)}  ${st.kernel}${fused.length ? `  [${fused.join(', ')}]` : ''}`);
      lines.push(`         reads ${st.reads.map((r) => `${r.name} (${r.buffer})`).join(', ')}; writes ${st.writes.map((w) => `${w.name} (${w.buffer})`).join(', ')}`);
    }
    lines.push('', `slots: ${plan.slots.map((s) => `${s.id}: ${mib(s.bytes)}`).join(', ')}`);
  }
  out.stdout(lines.join('\n'));
  return 0;
}

/** Per entry: dispatches, and the buffers the runtime will hold, by kind (from the manifest). */
export function artefactPlan(m: Manifest) {
  const bytes = (ts: readonly { dtype: DType; shape: readonly number[] }[]): number =>
    ts.reduce((a, t) => a + numel(t.shape) * storedElementBytes(t.dtype, m.floatStorage), 0);
  return {
    source: m.source,
    floatStorage: m.floatStorage,
    symbols: Object.fromEntries(m.symbols.map((s) => [s.name, s.value])),
    params: { count: m.params.length, bytes: bytes(m.params) },
    state: { count: m.state.length, bytes: bytes(m.state) },
    entries: Object.entries(m.entries).map(([name, e]) => {
      const of = (kind: string) => {
        const bs = e.buffers.filter((b) => b.kind === kind);
        return { count: bs.length, bytes: bs.reduce((a, b) => a + b.bytes, 0) };
      };
      return {
        name,
        dispatches: e.dispatches.length,
        inPlaceUpdates: e.updates.filter((u) => u.inPlace).length,
        copiedUpdates: e.updates.filter((u) => !u.inPlace).length,
        buffers: { input: of('input'), output: of('output'), temp: of('temp') },
      };
    }),
  };
}

function printArtefactPlan(dir: string, json: boolean, out: Output): number {
  const p = artefactPlan(readArtefact(dir).manifest);
  if (json) {
    out.stdout(JSON.stringify(p));
    return 0;
  }
  const lines = [
    `${dir}: ${Object.entries(p.source).map(([k, v]) => `${k} ${v}`).join(', ')}; ${Object.entries(p.symbols).map(([k, v]) => `${k} = ${v}`).join(', ')}; ${p.floatStorage} storage`,
    `  parameters ${p.params.count} (${mib(p.params.bytes)}), state ${p.state.count} (${mib(p.state.bytes)}), shared by every entry`,
    ...p.entries.map(
      (e) =>
        `  ${e.name.padEnd(10)} ${String(e.dispatches).padStart(4)} dispatches; inputs ${mib(e.buffers.input.bytes)}, outputs ${mib(e.buffers.output.bytes)}, ` +
        `intermediates ${mib(e.buffers.temp.bytes)} in ${e.buffers.temp.count} buffers; updates ${e.inPlaceUpdates} in place, ${e.copiedUpdates} copied`,
    ),
  ];
  out.stdout(lines.join('\n'));
  return 0;
}
