// Training checkpoints (runtime/node/checkpoint.ts): what is written reads back bit for bit, the
// last `keep` stay, a process killed at any moment leaves the newest complete checkpoint
// loadable, and broken folders are refused with errors naming the file.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import {
  checkOptimizerState,
  latestCheckpoint,
  listCheckpoints,
  openTrainingCheckpoint,
  saveCheckpoint,
  type TensorSource,
} from '../../../runtime/node/checkpoint.js';
import { KilnError } from '../../../runtime/errors.js';
import { expectKilnError } from '../../helpers/errors.js';
import { fakeContents, fakeState, fakeValues, paramName, type FakeShape } from './fake-run.js';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-ckpt-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const SMALL: FakeShape = { tensors: 3, size: 16 };
const freshRoot = (name: string) => path.join(tmp, name);

/** Bitwise equality without vitest's element-by-element diffing (slow on 64K-value arrays). */
function sameBits(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Every tensor of the checkpoint equals what `step` wrote, bit for bit. */
function expectContentsOf(dir: string, step: number, shape: FakeShape): void {
  const ck = openTrainingCheckpoint(dir);
  expect(ck.step).toBe(step);
  expect(ck.config).toEqual({ model_type: 'llava_llama', step });
  expect(ck.state).toMatchObject(fakeState(step));
  expect(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')).toBe(JSON.stringify({ step }));
  for (let i = 0; i < shape.tensors; i++) {
    expect(sameBits(ck.model.load(paramName(i)).data, fakeValues(step, i, shape.size)), `${dir} ${paramName(i)}`).toBe(true);
    expect(sameBits(ck.optimizer.load(`adamw.m:${paramName(i)}`).data, fakeValues(step, 100 + i, shape.size))).toBe(true);
    expect(sameBits(ck.optimizer.load(`adamw.v:${paramName(i)}`).data, fakeValues(step, 200 + i, shape.size))).toBe(true);
  }
  checkOptimizerState(
    ck.optimizer,
    Array.from({ length: shape.tensors }, (_, i) => ['m', 'v'].map((w) => ({ name: `adamw.${w}:${paramName(i)}`, shape: [shape.size / 4, 4] }))).flat(),
  );
}

describe('saveCheckpoint / openTrainingCheckpoint', () => {
  it('round trip: config, state, files and every tensor bit for bit; trainer_state.json carries its format', async () => {
    const root = freshRoot('roundtrip');
    const saved = await saveCheckpoint(root, fakeContents(3, SMALL));
    expect(saved.dir).toBe(path.join(root, 'checkpoint-3'));
    expect(saved.bytes).toBe(fs.readdirSync(saved.dir).reduce((n, f) => n + fs.statSync(path.join(saved.dir, f)).size, 0));
    expect(fs.readdirSync(saved.dir).sort()).toEqual(['config.json', 'model.safetensors', 'optimizer.safetensors', 'tokenizer.json', 'trainer_state.json']);
    expectContentsOf(saved.dir, 3, SMALL);
    const state = JSON.parse(fs.readFileSync(path.join(saved.dir, 'trainer_state.json'), 'utf8')) as Record<string, unknown>;
    expect(state).toMatchObject({ format: 'kiln.trainer_state', format_version: 1, global_step: 3 });
    expect(fs.readdirSync(root)).toEqual(['checkpoint-3']);
  });

  it('streams: each tensor is read only after the previous one was written, in the file\'s layout order', async () => {
    const root = freshRoot('streaming');
    let inFlight = 0;
    let most = 0;
    const order: string[] = [];
    const src = (name: string, dtype: 'f32' | 'i32', n: number): TensorSource => ({
      name,
      dtype,
      shape: [n],
      async read() {
        most = Math.max(most, ++inFlight);
        order.push(name);
        await new Promise((r) => setTimeout(r, 5));
        inFlight--;
        return { dtype, shape: [n], data: dtype === 'f32' ? new Float32Array(n).fill(1.5) : new Int32Array(n).fill(3) };
      },
    });
    const contents = { ...fakeContents(1, SMALL), model: [src('a', 'f32', 8), src('b', 'i32', 4), src('c', 'f32', 2)] };
    await saveCheckpoint(root, contents);
    expect(most).toBe(1);
    expect(order).toEqual(['a', 'b', 'c']);
    const ck = openTrainingCheckpoint(path.join(root, 'checkpoint-1'));
    expect([...ck.model.load('b').data]).toEqual([3, 3, 3, 3]);
    expect(ck.model.entries.get('c')!.dtype).toBe('F32');
  });

  it('keeps the last `keep` by step, removing older ones only after the new one is complete; a save of an existing step replaces it', async () => {
    const root = freshRoot('keep');
    for (const step of [1, 2, 3, 4, 5]) await saveCheckpoint(root, fakeContents(step, SMALL), { keep: 3 });
    expect(listCheckpoints(root).map((c) => c.step)).toEqual([3, 4, 5]);
    expect(latestCheckpoint(root)).toBe(path.join(root, 'checkpoint-5'));
    // Step 10 sorts after step 9 (numbers, not names).
    await saveCheckpoint(root, fakeContents(10, SMALL), { keep: 3 });
    await saveCheckpoint(root, fakeContents(9, SMALL), { keep: 3 });
    expect(listCheckpoints(root).map((c) => c.step)).toEqual([5, 9, 10]);
    expect(latestCheckpoint(root)).toBe(path.join(root, 'checkpoint-10'));
    const again = { ...fakeContents(10, SMALL), config: { model_type: 'llava_llama', step: 10, again: true } };
    await saveCheckpoint(root, again, { keep: 3 });
    expect(openTrainingCheckpoint(path.join(root, 'checkpoint-10')).config).toMatchObject({ again: true });
    expect(fs.readdirSync(root).sort()).toEqual(['checkpoint-10', 'checkpoint-5', 'checkpoint-9']);
    await expect(saveCheckpoint(root, fakeContents(11, SMALL), { keep: 0 })).rejects.toThrow('keep must be a positive integer, got 0');
  });

  it('two saves of the same step at once (two runs sharing --out) both succeed and leave one complete folder', async () => {
    const root = freshRoot('concurrent');
    const shape = { ...SMALL, delayMs: 3 };
    await Promise.all([1, 2, 3].map(() => saveCheckpoint(root, fakeContents(6, shape))));
    expect(fs.readdirSync(root)).toEqual(['checkpoint-6']);
    const ck = openTrainingCheckpoint(path.join(root, 'checkpoint-6'));
    expect(ck.state.global_step).toBe(6);
    expectContentsOf(path.join(root, 'checkpoint-6'), 6, SMALL);
  });

  it('a failing save leaves no folder behind and the earlier checkpoints untouched; the error names the file and tensor', async () => {
    const root = freshRoot('failing');
    await saveCheckpoint(root, fakeContents(1, SMALL));
    const bad = fakeContents(2, SMALL);
    const lying: TensorSource = { name: 'lm_head.weight', dtype: 'f32', shape: [2, 3], read: () => ({ dtype: 'f32', shape: [3, 2], data: new Float32Array(6) }) };
    const err = await saveCheckpoint(root, { ...bad, model: [...bad.model, lying] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KilnError);
    expect((err as Error).message).toMatch(/\.checkpoint-2\.tmp-\d+-[0-9a-f]+\/model\.safetensors: tensor 'lm_head\.weight': declared f32\[2, 3\] but read f32\[3, 2\]/);
    expect(fs.readdirSync(root)).toEqual(['checkpoint-1']);
    expect(latestCheckpoint(root)).toBe(path.join(root, 'checkpoint-1'));
    expectContentsOf(path.join(root, 'checkpoint-1'), 1, SMALL);
    await expect(saveCheckpoint(root, { ...bad, files: new Map([['../escape.json', '{}']]) })).rejects.toThrow('is not a plain file name');
    await expect(saveCheckpoint(root, { ...bad, files: new Map([['trainer_state.json', '{}']]) })).rejects.toThrow('names one of the checkpoint\'s own files');
    expect(fs.readdirSync(root)).toEqual(['checkpoint-1']);
  });

  it('scratch folders of dead processes are removed by the next lookup; a live process\'s are left alone', async () => {
    const root = freshRoot('scratch');
    await saveCheckpoint(root, fakeContents(1, SMALL));
    // A pid that is not running: the highest possible is above pid_max on Linux.
    const dead = path.join(root, '.checkpoint-2.tmp-4194305-abcd');
    const live = path.join(root, `.checkpoint-2.tmp-${process.pid}-abcd`);
    for (const d of [dead, live]) {
      fs.mkdirSync(d);
      fs.writeFileSync(path.join(d, 'model.safetensors'), 'half');
    }
    expect(latestCheckpoint(root)).toBe(path.join(root, 'checkpoint-1'));
    expect(fs.existsSync(dead)).toBe(false);
    expect(fs.existsSync(live)).toBe(true);
    fs.rmSync(live, { recursive: true });
    expect(latestCheckpoint(freshRoot('does-not-exist'))).toBeUndefined();
  });
});

describe('broken checkpoints are refused, naming the file and what is wrong', () => {
  let dir: string;
  const copy = (name: string) => {
    const d = path.join(tmp, 'broken', name, 'checkpoint-4');
    fs.cpSync(dir, d, { recursive: true });
    return d;
  };
  beforeAll(async () => {
    dir = (await saveCheckpoint(path.join(tmp, 'broken-src'), fakeContents(4, SMALL))).dir;
  });

  it('a truncated model.safetensors', () => {
    const d = copy('truncated');
    const f = path.join(d, 'model.safetensors');
    fs.truncateSync(f, fs.statSync(f).size - 10);
    expectKilnError(() => openTrainingCheckpoint(d), `${f}: tensor`, 'run past the end of the data section');
    fs.truncateSync(f, 12);
    expectKilnError(() => openTrainingCheckpoint(d), `${f}: truncated: header length`);
  });

  it('a missing trainer_state.json (a model folder, not a kiln train checkpoint); latestCheckpoint passes over it', () => {
    const d = copy('nostate');
    fs.rmSync(path.join(d, 'trainer_state.json'));
    expectKilnError(() => openTrainingCheckpoint(d), `${path.join(d, 'trainer_state.json')}: missing: the checkpoint has no trainer_state.json`);
    expect(latestCheckpoint(path.dirname(d))).toBeUndefined();
  });

  it('a missing optimizer.safetensors, a bad trainer_state.json field, an unknown format version, a folder named for another step', () => {
    const d = copy('fields');
    const statePath = path.join(d, 'trainer_state.json');
    const state = JSON.parse(fs.readFileSync(statePath, 'utf8')) as Record<string, unknown>;
    const withState = (s: object) => fs.writeFileSync(statePath, JSON.stringify(s));
    withState({ ...state, global_step: -1 });
    expectKilnError(() => openTrainingCheckpoint(d), statePath, 'field "global_step" must be a non-negative integer, got -1');
    withState({ ...state, data: { epoch: 0 } });
    expectKilnError(() => openTrainingCheckpoint(d), 'field "data.position" must be a non-negative integer, got undefined');
    withState({ ...state, format_version: 2 });
    expectKilnError(() => openTrainingCheckpoint(d), 'format_version 2 is not one this Kiln reads (1)');
    withState({ ...state, global_step: 5 });
    expectKilnError(() => openTrainingCheckpoint(d), 'global_step is 5 but the folder is named for step 4');
    fs.writeFileSync(statePath, '{"global_step": ');
    expectKilnError(() => openTrainingCheckpoint(d), statePath, 'not valid JSON');
    withState(state);
    fs.rmSync(path.join(d, 'optimizer.safetensors'));
    expectKilnError(() => openTrainingCheckpoint(d), 'optimizer.safetensors: missing: the checkpoint has no optimizer.safetensors');
  });

  it('moments that disagree with the model: a shape, a missing one, one for a tensor the run does not train', () => {
    const ck = openTrainingCheckpoint(dir);
    const want = (shape: number[]) => Array.from({ length: 3 }, (_, i) => ['m', 'v'].map((w) => ({ name: `adamw.${w}:${paramName(i)}`, shape }))).flat();
    const f = path.join(dir, 'optimizer.safetensors');
    expectKilnError(() => checkOptimizerState(ck.optimizer, want([4, 4]).map((e, i) => (i === 1 ? { ...e, shape: [8, 2] } : e))), `${f}: tensor 'adamw.v:${paramName(0)}': shape [4, 4] disagrees with the model's [8, 2]`);
    expectKilnError(() => checkOptimizerState(ck.optimizer, [...want([4, 4]), { name: 'adamw.m:vm_head.weight', shape: [4, 4] }]), `tensor 'adamw.m:vm_head.weight': missing: the optimiser state has no such tensor`);
    expectKilnError(() => checkOptimizerState(ck.optimizer, want([4, 4]).slice(2)), `state for tensors this run does not train: adamw.m:${paramName(0)}, adamw.v:${paramName(0)}`);
  });
});

/** Spawns the writer child; resolves its saved steps as they are printed. */
function startWriter(root: string, shape: FakeShape) {
  const child = spawn(process.execPath, ['bin/run-ts.js', 'test/runtime/checkpoint/write-checkpoints.ts', root, String(shape.tensors), String(shape.size), String(shape.delayMs ?? 0)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const saved: number[] = [];
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.on('data', (d: Buffer) => {
    for (const m of d.toString().matchAll(/saved (\d+)/g)) saved.push(Number(m[1]));
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, sig) => resolve(sig)));
  return { child, saved, exited, stderr: () => stderr };
}

async function until(cond: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

describe('a process killed while writing leaves the last complete checkpoint loadable', () => {
  // 8 tensors of 64K f32 each (0.25 MB) in model.safetensors and 16 moments: 6 MB a save, each
  // read() waiting 15 ms like a GPU read-back, so a save takes ~0.4 s and a kill lands inside one.
  const BIG: FakeShape = { tensors: 8, size: 65536, delayMs: 15 };

  it('SIGKILL in the middle of model.safetensors: the previous checkpoint is the latest, complete, and the half-written folder is cleaned', async () => {
    const root = freshRoot('kill-mid');
    const w = startWriter(root, BIG);
    await until(() => w.saved.length >= 1 || w.child.exitCode !== null, 'the first save');
    expect(w.saved, w.stderr()).toEqual([1]);
    // Wait until the second save is visibly half-written: its model.safetensors has bytes.
    let scratch = '';
    await until(() => {
      for (const n of fs.readdirSync(root)) {
        const f = path.join(root, n, 'model.safetensors');
        if (n.startsWith('.checkpoint-2.tmp-') && fs.existsSync(f) && fs.statSync(f).size > 300_000) scratch = path.join(root, n);
      }
      return scratch !== '';
    }, 'a half-written checkpoint-2');
    w.child.kill('SIGKILL');
    expect(await w.exited).toBe('SIGKILL');
    expect(w.saved).toEqual([1]);
    expect(fs.existsSync(scratch)).toBe(true);
    expect(latestCheckpoint(root)).toBe(path.join(root, 'checkpoint-1'));
    expect(fs.existsSync(scratch)).toBe(false);
    expectContentsOf(path.join(root, 'checkpoint-1'), 1, BIG);
  });

  it('SIGKILL at arbitrary moments (during writes, renames and removals): the newest checkpoint is always complete and is the last or next save', async () => {
    const root = freshRoot('kill-any');
    // Moments spread over a save's phases: each kill ends one writer, and the next continues in
    // the same folder after its newest checkpoint, as a resumed run would.
    for (const delay of [0, 61, 173, 311, 467]) {
      const w = startWriter(root, BIG);
      await until(() => w.saved.length >= 1 || w.child.exitCode !== null, 'a save');
      expect(w.saved.length, w.stderr()).toBeGreaterThan(0);
      await new Promise((r) => setTimeout(r, delay));
      w.child.kill('SIGKILL');
      await w.exited;
      const last = w.saved[w.saved.length - 1]!;
      const latest = latestCheckpoint(root);
      expect(latest).toBeDefined();
      const step = openTrainingCheckpoint(latest!).step;
      // The kill can land after a rename and before "saved" is printed: then it is the next step.
      expect([last, last + 1]).toContain(step);
      expectContentsOf(latest!, step, BIG);
      expect(fs.readdirSync(root).filter((n) => n.startsWith('.'))).toEqual([]);
      for (const c of listCheckpoints(root)) expectContentsOf(c.dir, c.step, BIG);
    }
  }, 300_000);
});
