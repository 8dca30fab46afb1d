// `kiln graph`: the model's graph as a picture, modules collapsed unless expanded and the kernels
// fusion made outlined, rendered by Graphviz compiled to WebAssembly (@viz-js/viz): no system
// binary to install, the same output everywhere.
import { writeFileSync } from 'node:fs';
import { UsageError } from '../check/index.js';
import { suggest } from '../check/config.js';
import { differentiate } from '../passes/autodiff.js';
import { fuse } from '../passes/fuse.js';
import { chunkLossHeads, LOSS_CHUNK_BYTES } from '../passes/loss-heads.js';
import { ENTRY_NAMES, defaultEntries } from '../emit/entries.js';
import type { Graph } from '../ir/graph.js';
import { graphRoots, graphToDot, modulePaths } from '../viz/graph-dot.js';
import { checkOptions, defineCommand, specArg, specOptions, type Args, type OptionValues } from './args.js';
import { checkOutputPath } from './output-path.js';
import type { Output } from './output.js';
import { DEFAULT_BATCH, DEFAULT_SEQ, positiveInt } from './plan.js';
import { loadAndCheck } from './spec.js';

const graphOptions = {
  train: { type: 'boolean', help: "the training graph: forward and backward (gradients of --stage's trainable parameters)" },
  entry: { type: 'string', arg: 'NAME', help: `the graph of a compiled entry (${ENTRY_NAMES.join(', ')})` },
  expand: {
    type: 'string',
    multiple: true,
    arg: 'MODULE',
    help: "show MODULE op by op (repeatable; a path such as model.layers.0.self_attn expands the modules around it too; 'all' expands everything)",
  },
  out: { type: 'string', arg: 'FILE', help: 'where to write; the format follows the extension (.svg, .dot)' },
  format: { type: 'string', arg: 'svg|dot', help: 'the output format (default: from --out, else dot on stdout)' },
  'batch-size': { type: 'string', arg: 'B', help: `the symbol B that fusion sees (default ${DEFAULT_BATCH})` },
  seq: { type: 'string', arg: 'T', help: `the symbol T that fusion sees (default ${DEFAULT_SEQ}); the loss heads run in row chunks sized by it, as in kiln compile` },
  ...specOptions,
} as const;

export const graphCommand = defineCommand({
  summary: 'draw the graph (SVG or DOT): modules collapsed or expanded, fused kernels outlined',
  usage: 'SPEC [--train | --entry NAME] [--expand MODULE]... --out FILE [options]',
  description:
    "Draws the model's graph: each top-level module (vision_tower, mm_projector, model, ...) is one box with its op, kernel and parameter counts, unless --expand shows it op by op; ops fused into one kernel are outlined together and labelled with the kernel (k<index> in dispatch order). Backward ops sit in boxes of their own (red), the optimiser's in one (yellow).",
  args: [specArg],
  options: graphOptions,
  examples: [
    { run: 'kiln graph models/vwlmm.kiln --config tiny --out vwlmm.svg', does: 'modules as boxes, fused kernels outlined' },
    { run: 'kiln graph models/vwlmm.kiln --config tiny --expand model.layers.0 --out layer0.svg', does: 'the first decoder layer op by op' },
    { run: 'kiln graph models/vwlmm.kiln --config tiny --entry train_step --format dot > step.dot', does: 'the compiled training step as Graphviz text' },
  ],
  run: runGraph,
});

async function runGraph(values: OptionValues<typeof graphOptions>, args: Args, out: Output): Promise<number> {
  const spec = args[0]!;
  if (values.train && values.entry !== undefined) throw new UsageError('--train and --entry: give one (--entry grads is the training graph as compiled)');
  if (values.entry !== undefined && !(ENTRY_NAMES as readonly string[]).includes(values.entry)) throw new UsageError(`--entry ${values.entry}: no such entry (entries: ${ENTRY_NAMES.join(', ')})`);
  const format = values.format ?? (values.out === undefined ? 'dot' : values.out.endsWith('.dot') || values.out.endsWith('.gv') ? 'dot' : 'svg');
  if (format !== 'svg' && format !== 'dot') throw new UsageError(`--format ${format}: expected svg or dot`);
  if (format === 'svg' && values.out === undefined) throw new UsageError('--out FILE is required for an SVG (or --format dot prints DOT on stdout)');
  const bindings = new Map([
    ['B', positiveInt('batch-size', values['batch-size'], DEFAULT_BATCH)],
    ['T', positiveInt('seq', values.seq, DEFAULT_SEQ)],
  ]);
  if (values.out !== undefined) checkOutputPath('--out', values.out);
  const model = loadAndCheck(spec, checkOptions(values), out);
  let graph: Graph = model.graph;
  let what = 'forward';
  if (values.train) {
    if (graph.totalLoss === null) throw new UsageError(`--train: model ${model.modelName} declares no loss`);
    graph = differentiate(graph);
    what = 'forward + backward';
  } else if (values.entry !== undefined) {
    const e = defaultEntries(model, [values.entry])[0]!;
    // Loss terms and gradients are drawn as their own sinks; the rest of what the entry reads back as outputs.
    const shown = new Set([...e.graph.losses.map((l) => l.node), ...e.graph.gradients.map((g) => g.node), ...(e.graph.totalLoss === null ? [] : [e.graph.totalLoss])]);
    graph = { ...e.graph, outputs: e.outputs.filter((o) => !shown.has(o.node)), ...(e.applyUpdates ? {} : { updates: [] }) };
    what = `entry ${values.entry}`;
  }
  const known = modulePaths(graph);
  for (const e of values.expand ?? []) {
    if (e === 'all' || known.includes(e)) continue;
    throw new UsageError(`--expand ${e}: no module of that path in the graph${suggest(e, known)} (top level: ${known.filter((k) => !k.includes('.')).join(', ')})`);
  }
  // Kernels as `kiln compile` makes them: the loss heads in row chunks, then fusion; each node of
  // the drawn graph is labelled with the first kernel that computes it.
  const chunked = chunkLossHeads(graph, new Map([...bindings].filter(([k]) => graph.symbols.includes(k))), LOSS_CHUNK_BYTES);
  const program = fuse(chunked.graph, graphRoots(graph).map(chunked.map));
  const kernelOf = new Map<number, number>();
  const kernelCount = new Map<number, number>();
  const prologueOf = new Map<number, number>();
  program.groups.forEach((g, k) => {
    for (const m of g.members) {
      const orig = chunked.origin.get(m.node) ?? chunked.partOf.get(m.node);
      if (orig === undefined) continue;
      // A prologue is recomputed in each kernel that reads it: it belongs to one only when nothing computes it on its own.
      if (m.placement === 'prologue') {
        if (!prologueOf.has(orig)) prologueOf.set(orig, k);
        continue;
      }
      if (!kernelOf.has(orig)) kernelOf.set(orig, k);
      kernelCount.set(orig, (kernelCount.get(orig) ?? 0) + 1);
    }
  });
  for (const [n, k] of prologueOf) if (!kernelOf.has(n)) kernelOf.set(n, k);
  const title = `${model.modelName} (${model.configName}), ${what}: ${program.groups.length} kernels`;
  const dot = graphToDot(graph, { expand: values.expand ?? [], kernelOf, kernelCount, title });
  let text = dot;
  if (format === 'svg') {
    const { instance } = await import('@viz-js/viz');
    const viz = await instance();
    const r = viz.render(dot, { format: 'svg' });
    if (r.status !== 'success') throw new Error(`Graphviz could not lay out the graph: ${r.errors.map((e) => e.message).join('; ')}`);
    text = r.output;
  }
  if (values.out === undefined) {
    out.stdout(text.trimEnd());
    return 0;
  }
  writeFileSync(values.out, text);
  if (values.json) out.stdout(JSON.stringify({ out: values.out, format, kernels: program.groups.length, nodes: graph.nodes.length, modules: known }));
  else out.stdout(`wrote ${values.out} (${format}, ${program.groups.length} kernels)`);
  return 0;
}
