// `kiln export`: the spec as a PyTorch package (model.py, train.py, data.py, README.md), so the same model
// trains beyond one device with torchrun + FSDP2. The checkpoint folders' config.json decide the dims,
// as in `kiln loss`; nothing is loaded from them.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { UsageError } from '../check/index.js';
import type { CheckedModel } from '../check/index.js';
import { checkpointConfig } from '../checkpoint/save.js';
import { renderModelPy, staticFile } from '../export/torch.js';
import { KilnError, describeFsError } from '../../runtime/errors.js';
import { checkOptions, defineCommand, specArg, specOptions, type Args, type OptionValues } from './args.js';
import { checkFolderRoles, checkpointOverrides } from './loss.js';
import type { Output } from './output.js';
import { loadAndCheck } from './spec.js';

const exportOptions = {
  target: { type: 'string', arg: 'torch', help: 'the only target' },
  out: { type: 'string', arg: 'DIR', help: 'the folder to write (created; an existing non-empty folder needs --force)' },
  force: { type: 'boolean', help: 'replace the files of an existing non-empty --out folder' },
  checkpoint: { type: 'string', arg: 'DIR', help: 'Hugging Face folder whose config.json sets the dims (as kiln loss)' },
  'vision-tower': { type: 'string', arg: 'DIR', help: "Hugging Face CLIP folder whose config.json sets the tower's dims" },
  ...specOptions,
} as const;

export const exportCommand = defineCommand({
  summary: 'write the model as a PyTorch package (model.py, train.py for torchrun + FSDP2, data.py, README)',
  usage: 'SPEC --target torch --out DIR [options]',
  description:
    'Writes the model as a PyTorch package: model.py (an nn.Module generated from the spec, its loss terms, load_checkpoint for Hugging Face folders), train.py (the spec\'s stages with AdamW, the schedule and clipping, on torchrun + FSDP2), data.py (Kiln\'s data pipeline for LLaVA JSON + an image folder, in Python), README.md (how to launch on one node and several).',
  args: [specArg],
  options: exportOptions,
  examples: [
    {
      run: 'kiln export models/vwlmm.kiln --config tiny --checkpoint test/golden/llama_b2/llava --vision-tower test/golden/llama_b2/clip --target torch --out out/torch',
      does: "the spec as a PyTorch package, dims from the folders' config.json",
    },
  ],
  run: runExport,
});

/** Files the export writes, by name, in the order written. */
export const EXPORT_FILES = ['model.py', 'train.py', 'data.py', 'README.md'] as const;

/**
 * Refuses an --out that is a file, or a non-empty folder without --force (a user's files are not
 * overwritten by accident), before anything is built.
 */
function checkOutDir(out: string, force: boolean): void {
  if (!existsSync(out)) return;
  if (!statSync(out).isDirectory()) throw new UsageError(`--out ${out}: is a file; give a folder`);
  const entries = readdirSync(out);
  if (entries.length > 0 && !force) throw new UsageError(`--out ${out}: the folder is not empty (${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', ...' : ''}); pass --force to replace the export's files in it`);
}

/** Writes each file through a temporary name and a rename, so no reader sees half a file. */
function writeFiles(out: string, files: ReadonlyMap<string, string>): void {
  try {
    mkdirSync(out, { recursive: true });
    for (const [name, text] of files) {
      const path = join(out, name);
      mkdirSync(dirname(path), { recursive: true });
      const tmp = `${path}.tmp-${process.pid}`;
      writeFileSync(tmp, text);
      renameSync(tmp, path);
    }
  } catch (e) {
    throw new KilnError(`cannot write the export: ${describeFsError(e)}`, { file: out, cause: e });
  }
}

async function runExport(values: OptionValues<typeof exportOptions>, args: Args, out: Output): Promise<number> {
  const spec = args[0]!;
  if (values.target === undefined) throw new UsageError('--target is required (torch)');
  if (values.target !== 'torch') throw new UsageError(`--target ${values.target}: expected torch`);
  if (!values.out) throw new UsageError('--out DIR is required');
  if (values.stage !== undefined) throw new UsageError('--stage: the export carries every stage (train.py --stage NAME picks one)');
  checkOutDir(values.out, values.force === true);

  const overrides = [...checkpointOverrides(values.checkpoint), ...checkpointOverrides(values['vision-tower'], '--vision-tower')];
  if (values.checkpoint) checkFolderRoles(values.checkpoint, values['vision-tower']);
  const opts = checkOptions(values, overrides);
  const model = loadAndCheck(spec, opts, out);
  const stages = new Map<string, CheckedModel>(model.stages.map((s) => [s, loadAndCheck(spec, { ...opts, stage: s }, out)]));
  const config = checkpointConfig(model, values.checkpoint);
  const files = new Map<string, string>([
    ['model.py', renderModelPy(model, stages, config, { spec, sets: values.set ?? [], checkpoint: values.checkpoint, visionTower: values['vision-tower'] })],
    ['train.py', staticFile('train.py')],
    ['data.py', staticFile('data.py')],
    ['README.md', staticFile('README.md')],
  ]);
  if (values.force === true) for (const name of EXPORT_FILES) rmSync(join(values.out, name), { force: true });
  writeFiles(values.out, files);
  const bytes = [...files.values()].reduce((a, t) => a + Buffer.byteLength(t), 0);
  if (values.json) {
    out.stdout(JSON.stringify({ out: values.out, model: model.modelName, config: model.configName, files: Object.fromEntries([...files].map(([n, t]) => [n, Buffer.byteLength(t)])), bytes }));
  } else {
    const lines = [...files].map(([n, t]) => `  ${n.padEnd(10)} ${Buffer.byteLength(t)} bytes, ${t.split('\n').length - 1} lines`);
    out.stdout([`exported ${model.modelName} (config ${model.configName}) for PyTorch to ${values.out}`, ...lines, `see ${join(values.out, 'README.md')} to load a checkpoint and launch training`].join('\n'));
  }
  return 0;
}
