// A model's training checkpoint, compiler side: which tensors go where (the graph's parameters
// into model.safetensors under their checkpoint names, the optimiser state by state name into
// optimizer.safetensors), config.json for the trained dims, the tokenizer's files; and the
// checks a resume makes before any value is restored. Writing and reading the folder itself is
// runtime/node/checkpoint.ts.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CheckedModel } from '../check/index.js';
import type { ParamInfo } from '../ir/graph.js';
import { KilnError, describeFsError } from '../../runtime/errors.js';
import type { HostTensor } from '../../runtime/tensor.js';
import type { TensorSource, TrainingCheckpoint } from '../../runtime/node/checkpoint.js';
import { checkOptimizerState } from '../../runtime/node/checkpoint.js';
import { llavaConfigJson, llavaConfigValues, type LlavaConfigOptions } from './hf-config-write.js';
import { llavaConfigOverrides } from './hf-config.js';

/** Reads one tensor by name (a parameter or optimiser state); called once per tensor, in file order. */
export type ReadTensor = (name: string) => Promise<HostTensor> | HostTensor;

/** A parameter's shape (parameters have constant shapes by construction). */
export const constShape = (p: ParamInfo): number[] =>
  p.type.shape.map((d) => {
    if (typeof d !== 'number') throw new Error(`parameter ${p.name} has a symbolic shape`);
    return d;
  });

/**
 * model.safetensors' tensors: every parameter of the model (the frozen tower too, so the folder
 * alone rebuilds the model), under its checkpoint name (LLaVA-1.5's, plus vm_head.weight). A tied
 * parameter is no parameter (tie_word_embeddings: no lm_head.weight), as transformers saves it.
 */
export function modelTensorSources(params: readonly ParamInfo[], read: ReadTensor): TensorSource[] {
  return params.map((p) => ({ name: p.name, dtype: p.type.dtype, shape: constShape(p), read: () => read(p.name) }));
}

/** optimizer.safetensors' tensors: `names` (the backend's state names) with shapes from `shapeOf`, f32. */
export function stateTensorSources(names: readonly string[], shapeOf: (name: string) => readonly number[], read: ReadTensor): TensorSource[] {
  return names.map((name) => ({ name, dtype: 'f32', shape: [...shapeOf(name)], read: () => read(name) }));
}

/** The AdamW moment `adamw.m:<param>` / `adamw.v:<param>` -> its parameter. */
export function momentParam(stateName: string): string | undefined {
  const m = /^adamw\.[mv]:(.+)$/.exec(stateName);
  return m?.[1];
}

/**
 * config.json for the checkpoint: the model's dims (hf-config-write.ts), on top of the config.json
 * of the folder the run started from (`baseDir`), whose other fields are kept.
 */
export function checkpointConfig(model: CheckedModel, baseDir?: string, opts: Omit<LlavaConfigOptions, 'base'> = {}): Record<string, unknown> {
  let base: Record<string, unknown> | undefined;
  const path = baseDir === undefined ? undefined : join(baseDir, 'config.json');
  if (path !== undefined && existsSync(path)) {
    try {
      const json = JSON.parse(readFileSync(path, 'utf8')) as unknown;
      if (typeof json === 'object' && json !== null && !Array.isArray(json)) base = json as Record<string, unknown>;
    } catch (e) {
      throw new KilnError(`cannot read: ${e instanceof SyntaxError ? e.message : describeFsError(e)}`, { file: path, cause: e });
    }
  }
  const modelType = opts.modelType ?? (base === undefined && /mistral/i.test(model.configName) ? 'llava_mistral' : undefined);
  return llavaConfigJson(llavaConfigValues(model), { ...opts, ...(base ? { base } : {}), ...(modelType ? { modelType } : {}) });
}

/** The files of a tokenizer folder a checkpoint carries (tokenizer.json, and the ones beside it transformers reads). */
export function tokenizerFolderFiles(dir: string): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const name of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model', 'chat_template.jinja']) {
    const p = join(dir, name);
    if (!existsSync(p)) continue;
    try {
      out.set(name, readFileSync(p));
    } catch (e) {
      throw new KilnError(`cannot read: ${describeFsError(e)}`, { file: p, cause: e });
    }
  }
  return out;
}

/**
 * Checks that a training checkpoint belongs to this run's model before anything is restored:
 * config.json's dims equal the model's (the same keys `kiln loss` reads), model.safetensors has
 * every parameter with the model's shape and nothing else, and the optimiser state is exactly
 * `stateNames` with their parameters' shapes. Throws KilnError naming the file and the field or
 * tensor that disagrees.
 */
export function checkTrainingCheckpoint(ckpt: TrainingCheckpoint, model: CheckedModel, stateNames: readonly string[]): void {
  const configPath = join(ckpt.dir, 'config.json');
  const read = llavaConfigOverrides(ckpt.config, configPath);
  const values = llavaConfigValues(model);
  const mine: Record<string, unknown> = {
    ...Object.fromEntries(Object.entries(values.text).map(([k, v]) => [`text.${k}`, v])),
    ...Object.fromEntries(Object.entries(values.vision).map(([k, v]) => [`vision.${k}`, v])),
    projector_hidden: values.projector_hidden,
    pif: values.pif,
  };
  for (const [key, value] of read) {
    if (key in mine && mine[key] !== value) {
      throw new KilnError(`field "${read.fields.get(key)}" is ${JSON.stringify(value)}, but the model being trained has ${key} = ${JSON.stringify(mine[key])} (a checkpoint of another model?)`, { file: configPath });
    }
  }
  const shapes = new Map(model.graph.params.map((p) => [p.name, constShape(p)]));
  const file = ckpt.model.path;
  for (const [name, shape] of shapes) {
    const e = ckpt.model.entries.get(name);
    if (!e) throw new KilnError('missing: the checkpoint has no such parameter', { file, tensor: name });
    if (e.shape.join(',') !== shape.join(',')) throw new KilnError(`shape [${e.shape.join(', ')}] disagrees with the model's [${shape.join(', ')}]`, { file, tensor: name });
  }
  const extra = ckpt.model.names.filter((n) => !shapes.has(n));
  if (extra.length > 0) throw new KilnError(`tensors the model does not have: ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ` (and ${extra.length - 5} more)` : ''}`, { file });
  checkOptimizerState(
    ckpt.optimizer,
    stateNames.map((name) => {
      const p = momentParam(name);
      const shape = p === undefined ? undefined : shapes.get(p);
      if (shape === undefined) throw new KilnError(`optimiser state '${name}' belongs to no parameter of the model`);
      return { name, shape };
    }),
  );
}
