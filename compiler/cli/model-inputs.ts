// Everything a run needs besides the graph: parameter tensors from the checkpoint folders (the
// vision tower from its own folder when given) and the batch's input tensors, validated.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CheckedModel } from '../check/index.js';
import { inputContract } from '../passes/input-contract.js';
import { KilnError } from '../../runtime/errors.js';
import { loadParams, openCheckpointDir, openParams, paramRequests, type LazyParams } from '../checkpoint/load.js';
import type { CheckpointSource } from '../checkpoint/load.js';
import { readSafetensors } from '../../runtime/node/safetensors-file.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { validateBatch } from '../../runtime/validate.js';

export interface InputPaths {
  checkpoint: string;
  visionTower?: string | undefined;
  batch: string;
}

/**
 * The batch file's tensors, checked against the model's input contract (runtime/validate.ts):
 * every backend, and training and generation, feed what this returns. Throws a KilnError naming
 * the file, the tensor and the offending value's row and column.
 */
export function loadBatch(model: CheckedModel, path: string): Map<string, HostTensor> {
  return validateBatch(inputContract(model.graph), readSafetensors(path), { file: path });
}

/**
 * The parameters the model declares, from the checkpoint folders (the tower from its own folder
 * when given). `only`: load just these parameter names (a sub-graph such as kiln words' tower,
 * projector and VM head); the model's other parameters may then be in the folders or not.
 */
export function loadModelParams(model: CheckedModel, paths: Omit<InputPaths, 'batch'>, warn: (message: string) => void = () => {}, only?: ReadonlySet<string>): Map<string, HostTensor> {
  const requested = only ? model.graph.params.filter((p) => only.has(p.name)) : model.graph.params;
  // Which parameters are one tensor is the spec's `tie` (e.g. tie_word_embeddings), not ours.
  return new Map(loadParams(paramRequests(requested), modelSources(model, paths, warn, only), { tied: model.tied, buffers: model.buffers }).tensors);
}

/**
 * loadModelParams without holding the values: the same checks up front (every tensor present,
 * shapes, ties, buffers), then each tensor read from its file when asked (LazyParams), so a
 * WebGPU run uploads a checkpoint one tensor at a time (kiln loss, kiln train).
 */
export function openModelParams(model: CheckedModel, paths: Omit<InputPaths, 'batch'>, warn: (message: string) => void = () => {}): LazyParams {
  return openParams(paramRequests(model.graph.params), modelSources(model, paths, warn), { tied: model.tied, buffers: model.buffers });
}

function modelSources(model: CheckedModel, paths: Omit<InputPaths, 'batch'>, warn: (message: string) => void, only?: ReadonlySet<string>): CheckpointSource[] {
  const graph = model.graph;
  const unused = only ? [...model.unused, ...graph.params.filter((p) => !only.has(p.name)).map((p) => p.name)] : model.unused;
  const sources: CheckpointSource[] = [];
  if (paths.visionTower) {
    const view = openCheckpointDir(paths.visionTower);
    const declared = model.checkpointSources[0];
    if (!declared) throw new KilnError(`--vision-tower given, but model ${model.modelName} declares no 'checkpoint <sub> from "<prefix>"'`, { file: paths.visionTower });
    // transformers 5 saves a CLIPVisionModel without the `vision_model.` prefix; accept both.
    const prefixed = view.names.some((n) => n.startsWith(declared.filePrefix));
    sources.push({ dir: view, prefixFrom: prefixed ? declared.filePrefix : '', prefixTo: declared.ckptPrefix, unused });
  }
  const main = openCheckpointDir(paths.checkpoint);
  const separate = model.checkpointSources[0];
  if (!paths.visionTower && separate && !main.names.some((n) => n.startsWith(separate.ckptPrefix))) {
    // LLaVA releases keep the CLIP tower in its own folder: say which flag supplies it.
    const hint = towerHint(paths.checkpoint);
    throw new KilnError(
      `the model's ${separate.path} parameters (${separate.ckptPrefix}*) are not in this folder; the tower comes from its own Hugging Face CLIP folder: pass it with --vision-tower DIR${hint}`,
      { file: paths.checkpoint },
    );
  }
  sources.push({ dir: main, unused });
  for (const src of sources) if (typeof src.dir !== 'string') for (const w of src.dir.warnings ?? []) warn(w);
  return sources;
}

/** ' (config.json's mm_vision_tower says "...")', when the checkpoint's config names its tower. */
function towerHint(dir: string): string {
  try {
    const json = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { mm_vision_tower?: unknown };
    return typeof json.mm_vision_tower === 'string' ? ` (its config.json's mm_vision_tower says "${json.mm_vision_tower}")` : '';
  } catch {
    return '';
  }
}

/** Parameters and the validated batch, as the model declares them (derived graphs add their own). */
export function loadModelInputs(model: CheckedModel, paths: InputPaths): Map<string, HostTensor> {
  const batch = loadBatch(model, paths.batch);
  return new Map([...loadModelParams(model, paths), ...batch]);
}
