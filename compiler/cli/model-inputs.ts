// Everything a run needs besides the graph: parameter tensors from the checkpoint folders (the
// vision tower from its own folder when given) and the batch's input tensors, validated.
import type { CheckedModel } from '../check/index.js';
import { shapeToString } from '../ir/dims.js';
import { KilnError } from '../../runtime/errors.js';
import { loadParams, openCheckpointDir, paramRequests, tiedEmbeddingAliases } from '../checkpoint/load.js';
import type { CheckpointSource } from '../checkpoint/load.js';
import { readSafetensors } from '../../runtime/node/safetensors-file.js';
import type { HostTensor } from '../../runtime/tensor.js';

export interface InputPaths {
  checkpoint: string;
  visionTower?: string | undefined;
  batch: string;
}

/** Parameters and the batch's inputs, as the model declares them (derived graphs add their own). */
export function loadModelInputs(model: CheckedModel, paths: InputPaths): Map<string, HostTensor> {
  const graph = model.graph;
  const sources: CheckpointSource[] = [];
  if (paths.visionTower) {
    const view = openCheckpointDir(paths.visionTower);
    const declared = model.checkpointSources[0];
    if (!declared) throw new KilnError(`--vision-tower given, but model ${model.modelName} declares no 'checkpoint <sub> from "<prefix>"'`, { file: paths.visionTower });
    // transformers 5 saves a CLIPVisionModel without the `vision_model.` prefix; accept both.
    const prefixed = view.names.some((n) => n.startsWith(declared.filePrefix));
    sources.push({ dir: view, prefixFrom: prefixed ? declared.filePrefix : '', prefixTo: declared.ckptPrefix, unused: model.unused });
  }
  sources.push({ dir: openCheckpointDir(paths.checkpoint), unused: model.unused });
  const tied = model.config.entries.get('text');
  const tie = tied?.kind === 'record' && tied.record.entries.get('tie_word_embeddings');
  const aliases = tie && tie.kind === 'done' && tie.value.kind === 'bool' && tie.value.value ? tiedEmbeddingAliases : [];
  const { tensors } = loadParams(paramRequests(graph.params), sources, { aliases });

  const feeds = new Map<string, HostTensor>(tensors);
  const batch = readSafetensors(paths.batch);
  for (const input of graph.inputs) {
    const t = batch.get(input.name);
    const declared = graph.nodes[input.node]!.type;
    if (!t) throw new KilnError(`missing input tensor (the batch has ${[...batch.keys()].join(', ') || 'nothing'})`, { file: paths.batch, tensor: input.name });
    if (t.shape.length !== declared.shape.length) {
      throw new KilnError(`expected ${declared.dtype}${shapeToString(declared.shape)}, got ${t.dtype}[${t.shape.join(', ')}]`, { file: paths.batch, tensor: input.name });
    }
    // Half-precision pixels widen losslessly; anything else must match the declared dtype.
    const widened = declared.dtype === 'f32' && (t.dtype === 'f16' || t.dtype === 'bf16') ? { ...t, dtype: 'f32' as const } : t;
    if (widened.dtype !== declared.dtype) throw new KilnError(`expected dtype ${declared.dtype}, got ${t.dtype}`, { file: paths.batch, tensor: input.name });
    feeds.set(input.name, widened);
  }
  const extra = [...batch.keys()].filter((k) => !graph.inputs.some((i) => i.name === k));
  if (extra.length > 0) throw new KilnError(`unexpected tensors ${extra.join(', ')}; the model's inputs are ${graph.inputs.map((i) => i.name).join(', ')}`, { file: paths.batch });
  return feeds;
}
