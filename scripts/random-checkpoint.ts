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
import { checkOptions, parse, specOptions } from '../compiler/cli/args.js';
import { loadAndCheck } from '../compiler/cli/spec.js';
import { Output } from '../compiler/cli/output.js';
import { checkpointConfig, constShape } from '../compiler/checkpoint/save.js';
import { configNumber } from '../compiler/cli/data-source.js';
import { initParam, seededRandom } from '../compiler/exec/init.js';
import { writeSafetensors, writeSafetensorsStreaming } from '../runtime/node/safetensors-file.js';
import type { HostTensor } from '../runtime/tensor.js';

const { values, positionals } = parse(process.argv.slice(2), { ...specOptions, out: { type: 'string' }, seed: { type: 'string' }, seq: { type: 'string' }, 'batch-size': { type: 'string' } });
if (positionals.length !== 1 || !values.out) {
  process.stderr.write('usage: random-checkpoint.ts SPEC [--config NAME] [--set k=v]... --out DIR [--seed S] [--seq T] [--batch-size B]\n');
  process.exit(2);
}
const out = values.out;
const seed = Number(values.seed ?? 0);
const T = Number(values.seq ?? 64);
const B = Number(values['batch-size'] ?? 1);
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
