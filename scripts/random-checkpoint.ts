// A checkpoint folder of random weights for any config of a spec, and a batch to go with it: what
// the host-memory measurements in README.md ("Memory") run `kiln loss --grads` and `kiln train`
// on, at sizes nobody has weights for. Tensors are drawn from the spec's initialisers and written
// one at a time (writeSafetensorsStreaming), so making a 4.7 GB checkpoint holds one tensor.
//
//   node bin/run-ts.js scripts/random-checkpoint.ts models/vwlmm.kiln --config tiny \
//     --set text.vocab=32000 --set text.hidden=2048 ... --out /tmp/vw1b [--seed 0] [--seq 64] [--batch-size 1]
//
// Writes DIR/config.json, DIR/model.safetensors and DIR/batch.safetensors (pixel_values,
// input_ids with one image placeholder per row, labels).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { checkOptions } from '../compiler/cli/args.js';
import { loadAndCheck } from '../compiler/cli/spec.js';
import { Output } from '../compiler/cli/output.js';
import { checkpointConfig, constShape } from '../compiler/checkpoint/save.js';
import { configNumber } from '../compiler/cli/data-source.js';
import { initParam, seededRandom } from '../compiler/exec/init.js';
import { writeSafetensors, writeSafetensorsStreaming } from '../runtime/node/safetensors-file.js';
import type { HostTensor } from '../runtime/tensor.js';

const cli = new Command('random-checkpoint.ts')
  .argument('<SPEC>', 'a .kiln file')
  .requiredOption('--out <DIR>', 'where config.json, model.safetensors and batch.safetensors go')
  .option('--config <NAME>', "the config to build (default: the spec file's first)")
  .option('--set <KEY=VALUE>', 'override a config value (repeatable)', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
  .option('--model <NAME>', 'the model to build when the file declares several')
  .option('--stage <NAME>', 'the training stage whose frozen/trainable split applies')
  .option('--seed <S>', 'the initialisers\' seed (default 0)')
  .option('--seq <T>', 'tokens per batch row (default 64)')
  .option('--batch-size <B>', 'batch rows (default 1)')
  .addHelpText('after', '\nExample:\n  $ node bin/run-ts.js scripts/random-checkpoint.ts models/vwlmm.kiln --config tiny --set text.hidden=2048 --out /tmp/vw1b')
  .showSuggestionAfterError()
  .exitOverride((e) => process.exit(e.exitCode === 0 ? 0 : 2))
  .parse();
const values = cli.opts<{ out: string; config?: string; set?: string[]; model?: string; stage?: string; seed?: string; seq?: string; batchSize?: string }>();
const positionals = cli.args;
const out = values.out;
const seed = Number(values.seed ?? 0);
const T = Number(values.seq ?? 64);
const B = Number(values.batchSize ?? 1);
const model = loadAndCheck(positionals[0]!, checkOptions(values), new Output());
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'config.json'), `${JSON.stringify(checkpointConfig(model), null, 2)}\n`);
const rand = seededRandom(seed);
const total = model.graph.params.reduce((a, p) => a + constShape(p).reduce((x, y) => x * y, 1), 0);
const bytes = await writeSafetensorsStreaming(
  join(out, 'model.safetensors'),
  model.graph.params.map((p) => ({ name: p.name, dtype: 'f32' as const, shape: constShape(p), read: () => initParam(p, rand) })),
);
const vocab = configNumber(model, 'text.vocab');
const size = configNumber(model, 'vision.image_size');
const image = configNumber(model, 'image_token');
const ids = new Int32Array(B * T);
const labels = new Int32Array(B * T);
for (let i = 0; i < B * T; i++) {
  ids[i] = i % T === 1 ? image : Math.floor(rand() * vocab);
  labels[i] = i % T === 1 ? -100 : ids[i]!;
}
const pixels = Float32Array.from({ length: B * 3 * size * size }, () => rand() * 2 - 1);
const batch = new Map<string, HostTensor>([
  ['pixel_values', { dtype: 'f32', shape: [B, 3, size, size], data: pixels }],
  ['input_ids', { dtype: 'i32', shape: [B, T], data: ids }],
  ['labels', { dtype: 'i32', shape: [B, T], data: labels }],
]);
writeSafetensors(join(out, 'batch.safetensors'), batch);
process.stdout.write(`${out}: ${total} parameters (${(bytes / 1e9).toFixed(2)} GB of f32), batch [${B}, ${T}]\n`);
