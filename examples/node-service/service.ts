// A small HTTP service embedding `kiln/runtime` (node:http, no framework): it loads one compiled
// artefact and its weights once, at start, and answers
//   GET  /            what it serves: the artefact's source, entries and the loss entry's inputs
//   POST /loss        { <input>: nested array of the compiled shape, ... } -> { loss, "loss:lm", ... }
//   POST /generate    { input_ids: [[...]], pixel_values: [[[[...]]]] } -> greedy tokens, streamed
//                     as NDJSON lines {"token": id}, then {"tokens": [...]}
//   POST /words       { image: base64 PNG/JPEG } or { pixel_values: [[[[...]]]] }, and top_k (default
//                     5) -> each patch's top_k visual words, as `kiln words --json` lists them:
//                     { grid: [rows, cols], patches: [{ row, col, top: [{ id, p }] }] }
// /generate needs a generation artefact (prefill + decode entries over KV-cache state) compiled
// ahead of time: `kiln compile` does not write one yet, so examples/browser/build.ts compiles it
// with the compiler's generationGraphs; the service itself runs it with the runtime alone.
// Requests are queued on the one device (a promise chain): a step's buffer writes, dispatches and
// read-back never interleave with another's, and a whole generation (prefill and every decode
// step, which share the KV cache) is one job. A malformed request gets 400 and the reason (JSON:
// { error }); the runtime's own checks (dtype, shape, ids and labels in range) answer the same way.
import { greedyTokens, topKVisualWords, type TopWords } from '../browser/generate.js';
import { CLIP_MEAN, CLIP_STD, decodeImage, preprocessLlava } from '../../data/image-node.js';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ArtefactProgram, KilnError, numel, type Artefact, type HostTensor, type KilnDevice, type TensorDecl } from 'kiln/runtime';

/** The largest request body accepted (bytes); the tiny model's batch is ~20 KiB of JSON. */
export const MAX_BODY_BYTES = 16 << 20;

/** A request the service refuses: the HTTP status and the reason sent back. */
export class RequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface ServiceOptions {
  readonly kd: KilnDevice;
  readonly artefact: Artefact;
  /** safetensors bytes holding every parameter the artefact declares. */
  readonly weights: Uint8Array;
  /** the entry POST /loss runs (default 'loss'); it must output 'loss'. */
  readonly entry?: string;
  /** POST /generate: an artefact with `prefill` and `decode` entries over the same parameters. */
  readonly generation?: { readonly artefact: Artefact; readonly promptLength: number; readonly capacity: number; readonly maxTokens: number };
  /** POST /words: an artefact with a `words` entry (pixel_values [1, 3, S, S] -> image_words [1, patches, vocab]) over the same parameters. */
  readonly words?: { readonly artefact: Artefact };
}

/** top_k when a /words request gives none (kiln words' --top-k default). */
export const DEFAULT_TOP_K = 5;

export interface KilnService {
  readonly server: Server;
  /** http://127.0.0.1:PORT/ once listening. */
  readonly url: string;
  /** how many steps ran, and the most that were ever on the device at once (1: never interleaved). */
  readonly stats: { steps: number; maxInFlight: number };
  close(): Promise<void>;
}

/** `value` (nested arrays of numbers) flattened, checked against `decl`'s shape and dtype. */
export function tensorFromJson(decl: TensorDecl, value: unknown): HostTensor {
  const shape: number[] = [];
  for (let v = value; Array.isArray(v); v = v[0]) shape.push(v.length);
  const want = `${decl.dtype}[${decl.shape.join(', ')}]`;
  const flat = Array.isArray(value) ? (value as unknown[]).flat(Infinity) : [value];
  if (shape.length !== decl.shape.length || shape.some((n, k) => n !== decl.shape[k]) || flat.length !== numel(decl.shape))
    throw new RequestError(400, `${decl.name}: expected nested arrays of shape [${decl.shape.join(', ')}] (${want}), got ${Array.isArray(value) ? `[${shape.join(', ')}]${flat.length !== numel(shape) ? ' (ragged)' : ''}` : typeof value}`);
  const bad = flat.findIndex((x) => typeof x !== 'number' || !Number.isFinite(x) || (decl.dtype === 'i32' && !Number.isInteger(x)));
  if (bad >= 0) throw new RequestError(400, `${decl.name}: element ${bad} (flat) is ${JSON.stringify(flat[bad])}, not ${decl.dtype === 'i32' ? 'an integer' : 'a finite number'}`);
  const data = decl.dtype === 'i32' ? Int32Array.from(flat as number[]) : Float32Array.from(flat as number[]);
  return { dtype: decl.dtype, shape: [...decl.shape], data };
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY_BYTES) throw new RequestError(413, `the body is over ${MAX_BODY_BYTES} bytes`);
    chunks.push(c);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new RequestError(400, `the body is not JSON: ${(e as Error).message}`);
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}

/**
 * Loads the artefact and weights on `kd` and listens on 127.0.0.1:`port` (0: any free port).
 * Throws a KilnError (naming the tensor) when the weights do not fit the artefact.
 */
export async function startService(opts: ServiceOptions, port = 0): Promise<KilnService> {
  const entryName = opts.entry ?? 'loss';
  const program = await ArtefactProgram.load(opts.kd, opts.artefact, { entries: [entryName] });
  program.store.loadSafetensors(opts.weights, { file: 'weights', required: opts.artefact.manifest.params.map((p) => p.name) });
  const entry = opts.artefact.manifest.entries[entryName]!;
  if (!entry.outputs.some((o) => o.name === 'loss')) throw new KilnError(`entry '${entryName}' has no 'loss' output`);
  const gen = opts.generation;
  const genProgram = gen ? await ArtefactProgram.load(opts.kd, gen.artefact, { store: program.store }) : undefined;
  const wordsProgram = opts.words ? await ArtefactProgram.load(opts.kd, opts.words.artefact, { store: program.store }) : undefined;
  const wordsInput = opts.words?.artefact.manifest.entries['words']?.inputs.find((i) => i.name === 'pixel_values');
  if (opts.words && !wordsInput) throw new KilnError("the words artefact has no 'words' entry reading pixel_values");
  const stats = { steps: 0, maxInFlight: 0 };
  let inFlight = 0;
  let tail: Promise<unknown> = Promise.resolve();
  /** Runs `job` after every job queued before it; a failed job does not stop the queue. */
  const enqueue = <T>(job: () => Promise<T>): Promise<T> => {
    const run = tail.then(async () => {
      inFlight++;
      stats.maxInFlight = Math.max(stats.maxInFlight, inFlight);
      try {
        return await job();
      } finally {
        inFlight--;
        stats.steps++;
      }
    });
    tail = run.catch(() => undefined);
    return run;
  };

  /** The body checked against an entry's inputs: each a nested array of the compiled shape. */
  const feedsFor = (body: unknown, inputs: readonly TensorDecl[]): Map<string, HostTensor> => {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new RequestError(400, `the body must be a JSON object with ${inputs.map((i) => i.name).join(', ')}`);
    const fields = body as Record<string, unknown>;
    const unknownField = Object.keys(fields).find((k) => !inputs.some((i) => i.name === k));
    if (unknownField !== undefined) throw new RequestError(400, `unknown field '${unknownField}' (the inputs are ${inputs.map((i) => i.name).join(', ')})`);
    const feeds = new Map<string, HostTensor>();
    for (const decl of inputs) {
      if (!(decl.name in fields)) throw new RequestError(400, `missing field '${decl.name}' (${decl.dtype}[${decl.shape.join(', ')}])`);
      feeds.set(decl.name, tensorFromJson(decl, fields[decl.name]));
    }
    return feeds;
  };

  /** Streams the tokens as NDJSON once the prompt is valid; an error after the first line ends the stream with {"error"}. */
  const generate = async (body: unknown, res: ServerResponse): Promise<void> => {
    if (!gen || !genProgram) throw new RequestError(404, 'this service was started without a generation artefact');
    const feeds = feedsFor(body, gen.artefact.manifest.entries['prefill']!.inputs);
    let started = false;
    const line = (o: unknown) => {
      if (!started) res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      started = true;
      res.write(`${JSON.stringify(o)}\n`);
    };
    try {
      const tokens = await enqueue(() => greedyTokens(genProgram, feeds, { ...gen, onToken: (token) => line({ token }) }));
      line({ tokens });
      res.end();
    } catch (e) {
      if (!started) throw e;
      res.end(`${JSON.stringify({ error: e instanceof Error ? e.message : String(e) })}\n`);
    }
  };

  /**
   * One image's top-k visual words: `image` (base64 PNG or JPEG, preprocessed as kiln words --image
   * does: LLaVA-1.5's pad to square, resize, crop, CLIP normalisation) or `pixel_values` as the
   * words entry takes them, and `top_k` (a whole number >= 1, default 5).
   */
  const words = async (body: unknown): Promise<TopWords> => {
    if (!wordsProgram || !wordsInput) throw new RequestError(404, 'this service was started without a words artefact');
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new RequestError(400, 'the body must be a JSON object with image (base64 PNG or JPEG) or pixel_values, and optionally top_k');
    const fields = body as Record<string, unknown>;
    const unknownField = Object.keys(fields).find((k) => !['image', 'pixel_values', 'top_k'].includes(k));
    if (unknownField !== undefined) throw new RequestError(400, `unknown field '${unknownField}' (the fields are image or pixel_values, and top_k)`);
    if (('image' in fields) === ('pixel_values' in fields)) throw new RequestError(400, 'give one of image (base64 PNG or JPEG) and pixel_values');
    const k = fields['top_k'] ?? DEFAULT_TOP_K;
    if (typeof k !== 'number' || !Number.isSafeInteger(k) || k < 1) throw new RequestError(400, `top_k: expected a whole number >= 1, got ${JSON.stringify(k)}`);
    let pixels: HostTensor;
    if ('image' in fields) {
      const b64 = fields['image'];
      if (typeof b64 !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw new RequestError(400, 'image: expected the PNG or JPEG file as a base64 string');
      // decodeImage refuses what is not a whole PNG or JPEG with a KilnError: a 400 like the rest.
      const image = await decodeImage(new Uint8Array(Buffer.from(b64, 'base64')), 'image');
      const size = wordsInput.shape[2]!;
      pixels = { dtype: 'f32', shape: [...wordsInput.shape], data: preprocessLlava(image, { size, mean: CLIP_MEAN, std: CLIP_STD, padToSquare: true }) };
    } else pixels = tensorFromJson(wordsInput, fields['pixel_values']);
    return enqueue(() => topKVisualWords(wordsProgram, pixels, k));
  };

  const loss = async (body: unknown): Promise<Record<string, number>> => {
    const feeds = feedsFor(body, entry.inputs);
    const out = await enqueue(() => program.run(entryName, feeds));
    return Object.fromEntries([...out].map(([k, t]) => [k, t.data[0]!]));
  };

  const server = createServer((req, res) => {
    void (async () => {
      const path = new URL(req.url ?? '/', 'http://localhost').pathname;
      try {
        if (path === '/' && req.method === 'GET') {
          send(res, 200, {
            source: opts.artefact.manifest.source,
            entries: Object.keys(opts.artefact.manifest.entries),
            serves: { 'POST /loss': entry.inputs, ...(gen ? { 'POST /generate': gen.artefact.manifest.entries['prefill']!.inputs } : {}), ...(wordsInput ? { 'POST /words': [wordsInput] } : {}) },
          });
        } else if (path === '/loss') {
          if (req.method !== 'POST') throw new RequestError(405, 'POST /loss');
          send(res, 200, await loss(await readBody(req)));
        } else if (path === '/generate') {
          if (req.method !== 'POST') throw new RequestError(405, 'POST /generate');
          await generate(await readBody(req), res);
        } else if (path === '/words') {
          if (req.method !== 'POST') throw new RequestError(405, 'POST /words');
          send(res, 200, await words(await readBody(req)));
        } else {
          throw new RequestError(404, `no ${req.method} ${path} here (GET /, POST /loss, POST /generate, POST /words)`);
        }
      } catch (e) {
        // Bad input the runtime found (a KilnError names the tensor) is the caller's: 400. Anything
        // else is ours: 500 with the message, and the service keeps answering.
        if (e instanceof RequestError) send(res, e.status, { error: e.message });
        else if (e instanceof KilnError) send(res, 400, { error: e.message });
        else send(res, 500, { error: e instanceof Error ? e.message : String(e) });
      }
    })();
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', () => ok());
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  return {
    server,
    url,
    stats,
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        genProgram?.destroy();
        wordsProgram?.destroy();
        program.destroy();
      }),
  };
}
