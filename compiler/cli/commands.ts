// The command table: each command is one file, thin over the library.
import type { Output } from './output.js';
import { runCheck } from './check.js';
import { runLoss } from './loss.js';
import { runPlan } from './plan.js';
import { runOps } from './ops.js';
import { runData } from './data.js';
import { runCompile } from './compile.js';
import { runTrain } from './train.js';
import { runGenerate } from './generate.js';
import { runGraph } from './graph.js';
import { runProfile } from './profile.js';
import { runDoctor } from './doctor.js';
import { runWords } from './words.js';
import { runExport } from './export.js';
import { runAblate } from './ablate.js';

export interface Command {
  summary: string;
  run(argv: readonly string[], out: Output): Promise<number>;
}

export const commands: Record<string, Command> = {
  check: { summary: 'check a spec and print its parameters (names, shapes, counts, trainable/frozen)', run: runCheck },
  ops: { summary: 'list the functions a spec can call', run: runOps },
  loss: { summary: 'compute the loss terms (and gradients) of a checkpoint on a batch', run: runLoss },
  data: { summary: 'show what training sees: templated prompts with scored spans, input_ids, labels; --dump a batch', run: runData },
  compile: { summary: 'write the model\'s entries (loss, grads, train_step) as an artefact: manifest + WGSL kernels', run: runCompile },
  train: { summary: 'train the model (AdamW, the stage\'s schedule, gradient clipping) on --data or a repeated --batch, on WebGPU or the cpu reference', run: runTrain },
  generate: { summary: 'generate tokens after a prompt (greedy or sampled) with a KV cache: prefill once, one decode step per token', run: runGenerate },
  graph: { summary: 'draw the graph (SVG or DOT): modules collapsed or expanded, fused kernels outlined', run: runGraph },
  profile: { summary: 'time every kernel of a step on WebGPU (timestamp queries): a table, JSON or a Chrome trace', run: runProfile },
  doctor: { summary: 'report the WebGPU adapter, its features and limits, the driver (Mesa) version and the shader cache', run: runDoctor },
  words: { summary: 'draw each image patch\'s visual word (the VM head\'s top token) on the image; --json gives the top-k with probabilities', run: runWords },
  export: { summary: 'write the model as a PyTorch package (model.py, train.py for torchrun + FSDP2, README)', run: runExport },
  ablate: { summary: 'train the tiny model on builtin:shapes as LLaVA (vm_weight 0), VW-LMM and VW-LMM with pif over N seeds; one table', run: runAblate },
  plan: { summary: 'print the device memory plan of a step (weights, activations, gradients, peak)', run: runPlan },
};
