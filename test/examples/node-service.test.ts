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
  const batches: Map<string, HostTensor>[] = [];

  beforeAll(async () => {
    built = await buildBrowserExample(resolve('out/node-service-test'));
    const artefact = readArtefact(join(built.dir, 'artefact'));
    const kd = await getDevice();
    service = await startService({ kd, artefact, weights: built.weights });
    direct = await ArtefactProgram.load(kd, artefact, { entries: ['loss'] });
    direct.store.loadSafetensors(built.weights);
    const model = checkModel(loadSpec('models/vwlmm.kiln', (p) => readFileSync(p, 'utf8')).files, { config: 'tiny' });
    for (const seed of [3, 4, 5, 6]) batches.push(syntheticBatch(inputContract(model.graph), new Map(Object.entries(SYMBOLS)), seed));
  }, 300_000);
  afterAll(async () => {
    await service?.close();
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
    expect((await post('{}', 'generate')).status).toBe(404);
    const r = await post(body(batches[1]!));
    expect(r.status).toBe(200);
    expect(((await r.json()) as { loss: number }).loss).toBe((await direct.run('loss', batches[1]!)).get('loss')!.data[0]);
  });
});
