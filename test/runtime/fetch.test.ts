// fetchArtefact / fetchBytes over a fake fetch: the same artefact as the files on disk, and every
// failure (a missing kernel, an HTTP error, a bad manifest, a network error) a KilnError naming the URL.
import { describe, expect, it } from 'vitest';
import { artefactFiles, compileArtefact } from '../../compiler/emit/artefact.js';
import { defaultEntries } from '../../compiler/emit/entries.js';
import { DEFAULT_TRAITS } from '../../compiler/codegen/kernel.js';
import { fetchArtefact, fetchBytes, type FetchLike } from '../../runtime/fetch.js';
import { KilnError } from '../../runtime/errors.js';
import { miniModel } from '../helpers/mini-model.js';

const BASE = 'http://127.0.0.1:9/site/artefact';
const files = artefactFiles(compileArtefact(defaultEntries(miniModel()), { bindings: new Map([['B', 2], ['T', 3]]), traits: DEFAULT_TRAITS }).artefact);

/** Serves `served` (path under BASE -> body) and records what was asked for. */
function fakeFetch(served: ReadonlyMap<string, string | Uint8Array>, asked: string[] = []): FetchLike {
  return async (url) => {
    asked.push(url);
    const rel = url.startsWith(`${BASE}/`) ? url.slice(BASE.length + 1) : url;
    const body = served.get(rel);
    return body === undefined ? new Response('no', { status: 404, statusText: 'Not Found' }) : new Response(body);
  };
}

async function rejection(p: Promise<unknown>): Promise<KilnError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(e).toBeInstanceOf(KilnError);
  return e as KilnError;
}

describe('fetchArtefact', () => {
  it('reads the manifest and each kernel once, the same artefact as on disk', async () => {
    const asked: string[] = [];
    const a = await fetchArtefact(BASE, { fetch: fakeFetch(files, asked) });
    expect(JSON.stringify(a.manifest, null, 1) + '\n').toBe(files.get('manifest.json'));
    const kernels = [...files.keys()].filter((k) => k !== 'manifest.json');
    expect([...a.kernels.keys()].sort()).toEqual(kernels.sort());
    for (const k of kernels) expect(a.kernels.get(k)).toBe(files.get(k));
    expect(asked.length).toBe(1 + kernels.length);
    expect(asked[0]).toBe(`${BASE}/manifest.json`);
  });

  it('keeps a relative base relative (pages fetch next to themselves)', async () => {
    const asked: string[] = [];
    const served = new Map([...files].map(([k, v]) => [`artefact/${k}`, v]));
    await fetchArtefact('artefact', { fetch: fakeFetch(served, asked) });
    expect(asked[0]).toBe('artefact/manifest.json');
  });

  it('names the URL and the status of a missing kernel', async () => {
    const missing = [...files.keys()].find((k) => k.endsWith('.wgsl'))!;
    const e = await rejection(fetchArtefact(BASE, { fetch: fakeFetch(new Map([...files].filter(([k]) => k !== missing))) }));
    expect(e.message).toContain(`${BASE}/${missing}`);
    expect(e.message).toContain('HTTP 404 Not Found');
  });

  it('names the manifest URL when the manifest is not one', async () => {
    const e = await rejection(fetchArtefact(BASE, { fetch: fakeFetch(new Map([['manifest.json', '{"format": "other"}']])) }));
    expect(e.message).toContain(`${BASE}/manifest.json`);
  });

  it('names the URL on a network error', async () => {
    const e = await rejection(fetchArtefact(BASE, { fetch: () => Promise.reject(new TypeError('fetch failed')) }));
    expect(e.message).toBe(`${BASE}/manifest.json: cannot fetch: fetch failed`);
  });
});

describe('fetchBytes', () => {
  it('returns the body as bytes, and names the URL on an HTTP error', async () => {
    const body = new Uint8Array([1, 2, 3, 250]);
    expect(await fetchBytes(`${BASE}/w.safetensors`, { fetch: fakeFetch(new Map([['w.safetensors', body]])) })).toEqual(body);
    const e = await rejection(fetchBytes(`${BASE}/nope.safetensors`, { fetch: fakeFetch(new Map()) }));
    expect(e.message).toBe(`${BASE}/nope.safetensors: HTTP 404 Not Found`);
  });
});
