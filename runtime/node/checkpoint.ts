// Training checkpoints on disk (Node only): one folder per save, `checkpoint-<step>/` under the
// run's output folder, as the Hugging Face Trainer names them. Each holds a Hugging Face model
// folder that `kiln loss --checkpoint` and PyTorch load as they are, plus the trainer's state:
//
//   config.json              the model's config (built by the compiler side: compiler/checkpoint/hf-config-write.ts)
//   model.safetensors        the parameters under their checkpoint names (LLaVA-1.5's, plus vm_head.weight)
//   tokenizer.json, ...      whatever files the run hands over (the tokenizer, when it has one)
//   optimizer.safetensors    optimiser state by state name (AdamW's `adamw.m:<param>`, `adamw.v:<param>`)
//   trainer_state.json       step, epoch, data position, seed, schedule, learning rate, log history
//
// The Trainer's own checkpoints keep the optimiser, scheduler and RNG state as PyTorch pickles
// (optimizer.pt, scheduler.pt, rng_state.pth); Kiln keeps the same information in safetensors and
// JSON, which need no pickle reader and can be streamed.
//
// Atomicity: a save is written into a temporary sibling folder (`.checkpoint-<step>.tmp-<pid>-<hex>`),
// every file fsynced, the folder fsynced, then renamed to `checkpoint-<step>` and the parent
// fsynced. A rename is atomic, so a process killed at any moment leaves each `checkpoint-<step>`
// either absent or complete; older checkpoints beyond `keep` are removed only after the new one
// is in place (renamed aside first, so a half-deleted folder never carries a checkpoint's name).
// Temporary folders of processes that no longer run are removed by the next save or lookup.
//
// Memory: tensors are written streaming (the header first, then one tensor at a time as its
// source reads it), and read back one at a time, so no whole-model copy is ever on the host.
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { randomBytes } from 'node:crypto';
import { KilnError, describeFsError } from '../errors.js';
import type { SafetensorsFile } from '../safetensors.js';
import { openSafetensors, writeSafetensorsStreaming, type TensorSource } from './safetensors-file.js';

export type { TensorSource } from './safetensors-file.js';

/** `checkpoint-<step>`: the Hugging Face Trainer's folder name. */
export const CHECKPOINT_PREFIX = 'checkpoint-';
export const TRAINER_STATE_FILE = 'trainer_state.json';
export const MODEL_FILE = 'model.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const CONFIG_FILE = 'config.json';
/** trainer_state.json's `format` and `format_version`: a reader refuses versions it does not know. */
export const TRAINER_STATE_FORMAT = 'kiln.trainer_state';
export const TRAINER_STATE_VERSION = 1;

/** One logged optimiser step (the Trainer's log_history entry, with Kiln's loss terms). */
export interface LogEntry {
  /** the optimiser step this entry logs (1-based, as global_step after the step). */
  readonly step: number;
  /** the total loss, computed before this step's update. */
  readonly loss: number;
  /** the unweighted loss terms by name (`lm`, `vm`). */
  readonly terms: Readonly<Record<string, number>>;
  /** the learning rate this step's update used. */
  readonly learning_rate: number;
  /** the gradients' global L2 norm before clipping (the Trainer's grad_norm), or null when not computed. */
  readonly grad_norm: number | null;
  /** anything else logged (tokens/s, held-out terms). */
  readonly [key: string]: unknown;
}

/**
 * What a run needs to continue exactly where it stopped, besides parameters and moments.
 * Units: steps are optimiser steps (one per `grad_accum` micro-batches); `epoch` is fractional
 * as the Trainer logs it; `data.position` counts the batches of `data.epoch` already consumed.
 */
export interface TrainerState {
  /** optimiser steps taken (the Trainer's global_step); AdamW's step count equals it. */
  readonly global_step: number;
  /** steps planned in all. */
  readonly max_steps: number;
  /** fractional epochs done (global_step / steps per epoch). */
  readonly epoch: number;
  /** where the next batch comes from: the epoch it belongs to and how many of its batches were consumed. */
  readonly data: { readonly epoch: number; readonly position: number; readonly [key: string]: unknown };
  /** the run's seed (data order, initialisation). */
  readonly seed: number;
  /** the learning-rate schedule: base rate, kind, warmup and total steps (runtime/optim/schedule.ts). */
  readonly schedule: { readonly kind: string; readonly base_lr: number; readonly warmup: number; readonly total: number };
  /** the optimiser and its hyperparameters. */
  readonly optimizer: { readonly name: string; readonly [key: string]: unknown };
  /** the learning rate of the next step (schedule step global_step). */
  readonly learning_rate: number;
  /** clip_grad_norm_'s max norm, or null for no clipping. */
  readonly max_grad_norm: number | null;
  readonly log_history: readonly LogEntry[];
  /** other state the trainer keeps (RNG state, options), as JSON. */
  readonly extra?: Readonly<Record<string, unknown>>;
}

/** Everything one save writes. */
export interface CheckpointContents {
  /** config.json, as a JSON value. */
  readonly config: unknown;
  /** the parameters, written to model.safetensors in the order the format lays them out. */
  readonly model: readonly TensorSource[];
  /** optimiser state tensors by state name, written to optimizer.safetensors. */
  readonly optimizer: readonly TensorSource[];
  readonly state: TrainerState;
  /** other files by name (tokenizer.json, tokenizer_config.json): text or bytes. */
  readonly files?: ReadonlyMap<string, string | Uint8Array>;
}

export interface SaveOptions {
  /** how many checkpoints to keep, newest by step (default 3, at least 1). */
  readonly keep?: number;
  /** float storage of model.safetensors (default: each parameter's own dtype); moments stay f32. */
  readonly modelDtype?: 'f32' | 'f16' | 'bf16';
}

export interface SavedCheckpoint {
  readonly dir: string;
  readonly step: number;
  /** bytes written, all files together. */
  readonly bytes: number;
  /** wall time of the save, fsyncs included. */
  readonly seconds: number;
  /** checkpoint folders removed to keep the last `keep`. */
  readonly removed: readonly string[];
}

const STEP_DIR = /^checkpoint-(\d+)$/;
// `.checkpoint-<step>.tmp-<pid>-<hex>` while written, `.checkpoint-<step>.old-<pid>-<hex>` while removed.
const SCRATCH_DIR = /^\.checkpoint-\d+\.(?:tmp|old)-(\d+)-[0-9a-f]+$/;

function fsError(what: string, path: string, e: unknown): KilnError {
  if (e instanceof KilnError) return e;
  return new KilnError(`${what}: ${describeFsError(e)}`, { file: path, cause: e });
}

/** fsync a folder so a rename in it is durable; not every platform can, and the data is already safe. */
function fsyncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    /* best effort */
  }
}

function writeFileSynced(path: string, data: string | Uint8Array): number {
  try {
    const fd = fs.openSync(path, 'w');
    try {
      const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
      for (let done = 0; done < bytes.length; ) done += fs.writeSync(fd, bytes, done, bytes.length - done);
      fs.fsyncSync(fd);
      return bytes.length;
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    throw fsError('cannot write', path, e);
  }
}

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as { code?: string }).code === 'EPERM';
  }
}

/** Removes scratch folders (unfinished saves, unfinished removals) whose process is gone. */
function cleanScratch(root: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return;
  }
  for (const name of names) {
    const m = SCRATCH_DIR.exec(name);
    if (m && !processAlive(Number(m[1]))) fs.rmSync(nodePath.join(root, name), { recursive: true, force: true });
  }
}

/** The `checkpoint-<step>` folders under `root`, oldest first (by step). */
export function listCheckpoints(root: string): { dir: string; step: number }[] {
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT') return [];
    throw fsError('cannot list checkpoints', root, e);
  }
  return names
    .map((name) => ({ name, m: STEP_DIR.exec(name) }))
    .filter((x): x is { name: string; m: RegExpExecArray } => x.m !== null && (fs.statSync(nodePath.join(root, x.name), { throwIfNoEntry: false })?.isDirectory() ?? false))
    .map(({ name, m }) => ({ dir: nodePath.join(root, name), step: Number(m[1]) }))
    .sort((a, b) => a.step - b.step);
}

/**
 * The newest complete checkpoint folder under `root`, or undefined when there is none. Folders
 * only ever get a `checkpoint-<step>` name once complete; one without trainer_state.json (a
 * folder another tool wrote) is passed over. Scratch folders of dead processes are removed.
 */
export function latestCheckpoint(root: string): string | undefined {
  cleanScratch(root);
  const all = listCheckpoints(root);
  for (let i = all.length - 1; i >= 0; i--) {
    const dir = all[i]!.dir;
    if ([TRAINER_STATE_FILE, MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE].every((f) => fs.existsSync(nodePath.join(dir, f)))) return dir;
  }
  return undefined;
}

function renameAside(root: string, dir: string): string {
  const aside = nodePath.join(root, `.${nodePath.basename(dir)}.old-${process.pid}-${randomBytes(4).toString('hex')}`);
  fs.renameSync(dir, aside);
  return aside;
}

/**
 * Writes `checkpoint-<step>` under `root` (created when missing) atomically, then removes the
 * oldest checkpoints beyond `keep`. `step` is `contents.state.global_step`. An existing folder of
 * the same step is replaced (the new one complete before the old one goes). Throws KilnError
 * naming the file on any write failure; the temporary folder is removed then, and the earlier
 * checkpoints are untouched.
 */
export async function saveCheckpoint(root: string, contents: CheckpointContents, opts: SaveOptions = {}): Promise<SavedCheckpoint> {
  const keep = opts.keep ?? 3;
  if (!Number.isSafeInteger(keep) || keep < 1) throw new KilnError(`keep must be a positive integer, got ${keep}`, { file: root });
  const step = contents.state.global_step;
  if (!Number.isSafeInteger(step) || step < 0) throw new KilnError(`global_step must be a non-negative integer, got ${step}`, { file: root });
  const t0 = performance.now();
  try {
    fs.mkdirSync(root, { recursive: true });
  } catch (e) {
    throw fsError('cannot create the output folder', root, e);
  }
  cleanScratch(root);
  const final = nodePath.join(root, `${CHECKPOINT_PREFIX}${step}`);
  const tmp = nodePath.join(root, `.${CHECKPOINT_PREFIX}${step}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  let bytes = 0;
  try {
    fs.mkdirSync(tmp);
    bytes += writeFileSynced(nodePath.join(tmp, CONFIG_FILE), `${JSON.stringify(contents.config, null, 2)}\n`);
    for (const [name, data] of contents.files ?? []) {
      if (name !== nodePath.basename(name) || [CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, TRAINER_STATE_FILE].includes(name)) {
        throw new KilnError(`extra file name ${JSON.stringify(name)} is not a plain file name, or names one of the checkpoint's own files`, { file: final });
      }
      bytes += writeFileSynced(nodePath.join(tmp, name), data);
    }
    const dtypeOpt = opts.modelDtype === undefined ? {} : { dtype: opts.modelDtype };
    bytes += await writeSafetensorsStreaming(nodePath.join(tmp, MODEL_FILE), contents.model, dtypeOpt);
    bytes += await writeSafetensorsStreaming(nodePath.join(tmp, OPTIMIZER_FILE), contents.optimizer, { dtype: 'f32' });
    const state = { format: TRAINER_STATE_FORMAT, format_version: TRAINER_STATE_VERSION, ...contents.state };
    bytes += writeFileSynced(nodePath.join(tmp, TRAINER_STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
    fsyncDir(tmp);
    // Into place. An existing folder of this step is set aside first (a directory rename cannot
    // replace a non-empty one); another process saving into the same folder may do the same at
    // the same moment, so a folder that vanished or reappeared in between is retried, not fatal.
    const replaced: string[] = [];
    for (let attempt = 0; ; attempt++) {
      try {
        if (fs.existsSync(final)) replaced.push(renameAside(root, final));
      } catch (e) {
        if ((e as { code?: string }).code !== 'ENOENT') throw e;
      }
      try {
        fs.renameSync(tmp, final);
        break;
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (attempt >= 3 || (code !== 'ENOTEMPTY' && code !== 'EEXIST')) throw e;
      }
    }
    fsyncDir(root);
    for (const r of replaced) fs.rmSync(r, { recursive: true, force: true });
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw fsError('cannot write the checkpoint', tmp, e);
  }
  // Only now, with the new checkpoint complete, do older ones go.
  const removed: string[] = [];
  const all = listCheckpoints(root).filter((c) => c.dir !== final);
  for (const old of all.slice(0, Math.max(0, all.length - (keep - 1)))) {
    try {
      fs.rmSync(renameAside(root, old.dir), { recursive: true, force: true });
      removed.push(old.dir);
    } catch {
      /* a checkpoint that cannot be removed is kept; the save itself succeeded */
    }
  }
  fsyncDir(root);
  return { dir: final, step, bytes, seconds: (performance.now() - t0) / 1000, removed };
}

/** A checkpoint folder opened for reading: headers parsed, tensors loaded one at a time. */
export interface TrainingCheckpoint {
  readonly dir: string;
  readonly step: number;
  /** config.json's parsed value. */
  readonly config: unknown;
  readonly model: SafetensorsFile;
  readonly optimizer: SafetensorsFile;
  readonly state: TrainerState;
}

function readJson(path: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (e) {
    const missing = (e as { code?: string }).code === 'ENOENT';
    throw new KilnError(missing ? `missing: the checkpoint has no ${what}` : `cannot read: ${describeFsError(e)}`, { file: path, cause: e });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new KilnError(`not valid JSON (${(e as Error).message})`, { file: path, cause: e });
  }
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Parses and validates trainer_state.json's value (errors name `file` and the field). */
export function parseTrainerState(json: unknown, file: string): TrainerState {
  const bad = (field: string, want: string, got: unknown) => new KilnError(`field "${field}" must be ${want}, got ${JSON.stringify(got)}`, { file });
  if (!isObj(json)) throw new KilnError('not a JSON object', { file });
  if (json.format !== TRAINER_STATE_FORMAT) throw bad('format', JSON.stringify(TRAINER_STATE_FORMAT), json.format);
  if (json.format_version !== TRAINER_STATE_VERSION) {
    throw new KilnError(`format_version ${JSON.stringify(json.format_version)} is not one this Kiln reads (${TRAINER_STATE_VERSION})`, { file });
  }
  const count = (obj: Record<string, unknown>, key: string, field = key): number => {
    const v = obj[key];
    if (!Number.isSafeInteger(v) || (v as number) < 0) throw bad(field, 'a non-negative integer', v);
    return v as number;
  };
  const finite = (obj: Record<string, unknown>, key: string, field = key): number => {
    const v = obj[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(field, 'a finite number', v);
    return v;
  };
  count(json, 'global_step');
  count(json, 'max_steps');
  finite(json, 'epoch');
  finite(json, 'seed');
  finite(json, 'learning_rate');
  if (json.max_grad_norm !== null) finite(json, 'max_grad_norm');
  if (!isObj(json.data)) throw bad('data', 'an object', json.data);
  count(json.data, 'epoch', 'data.epoch');
  count(json.data, 'position', 'data.position');
  if (!isObj(json.schedule)) throw bad('schedule', 'an object', json.schedule);
  if (typeof json.schedule.kind !== 'string') throw bad('schedule.kind', 'a string', json.schedule.kind);
  finite(json.schedule, 'base_lr', 'schedule.base_lr');
  count(json.schedule, 'warmup', 'schedule.warmup');
  count(json.schedule, 'total', 'schedule.total');
  if (!isObj(json.optimizer) || typeof json.optimizer.name !== 'string') throw bad('optimizer', 'an object with a name', json.optimizer);
  if (!Array.isArray(json.log_history)) throw bad('log_history', 'an array', json.log_history);
  json.log_history.forEach((e: unknown, i) => {
    if (!isObj(e)) throw bad(`log_history[${i}]`, 'an object', e);
    count(e, 'step', `log_history[${i}].step`);
  });
  if (json.extra !== undefined && !isObj(json.extra)) throw bad('extra', 'an object', json.extra);
  return json as unknown as TrainerState;
}

/**
 * Opens a checkpoint folder written by saveCheckpoint: parses config.json and trainer_state.json
 * and both safetensors headers (a truncated or corrupt file is refused here, naming it), and
 * checks that the folder's step is the state's global_step. Tensor data is read later, one
 * tensor at a time (`model.load(name)`).
 */
export function openTrainingCheckpoint(dir: string): TrainingCheckpoint {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (e) {
    throw fsError('cannot open checkpoint', dir, e);
  }
  if (!st.isDirectory()) throw new KilnError('not a folder (a checkpoint is a checkpoint-<step> folder)', { file: dir });
  const statePath = nodePath.join(dir, TRAINER_STATE_FILE);
  const state = parseTrainerState(readJson(statePath, `${TRAINER_STATE_FILE} (it is a model folder, not a kiln train checkpoint?)`), statePath);
  const config = readJson(nodePath.join(dir, CONFIG_FILE), CONFIG_FILE);
  const m = STEP_DIR.exec(nodePath.basename(dir));
  if (m && Number(m[1]) !== state.global_step) {
    throw new KilnError(`global_step is ${state.global_step} but the folder is named for step ${m[1]}`, { file: statePath });
  }
  const open = (name: string): SafetensorsFile => {
    const path = nodePath.join(dir, name);
    if (!fs.existsSync(path)) throw new KilnError(`missing: the checkpoint has no ${name}`, { file: path });
    return openSafetensors(path);
  };
  return { dir, step: state.global_step, config, model: open(MODEL_FILE), optimizer: open(OPTIMIZER_FILE), state };
}

/**
 * Checks optimiser state against the tensors it belongs to: `expected` lists every state tensor
 * the run needs (name and shape, e.g. `adamw.m:<param>` with the parameter's shape). Throws
 * KilnError naming optimizer.safetensors and the tensor for a missing one, a shape that
 * disagrees, a non-float dtype, or a state tensor the run does not have (a checkpoint of another
 * stage or model).
 */
export function checkOptimizerState(optimizer: SafetensorsFile, expected: readonly { name: string; shape: readonly number[] }[]): void {
  const file = optimizer.path;
  const want = new Set(expected.map((e) => e.name));
  for (const e of expected) {
    const got = optimizer.entries.get(e.name);
    if (!got) throw new KilnError(`missing: the optimiser state has no such tensor (${optimizer.names.length} state tensors in the file)`, { file, tensor: e.name });
    if (got.shape.length !== e.shape.length || got.shape.some((d, i) => d !== e.shape[i])) {
      throw new KilnError(`shape [${got.shape.join(', ')}] disagrees with the model's [${e.shape.join(', ')}]`, { file, tensor: e.name });
    }
    if (got.dtype !== 'F32') throw new KilnError(`dtype ${got.dtype}: optimiser state is stored as F32`, { file, tensor: e.name });
  }
  const extra = optimizer.names.filter((n) => !want.has(n));
  if (extra.length > 0) {
    throw new KilnError(
      `state for tensors this run does not train: ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ` (and ${extra.length - 5} more)` : ''} (a checkpoint of another stage or model?)`,
      { file },
    );
  }
}
