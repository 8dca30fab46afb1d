// `kiln compile`: the model's entries as an artefact folder (manifest.json + kernels/*.wgsl)
// that the runtime runs without the compiler. Compiling twice writes the same bytes.
import { rmSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { UsageError } from '../check/index.js';
import { DEFAULT_TRAITS } from '../codegen/kernel.js';
import { artefactFiles, compileArtefact } from '../emit/artefact.js';
import { DEFAULT_ENTRIES, ENTRY_NAMES, GENERATION_ENTRIES, adamwHyper, defaultEntries, generationEntries } from '../emit/entries.js';
import type { CheckedModel } from '../check/index.js';
import { generationGraphs } from '../passes/kv-cache.js';
import { bindingsModule } from '../emit/bindings.js';
import { shapeToString } from '../ir/dims.js';
import type { TensorType } from '../ir/graph.js';
import { writeArtefact } from '../../runtime/node/artefact-files.js';
import { MANIFEST_FILE } from '../../runtime/artefact.js';
import { checkOptions, defineCommand, specArg, specOptions, type Args, type OptionValues } from './args.js';
import type { Output } from './output.js';
import { DEFAULT_BATCH, DEFAULT_SEQ, positiveInt } from './plan.js';
import { loadAndCheck } from './spec.js';

/** New tokens the default KV cache leaves room for after the longest prompt. */
export const DEFAULT_NEW_TOKENS = 64;

/** The typed bindings' file name in the artefact folder. */
export const BINDINGS_FILE = 'model.ts';

const compileOptions = {
  out: { type: 'string', arg: 'DIR', help: 'the artefact folder (its manifest and kernels are replaced)' },
  entries: { type: 'string', arg: 'LIST', help: `comma-separated, from ${[...ENTRY_NAMES, ...GENERATION_ENTRIES].join(', ')} (default: ${DEFAULT_ENTRIES.join(', ')}); prefill and decode go together` },
  rows: { type: 'string', arg: 'R', help: 'prefill/decode: prompts per call (default 1); fewer prompts fill the spare rows' },
  capacity: { type: 'string', arg: 'N', help: `prefill/decode: KV cache positions (default: the prompt's positions with its image + ${DEFAULT_NEW_TOKENS})` },
  dtype: { type: 'string', arg: 'f32|f16', help: 'float storage (f16 needs shader-f16; math stays f32)' },
  'batch-size': { type: 'string', arg: 'B', help: `the batch symbol B (default ${DEFAULT_BATCH})` },
  seq: { type: 'string', arg: 'T', help: `the sequence symbol T, tokens of input_ids (default ${DEFAULT_SEQ}); for prefill, the longest prompt (shorter ones are left-padded)` },
  ts: { type: 'boolean', help: `also write DIR/${BINDINGS_FILE}: typed TypeScript bindings (one method per entry, inputs and outputs with their dtypes and shapes) over kiln/runtime` },
  ...specOptions,
} as const;

export const compileCommand = defineCommand({
  summary: "write the model's entries (loss, grads, train_step; eval, prefill, decode on request) as an artefact: manifest + WGSL kernels",
  usage: 'SPEC --out DIR [options]',
  description:
    "Compiles the model's entries into DIR: manifest.json (format version, required features and limits, symbols, parameters by checkpoint name, optimiser state, and per entry its inputs, outputs, updates, buffers and dispatch list) and one WGSL file per kernel in DIR/kernels/. Kernels are sized for WebGPU's default limits, so any adapter runs them.",
  args: [specArg],
  options: compileOptions,
  examples: [
    { run: 'kiln compile models/vwlmm.kiln --config tiny --batch-size 2 --seq 32 --out out/tiny --ts', does: 'the tiny model\'s default entries with typed TypeScript bindings' },
    { run: 'kiln compile models/vwlmm.kiln --config tiny --entries loss,eval --dtype f16 --out out/tiny-f16', does: 'two entries, with f16 storage' },
    { run: 'kiln compile models/vwlmm.kiln --config tiny --entries train_step,prefill,decode --batch-size 8 --seq 32 --capacity 128 --out out/tiny-gen --ts', does: 'training and generation over one parameter store: prompts of up to 32 ids, a KV cache of 128 positions' },
  ],
  run: runCompile,
});

/**
 * The prefill and decode entries for prompts of up to `T` input ids (left-padded, so shorter
 * prompts use the same entries), `--rows` per call, a KV cache of `--capacity` positions.
 * @throws UsageError when the capacity cannot hold the prompt; KilnError (from the pass) when the
 *   model has no `logits` output or no causal attention to cache.
 */
function generationPart(model: CheckedModel, T: number, values: { rows?: string | undefined; capacity?: string | undefined }) {
  const rows = positiveInt('rows', values.rows, 1);
  const probe = generationGraphs(model.graph, { T, capacity: Number.MAX_SAFE_INTEGER, rows, leftPadded: true });
  const capacity = positiveInt('capacity', values.capacity, probe.promptLength + DEFAULT_NEW_TOKENS);
  if (capacity < probe.promptLength) throw new UsageError(`--capacity ${capacity}: a prompt of ${T} ids takes ${probe.promptLength} cache positions with its image; give at least that`);
  return generationEntries(generationGraphs(model.graph, { T, capacity, rows, leftPadded: true }));
}

const typeText = (t: TensorType): string => `${t.dtype}${shapeToString(t.shape)}`;

async function runCompile(values: OptionValues<typeof compileOptions>, args: Args, out: Output): Promise<number> {
  const spec = args[0]!;
  if (!values.out) throw new UsageError('--out DIR is required');
  if (values.dtype !== undefined && values.dtype !== 'f16' && values.dtype !== 'f32') throw new UsageError(`--dtype ${values.dtype}: expected f32 or f16`);
  const names = values.entries === undefined ? [...DEFAULT_ENTRIES] : values.entries.split(',').map((s) => s.trim());
  const known: readonly string[] = [...ENTRY_NAMES, ...GENERATION_ENTRIES];
  for (const n of names) if (!known.includes(n)) throw new UsageError(`--entries: no entry '${n}' (entries: ${known.join(', ')})`);
  const generating = names.filter((n) => (GENERATION_ENTRIES as readonly string[]).includes(n));
  if (generating.length === 1) throw new UsageError(`--entries: prefill and decode go together (decode reads the KV cache prefill fills); add ${generating[0] === 'prefill' ? 'decode' : 'prefill'}`);
  if (generating.length === 0) for (const flag of ['rows', 'capacity'] as const) if (values[flag] !== undefined) throw new UsageError(`--${flag} applies to the prefill and decode entries, which --entries does not list`);
  const trainingNames = names.filter((n) => !generating.includes(n));
  const bindings = new Map([
    ['B', positiveInt('batch-size', values['batch-size'], DEFAULT_BATCH)],
    ['T', positiveInt('seq', values.seq, DEFAULT_SEQ)],
  ]);
  const model = loadAndCheck(spec, checkOptions(values), out);
  for (const s of model.graph.symbols) if (!bindings.has(s)) throw new UsageError(`the model's inputs use a symbol ${s} that kiln compile cannot set (only B and T)`);
  const specs = trainingNames.length > 0 ? defaultEntries(model, trainingNames) : [];
  const gen = generating.length > 0 ? generationPart(model, bindings.get('T')!, values) : undefined;
  if (gen) specs.push(...gen.specs);
  // The spec as a path from the working directory, '/'-separated: an absolute path would make the
  // same compile in two checkouts differ byte for byte.
  const specFrom = relative(process.cwd(), resolve(spec)).split(sep).join('/');
  const source: Record<string, string> = { spec: specFrom, model: model.modelName, config: model.configName };
  if (model.stage) source['stage'] = model.stage.name;
  const { artefact } = compileArtefact(specs, {
    bindings: new Map([...bindings].filter(([k]) => model.graph.symbols.includes(k))),
    traits: DEFAULT_TRAITS,
    floatStorage: values.dtype === 'f16' ? 'f16' : 'f32',
    source,
    ...(gen ? { kvCaches: gen.kvCaches, generation: gen.generation, perCall: gen.perCall } : {}),
  });
  // A stale kernel from an earlier compile must not sit beside the new manifest.
  rmSync(join(values.out, 'kernels'), { recursive: true, force: true });
  const files = artefactFiles(artefact);
  if (values.ts) {
    // Symbolic dims from the model as written (the generation graphs are concrete).
    const graph = model.graph;
    const symbolic = new Map([...graph.inputs, ...graph.outputs].map((v) => [v.name, typeText(graph.nodes[v.node]!.type)] as const));
    const hyper = trainingNames.includes('train_step') ? adamwHyper(model) : undefined;
    files.set(BINDINGS_FILE, bindingsModule(artefact.manifest, { className: model.modelName, symbolic, ...(hyper ? { adamw: { beta1: hyper.beta1, beta2: hyper.beta2 } } : {}) }));
  }
  writeArtefact(values.out, files);
  const m = artefact.manifest;
  const entries = Object.entries(m.entries).map(([name, e]) => ({ name, dispatches: e.dispatches.length, inputs: e.inputs.map((i) => i.name), outputs: e.outputs.length, updates: e.updates.length }));
  if (values.json) {
    out.stdout(JSON.stringify({ out: values.out, manifest: join(values.out, MANIFEST_FILE), ...(values.ts ? { bindings: join(values.out, BINDINGS_FILE) } : {}), kernels: artefact.kernels.size, params: m.params.length, state: m.state.length, entries }));
    return 0;
  }
  const lines = [
    `${model.modelName} (config ${model.configName}${model.stage ? `, stage ${model.stage.name}` : ''}) -> ${values.out}: ${artefact.kernels.size} kernels, ${m.params.length} parameters, ${m.state.length} state tensors`,
    ...entries.map((e) => `  ${e.name.padEnd(10)} ${e.dispatches} dispatches, inputs ${e.inputs.join(', ')}; ${e.outputs} outputs, ${e.updates} updates`),
  ];
  out.stdout(lines.join('\n'));
  return 0;
}
