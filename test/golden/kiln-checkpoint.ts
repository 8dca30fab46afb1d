// A Kiln-written training checkpoint of a golden case, for the tests and for the PyTorch check
// (load_kiln_checkpoint.py) that proves PyTorch loads what Kiln writes. As a script:
//   node bin/run-ts.js test/golden/kiln-checkpoint.ts OUT_DIR [LLAVA_DIR CLIP_DIR]
// writes OUT_DIR/checkpoint-0 from llama_b2's folders, or the ones given.
// The folder is deterministic (the case's weights, zero moments, fixed state), so its files'
// SHA-256 recorded beside PyTorch's figures say which bytes PyTorch read.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadAndCheck } from '../../compiler/cli/spec.js';
import { Output } from '../../compiler/cli/output.js';
import { checkpointOverrides } from '../../compiler/cli/loss.js';
import { loadModelParams } from '../../compiler/cli/model-inputs.js';
import { checkpointConfig, modelTensorSources, stateTensorSources } from '../../compiler/checkpoint/save.js';
import type { CheckedModel } from '../../compiler/check/index.js';
import { saveCheckpoint, type SavedCheckpoint } from '../../runtime/node/checkpoint.js';
import { momentName } from '../../runtime/optim/schedule.js';
import { numel } from '../../runtime/tensor.js';

export const SPEC = 'models/vwlmm.kiln';

/** A golden case's LLaVA and CLIP folders. */
export interface GoldenFolders {
  readonly llava: string;
  readonly clip: string;
}

export const LLAMA_B2: GoldenFolders = { llava: 'test/golden/llama_b2/llava', clip: 'test/golden/llama_b2/clip' };
export const TIED: GoldenFolders = { llava: 'test/golden/tied_embeddings/llava', clip: 'test/golden/llama_b2/clip' };

/** The golden case's model as `kiln loss --config tiny --checkpoint llava --vision-tower clip` builds it. */
export function goldenModel(f: GoldenFolders): CheckedModel {
  const overrides = [...checkpointOverrides(f.llava), ...checkpointOverrides(f.clip, '--vision-tower')];
  return loadAndCheck(SPEC, { config: 'tiny', overrides }, new Output(true));
}

/** Writes `root/checkpoint-0`: the case's weights (tower included), zero AdamW moments for the trainable ones. */
export async function writeGoldenCheckpoint(f: GoldenFolders, root: string): Promise<SavedCheckpoint> {
  const model = goldenModel(f);
  const params = loadModelParams(model, { checkpoint: f.llava, visionTower: f.clip });
  const trainable = model.graph.params.filter((p) => p.trainable);
  const shapeOf = new Map(trainable.flatMap((p) => (['m', 'v'] as const).map((w) => [momentName(w, p.name), params.get(p.name)!.shape] as const)));
  return saveCheckpoint(root, {
    config: checkpointConfig(model, f.llava),
    model: modelTensorSources(model.graph.params, (n) => params.get(n)!),
    optimizer: stateTensorSources([...shapeOf.keys()], (n) => shapeOf.get(n)!, (n) => {
      const shape = shapeOf.get(n)!;
      return { dtype: 'f32', shape, data: new Float32Array(numel(shape)) };
    }),
    state: {
      global_step: 0,
      max_steps: 0,
      epoch: 0,
      data: { epoch: 0, position: 0 },
      seed: 0,
      schedule: { kind: 'constant', base_lr: 0, warmup: 0, total: 0 },
      optimizer: { name: 'adamw', beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0 },
      learning_rate: 0,
      max_grad_norm: null,
      log_history: [],
    },
  });
}

export function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

if (process.argv[1]?.endsWith('kiln-checkpoint.ts') && process.argv[2]) {
  const [, , out, llava, clip] = process.argv;
  const saved = await writeGoldenCheckpoint(llava && clip ? { llava, clip } : LLAMA_B2, out!);
  console.log(JSON.stringify({ dir: saved.dir, bytes: saved.bytes, model_sha256: sha256(join(saved.dir, 'model.safetensors')), config_sha256: sha256(join(saved.dir, 'config.json')) }));
}
