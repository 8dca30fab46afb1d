// `kiln loss`: loads a Hugging Face / LLaVA checkpoint and a batch, runs the model, prints the
// loss and its terms, and optionally writes the gradient of every trainable parameter.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../check/index.js';
import type { Override } from '../check/index.js';
import { differentiate } from '../passes/autodiff.js';
import { KilnError } from '../../runtime/errors.js';
import { readHfConfig } from '../checkpoint/hf-config.js';
import { openModelParams } from './model-inputs.js';
import { checkOutputPath } from './output-path.js';
import { inputContract } from '../passes/input-contract.js';
import { validateBatch } from '../../runtime/validate.js';
import { getDevice } from '../../runtime/node/device.js';
import { runReference, traceReference } from '../exec/reference.js';
import { traceOnWebGpu, webgpuAvailable } from '../exec/webgpu-run.js';
import { WebGpuExecutor } from '../exec/webgpu.js';
import { checkFinite } from '../../runtime/nonfinite.js';
import { fuse } from '../passes/fuse.js';
import { opsWithoutKernels } from '../passes/lower.js';
import type { Graph } from '../ir/graph.js';
import { readSafetensors, writeSafetensorsStreaming } from '../../runtime/node/safetensors-file.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { checkOptions, defineCommand, specArg, specOptions, type Args, type OptionValues } from './args.js';
import type { Output } from './output.js';
import { loadAndCheck } from './spec.js';

const lossOptions = {
  checkpoint: { type: 'string', arg: 'DIR', help: 'Hugging Face folder (LLaVA-1.5 layout): config.json + model.safetensors or model.safetensors.index.json with shards' },
  'vision-tower': { type: 'string', arg: 'DIR', help: 'Hugging Face CLIP folder (CLIPVisionModel or CLIPModel)' },
  batch: { type: 'string', arg: 'FILE', help: "safetensors with the model's inputs (pixel_values, input_ids, labels)" },
  grads: { type: 'string', arg: 'OUT', help: 'write d(loss)/d(param) for every trainable parameter (f32 safetensors)' },
  backend: { type: 'string', arg: 'NAME', help: 'webgpu (fused kernels; the default when a WebGPU adapter exists and every op of the model has a kernel) or cpu (the reference executor)' },
  dtype: { type: 'string', arg: 'f32|f16', help: 'webgpu: store float tensors as f16 (math stays f32; half the memory)' },
  ...specOptions,
} as const;

export const lossCommand = defineCommand({
  summary: 'compute the loss terms (and gradients) of a checkpoint on a batch',
  usage: 'SPEC --checkpoint DIR [--vision-tower DIR] --batch FILE [options]',
  description: "Computes the model's loss terms on one batch, and with --grads their gradients.",
  args: [specArg],
  options: lossOptions,
  examples: [
    {
      run: 'kiln loss models/vwlmm.kiln --config tiny --checkpoint test/golden/llama_b2/llava --vision-tower test/golden/llama_b2/clip --batch test/golden/llama_b2/batch.safetensors --json',
      does: 'the LM and VM loss terms of the golden checkpoint on its batch, as JSON',
    },
    {
      run: 'kiln loss models/vwlmm.kiln --config tiny --checkpoint test/golden/llama_b2/llava --vision-tower test/golden/llama_b2/clip --batch test/golden/llama_b2/batch.safetensors --grads out/grads.safetensors',
      does: 'and the gradient of every trainable parameter, into a safetensors file',
    },
  ],
  run: runLoss,
});

/** config.json values become optional overrides: the spec's config supplies what they lack. */
export function checkpointOverrides(dir: string | undefined, flag = '--checkpoint'): Override[] {
  if (!dir) return [];
  if (!existsSync(dir)) throw new KilnError(`${flag} ${dir}: no such folder`);
  if (!statSync(dir).isDirectory()) throw new KilnError(`${flag} ${dir}: not a folder (give the Hugging Face folder that holds config.json)`);
  const path = join(dir, 'config.json');
  if (!existsSync(path)) throw new KilnError(`${flag} ${dir}: no config.json in the folder`);
  const read = readHfConfig(path);
  return [...read].map(([key, value]) => {
    const field = read.fields.get(key);
    return { key, value, origin: field === undefined ? path : `field "${field}" of ${path}`, optional: true, ...(read.needed.has(key) ? { needed: true } : {}) };
  });
}

/** model_type of a folder's config.json, or undefined when there is none to read. */
function modelTypeOf(dir: string | undefined): string | undefined {
  if (!dir) return undefined;
  try {
    const json = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { model_type?: unknown };
    return typeof json.model_type === 'string' ? json.model_type : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The two folders in the roles their config.json files declare: a CLIP folder given as
 * --checkpoint, or a LLaVA one as --vision-tower, is named as such (and as swapped when both
 * are), before the tensors' names make the mistake look like hundreds of missing tensors.
 */
export function checkFolderRoles(checkpoint: string, visionTower: string | undefined): void {
  const isClip = (t: string | undefined) => t === 'clip' || t === 'clip_vision_model';
  const isText = (t: string | undefined) => t !== undefined && !isClip(t);
  const ckpt = modelTypeOf(checkpoint);
  const tower = modelTypeOf(visionTower);
  if (isClip(ckpt) && isText(tower))
    throw new UsageError(`--checkpoint and --vision-tower look swapped: ${checkpoint} is a CLIP folder (model_type "${ckpt}") and ${visionTower} a language model one (model_type "${tower}"); pass --checkpoint ${visionTower} --vision-tower ${checkpoint}`);
  if (isClip(ckpt)) throw new UsageError(`--checkpoint ${checkpoint} is a CLIP folder (model_type "${ckpt}"); give it as --vision-tower, and the LLaVA folder as --checkpoint`);
  if (isText(tower)) throw new UsageError(`--vision-tower ${visionTower} is not a CLIP folder (model_type "${tower}"); it takes a Hugging Face CLIP folder (CLIPVisionModel or CLIPModel)`);
}

/**
 * --backend, or the default: webgpu when an adapter exists and every op the run needs has a
 * kernel (so a build with kernels still missing keeps answering on the cpu), else cpu.
 */
async function chooseBackend(flag: string | undefined, graph: Graph, wanted: readonly number[]): Promise<'cpu' | 'webgpu'> {
  if (flag === 'cpu' || flag === 'webgpu') return flag;
  if (opsWithoutKernels(fuse(graph, wanted)).length > 0) return 'cpu';
  return (await webgpuAvailable()) ? 'webgpu' : 'cpu';
}

/** What computed a run's numbers: printed beside them, since f16 storage and backends differ. */
export interface RunInfo {
  readonly backend: 'cpu' | 'webgpu';
  /** the WebGPU adapter ("vendor architecture description"); the cpu reference names itself. */
  readonly adapter: string;
  /** how float tensors were stored: f16 halves memory and keeps ~3 significant digits. */
  readonly storage: 'f32' | 'f16';
}

export interface EvaluateOptions {
  readonly backend: 'cpu' | 'webgpu';
  readonly storage?: 'f32' | 'f16';
  /** the batch file, for error messages. */
  readonly file?: string;
  /**
   * Values computed with `wanted` but read back only when `read` asks, one at a time (WebGPU:
   * a model's gradients stay on the device until each is written out). Each is checked for
   * NaN and inf as it is read, with the same diagnosis as `wanted`'s.
   */
  readonly later?: readonly number[];
}

/** What evaluateBatch returns: `wanted`'s values, what computed them, and `later`'s on demand. */
export interface Evaluated {
  readonly results: Map<number, HostTensor>;
  readonly info: RunInfo;
  /** One of `later`'s values (throws NonFiniteError, naming where it began, when it is not finite). */
  read(id: number): Promise<HostTensor>;
}

/** Two maps as one (`first` wins), without copying either: a lazy parameter map stays lazy. */
export class JoinedMap<V> implements ReadonlyMap<string, V> {
  constructor(
    private readonly first: ReadonlyMap<string, V>,
    private readonly second: ReadonlyMap<string, V>,
  ) {}
  private names(): Set<string> {
    return new Set([...this.first.keys(), ...this.second.keys()]);
  }
  get size(): number {
    return this.names().size;
  }
  has(k: string): boolean {
    return this.first.has(k) || this.second.has(k);
  }
  get(k: string): V | undefined {
    return this.first.has(k) ? this.first.get(k) : this.second.get(k);
  }
  keys(): MapIterator<string> {
    return this.names().values();
  }
  *entries(): MapIterator<[string, V]> {
    for (const k of this.names()) yield [k, this.get(k)!];
  }
  *values(): MapIterator<V> {
    for (const k of this.names()) yield this.get(k)!;
  }
  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries();
  }
  forEach(f: (value: V, key: string, map: ReadonlyMap<string, V>) => void): void {
    for (const [k, v] of this.entries()) f(v, k, this);
  }
}

/**
 * Evaluates `wanted` of `graph` on one batch: validates the batch against the graph's input
 * contract first (runtime/validate.ts; before any backend sees it, so both backends refuse the
 * same batches with the same message), then runs the reference executor or WebGPU. `params` are
 * the checkpoint tensors by name (a LazyParams is read tensor by tensor, never held whole), `batch`
 * the batch file's tensors by name. Throws KilnError; a loss term, the loss or a gradient among
 * `wanted` that is not finite throws NonFiniteError (runtime/nonfinite.ts) naming where it began,
 * after a diagnostic re-run on the same backend.
 */
export async function evaluateBatch(
  graph: Graph,
  params: ReadonlyMap<string, HostTensor>,
  batch: ReadonlyMap<string, HostTensor>,
  wanted: readonly number[],
  opts: EvaluateOptions,
): Promise<Evaluated> {
  const where = opts.file === undefined ? {} : { file: opts.file };
  const feeds = new JoinedMap(params, validateBatch(inputContract(graph), batch, where));
  const storage = opts.storage ?? 'f32';
  const later = opts.later ?? [];
  const all = [...new Set([...wanted, ...later])];
  let run: { results: Map<number, HostTensor>; info: RunInfo };
  let fetch: (id: number) => Promise<HostTensor>;
  let executor: WebGpuExecutor | undefined;
  try {
    if (opts.backend === 'cpu') {
      const results = runReference(graph, feeds, all, { precision: 'f32' });
      run = { results, info: { backend: 'cpu', adapter: 'host CPU, reference executor', storage } };
      fetch = (id) => Promise.resolve(results.get(id)!);
    } else {
      const kd = await getDevice();
      executor = new WebGpuExecutor(kd, graph, { stepByStep: process.env['KILN_GPU_STEPS'] === '1', storage });
      const started = await executor.start(feeds, all);
      run = { results: await started.read(wanted), info: { backend: 'webgpu', adapter: kd.adapterName, storage } };
      fetch = async (id) => (await started.read([id])).get(id)!;
    }
  } catch (e) {
    executor?.destroy();
    if (e instanceof KilnError) throw e;
    throw new KilnError((e as Error).message, where);
  }
  const gone = () => executor?.destroy();
  try {
    await checkResultsFinite(graph, feeds, wanted, run, storage);
  } catch (e) {
    gone();
    throw e;
  }
  if (later.length === 0) gone();
  let left = new Set(later);
  return {
    ...run,
    read: async (id) => {
      if (!left.has(id)) throw new KilnError(`node ${id} is not among the values to read later (or was read already)`);
      try {
        const value = await fetch(id);
        const one = { results: new Map([...run.results, [id, value]]), info: run.info };
        await checkResultsFinite(graph, feeds, [id], one, storage);
        return value;
      } catch (e) {
        left = new Set();
        gone();
        throw e;
      } finally {
        left.delete(id);
        if (left.size === 0) gone();
      }
    },
  };
}

/**
 * A NaN or inf is never handed on as a number: the first non-finite loss term, loss or gradient
 * among `wanted` throws, naming where it began (the diagnostic re-run happens only now, on the
 * backend that ran). A training loop calls this per step the same way.
 */
async function checkResultsFinite(
  graph: Graph,
  feeds: ReadonlyMap<string, HostTensor>,
  wanted: readonly number[],
  run: { results: Map<number, HostTensor>; info: RunInfo },
  storage: 'f32' | 'f16',
): Promise<void> {
  const asked = new Set(wanted);
  const named = [
    ...graph.losses.map((l) => ({ node: l.node, what: `loss term '${l.name}'` })),
    ...(graph.totalLoss === null ? [] : [{ node: graph.totalLoss, what: 'the loss' }]),
    ...graph.gradients.map((g) => ({ node: g.node, what: `the gradient of parameter '${g.name}'` })),
  ].filter((r) => asked.has(r.node));
  const err = await checkFinite(graph, run.results, named, () =>
    run.info.backend === 'webgpu' ? traceOnWebGpu(graph, feeds, wanted, { storage }) : traceReference(graph, feeds, wanted, 'f32'),
  );
  if (!err) return;
  const value = (id: number): string => (run.results.has(id) ? String(run.results.get(id)!.data[0]) : '?');
  const terms = [...(graph.totalLoss === null ? [] : [`loss ${value(graph.totalLoss)}`]), ...graph.losses.map((l) => `${l.name} ${value(l.node)}`)];
  err.message = `${err.message}\n  (${run.info.backend}: ${terms.join(', ')})`;
  throw err;
}

/** A gradient's (constant) shape, as the file header declares it before any value is read. */
function shapeOf(graph: Graph, node: number): number[] {
  return graph.nodes[node]!.type.shape.map((d) => {
    if (typeof d !== 'number') throw new KilnError(`gradient node ${node} has a symbolic shape`);
    return d;
  });
}

/** Significant digits a stored float carries: f32 has a 24-bit significand, f16 an 11-bit one. */
export function significantDigits(storage: 'f32' | 'f16'): number {
  return Math.ceil((storage === 'f16' ? 11 : 24) * Math.log10(2));
}

async function runLoss(values: OptionValues<typeof lossOptions>, args: Args, out: Output): Promise<number> {
  const spec = args[0]!;
  if (!values.checkpoint) throw new UsageError('--checkpoint DIR is required');
  if (!values.batch) throw new UsageError('--batch FILE is required');
  if (values.backend !== undefined && values.backend !== 'cpu' && values.backend !== 'webgpu')
    throw new UsageError(`--backend ${values.backend}: expected webgpu or cpu`);
  if (values.dtype !== undefined && values.dtype !== 'f32' && values.dtype !== 'f16') throw new UsageError(`--dtype ${values.dtype}: expected f32 or f16`);
  if (values.dtype === 'f16' && values.backend === 'cpu') throw new UsageError('--dtype f16 needs --backend webgpu (the reference computes in f32)');
  if (values.grads) checkOutputPath('--grads', values.grads);
  // WebGPU asked for explicitly: no adapter is exit 3 before anything is read (NoAdapterError).
  if (values.backend === 'webgpu' || values.dtype === 'f16') await getDevice();

  const overrides = [...checkpointOverrides(values.checkpoint), ...checkpointOverrides(values['vision-tower'], '--vision-tower')];
  checkFolderRoles(values.checkpoint, values['vision-tower']);
  const model = loadAndCheck(spec, checkOptions(values, overrides), out);
  if (model.graph.totalLoss === null) throw new UsageError(`model ${model.modelName} declares no loss`);
  const graph = values.grads ? differentiate(model.graph) : model.graph;
  // The batch first: a bad batch is refused before the checkpoint is read or anything runs.
  const batch = readSafetensors(values.batch);
  validateBatch(inputContract(graph), batch, { file: values.batch });
  // Lazily: each tensor is read from the checkpoint when uploaded (or evaluated) and not kept.
  const params = openModelParams(model, { checkpoint: values.checkpoint, visionTower: values['vision-tower'] }, (w) => out.stderr(`warning: ${w}`));

  const wanted = [graph.totalLoss!, ...graph.losses.map((l) => l.node)];
  const gradients = graph.gradients.map((g) => g.node);
  const storage = values.dtype === 'f16' ? 'f16' : 'f32';
  const backend = values.dtype === 'f16' ? 'webgpu' : await chooseBackend(values.backend, graph, [...wanted, ...gradients]);
  const evaluated = await evaluateBatch(graph, params, batch, wanted, { backend, storage, file: values.batch, later: gradients });
  const { results, info } = evaluated;
  // f16 storage rounds every stored value: print only the digits it keeps, not an f32's eight.
  const digits = significantDigits(info.storage);
  const scalar = (id: number) => {
    const v = results.get(id)!.data[0]!;
    return Number.isFinite(v) && info.storage === 'f16' ? Number(v.toPrecision(digits)) : v;
  };
  const terms = Object.fromEntries(graph.losses.map((l) => [l.name, scalar(l.node)]));
  if (values.grads) {
    // One gradient at a time from the device into the file (written atomically): the host never
    // holds the model's gradients, and a NaN in one stops the write before the file replaces any.
    await writeSafetensorsStreaming(
      values.grads,
      graph.gradients.map((g) => ({ name: g.name, dtype: 'f32' as const, shape: shapeOf(graph, g.node), read: () => evaluated.read(g.node) })),
      { dtype: 'f32', atomic: true },
    );
  }
  if (values.json) {
    out.stdout(JSON.stringify({ loss: scalar(graph.totalLoss!), terms, backend: info.backend, adapter: info.adapter, storage: info.storage, significant_digits: digits }));
  } else {
    const fmt = (v: number) => v.toPrecision(digits);
    const lines = [`loss ${fmt(scalar(graph.totalLoss!))}`];
    for (const l of graph.losses) lines.push(`  ${l.name.padEnd(8)} ${fmt(scalar(l.node))}  (weight ${l.weight})`);
    lines.push(`backend ${info.backend} (${info.adapter}), ${info.storage} storage${info.storage === 'f16' ? `: ${digits} significant digits` : ''}`);
    if (values.grads) lines.push(`gradients of ${graph.gradients.length} trainable parameters written to ${values.grads}`);
    out.stdout(lines.join('\n'));
  }
  return 0;
}
