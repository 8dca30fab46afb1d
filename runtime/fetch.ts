// Artefacts and weights over HTTP, for pages (and anything else with a WHATWG `fetch`): the
// browser counterpart of runtime/node/artefact-files.ts. Same layout as on disk: manifest.json,
// then every kernel file the manifest names, relative to the artefact's base URL. Every failure
// is a KilnError naming the URL and the HTTP status, never a bare TypeError from a JSON parse.
import { MANIFEST_FILE, parseManifest, type Artefact } from './artefact.js';
import { KilnError } from './errors.js';

/** A `fetch` as the WHATWG spec has it (the page's own by default; tests may pass another). */
export type FetchLike = (url: string) => Promise<Response>;

export interface FetchOptions {
  /** defaults to globalThis.fetch. */
  readonly fetch?: FetchLike;
}

function fetcher(opts: FetchOptions): FetchLike {
  const f = opts.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
  if (!f) throw new KilnError('no fetch() in this environment; pass one in the options');
  return f;
}

async function get(url: string, opts: FetchOptions): Promise<Response> {
  let res: Response;
  try {
    res = await fetcher(opts)(url);
  } catch (e) {
    throw new KilnError(`cannot fetch: ${e instanceof Error ? e.message : String(e)}`, { file: url, cause: e });
  }
  if (!res.ok) throw new KilnError(`HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`, { file: url });
  return res;
}

/** `rel` resolved against `base` (a folder URL; a missing trailing slash is added). */
function join(base: string, rel: string): string {
  const b = base.endsWith('/') ? base : `${base}/`;
  // A relative base ('artefact/') stays relative, so that pages work wherever they are served.
  return /^[a-z][a-z0-9+.-]*:/i.test(b) ? new URL(rel, b).href : `${b}${rel}`;
}

/**
 * Fetches an artefact folder served over HTTP: `${baseUrl}/manifest.json` (checked by
 * parseManifest, errors naming the URL), then every kernel file its entries dispatch, in
 * parallel. Throws a KilnError naming the URL on a network error, a non-2xx status or a bad
 * manifest.
 */
export async function fetchArtefact(baseUrl: string | URL, opts: FetchOptions = {}): Promise<Artefact> {
  const base = String(baseUrl);
  const manifestUrl = join(base, MANIFEST_FILE);
  const manifest = parseManifest(await (await get(manifestUrl, opts)).text(), manifestUrl);
  const names = [...new Set(Object.values(manifest.entries).flatMap((e) => e.dispatches.map((d) => d.kernel)))];
  const texts = await Promise.all(names.map(async (n) => (await get(join(base, n), opts)).text()));
  return { manifest, kernels: new Map(names.map((n, k) => [n, texts[k]!])) };
}

/**
 * Fetches a binary file (safetensors weights, a batch) as bytes, for TensorStore.loadSafetensors
 * or parseSafetensors. Throws a KilnError naming the URL on a network error or a non-2xx status.
 */
export async function fetchBytes(url: string | URL, opts: FetchOptions = {}): Promise<Uint8Array> {
  return new Uint8Array(await (await get(String(url), opts)).arrayBuffer());
}
