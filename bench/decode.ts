// Greedy generation speed of the VW-LMM on tiny and small, in one run on one adapter:
//   kiln_kv         Kiln's prefill + one-token decode entries over a fixed-capacity KV cache
//                   (compiler/exec/generate.ts webgpuRunner + generateTokens, as `kiln generate`)
//   kiln_recompute  Kiln's model forward over the whole sequence for every new token: one
//                   artefact at B = 1 and T = the longest sequence, the ids right-padded (the
//                   attention is causal, so padding after a position never changes its logits),
//                   the logits of the last real position read each step
//   tfjs_kv         bench/vwlmm-tfjs.ts's greedy decode with its own KV cache, tfjs-webgpu
// The tokens of all three should be equal: tokens_equal and first_difference say whether they
// are, beside the smallest top-1/top-2 logit margin of Kiln's steps, so that a near-tie flipped
// by f32 rounding is told apart from a wrong decode. Timings are warm: each
// peer runs once untimed first (shader JIT). One decode step reads every decoder weight and the
// LM head once (and one embedding row): their bytes over the step time is the achieved weight
// read rate, set against a buffer-to-buffer copy measured on the same device, and against what
// a dispatch costs there (a trivial kernel dispatched many times in one pass).
import type { KilnDevice } from '../runtime/node/device.js';
import { compileArtefact } from '../compiler/emit/artefact.js';
import { bindSymbols } from '../compiler/exec/reference.js';
import { deviceTraits } from '../compiler/exec/webgpu.js';
import { argmax, compileGeneration, generateTokens, generationGraphs, webgpuRunner, type StepRunner } from '../compiler/exec/generate.js';
import { ArtefactProgram } from '../runtime/webgpu/program.js';
import { gpuStep } from '../runtime/webgpu/device.js';
import type { HostTensor } from '../runtime/tensor.js';
import { configNumber } from '../compiler/cli/data-source.js';
import { benchPrompt, loadVwlmm, median, round, vwlmmParams } from './vwlmm-inputs.js';
import { tfjsVwlmm } from './vwlmm-tfjs.js';
import { profileDispatches, slowest, type DispatchTime } from './profile.js';

const GPU_BUFFER_USAGE = { COPY_SRC: 0x0004, COPY_DST: 0x0008, STORAGE: 0x0080 } as const;

export interface DeviceFigures {
  /** buffer-to-buffer copy of `copy_bytes`, median of runs: bytes copied per second (each byte is read once and written once). */
  copy_gb_per_s: number;
  copy_bytes: number;
  /** one trivial dispatch (one workgroup, one store) in a pass of many: microseconds each. */
  dispatch_us: number;
  /** an empty submission plus a 4-byte read-back: the floor of any step that returns a value. */
  roundtrip_ms: number;
  /**
   * runtime/webgpu/device.ts gpuStep around nothing (push and pop its error scopes, each pop a
   * round trip through Dawn's event loop): ArtefactProgram.run pays two per call (upload, run).
   */
  gpu_step_ms: number;
}

export interface DecodeRow {
  config: string;
  params: number;
  prompt_positions: number;
  new_tokens: number;
  /** bytes one decode step reads from weights: decoder layers, final norm, LM head, one embedding row. */
  weight_bytes_per_step: number;
  kiln_kv: { load_s: number; prefill_ms: number; decode_tokens_per_s: number; decode_dispatches: number; weight_gb_per_s: number; of_copy_bandwidth: number };
  /** the decode entry run one dispatch per submission (bench/profile.ts): each dispatch's wall time, the slowest by label. */
  decode_profile: { total_ms: number; dispatches: number; slowest: DispatchTime[] };
  kiln_recompute: { load_s: number; tokens_per_s: number; ms_per_token: number; dispatches: number };
  tfjs_kv: { prefill_ms: number; decode_tokens_per_s: number; weight_gb_per_s: number };
  tokens_equal: boolean;
  /** the first index where a peer's tokens differ from Kiln's KV decode (null: equal). */
  first_difference: { recompute: number | null; tfjs: number | null };
  min_top2_margin: number;
  kv_vs_recompute: number;
  kiln_vs_tfjs: number;
}

export async function measureDevice(kd: KilnDevice, runs = 5): Promise<DeviceFigures> {
  const { device } = kd;
  const bytes = Math.min(256 << 20, kd.limits.maxBufferSize ?? 256 << 20);
  const usage = GPU_BUFFER_USAGE.COPY_SRC | GPU_BUFFER_USAGE.COPY_DST | GPU_BUFFER_USAGE.STORAGE;
  const a = device.createBuffer({ size: bytes, usage });
  const b = device.createBuffer({ size: bytes, usage });
  const copyOnce = async () => {
    const t0 = performance.now();
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(a, 0, b, 0, bytes);
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  };
  await copyOnce();
  const copyMs = median(await sequence(runs, copyOnce));
  a.destroy();
  b.destroy();

  const out = device.createBuffer({ size: 256, usage: usage });
  const module = device.createShaderModule({ code: '@group(0) @binding(0) var<storage, read_write> o: array<u32>;\n@compute @workgroup_size(1) fn main() { o[0] = o[0] + 1u; }' });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] });
  const n = 512;
  const dispatchOnce = async () => {
    const t0 = performance.now();
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    for (let i = 0; i < n; i++) {
      pass.setBindGroup(0, bind);
      pass.dispatchWorkgroups(1);
    }
    pass.end();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  };
  await dispatchOnce();
  const dispatchMs = median(await sequence(runs, dispatchOnce));
  const staging = device.createBuffer({ size: 4, usage: 0x0001 /* MAP_READ */ | GPU_BUFFER_USAGE.COPY_DST });
  const roundtrip = async () => {
    const t0 = performance.now();
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(out, 0, staging, 0, 4);
    device.queue.submit([enc.finish()]);
    await staging.mapAsync(1);
    staging.unmap();
    return performance.now() - t0;
  };
  await roundtrip();
  const rtMs = median(await sequence(runs, roundtrip));
  out.destroy();
  staging.destroy();
  const stepOnce = async () => {
    const t0 = performance.now();
    await gpuStep(device, 'bench: an empty step', () => undefined);
    return performance.now() - t0;
  };
  await stepOnce();
  const stepMs = median(await sequence(4 * runs, stepOnce));
  return {
    gpu_step_ms: round(stepMs, 3), copy_gb_per_s: round(bytes / (copyMs / 1000) / 1e9, 2), copy_bytes: bytes, dispatch_us: round((dispatchMs * 1000) / n, 1), roundtrip_ms: round(rtMs, 3) };
}

async function sequence(n: number, f: () => Promise<number>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await f());
  return out;
}

/** Records the smallest top-1 / top-2 logit margin of every step a runner returns. */
function withMargins(r: StepRunner): StepRunner & { margin: () => number } {
  let min = Infinity;
  const note = (l: Float32Array) => {
    const top = argmax(l);
    let second = -Infinity;
    for (let i = 0; i < l.length; i++) if (i !== top && l[i]! > second) second = l[i]!;
    min = Math.min(min, l[top]! - second);
    return l;
  };
  return {
    prefill: async (f) => note(await r.prefill(f)),
    decode: async (t, p) => note(await r.decode(t, p)),
    destroy: () => r.destroy(),
    margin: () => min,
  };
}

export interface DecodeCase {
  config: string;
  /** text ids after BOS and the image. */
  promptText: number;
  newTokens: number;
}

export async function benchDecode(kd: KilnDevice, opts: { cases: readonly DecodeCase[]; log: (m: string) => void; device: DeviceFigures }): Promise<DecodeRow[]> {
  const rows: DecodeRow[] = [];
  for (const c of opts.cases) {
    const model = loadVwlmm(c.config);
    const params = vwlmmParams(model);
    const count = [...params.values()].reduce((a, t) => a + t.data.length, 0);
    const prompt = benchPrompt(model, c.promptText);
    const T = prompt.get('input_ids')!.shape[1]!;
    const probe = generationGraphs(model.graph, { T, capacity: Number.MAX_SAFE_INTEGER });
    const graphs = generationGraphs(model.graph, { T, capacity: probe.promptLength + c.newTokens });
    const hidden = configNumber(model, 'text.hidden');
    const weightBytes = 4 * ([...params].filter(([n]) => n.startsWith('model.layers.') || n === 'model.norm.weight' || n === 'lm_head.weight').reduce((a, [, t]) => a + t.data.length, 0) + hidden);

    // Kiln, KV cache.
    let t0 = performance.now();
    const runner = withMargins(await webgpuRunner(graphs, params, kd));
    const kvLoad = (performance.now() - t0) / 1000;
    const kv = await generateTokens(runner, graphs, prompt, { maxTokens: c.newTokens, eos: [], warmup: true });
    runner.destroy();
    const { artefact: genArtefact } = compileGeneration(graphs, deviceTraits(kd));
    const decodeDispatches = genArtefact.manifest.entries['decode']!.dispatches.length;
    const prof = await profileDispatches(kd, genArtefact, 'decode', params, new Map<string, HostTensor>([
      ['input_ids', { dtype: 'i32', shape: [1, 1], data: Int32Array.of(kv.tokens[0]!) }],
      ['position', { dtype: 'i32', shape: [], data: Int32Array.of(graphs.promptLength) }],
    ]));
    opts.log(`decode: ${c.config} kiln decode step one dispatch per submission: ${prof.total_ms} ms over ${prof.dispatches.length} dispatches; slowest ${slowest(prof.dispatches, 4).map((d) => `${d.label} ${d.ms} ms`).join(', ')}`);
    opts.log(`decode: ${c.config} kiln kv: load ${kvLoad.toFixed(2)} s, prefill ${kv.prefillMs.toFixed(1)} ms over ${graphs.promptLength} positions, ${kv.decodeTokensPerS.toFixed(1)} tokens/s, ${decodeDispatches} dispatches per decode step`);

    // Kiln, recomputing the whole sequence for each token.
    const logitsNode = model.graph.outputs.find((o) => o.name === 'logits')!.node;
    const Tmax = T + c.newTokens - 1;
    const feedsOf = (ids: readonly number[]): Map<string, HostTensor> => {
      const data = new Int32Array(Tmax);
      data.set(ids);
      return new Map<string, HostTensor>([
        ['pixel_values', prompt.get('pixel_values')!],
        ['input_ids', { dtype: 'i32', shape: [1, Tmax], data }],
        ['labels', { dtype: 'i32', shape: [1, Tmax], data: new Int32Array(Tmax).fill(-100) }],
      ]);
    };
    t0 = performance.now();
    const promptIds = [...(prompt.get('input_ids')!.data as Int32Array)];
    const { artefact } = compileArtefact([{ name: 'forward', graph: model.graph, outputs: [{ name: 'logits', node: logitsNode }] }], {
      bindings: bindSymbols(model.graph, feedsOf(promptIds)),
      traits: deviceTraits(kd),
      maxBindings: kd.limits.maxStorageBuffersPerShaderStage,
    });
    const program = await ArtefactProgram.load(kd, artefact);
    program.store.write(new Map([...params].filter(([n]) => program.store.has(n))));
    const recomputeLoad = (performance.now() - t0) / 1000;
    const vocab = configNumber(model, 'text.vocab');
    const Lmax = probe.promptLength + c.newTokens - 1;
    const recompute = async (n: number): Promise<{ tokens: number[]; ms: number }> => {
      const ids = [...promptIds];
      const tokens: number[] = [];
      const s0 = performance.now();
      while (tokens.length < n) {
        const out = await program.run('forward', feedsOf(ids), ['logits']);
        const logits = out.get('logits')!.data as Float32Array;
        const row = probe.promptLength - 1 + tokens.length;
        if (out.get('logits')!.shape[1] !== Lmax) throw new Error(`bench: the forward has ${out.get('logits')!.shape[1]} positions, expected ${Lmax}`);
        const t = argmax(logits.subarray(row * vocab, (row + 1) * vocab));
        tokens.push(t);
        ids.push(t);
      }
      return { tokens, ms: performance.now() - s0 };
    };
    // One compiled program at one shape: a single warm-up forward JITs every kernel it runs.
    await recompute(1);
    const re = await recompute(c.newTokens);
    const reDispatches = artefact.manifest.entries['forward']!.dispatches.length;
    program.destroy();
    program.store.destroy();
    opts.log(`decode: ${c.config} kiln recompute: load ${recomputeLoad.toFixed(2)} s, ${(re.ms / c.newTokens).toFixed(1)} ms per token (${reDispatches} dispatches)`);

    // tfjs, its own KV cache.
    const peer = await tfjsVwlmm(model, params, [], { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
    let tf;
    try {
      // tfjs builds pipelines per shape, and its caches grow by a position each step: the warm-up
      // runs every length the timed run will see.
      await peer.generate(prompt, c.newTokens);
      tf = await peer.generate(prompt, c.newTokens);
    } finally {
      peer.dispose();
    }
    opts.log(`decode: ${c.config} tfjs kv: prefill ${tf.prefillMs.toFixed(1)} ms, ${tf.decodeTokensPerS.toFixed(1)} tokens/s`);

    const firstDiff = (a: readonly number[]) => {
      const i = a.findIndex((t, k) => t !== kv.tokens[k]);
      return i < 0 && a.length === kv.tokens.length ? null : i < 0 ? Math.min(a.length, kv.tokens.length) : i;
    };
    const diff = { recompute: firstDiff(re.tokens), tfjs: firstDiff(tf.tokens) };
    const tokensEqual = diff.recompute === null && diff.tfjs === null;
    // Reported, not thrown: a near-tie flipped by f32 rounding shows as a difference with a tiny
    // margin, and the speed figures of the run stay readable beside it.
    if (!tokensEqual) opts.log(`decode: ${c.config}: THE DECODES DISAGREE (first difference: recompute at ${diff.recompute}, tfjs at ${diff.tfjs}; smallest top-2 margin ${runner.margin()}): kv ${kv.tokens.join(' ')} / recompute ${re.tokens.join(' ')} / tfjs ${tf.tokens.join(' ')}`);
    const gbps = (perS: number) => round((weightBytes * perS) / 1e9, 3);
    const row: DecodeRow = {
      config: c.config,
      params: count,
      prompt_positions: graphs.promptLength,
      new_tokens: c.newTokens,
      weight_bytes_per_step: weightBytes,
      kiln_kv: {
        load_s: round(kvLoad),
        prefill_ms: round(kv.prefillMs, 1),
        decode_tokens_per_s: round(kv.decodeTokensPerS, 1),
        decode_dispatches: decodeDispatches,
        weight_gb_per_s: gbps(kv.decodeTokensPerS),
        of_copy_bandwidth: round(gbps(kv.decodeTokensPerS) / opts.device.copy_gb_per_s, 3),
      },
      decode_profile: { total_ms: prof.total_ms, dispatches: prof.dispatches.length, slowest: slowest(prof.dispatches, 6) },
      kiln_recompute: { load_s: round(recomputeLoad), tokens_per_s: round(c.newTokens / (re.ms / 1000), 1), ms_per_token: round(re.ms / c.newTokens, 1), dispatches: reDispatches },
      tfjs_kv: { prefill_ms: round(tf.prefillMs, 1), decode_tokens_per_s: round(tf.decodeTokensPerS, 1), weight_gb_per_s: gbps(tf.decodeTokensPerS) },
      tokens_equal: tokensEqual,
      first_difference: diff,
      min_top2_margin: Number(runner.margin().toPrecision(3)),
      kv_vs_recompute: round(kv.decodeTokensPerS / (c.newTokens / (re.ms / 1000))),
      kiln_vs_tfjs: round(kv.decodeTokensPerS / tf.decodeTokensPerS),
    };
    opts.log(`decode: ${c.config}: weights ${weightBytes} B per step -> ${row.kiln_kv.weight_gb_per_s} GB/s (${(row.kiln_kv.of_copy_bandwidth * 100).toFixed(1)}% of copy ${opts.device.copy_gb_per_s} GB/s); kv/recompute ${row.kv_vs_recompute}x, kiln/tfjs ${row.kiln_vs_tfjs}x; tokens ${tokensEqual ? 'equal' : 'DIFFER'}, smallest top-2 margin ${row.min_top2_margin}`);
    rows.push(row);
  }
  return rows;
}
