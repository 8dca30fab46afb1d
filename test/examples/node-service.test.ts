// examples/node-service: started on a loopback port over the browser example's artefact, it
// answers concurrent POST /loss requests with the bits of a direct ArtefactProgram run on each
// batch, one step on the device at a time, and refuses malformed requests with 400 and a reason;
// POST /words gives kiln words' top-k visual words (checked in-process and against the real
// `kiln words --json` on the same weights and image).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join, resolve } from 'node:path';
import { buildBrowserExample, SYMBOLS, type BrowserExample } from '../../examples/browser/build.js';
import { startService, type KilnService } from '../../examples/node-service/service.js';
import { getDevice } from '../../runtime/node/device.js';
import { readArtefact } from '../../runtime/node/artefact-files.js';
import { ArtefactProgram } from '../../runtime/webgpu/program.js';
import { loadSpec } from '../../compiler/syntax/load.js';
import { checkModel } from '../../compiler/check/index.js';
import { inputContract } from '../../compiler/passes/input-contract.js';
import { syntheticBatch } from '../../data/synthetic.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { greedyTokens } from '../../examples/browser/generate.js';
import { topWords } from '../../compiler/exec/words.js';
import { checkpointConfig } from '../../compiler/checkpoint/save.js';
import { CLIP_MEAN, CLIP_STD, loadImageFile, preprocessLlava } from '../../data/image-node.js';
import { kilnProcess } from '../helpers/kiln-process.js';

/** The picture /words and kiln words read (an RGB PNG of the image decoding goldens). */
const IMAGE = 'test/golden/images/src/rgb.png';
interface Words {
  grid: [number, number];
  patches: { row: number; col: number; top: { id: number; p: number; token?: string | null }[] }[];
}

/** A host tensor as the nested arrays the service reads. */
function nested(t: HostTensor): unknown {
  const build = (dim: number, offset: number): unknown => {
    if (dim === t.shape.length) return t.data[offset];
    const stride = t.shape.slice(dim + 1).reduce((a, b) => a * b, 1);
    return Array.from({ length: t.shape[dim]! }, (_, k) => build(dim + 1, offset + k * stride));
  };
  return build(0, 0);
}
const body = (batch: ReadonlyMap<string, HostTensor>) => JSON.stringify(Object.fromEntries([...batch].map(([k, t]) => [k, nested(t)])));

describe('examples/node-service', () => {
  let built: BrowserExample;
  let service: KilnService;
  let direct: ArtefactProgram;
  let directGen: ArtefactProgram;
  let directWords: ArtefactProgram;
  const batches: Map<string, HostTensor>[] = [];

  beforeAll(async () => {
    built = await buildBrowserExample(resolve('out/node-service-test'));
    const artefact = readArtefact(join(built.dir, 'artefact'));
    const kd = await getDevice();
    const genArtefact = readArtefact(join(built.dir, 'generate'));
    const wordsArtefact = readArtefact(join(built.dir, 'words'));
    service = await startService({ kd, artefact, weights: built.weights, generation: { artefact: genArtefact, ...built.generation }, words: { artefact: wordsArtefact } });
    direct = await ArtefactProgram.load(kd, artefact, { entries: ['loss'] });
    direct.store.loadSafetensors(built.weights);
    directGen = await ArtefactProgram.load(kd, genArtefact, { store: direct.store });
    directWords = await ArtefactProgram.load(kd, wordsArtefact, { store: direct.store });
    const model = checkModel(loadSpec('models/vwlmm.kiln', (p) => readFileSync(p, 'utf8')).files, { config: 'tiny' });
    for (const seed of [3, 4, 5, 6]) batches.push(syntheticBatch(inputContract(model.graph), new Map(Object.entries(SYMBOLS)), seed));
  }, 300_000);
  afterAll(async () => {
    await service?.close();
    directGen?.destroy();
    directWords?.destroy();
    direct?.destroy();
  });

  const post = (text: string, path = 'loss') => fetch(new URL(path, service.url), { method: 'POST', body: text, headers: { 'content-type': 'application/json' } });

  it('answers concurrent requests with the bits of a direct run, one step on the device at a time', async () => {
    const answers = await Promise.all(batches.map(async (b) => {
      const r = await post(body(b));
      expect(r.status).toBe(200);
      return (await r.json()) as Record<string, number>;
    }));
    for (const [k, b] of batches.entries()) {
      const want = await direct.run('loss', b);
      // The same kernels on the same inputs and weights: the same bits.
      for (const name of ['loss', 'loss:lm', 'loss:vm']) expect(answers[k]![name], `batch ${k} ${name}`).toBe(want.get(name)!.data[0]);
    }
    expect(new Set(answers.map((a) => a['loss'])).size).toBe(batches.length);
    expect(service.stats.maxInFlight).toBe(1);
    expect(service.stats.steps).toBeGreaterThanOrEqual(batches.length);
  });

  it('streams greedy tokens for concurrent /generate and /loss requests, each as a direct run gives them', async () => {
    const prompts = batches.slice(0, 3).map((b) => {
      const ids = b.get('input_ids')!;
      const px = b.get('pixel_values')!;
      return new Map<string, HostTensor>([
        ['input_ids', { dtype: 'i32', shape: [1, built.prompt.get('input_ids')!.shape[1]!], data: Int32Array.from(ids.data.slice(0, built.prompt.get('input_ids')!.shape[1]!)) }],
        ['pixel_values', { dtype: 'f32', shape: built.prompt.get('pixel_values')!.shape, data: Float32Array.from(px.data.slice(0, px.data.length / px.shape[0]!)) }],
      ]);
    });
    const before = service.stats.steps;
    const [streams, losses] = await Promise.all([
      Promise.all(prompts.map(async (p) => {
        const r = await post(body(p), 'generate');
        expect(r.status).toBe(200);
        expect(r.headers.get('content-type')).toBe('application/x-ndjson');
        return (await r.text()).trim().split('\n').map((l) => JSON.parse(l) as { token?: number; tokens?: number[] });
      })),
      Promise.all(batches.map(async (b) => ((await (await post(body(b))).json()) as { loss: number }).loss)),
    ]);
    for (const [k, p] of prompts.entries()) {
      const want = await greedyTokens(directGen, p, built.generation);
      const lines = streams[k]!;
      expect(lines.slice(0, -1).map((l) => l.token)).toEqual(want);
      expect(lines[lines.length - 1]!.tokens).toEqual(want);
    }
    for (const [k, b] of batches.entries()) expect(losses[k]).toBe((await direct.run('loss', b)).get('loss')!.data[0]);
    // One job per generation (its prefill and decodes share the KV cache) and per loss, never two at once.
    expect(service.stats.steps - before).toBe(prompts.length + batches.length);
    expect(service.stats.maxInFlight).toBe(1);
  });

  it('refuses malformed requests with 400 and the reason, and keeps answering', async () => {
    const good = Object.fromEntries([...batches[0]!].map(([k, t]) => [k, nested(t)]));
    const cases: [string, RegExp][] = [
      ['{"input_ids": [1, 2', /not JSON/],
      ['[1, 2]', /must be a JSON object/],
      [JSON.stringify({ ...good, labels: undefined }), /missing field 'labels'/],
      [JSON.stringify({ ...good, extra: 1 }), /unknown field 'extra'/],
      [JSON.stringify({ ...good, input_ids: [[1, 2, 3]] }), new RegExp(`input_ids: expected nested arrays of shape \\[${SYMBOLS.B}, ${SYMBOLS.T}\\]`)],
      [JSON.stringify({ ...good, input_ids: (good['input_ids'] as number[][]).map((r) => r.map((x, j) => (j === 5 ? 0.5 : x))) }), /input_ids: element 5 \(flat\) is 0.5, not an integer/],
      // Within the shape and dtype but outside the vocabulary: the runtime's own check names it.
      [JSON.stringify({ ...good, input_ids: (good['input_ids'] as number[][]).map((r) => r.map((x, j) => (j === 1 ? 1_000_000 : x))) }), /input_ids/],
    ];
    for (const [text, reason] of cases) {
      const r = await post(text);
      const j = (await r.json()) as { error: string };
      expect(r.status, `${text.slice(0, 40)} -> ${j.error}`).toBe(400);
      expect(j.error).toMatch(reason);
    }
    expect((await fetch(new URL('loss', service.url))).status).toBe(405);
    expect((await post('{}', 'nothing')).status).toBe(404);
    const g = await post(JSON.stringify({ pixel_values: nested(built.prompt.get('pixel_values')!), input_ids: [[1, 2]] }), 'generate');
    expect(g.status).toBe(400);
    expect(((await g.json()) as { error: string }).error).toMatch(/input_ids: expected nested arrays of shape \[1, 8\]/);
    const r = await post(body(batches[1]!));
    expect(r.status).toBe(200);
    expect(((await r.json()) as { loss: number }).loss).toBe((await direct.run('loss', batches[1]!)).get('loss')!.data[0]);
  });

  /** kiln words' own ranking (compiler/exec/words.ts topWords) over a direct run of the words entry. */
  const wordsInProcess = async (pixels: HostTensor, k: number): Promise<Words> => {
    const w = (await directWords.run('words', new Map([['pixel_values', pixels]]))).get('image_words')!;
    const [, P, V] = w.shape as [number, number, number];
    const side = Math.sqrt(P);
    const top = topWords({ grid: [side, side], vocab: V, probs: w.data as Float32Array }, k);
    return { grid: [side, side], patches: top.map((t, i) => ({ row: Math.floor(i / side), col: i % side, top: t.map((c) => ({ id: c.id, p: c.p })) })) };
  };
  const imagePixels = async (): Promise<HostTensor> => {
    const size = built.prompt.get('pixel_values')!.shape[2]!;
    return { dtype: 'f32', shape: [1, 3, size, size], data: preprocessLlava(await loadImageFile(IMAGE), { size, mean: CLIP_MEAN, std: CLIP_STD, padToSquare: true }) };
  };
  const imageBody = (extra: Record<string, unknown> = {}) => JSON.stringify({ image: readFileSync(IMAGE).toString('base64'), ...extra });

  it('POST /words: concurrent with /loss, each image\'s top-k words as kiln words ranks a direct run of the words entry', async () => {
    const fromBatch = batches.slice(0, 2).map((b) => {
      const px = b.get('pixel_values')!;
      const per = px.data.length / px.shape[0]!;
      return { dtype: 'f32', shape: [1, ...px.shape.slice(1)], data: Float32Array.from(px.data.subarray(0, per)) } as HostTensor;
    });
    const before = service.stats.steps;
    const [fromImage, fromPixels, losses] = await Promise.all([
      post(imageBody(), 'words').then(async (r) => ({ status: r.status, j: (await r.json()) as Words })),
      Promise.all(fromBatch.map(async (px) => (await post(JSON.stringify({ pixel_values: nested(px), top_k: 3 }), 'words')).json() as Promise<Words>)),
      Promise.all(batches.map(async (b) => ((await (await post(body(b))).json()) as { loss: number }).loss)),
    ]);
    expect(fromImage.status).toBe(200);
    // The default top_k is kiln words' 5; the same kernels on the same pixels: the same bits.
    expect(fromImage.j.patches[0]!.top).toHaveLength(5);
    expect(fromImage.j).toEqual(await wordsInProcess(await imagePixels(), 5));
    for (const [k, px] of fromBatch.entries()) expect(fromPixels[k]).toEqual(await wordsInProcess(px, 3));
    for (const [k, b] of batches.entries()) expect(losses[k]).toBe((await direct.run('loss', b)).get('loss')!.data[0]);
    expect(service.stats.steps - before).toBe(1 + fromBatch.length + batches.length);
    expect(service.stats.maxInFlight).toBe(1);
  });

  it('POST /words equals `kiln words --json` (the cpu reference) on the same weights and image', async () => {
    // A checkpoint folder of the service's weights: config.json of the tiny config, model.safetensors.
    const ckpt = resolve('out/node-service-test/checkpoint');
    mkdirSync(ckpt, { recursive: true });
    const model = checkModel(loadSpec('models/vwlmm.kiln', (p) => readFileSync(p, 'utf8')).files, { config: 'tiny' });
    writeFileSync(join(ckpt, 'config.json'), JSON.stringify(checkpointConfig(model)));
    writeFileSync(join(ckpt, 'model.safetensors'), built.weights);
    const vocab = model.graph.params.find((p) => p.name === 'vm_head.weight')!.type.shape[0] as number;
    // Every token's probability: the untrained VM head's words are near uniform (p ~ 1/vocab, the
    // top ones ~1e-8 apart), so ranks are compared only where the gap exceeds the tolerance.
    const r = kilnProcess(['words', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', ckpt, '--image', IMAGE, '--backend', 'cpu', '--top-k', String(vocab), '--json']);
    expect(r.code, r.err).toBe(0);
    const want = JSON.parse(r.out) as Words;
    const got = (await (await post(imageBody({ top_k: vocab }), 'words')).json()) as Words;
    expect(got.grid).toEqual(want.grid);
    // f32 softmax of the same logits from other kernels (the reference's summation order, WebGPU's
    // fused reductions): probabilities ~1e-3 measured 9.3e-10 apart at most (~8 f32 ulps there);
    // 1e-8 leaves a factor 10 and still ranks the pairs of neighbours more than 2e-8 apart.
    const TOL = 1e-8;
    let diff = 0;
    for (const [i, w] of want.patches.entries()) {
      const g = got.patches[i]!;
      expect([g.row, g.col]).toEqual([w.row, w.col]);
      const p = new Map(g.top.map((c) => [c.id, c.p]));
      expect(p.size).toBe(vocab);
      for (const c of w.top) diff = Math.max(diff, Math.abs(p.get(c.id)! - c.p));
      // The ranking: the same ids wherever neighbours are further apart than the tolerance.
      for (let j = 0; j + 1 < w.top.length; j++)
        if (w.top[j]!.p - w.top[j + 1]!.p > 2 * TOL) expect(p.get(w.top[j]!.id)! > p.get(w.top[j + 1]!.id)!, `patch ${i} rank ${j}`).toBe(true);
    }
    expect(diff).toBeLessThan(TOL);
  }, 120_000);

  it('/words refuses malformed requests with 400 and the reason', async () => {
    const px = nested(built.prompt.get('pixel_values')!);
    const cases: [string, RegExp][] = [
      ['"x"', /must be a JSON object/],
      ['{}', /give one of image \(base64 PNG or JPEG\) and pixel_values/],
      [JSON.stringify({ image: 'aGk=', pixel_values: px }), /give one of image/],
      [JSON.stringify({ image: 'not base64!' }), /image: expected the PNG or JPEG file as a base64 string/],
      [JSON.stringify({ image: Buffer.from('GIF89a....').toString('base64') }), /a GIF image: Kiln reads PNG and JPEG only/],
      [imageBody({ top_k: 0 }), /top_k: expected a whole number >= 1, got 0/],
      [imageBody({ top_k: '3' }), /top_k: expected a whole number >= 1, got "3"/],
      [imageBody({ size: 3 }), /unknown field 'size'/],
      [JSON.stringify({ pixel_values: [[1, 2]] }), /pixel_values: expected nested arrays of shape \[1, 3, \d+, \d+\]/],
    ];
    for (const [text, reason] of cases) {
      const r = await post(text, 'words');
      const j = (await r.json()) as { error: string };
      expect(r.status, `${text.slice(0, 40)} -> ${j.error}`).toBe(400);
      expect(j.error).toMatch(reason);
    }
    expect((await fetch(new URL('words', service.url))).status).toBe(405);
    expect((await post(imageBody({ top_k: 2 }), 'words')).status).toBe(200);
  });
});
