// `npm run example:browser`: builds the example (examples/browser/build.ts) and serves it on
// http://127.0.0.1:PORT/ (default 8080) with node:http. Loopback on purpose: navigator.gpu exists
// only in a secure context, and http://127.0.0.1 counts as one. Static files only, GET and HEAD,
// nothing outside the built folder.
import { createServer, type Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { buildBrowserExample } from './build.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
  '.json': 'application/json',
  '.wgsl': 'text/plain; charset=utf-8',
  '.ts': 'text/plain; charset=utf-8',
  '.safetensors': 'application/octet-stream',
};

/** Serves the files under `root` on 127.0.0.1:`port` (0: any free port). Resolves once listening. */
export function serveStatic(root: string, port = 0): Promise<{ server: Server; url: string }> {
  const base = resolve(root);
  const server = createServer((req, res) => {
    void (async () => {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      const path = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname);
      const file = normalize(join(base, path.endsWith('/') ? `${path}index.html` : path));
      if (file !== base && !file.startsWith(base + sep)) {
        res.writeHead(403).end();
        return;
      }
      try {
        const body = await readFile(file);
        res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'content-length': body.length, 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : body);
      } catch {
        res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${path}\n`);
      }
    })();
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', () => {
      const { port: p } = server.address() as AddressInfo;
      ok({ server, url: `http://127.0.0.1:${p}/` });
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const built = await buildBrowserExample(undefined, { updateBindings: true });
  const { url } = await serveStatic(built.dir, Number(process.env.PORT ?? 8080));
  process.stdout.write(`serving ${built.dir} at ${url} (WebGPU needed: Chrome/Chromium with WebGPU enabled; Ctrl-C stops)\n`);
}
