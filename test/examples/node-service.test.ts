// examples/node-service: started on a loopback port over the browser example's artefact, it
// answers concurrent POST /loss requests with the bits of a direct ArtefactProgram run on each
// batch, one step on the device at a time, and refuses malformed requests with 400 and a reason.
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
import { readFileSync } from 'node:fs';
import { greedyTokens } from '../../examples/browser/generate.js';

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
  const batches: Map<string, HostTensor>[] = [];

  beforeAll(async () => {
    built = await buildBrowserExample(resolve('out/node-service-test'));
    const artefact = readArtefact(join(built.dir, 'artefact'));
    const kd = await getDevice();
    const genArtefact = readArtefact(join(built.dir, 'generate'));
    service = await startService({ kd, artefact, weights: built.weights, generation: { artefact: genArtefact, ...built.generation } });
    direct = await ArtefactProgram.load(kd, artefact, { entries: ['loss'] });
    direct.store.loadSafetensors(built.weights);
    directGen = await ArtefactProgram.load(kd, genArtefact, { store: direct.store });
    const model = checkModel(loadSpec('models/vwlmm.kiln', (p) => readFileSync(p, 'utf8')).files, { config: 'tiny' });
    for (const seed of [3, 4, 5, 6]) batches.push(syntheticBatch(inputContract(model.graph), new Map(Object.entries(SYMBOLS)), seed));
  }, 300_000);
  afterAll(async () => {
    await service?.close();
    directGen?.destroy();
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
});
