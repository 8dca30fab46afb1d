// Generation with a KV cache (compiler/passes/kv-cache.ts, compiler/exec/generate.ts) against full
// recomputation: the whole model re-run over prompt ++ tokens so far, its logits at the last
// position. Each cached decode step's logits equal the recomputed ones within 1e-4 absolute
// (both f32; the cached step sums attention over the cache in another order and adds masked
// zeros, so last-bit differences are expected and nothing larger), and greedy decoding picks
// exactly the same tokens. The golden cases are the PyTorch-checked checkpoints; mistral_swa has
// a sliding window of 4 over a 15-position prompt, so the window applies to the cache.
import { describe, expect, it, vi } from 'vitest';
import { checkOptions } from '../../../compiler/cli/args.js';
import { promptFromBatch } from '../../../compiler/cli/generate.js';
import { checkpointOverrides } from '../../../compiler/cli/loss.js';
import { loadBatch, loadModelParams } from '../../../compiler/cli/model-inputs.js';
import { Output } from '../../../compiler/cli/output.js';
import { loadAndCheck } from '../../../compiler/cli/spec.js';
import type { CheckedModel } from '../../../compiler/check/index.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { runOnWebGpu } from '../../../compiler/exec/webgpu-run.js';
import { argmax, generateRows, generateTokens, generationGraphs, isSampling, leftPadPrompts, referenceRunner, sampleToken, seededRandom, webgpuRunner, type StepRunner } from '../../../compiler/exec/generate.js';
import type { GenerationGraphs } from '../../../compiler/passes/kv-cache.js';
import { getDevice } from '../../../runtime/node/device.js';
import type { HostTensor } from '../../../runtime/tensor.js';

function golden(name: string) {
  const G = `test/golden/${name}`;
  const model = loadAndCheck('models/vwlmm.kiln', checkOptions({ config: 'tiny' }, [...checkpointOverrides(`${G}/llava`), ...checkpointOverrides(`${G}/clip`, '--vision-tower')]), new Output(true));
  const prompt = promptFromBatch(loadBatch(model, `${G}/batch.safetensors`), 'batch');
  const params = loadModelParams(model, { checkpoint: `${G}/llava`, visionTower: `${G}/clip` });
  return { model, prompt, params };
}

/** Logits [vocab] at the last position of the full forward over prompt ++ `tokens`. */
async function recompute(model: CheckedModel, params: ReadonlyMap<string, HostTensor>, prompt: ReadonlyMap<string, HostTensor>, tokens: readonly number[], backend: 'cpu' | 'webgpu'): Promise<Float32Array> {
  const ids = prompt.get('input_ids')!;
  const all = Int32Array.from([...ids.data, ...tokens]);
  const feeds = new Map([...params, ['pixel_values', prompt.get('pixel_values')!], ['input_ids', { dtype: 'i32', shape: [1, all.length], data: all } as HostTensor]]);
  const logits = model.graph.outputs.find((o) => o.name === 'logits')!.node;
  const z = backend === 'cpu' ? runReference(model.graph, feeds, [logits], { precision: 'f32' }).get(logits)! : (await runOnWebGpu(model.graph, feeds, [logits])).get(logits)!;
  const V = z.shape[2]!;
  const L = z.shape[1]!;
  return Float32Array.from(z.data.slice((L - 1) * V, L * V));
}

/** top-1 minus top-2 logit: how far each greedy choice is from a tie. */
function margin(z: ArrayLike<number>): number {
  const s = Array.from(z).sort((a, b) => b - a);
  return s[0]! - s[1]!;
}

const STEPS = 6;

// llama_pif: the prefill must splice the pseudo image features as the full forward does.
describe.each(['llama_b2', 'mistral_gqa', 'mistral_swa', 'llama_pif'])('KV-cache decode on %s (cpu reference)', (name) => {
  it('each step equals full recomputation: logits within 1e-4, the same greedy tokens', async () => {
    const { model, prompt, params } = golden(name);
    const T = prompt.get('input_ids')!.shape[1]!;
    const probe = generationGraphs(model.graph, { T, capacity: 1 << 20 });
    const g = generationGraphs(model.graph, { T, capacity: probe.promptLength + STEPS });
    expect(g.caches.length).toBe(2 * (model.graph.nodes.filter((n) => n.op === 'attention' && n.attrs['causal'] === true).length));
    const runner = referenceRunner(g, params);
    let z = await runner.prefill(prompt);
    const tokens: number[] = [];
    const margins: number[] = [];
    for (let s = 0; s < STEPS; s++) {
      const want = await recompute(model, params, prompt, tokens, 'cpu');
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(z[i]! - want[i]!));
      expect(worst, `step ${s}`).toBeLessThanOrEqual(1e-4);
      expect(argmax(z), `step ${s}`).toBe(argmax(want));
      margins.push(margin(want));
      tokens.push(argmax(z));
      if (s + 1 < STEPS) z = await runner.decode(tokens[s]!, g.promptLength + s);
    }
    console.log(`${name}: prompt ${g.promptLength} positions, tokens ${tokens.join(' ')}, top-1/top-2 margins ${margins.map((m) => m.toFixed(4)).join(' ')}`);
  });
});

describe('KV-cache decode on WebGPU', () => {
  it.each([
    ['mistral_swa', 'window 4 < prompt 15'],
    ['llama_pif', 'pseudo image features in the prefill'],
  ])('%s (%s): the same greedy tokens as full recomputation on WebGPU and on the reference', async (name) => {
    const kd = await getDevice();
    const { model, prompt, params } = golden(name);
    const T = prompt.get('input_ids')!.shape[1]!;
    const steps = 4;
    const probe = generationGraphs(model.graph, { T, capacity: 1 << 20 });
    const g = generationGraphs(model.graph, { T, capacity: probe.promptLength + steps });
    const runner = await webgpuRunner(g, params, kd);
    const pipelines = vi.spyOn(kd.device, 'createComputePipelineAsync');
    const modules = vi.spyOn(kd.device, 'createShaderModule');
    try {
      // Every position runs the one compiled decode step: no shader or pipeline is made after load.
      const res = await generateTokens(runner, g, prompt, { maxTokens: steps, eos: [], warmup: true });
      expect(pipelines).not.toHaveBeenCalled();
      expect(modules).not.toHaveBeenCalled();
      pipelines.mockRestore();
      modules.mockRestore();
      const full: number[] = [];
      const ref: number[] = [];
      for (let s = 0; s < steps; s++) {
        full.push(argmax(await recompute(model, params, prompt, full, 'webgpu')));
        ref.push(argmax(await recompute(model, params, prompt, ref, 'cpu')));
      }
      expect(res.tokens).toEqual(full);
      expect(res.tokens).toEqual(ref);
    } finally {
      pipelines.mockRestore();
      modules.mockRestore();
      runner.destroy();
    }
  }, 600_000);
});

/**
 * Prompts of different lengths from a golden batch: row r's input_ids through `keep[r]` ids
 * (each keeps its image placeholder) with its pixel_values.
 */
function prompts(name: string, keep: readonly number[]): Map<string, HostTensor>[] {
  const G = `test/golden/${name}`;
  const { model } = golden(name);
  const batch = loadBatch(model, `${G}/batch.safetensors`);
  const ids = batch.get('input_ids')!;
  const px = batch.get('pixel_values')!;
  const [, T] = ids.shape as [number, number];
  const per = px.data.length / px.shape[0]!;
  return keep.map((n, r) => new Map<string, HostTensor>([
    ['input_ids', { dtype: 'i32', shape: [1, n], data: Int32Array.from(ids.data.slice(r * T, r * T + n)) }],
    ['pixel_values', { dtype: 'f32', shape: [1, ...px.shape.slice(1)], data: Float32Array.from(px.data.slice(r * per, (r + 1) * per)) }],
  ]));
}

async function alone(name: string, prompt: Map<string, HostTensor>, steps: number, make: (g: GenerationGraphs) => Promise<StepRunner>): Promise<{ tokens: number[]; first: Float32Array }> {
  const { model } = golden(name);
  const T = prompt.get('input_ids')!.shape[1]!;
  const probe = generationGraphs(model.graph, { T, capacity: 1 << 20 });
  const g = generationGraphs(model.graph, { T, capacity: probe.promptLength + steps });
  const runner = await make(g);
  try {
    const first = Float32Array.from(await runner.prefill(prompt));
    const { tokens } = await generateTokens(runner, g, prompt, { maxTokens: steps, eos: [] });
    return { tokens, first };
  } finally {
    runner.destroy();
  }
}

// Several prompts left-padded into one call give each prompt's tokens alone. The prompts' lengths
// differ (mistral_swa: 7, 5 and 4 ids, so 2 and 3 padding positions; its sliding window of 4 is
// shorter than every spliced prompt), and the first logits agree within 1e-4 (the padded
// prefill writes its attention out instead of the fused op: f32 summation order only).
// WebGPU runs one case (each runner is a compile: three on lavapipe take minutes): mistral_swa's
// first and last prompts, for GQA, the sliding window and 3 padding positions.
describe.each([
  ['llama_b2', [9, 6], ['cpu']],
  ['mistral_swa', [7, 5, 4], ['cpu']],
  ['mistral_swa', [7, 4], ['webgpu']],
] as const)('left-padded prompts on %s, lengths %j', (name, keep, backends) => {
  const steps = 5;
  for (const backend of backends) {
    it(`${backend}: each row's tokens equal the prompt's alone`, async () => {
      const { model, params } = golden(name);
      const make = async (g: GenerationGraphs) => (backend === 'cpu' ? referenceRunner(g, params) : await webgpuRunner(g, params, await getDevice()));
      const ps = prompts(name, keep);
      const feeds = leftPadPrompts(ps, 0, -200);
      expect(Array.from(feeds.get('prompt_start')!.data)).toEqual(keep.map((n) => Math.max(...keep) - n));
      const T = feeds.get('input_ids')!.shape[1]!;
      const probe = generationGraphs(model.graph, { T, capacity: 1 << 20, rows: ps.length });
      const g = generationGraphs(model.graph, { T, capacity: probe.promptLength + steps, rows: ps.length });
      expect(g.leftPadded).toBe(true);
      const runner = await make(g);
      try {
        const firstAll = Float32Array.from(await runner.prefill(feeds));
        const res = await generateRows(runner, g, feeds, { maxTokens: steps, eos: [] });
        const V = firstAll.length / ps.length;
        for (let r = 0; r < ps.length; r++) {
          const one = await alone(name, ps[r]!, steps, make);
          let worst = 0;
          for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(firstAll[r * V + i]! - one.first[i]!));
          expect(worst, `row ${r} first logits`).toBeLessThanOrEqual(1e-4);
          console.log(`${name} ${backend} row ${r} (${keep[r]} ids, ${Math.max(...keep) - keep[r]!} padding): first logits within ${worst.toExponential(2)} of the prompt alone; tokens ${res.rows[r]!.tokens.join(' ')}`);
          expect(res.rows[r]!.tokens, `row ${r}`).toEqual(one.tokens);
        }
        // Tokens differ between the rows: the padding did not make them one prompt.
        expect(new Set(res.rows.map((r) => r.tokens.join(','))).size).toBeGreaterThan(1);
      } finally {
        runner.destroy();
      }
    }, 600_000);
  }
  it('sampling: each row draws what its prompt draws alone with the same seed', async () => {
    const { model, params } = golden(name);
    const ps = prompts(name, keep);
    const feeds = leftPadPrompts(ps, 0, -200);
    const T = feeds.get('input_ids')!.shape[1]!;
    const probe = generationGraphs(model.graph, { T, capacity: 1 << 20, rows: ps.length });
    const g = generationGraphs(model.graph, { T, capacity: probe.promptLength + steps, rows: ps.length });
    const o = { maxTokens: steps, eos: [], temperature: 1.5, topP: 0.95, seed: 7 };
    const res = await generateRows(referenceRunner(g, params), g, feeds, o);
    for (let r = 0; r < ps.length; r++) {
      const Tr = ps[r]!.get('input_ids')!.shape[1]!;
      const pr = generationGraphs(model.graph, { T: Tr, capacity: 1 << 20 });
      const gr = generationGraphs(model.graph, { T: Tr, capacity: pr.promptLength + steps });
      expect(res.rows[r]!.tokens, `row ${r}`).toEqual((await generateTokens(referenceRunner(gr, params), gr, ps[r]!, o)).tokens);
    }
  });

  it('a row that emits end-of-sequence stops there while the others go on', async () => {
    const { model, params } = golden(name);
    const ps = prompts(name, keep);
    const feeds = leftPadPrompts(ps, 0, -200);
    const T = feeds.get('input_ids')!.shape[1]!;
    const probe = generationGraphs(model.graph, { T, capacity: 1 << 20, rows: ps.length });
    const g = generationGraphs(model.graph, { T, capacity: probe.promptLength + steps, rows: ps.length });
    const free = await generateRows(referenceRunner(g, params), g, feeds, { maxTokens: steps, eos: [] });
    // Row 0's second token as end-of-sequence: row 0 stops after 2 tokens, unless another row
    // emits that token too (then it stops there as well).
    const eos = free.rows[0]!.tokens[1]!;
    const res = await generateRows(referenceRunner(g, params), g, feeds, { maxTokens: steps, eos: [eos] });
    res.rows.forEach((row, r) => {
      const at = free.rows[r]!.tokens.indexOf(eos);
      expect(row.tokens).toEqual(at < 0 ? free.rows[r]!.tokens : free.rows[r]!.tokens.slice(0, at + 1));
      expect(row.stop).toBe(at < 0 ? 'max-tokens' : 'eos');
    });
  });
});

describe('sampling', () => {
  const z = Float32Array.from([1.0, 3.0, 2.5, -1.0, 2.9, 0.0]);
  it('greedy when temperature is 0 or nothing asks for sampling', () => {
    expect(isSampling({})).toBe(false);
    expect(isSampling({ temperature: 0, topK: 3 })).toBe(false);
    expect(sampleToken(z, { temperature: 0 }, seededRandom(1))).toBe(1);
  });
  it('top-k 1 and a tiny top-p keep only the most probable token', () => {
    const r = seededRandom(7);
    for (let i = 0; i < 50; i++) {
      expect(sampleToken(z, { topK: 1, temperature: 5 }, r)).toBe(1);
      expect(sampleToken(z, { topP: 1e-6 }, r)).toBe(1);
    }
  });
  it('top-p keeps the smallest set reaching p; the draws follow the renormalised softmax', () => {
    // softmax(z): tokens 1, 4, 2 hold 0.376, 0.340, 0.228 of the mass; p = 0.7 keeps {1, 4}
    // (0.716 >= 0.7) and never token 2.
    const r = seededRandom(3);
    const counts = new Map<number, number>();
    const N = 20000;
    for (let i = 0; i < N; i++) {
      const t = sampleToken(z, { topP: 0.7 }, r);
      counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    expect([...counts.keys()].sort()).toEqual([1, 4]);
    const e1 = Math.exp(3.0);
    const e4 = Math.exp(2.9);
    // Binomial sd at N = 20000 is 0.0035; 0.02 is over 5 sd, and the seed makes it deterministic.
    expect(Math.abs(counts.get(1)! / N - e1 / (e1 + e4))).toBeLessThan(0.02);
  });
  it('temperature applies before top-k: a high temperature flattens the kept tokens', () => {
    const r = seededRandom(5);
    const counts = new Map<number, number>();
    for (let i = 0; i < 6000; i++) {
      const t = sampleToken(z, { topK: 3, temperature: 100 }, r);
      counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    expect([...counts.keys()].sort()).toEqual([1, 2, 4]);
    for (const c of counts.values()) expect(Math.abs(c / 6000 - 1 / 3)).toBeLessThan(0.03);
  });
  it('the same seed gives the same tokens through the whole generate loop; another seed may differ', async () => {
    const { model, prompt, params } = golden('llama_b2');
    const T = prompt.get('input_ids')!.shape[1]!;
    const probe = generationGraphs(model.graph, { T, capacity: 1 << 20 });
    const g = generationGraphs(model.graph, { T, capacity: probe.promptLength + 8 });
    const run = async (seed: number) => (await generateTokens(referenceRunner(g, params), g, prompt, { maxTokens: 8, eos: [], temperature: 1.5, topP: 0.95, seed })).tokens;
    const a = await run(11);
    expect(await run(11)).toEqual(a);
    expect(a.length).toBe(8);
  });
});

describe('streamed text', () => {
  it('equals the whole-sequence decode at every step and never splits a multi-byte character', async () => {
    const { readTokenizerDir } = await import('../../../data/node.js');
    const { TextStream } = await import('../../../compiler/exec/generate.js');
    const tok = readTokenizerDir('test/golden/text/mistral');
    const ids = tok.encode('héllo wörld 日本語 ✓ done').ids;
    // The byte-fallback pieces of the CJK characters arrive one byte per token.
    expect(ids.length).toBeGreaterThan(8);
    const stream = new TextStream((x) => tok.decode(x));
    let shown = '';
    for (let i = 0; i < ids.length; i++) {
      const part = stream.push(ids[i]!);
      expect(part).not.toContain('\uFFFD');
      shown += part;
      expect(tok.decode(ids.slice(0, i + 1)).startsWith(shown)).toBe(true);
    }
    shown += stream.flush();
    expect(shown).toBe(tok.decode(ids));
    expect(shown).toBe('héllo wörld 日本語 ✓ done');
  });
});
