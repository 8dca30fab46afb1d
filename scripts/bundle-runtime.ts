// Bundles `kiln/runtime` (runtime/index.ts) for the browser with esbuild, minified, and checks
// that nothing of the compiler came along: no compiler/ or grammar/ file, no nearley, moo or
// ts-morph, no dawn.node, no `node:` module. `npm run bundle-check` prints the minified size;
// test/runtime/bundle.test.ts runs the same check in the suite.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import * as path from 'node:path';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Input paths (relative to the repository) that must never be in the browser bundle. */
const FORBIDDEN: readonly RegExp[] = [
  /^compiler\//,
  /^grammar\//,
  /node_modules\/(nearley|moo|ts-morph|webgpu)\//,
  /^node:/,
];

export interface BundleReport {
  /** minified bytes of the bundle. */
  readonly bytes: number;
  /** every input esbuild pulled in, relative to the repository. */
  readonly inputs: readonly string[];
  /** inputs that match FORBIDDEN, and `node:` specifiers left in the output. */
  readonly forbidden: readonly string[];
}

/** Bundles runtime/index.ts as an ES module for browsers, in memory. */
export async function bundleRuntime(entry = 'runtime/index.ts'): Promise<BundleReport> {
  const result = await build({
    entryPoints: [path.join(ROOT, entry)],
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
  const inputs = Object.keys(result.metafile.inputs);
  const text = result.outputFiles.map((f) => f.text).join('\n');
  const leftImports = [...text.matchAll(/["'](node:[a-z_/]+)["']/g)].map((m) => m[1]!);
  const forbidden = [...inputs.filter((i) => FORBIDDEN.some((re) => re.test(i))), ...leftImports];
  return { bytes: result.outputFiles.reduce((a, f) => a + f.contents.byteLength, 0), inputs, forbidden };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = await bundleRuntime();
  process.stdout.write(`kiln/runtime for browsers: ${r.inputs.length} files, ${r.bytes} bytes minified (${(r.bytes / 1024).toFixed(1)} KiB)\n`);
  if (r.forbidden.length > 0) {
    process.stderr.write(`the runtime bundle must not contain:\n${r.forbidden.map((f) => `  ${f}`).join('\n')}\n`);
    process.exit(1);
  }
}
