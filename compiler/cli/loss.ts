// `kiln loss`: loads a Hugging Face / LLaVA checkpoint and a batch, runs the model, prints the
// loss and its terms, and optionally writes the gradient of every trainable parameter.
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { UsageError } from '../check/index.js';
import type { Override } from '../check/index.js';
import { differentiate } from '../passes/autodiff.js';
import { KilnError } from '../../runtime/errors.js';
import { readHfConfig } from '../checkpoint/hf-config.js';
import { loadModelInputs } from './model-inputs.js';
import { runReference } from '../exec/reference.js';
import { runOnWebGpu, webgpuAvailable } from '../exec/webgpu-run.js';
import { fuse } from '../passes/fuse.js';
import { opsWithoutKernels } from '../passes/lower.js';
import type { Graph } from '../ir/graph.js';
import { writeSafetensors } from '../../runtime/node/safetensors-file.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { checkOptions, onePositional, parse, specHelp, specOptions } from './args.js';
import type { Output } from './output.js';
import { loadAndCheck } from './spec.js';

export const lossHelp = `usage: kiln loss SPEC --checkpoint DIR [--vision-tower DIR] --batch FILE [options]

Computes the model's loss terms on one batch, and with --grads their gradients.
  --checkpoint DIR    Hugging Face folder (LLaVA-1.5 layout): config.json + model.safetensors
                      or model.safetensors.index.json with shards
  --vision-tower DIR  Hugging Face CLIP folder (CLIPVisionModel or CLIPModel)
  --batch FILE        safetensors with the model's inputs (pixel_values, input_ids, labels)
  --grads OUT         write d(loss)/d(param) for every trainable parameter (f32 safetensors)
  --backend NAME      webgpu (fused kernels; the default when a WebGPU adapter exists and every
                      op of the model has a kernel) or cpu (the reference executor)
  --dtype f16         webgpu: store float tensors as f16 (math stays f32; half the memory)
${specHelp}`;

const lossOptions = {
  ...specOptions,
  checkpoint: { type: 'string' },
  'vision-tower': { type: 'string' },
  batch: { type: 'string' },
  grads: { type: 'string' },
  backend: { type: 'string' },
  dtype: { type: 'string' },
} as const;

/** config.json values become optional overrides: the spec's config supplies what they lack. */
export function checkpointOverrides(dir: string | undefined): Override[] {
  if (!dir) return [];
  const path = join(dir, 'config.json');
  if (!existsSync(path)) throw new KilnError('no config.json in the checkpoint folder', { file: dir });
  const read = readHfConfig(path);
  return [...read].map(([key, value]) => {
    const field = read.fields.get(key);
    return { key, value, origin: field === undefined ? path : `field "${field}" of ${path}`, optional: true };
  });
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

export async function runLoss(argv: readonly string[], out: Output): Promise<number> {
  const { values, positionals } = parse(argv, lossOptions);
  if (values.help) {
    out.stdout(lossHelp);
    return 0;
  }
  const spec = onePositional(positionals, 'SPEC (a .kiln file)');
  if (!values.checkpoint) throw new UsageError('--checkpoint DIR is required');
  if (!values.batch) throw new UsageError('--batch FILE is required');
  if (values.backend !== undefined && values.backend !== 'cpu' && values.backend !== 'webgpu')
    throw new UsageError(`--backend ${values.backend}: expected webgpu or cpu`);

  const overrides = [...checkpointOverrides(values.checkpoint), ...checkpointOverrides(values['vision-tower'])];
  const model = loadAndCheck(spec, checkOptions(values, overrides), out);
  if (model.graph.totalLoss === null) throw new UsageError(`model ${model.modelName} declares no loss`);
  const graph = values.grads ? differentiate(model.graph) : model.graph;
  const feeds = loadModelInputs(model, { checkpoint: values.checkpoint, visionTower: values['vision-tower'], batch: values.batch });

  const wanted = [graph.totalLoss!, ...graph.losses.map((l) => l.node), ...graph.gradients.map((g) => g.node)];
  let results: Map<number, HostTensor>;
  if (values.dtype !== undefined && values.dtype !== 'f32' && values.dtype !== 'f16') throw new UsageError(`--dtype ${values.dtype}: expected f32 or f16`);
  const backend = values.dtype === 'f16' ? 'webgpu' : await chooseBackend(values.backend, graph, wanted);
  if (values.dtype === 'f16' && values.backend === 'cpu') throw new UsageError('--dtype f16 needs --backend webgpu (the reference computes in f32)');
  try {
    results =
      backend === 'webgpu'
        ? await runOnWebGpu(graph, feeds, wanted, { storage: values.dtype === 'f16' ? 'f16' : 'f32' })
        : runReference(graph, feeds, wanted, { precision: 'f32' });
  } catch (e) {
    if (e instanceof KilnError) throw e;
    throw new KilnError((e as Error).message, { file: values.batch });
  }
  const scalar = (id: number) => results.get(id)!.data[0]!;
  const terms = Object.fromEntries(graph.losses.map((l) => [l.name, scalar(l.node)]));
  if (values.grads) {
    const grads = new Map(graph.gradients.map((g) => [g.name, results.get(g.node)!]));
    mkdirSync(dirname(values.grads), { recursive: true });
    writeSafetensors(values.grads, grads, { dtype: 'f32' });
  }
  if (values.json) {
    out.stdout(JSON.stringify({ loss: scalar(graph.totalLoss!), terms }));
  } else {
    const lines = [`loss ${scalar(graph.totalLoss!).toPrecision(8)}`];
    for (const l of graph.losses) lines.push(`  ${l.name.padEnd(8)} ${scalar(l.node).toPrecision(8)}  (weight ${l.weight})`);
    if (values.grads) lines.push(`gradients of ${graph.gradients.length} trainable parameters written to ${values.grads}`);
    out.stdout(lines.join('\n'));
  }
  return 0;
}
