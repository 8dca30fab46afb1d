// Training tokens/s of the VW-LMM (finetune stage: projector, decoder, both heads trainable; CLIP
// tower frozen) on tiny and small, three ways on the same weights and the same batches in the
// same run: Kiln's compiled train_step (compiler/train/backend.ts WebGpuBackend, as `kiln train`
// runs it: one artefact per (B, T) bucket over one TensorStore), the same model in tfjs-webgpu on
// the same adapter (bench/vwlmm-tfjs.ts), and PyTorch eager on the CPU (bench/vwlmm_torch.py, when
// a torch Python is found). Every peer steps with clipping to 1.0 and AdamW at a constant lr.
//
// The batches have mixed lengths, padded to `kiln train`'s buckets. A cold pass over them gives
// the first step (compile + shader JIT) and what the new buckets cost; then `steady` passes over
// the same batches give the steady state. Tokens/s counts decoder positions that are not padding
// (each row's ids, the image placeholder counted as the image's patches).
//
// Same computation: the loss each peer reports at step 0 (same weights, same batch) must equal
// Kiln's within 1e-4 relative, or the section fails; later losses are reported (the
// trajectories drift apart only by f32 rounding).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebGpuBackend } from '../compiler/train/backend.js';
import { adamwHyper } from '../compiler/emit/entries.js';
import { configNumber } from '../compiler/cli/data-source.js';
import { writeSafetensors } from '../runtime/node/safetensors-file.js';
import type { HostTensor } from '../runtime/tensor.js';
import type { KilnDevice } from '../runtime/node/device.js';
import type { CheckedModel } from '../compiler/check/index.js';
import { loadVwlmm, mixedBatches, vwlmmParams, round, median, type BenchBatch } from './vwlmm-inputs.js';
import { tfjsVwlmm, vwlmmDims } from './vwlmm-tfjs.js';
import { profileDispatches, slowest, type DispatchTime } from './profile.js';
import { compileArtefact } from '../compiler/emit/artefact.js';
import { bindSymbols } from '../compiler/exec/reference.js';
import { deviceTraits } from '../compiler/exec/webgpu.js';
import { adamwStepInputs } from '../runtime/optim/schedule.js';
import { differentiate } from '../compiler/passes/autodiff.js';
import { withAdamW } from '../compiler/passes/optimizer.js';

/** The learning rate of every step (no schedule: the step count is too short for one to matter). */
const LR = 1e-4;
const MAX_GRAD_NORM = 1.0;
/**
 * Step-0 losses of the peers against Kiln's: f32 everywhere, reductions in different orders over
 * up to vocab x positions terms (log-sum-exp over 8000 logits, means over a few hundred rows);
 * agreement is ~1e-6 relative in practice, 1e-4 leaves room without hiding a wrong op (a
 * missing term or a wrong mask moves the loss by percent).
 */
const STEP0_RTOL = 1e-4;

export interface PeerTiming {
  /** the first step of the run: compile (Kiln) or shader builds (tfjs) + JIT + the step. */
  first_step_ms: number;
  /** the whole cold pass over the batches (every bucket seen for the first time). */
  cold_pass_s: number;
  /** programs compiled over the run: Kiln train_step artefacts; tfjs WebGPU pipelines. */
  compiles: number;
  /** compiles after the cold pass: 0 when steady passes never recompile. */
  compiles_in_steady: number;
  steady_tokens_per_s: number;
  steady_step_ms_median: number;
  /** the steady steps' median per sequence length (bucket T, as a string key). */
  step_ms_by_T: Record<string, number>;
  losses: number[];
}

export interface TrainSpeedRow {
  config: string;
  params: number;
  trainable: number;
  batch: number;
  batches: number;
  steady_passes: number;
  /** distinct T after bucketing, in the order first seen. */
  buckets: number[];
  tokens_per_pass: number;
  kiln: PeerTiming & { compile_s: number };
  tfjs: PeerTiming;
  torch: (PeerTiming & { threads: number; version: string; flops_by_T: Record<string, number> }) | { skipped: string };
  /**
   * Per bucket T: the FLOPs of one step as PyTorch counts them (torch.utils.flop_counter: matmuls,
   * attention and convolutions, 2 per multiply-add; the same model), and what each peer's median
   * step achieves on them, in GFLOP/s: the gap to the CPU peer read as arithmetic throughput.
   */
  by_T: { T: number; mflops: number; step_ms: Record<string, number>; gflops_per_s: Record<string, number> }[] | null;
  step0_loss: { kiln: number; tfjs: number; torch: number | null; tfjs_rel: number; torch_rel: number | null };
  /** largest relative loss difference from Kiln's over all steps. */
  max_rel_loss_diff: { tfjs: number; torch: number | null };
  kiln_vs_tfjs: number;
  kiln_vs_torch: number | null;
  /** Kiln's train_step at the longest bucket run one dispatch per submission (bench/profile.ts). */
  kiln_profile: { T: number; total_ms: number; dispatches: number; slowest: DispatchTime[] };
  /** os.loadavg() (1, 5, 15 min) before and after this config's runs: other jobs share the CPUs. */
  load_before: number[];
  load_after: number[];
}

type Step = (b: BenchBatch, step: number) => Promise<number>;

interface Peer {
  who: string;
  step: Step;
  compiles: () => number;
}

/** The cold pass of one peer: every batch once, the first step timed on its own. */
async function coldPass(p: Peer, batches: readonly BenchBatch[], log: (m: string) => void): Promise<{ first: number; cold: number; losses: number[]; compiles: number }> {
  const losses: number[] = [];
  const t0 = performance.now();
  let first = 0;
  for (const b of batches) {
    const s0 = performance.now();
    losses.push(await p.step(b, losses.length + 1));
    if (losses.length === 1) first = performance.now() - s0;
  }
  const cold = (performance.now() - t0) / 1000;
  const compiles = p.compiles();
  log(`train_speed: ${p.who} first step ${first.toFixed(0)} ms, cold pass ${cold.toFixed(2)} s, ${compiles} compiles`);
  return { first, cold, losses, compiles };
}

/**
 * Cold passes one peer after the other, then the steady passes interleaved step by step (Kiln's
 * step on a batch, then tfjs's on the same batch), so that load from other jobs on this shared
 * machine falls on both alike and the ratio stays meaningful.
 */
async function runPeers(peers: readonly Peer[], batches: readonly BenchBatch[], steady: number, log: (m: string) => void): Promise<PeerTiming[]> {
  const colds: Awaited<ReturnType<typeof coldPass>>[] = [];
  for (const p of peers) colds.push(await coldPass(p, batches, log));
  const stepMs = peers.map((): number[] => []);
  const byT = peers.map(() => new Map<number, number[]>());
  const wall = peers.map(() => 0);
  let tokens = 0;
  for (let pass = 0; pass < steady; pass++)
    for (const b of batches) {
      tokens += b.tokens;
      for (let i = 0; i < peers.length; i++) {
        const s0 = performance.now();
        colds[i]!.losses.push(await peers[i]!.step(b, colds[i]!.losses.length + 1));
        const ms = performance.now() - s0;
        stepMs[i]!.push(ms);
        const atT = byT[i]!.get(b.T);
        if (atT) atT.push(ms);
        else byT[i]!.set(b.T, [ms]);
        wall[i]! += ms;
      }
    }
  return peers.map((p, i) => {
    const c = colds[i]!;
    const total = p.compiles();
    const r: PeerTiming = {
      first_step_ms: Math.round(c.first),
      cold_pass_s: round(c.cold),
      compiles: total,
      compiles_in_steady: total - c.compiles,
      steady_tokens_per_s: round(tokens / (wall[i]! / 1000), 1),
      steady_step_ms_median: round(median(stepMs[i]!), 1),
      step_ms_by_T: Object.fromEntries([...byT[i]!].map(([T, ms]) => [String(T), round(median(ms), 1)])),
      losses: c.losses,
    };
    log(`train_speed: ${p.who} steady ${r.steady_tokens_per_s} tokens/s (median step ${r.steady_step_ms_median} ms), loss ${c.losses[0]!.toFixed(5)} -> ${c.losses[c.losses.length - 1]!.toFixed(5)}`);
    return r;
  });
}

/**
 * The torch Python: $KILN_TORCH_PYTHON, else the venv `npm run setup` makes (.venv-torch), else
 * the golden README's /tmp/gvenv; null when none exists.
 */
export function torchPython(): string | null {
  const env = process.env['KILN_TORCH_PYTHON'];
  if (env) return existsSync(env) ? env : null;
  return ['.venv-torch/bin/python', '/tmp/gvenv/bin/python'].find((p) => existsSync(p)) ?? null;
}

function runTorch(python: string, model: CheckedModel, params: ReadonlyMap<string, HostTensor>, batches: readonly BenchBatch[], steady: number, trainable: readonly string[], hyper: ReturnType<typeof adamwHyper>): PeerTiming & { threads: number; version: string; flops_by_T: Record<string, number> } {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-bench-torch-'));
  try {
    writeSafetensors(join(dir, 'params.safetensors'), params);
    const tensors = new Map<string, HostTensor>();
    batches.forEach((b, k) => {
      for (const [n, t] of b.inputs) tensors.set(`${k}.${n}`, t);
    });
    writeSafetensors(join(dir, 'batches.safetensors'), tensors);
    const d = vwlmmDims(model);
    const job = {
      vision: { ...d.vision, mlp: configNumber(model, 'vision.mlp') },
      text: { ...d.text, ffn: configNumber(model, 'text.ffn') },
      vm_weight: d.vmWeight,
      batches: batches.map((b) => b.tokens),
      steady,
      trainable,
      lr: LR,
      max_grad_norm: MAX_GRAD_NORM,
      hyper,
    };
    writeFileSync(join(dir, 'job.json'), JSON.stringify(job));
    const r = spawnSync(python, ['bench/vwlmm_torch.py', dir], { encoding: 'utf8', maxBuffer: 64 << 20 });
    if (r.status !== 0) throw new Error(`bench/vwlmm_torch.py failed (exit ${r.status}): ${r.stderr.slice(-2000)}`);
    const lines = r.stdout.trim().split('\n');
    return JSON.parse(lines[lines.length - 1]!) as PeerTiming & { threads: number; version: string; flops_by_T: Record<string, number> };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function byLength(flops: Record<string, number>, peers: Record<string, PeerTiming>): NonNullable<TrainSpeedRow['by_T']> {
  return Object.entries(flops)
    .map(([T, f]) => {
      const step_ms = Object.fromEntries(Object.entries(peers).map(([w, p]) => [w, p.step_ms_by_T[T]!]));
      const gflops_per_s = Object.fromEntries(Object.entries(step_ms).map(([w, ms]) => [w, round(f / (ms * 1e6), 2)]));
      return { T: Number(T), mflops: round(f / 1e6, 1), step_ms, gflops_per_s };
    })
    .sort((a, b) => a.T - b.T);
}

const rel = (a: number, b: number): number => Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
const maxRel = (xs: readonly number[], ref: readonly number[]): number => Math.max(...xs.map((x, i) => rel(x, ref[i]!)));

export interface TrainSpeedCase {
  config: string;
  batch: number;
  batches: number;
  /** each batch's longest row is drawn up to caps[k % caps.length] ids. */
  caps: readonly number[];
  steady: number;
}

export async function benchTrainSpeed(kd: KilnDevice, opts: { cases: readonly TrainSpeedCase[]; log: (m: string) => void }): Promise<TrainSpeedRow[]> {
  const rows: TrainSpeedRow[] = [];
  const python = torchPython();
  if (!python) opts.log('train_speed: no torch Python (set KILN_TORCH_PYTHON, or run npm run setup, which makes .venv-torch): the PyTorch CPU peer is skipped');
  for (const c of opts.cases) {
    const model = loadVwlmm(c.config);
    const hyper = adamwHyper(model);
    const params = vwlmmParams(model);
    const batches = mixedBatches(model, c.batch, c.batches, c.caps);
    const tokensPerPass = batches.reduce((a, b) => a + b.tokens, 0);
    const count = [...params.values()].reduce((a, t) => a + t.data.length, 0);
    opts.log(`train_speed: ${c.config} (${count} parameters), B=${c.batch}, ${c.batches} batches, T in {${[...new Set(batches.map((b) => b.T))].join(', ')}}, ${tokensPerPass} tokens per pass`);

    const loadBefore = loadavg().map((x) => round(x, 1));
    const backend = new WebGpuBackend(kd, model, hyper, params);
    const trainable = [...backend.trainable];
    const trainableCount = trainable.reduce((a, n) => a + params.get(n)!.data.length, 0);
    const peer = await tfjsVwlmm(model, params, trainable, hyper);
    let kiln: PeerTiming & { compile_s: number };
    let tfjs: PeerTiming;
    try {
      const [k, t] = await runPeers(
        [
          { who: `${c.config} kiln`, step: async (b, step) => (await backend.step(b.inputs, { lr: LR, step, maxGradNorm: MAX_GRAD_NORM })).loss, compiles: () => [...backend.compileSeconds.keys()].filter((key) => key.startsWith('train_step')).length },
          { who: `${c.config} tfjs`, step: (b, step) => peer.trainStep(b.inputs, { lr: LR, step, maxGradNorm: MAX_GRAD_NORM }), compiles: () => peer.pipelines() },
        ],
        batches,
        c.steady,
        opts.log,
      );
      kiln = { ...k!, compile_s: round([...backend.compileSeconds.values()].reduce((a, s) => a + s, 0)) };
      tfjs = t!;
      opts.log(`train_speed: ${c.config} kiln compile + load: ${[...backend.compileSeconds].map(([key, s]) => `${key} ${s.toFixed(1)} s`).join('; ')}`);
    } finally {
      backend.destroy();
      peer.dispose();
    }

    const longest = batches.reduce((a, b) => (b.T > a.T ? b : a));
    // The train_step graph as WebGpuBackend builds it.
    const sg = withAdamW(differentiate(model.graph), hyper);
    const { artefact } = compileArtefact([{ name: 'train_step', graph: sg, outputs: [{ name: 'loss', node: sg.totalLoss! }], applyUpdates: true }], {
      bindings: bindSymbols(sg, longest.inputs),
      traits: deviceTraits(kd),
      maxBindings: kd.limits.maxStorageBuffersPerShaderStage,
    });
    const prof = await profileDispatches(kd, artefact, 'train_step', params, new Map([...longest.inputs, ...adamwStepInputs(LR, 1, hyper.beta1, hyper.beta2, MAX_GRAD_NORM)]), 2);
    const kilnProfile = { T: longest.T, total_ms: prof.total_ms, dispatches: prof.dispatches.length, slowest: slowest(prof.dispatches, 8) };
    opts.log(`train_speed: ${c.config} kiln train_step T=${longest.T} one dispatch per submission: ${prof.total_ms} ms over ${prof.dispatches.length} dispatches; slowest ${kilnProfile.slowest.slice(0, 5).map((d) => `${d.label} ${d.ms} ms`).join(', ')}`);

    let torch: TrainSpeedRow['torch'] = { skipped: 'no torch Python found (KILN_TORCH_PYTHON, .venv-torch or /tmp/gvenv)' };
    if (python) {
      torch = runTorch(python, model, params, batches, c.steady, trainable, hyper);
      opts.log(`train_speed: ${c.config} torch (CPU, ${torch.threads} threads) first step ${torch.first_step_ms} ms, steady ${torch.steady_tokens_per_s} tokens/s`);
    }
    const torchLosses = 'losses' in torch ? torch.losses : null;
    const row: TrainSpeedRow = {
      config: c.config,
      params: count,
      trainable: trainableCount,
      batch: c.batch,
      batches: c.batches,
      steady_passes: c.steady,
      buckets: [...new Set(batches.map((b) => b.T))],
      tokens_per_pass: tokensPerPass,
      kiln,
      tfjs,
      torch,
      step0_loss: {
        kiln: kiln.losses[0]!,
        tfjs: tfjs.losses[0]!,
        torch: torchLosses ? torchLosses[0]! : null,
        tfjs_rel: rel(tfjs.losses[0]!, kiln.losses[0]!),
        torch_rel: torchLosses ? rel(torchLosses[0]!, kiln.losses[0]!) : null,
      },
      max_rel_loss_diff: { tfjs: maxRel(tfjs.losses, kiln.losses), torch: torchLosses ? maxRel(torchLosses, kiln.losses) : null },
      kiln_vs_tfjs: round(kiln.steady_tokens_per_s / tfjs.steady_tokens_per_s),
      kiln_profile: kilnProfile,
      load_before: loadBefore,
      load_after: loadavg().map((x) => round(x, 1)),
      kiln_vs_torch: 'steady_tokens_per_s' in torch ? round(kiln.steady_tokens_per_s / torch.steady_tokens_per_s) : null,
      by_T: 'flops_by_T' in torch ? byLength(torch.flops_by_T, { kiln, tfjs, torch }) : null,
    };
    for (const r of row.by_T ?? [])
      opts.log(`train_speed: ${c.config} T=${r.T}: ${r.mflops} MFLOP per step; median step ${Object.entries(r.step_ms).map(([w, ms]) => `${w} ${ms} ms (${r.gflops_per_s[w]} GFLOP/s)`).join(', ')}`);
    for (const [who, r] of [['tfjs', row.step0_loss.tfjs_rel], ['torch', row.step0_loss.torch_rel]] as const)
      if (r !== null && !(r <= STEP0_RTOL)) throw new Error(`bench: ${c.config}: the ${who} peer's step-0 loss differs from Kiln's by ${r.toExponential(2)} relative (> ${STEP0_RTOL}): not the same computation`);
    opts.log(`train_speed: ${c.config} step-0 loss kiln ${row.step0_loss.kiln} tfjs ${row.step0_loss.tfjs} (rel ${row.step0_loss.tfjs_rel.toExponential(1)}) torch ${row.step0_loss.torch ?? '-'}; kiln/tfjs ${row.kiln_vs_tfjs}x, kiln/torch ${row.kiln_vs_torch ?? '-'}x`);
    rows.push(row);
  }
  return rows;
}
