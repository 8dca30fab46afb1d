// `npm run bench [-- --json] [-- --only matmul] [-- --configs tiny]`: Kiln's performance numbers, one section each.
// With --json, stdout carries exactly one JSON object ({adapter, versions, <section>: ...});
// everything else (progress, library chatter) goes to stderr.
import { createRequire } from 'node:module';
import { getDevice, type KilnDevice } from '../runtime/node/device.js';
import { benchMatmul, loadTfjs } from './matmul.js';
import { benchBlock } from './block.js';
import { benchTinyStep } from './tiny-step.js';
import { benchCheckpoint } from './checkpoint.js';
import { benchTrainSpeed, type TrainSpeedCase } from './train-speed.js';
import { benchDecode, measureDevice, type DecodeCase } from './decode.js';

export interface BenchContext {
  kd: KilnDevice;
  /** progress lines, always on stderr */
  log: (msg: string) => void;
  /** `--configs tiny,small`: the VW-LMM configs the train_speed and decode sections run (default both). */
  configs: ReadonlySet<string>;
}

export interface BenchSection {
  /** the key of this section's result in the JSON object */
  name: string;
  run(ctx: BenchContext): Promise<unknown>;
}

// Mixed lengths: batch k's rows are drawn up to caps[k % 4] ids, so every bucket of `kiln train`
// (16, 32, 64, the longest) is visited. small runs fewer steps: each takes seconds on lavapipe.
const TRAIN_CASES: TrainSpeedCase[] = [
  { config: 'tiny', batch: 4, batches: 8, caps: [14, 30, 60, 100], steady: 2 },
  { config: 'small', batch: 2, batches: 4, caps: [14, 30, 60, 100], steady: 1 },
];
const DECODE_CASES: DecodeCase[] = [
  { config: 'tiny', promptText: 8, newTokens: 64 },
  { config: 'small', promptText: 8, newTokens: 32 },
];

const sections: BenchSection[] = [
  { name: 'matmul', run: (ctx) => benchMatmul(ctx.kd, { sizes: [512, 1024, 2048], runs: 5, log: ctx.log }) },
  { name: 'block', run: (ctx) => benchBlock(ctx.kd, { runs: 5, log: ctx.log }) },
  { name: 'tiny_step', run: (ctx) => benchTinyStep(ctx.kd, { runs: 5, log: ctx.log }) },
  { name: 'checkpoint', run: (ctx) => benchCheckpoint(ctx.kd, { runs: 5, log: ctx.log }) },
  { name: 'train_speed', run: (ctx) => benchTrainSpeed(ctx.kd, { cases: TRAIN_CASES.filter((c) => ctx.configs.has(c.config)), log: ctx.log }) },
  {
    name: 'decode',
    run: async (ctx) => {
      const device = await measureDevice(ctx.kd);
      ctx.log(`decode: copy ${device.copy_gb_per_s} GB/s over ${device.copy_bytes} B; ${device.dispatch_us} us per trivial dispatch; ${device.roundtrip_ms} ms per submit + 4-byte read-back; ${device.gpu_step_ms} ms per empty gpuStep`);
      return { device, rows: await benchDecode(ctx.kd, { cases: DECODE_CASES.filter((c) => ctx.configs.has(c.config)), log: ctx.log, device }) };
    },
  },
];

function packageVersion(name: string): string {
  try {
    const require = createRequire(import.meta.url);
    return (require(`${name}/package.json`) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

async function main(argv: string[]): Promise<void> {
  const json = argv.includes('--json');
  const onlyAt = argv.indexOf('--only');
  const only = onlyAt >= 0 ? new Set((argv[onlyAt + 1] ?? '').split(',')) : undefined;
  const configsAt = argv.indexOf('--configs');
  const configs = new Set(configsAt >= 0 ? (argv[configsAt + 1] ?? '').split(',') : ['tiny', 'small']);
  const log = (msg: string): void => void process.stderr.write(msg + '\n');
  // Libraries print to stdout (tfjs's Node hints); keep stdout for the JSON object alone.
  const out = process.stdout.write.bind(process.stdout);
  if (json) console.log = console.info = (...args: unknown[]) => log(args.map(String).join(' '));

  const kd = await getDevice();
  log(`adapter: ${kd.adapterName}`);
  const result: Record<string, unknown> = {
    adapter: kd.adapterName,
    versions: { webgpu: packageVersion('webgpu'), tfjs: (await loadTfjs()).version.tfjs ?? packageVersion('@tensorflow/tfjs'), node: process.versions.node },
  };
  for (const s of sections) {
    if (only && !only.has(s.name)) continue;
    log(`-- ${s.name}`);
    result[s.name] = await s.run({ kd, log, configs });
  }
  if (json) out(JSON.stringify(result) + '\n');
  else out(JSON.stringify(result, null, 2) + '\n');
}

main(process.argv.slice(2)).then(
  // dawn.node keeps the process alive: exit explicitly, once stdout has drained into its pipe.
  () => process.stdout.write('', () => process.exit(0)),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
