// `kiln doctor`: what this machine offers Kiln. The WebGPU adapter (its driver, which names the
// Mesa version on lavapipe), the features and limits kernels depend on, and whether Mesa's
// shader cache is warm (lavapipe compiles each kernel at its first dispatch, about a second for
// a big one, unless the cache already holds it). Exit 3 when there is no adapter.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { NoAdapterError } from '../../runtime/errors.js';
import { getDevice } from '../../runtime/node/device.js';
import { defineCommand, type Args } from './args.js';
import type { Output } from './output.js';

export const doctorCommand = defineCommand({
  summary: 'report the WebGPU adapter, its features and limits, the driver (Mesa) version and the shader cache',
  description:
    "Reports the WebGPU adapter Kiln would use (vendor, architecture, driver description, which names the Mesa and LLVM versions on lavapipe), its features (shader-f16, subgroups, timestamp-query) and the limits Kiln's kernels and buffers meet, and the state of Mesa's shader disk cache: a warm cache saves lavapipe about a second per big kernel on a command's first run. Exit 0 with an adapter; 3 without one (the message says how to get one: npm run setup).",
  args: [],
  options: { json: { type: 'boolean', help: '{"node", "adapter" (null without one), "problem", "shader_cache"} on stdout' } },
  examples: [
    { run: 'kiln doctor', does: "this machine's adapter, features, limits and shader cache" },
    { run: 'kiln doctor --json', does: 'the same as JSON' },
  ],
  run: runDoctor,
});

/** The limits that decide what Kiln can compile and run (runtime/webgpu/device.ts requests them). */
const LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
] as const;

export interface ShaderCache {
  readonly path: string | null;
  readonly disabled: boolean;
  readonly files: number;
  readonly bytes: number;
  /** holds compiled shaders: a command's kernels compiled before may be reused. */
  readonly warm: boolean;
}

function folderSize(dir: string, depth = 0): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory() && depth < 4) {
      const s = folderSize(p, depth + 1);
      files += s.files;
      bytes += s.bytes;
    } else if (e.isFile()) {
      files++;
      bytes += statSync(p).size;
    }
  }
  return { files, bytes };
}

/**
 * Mesa's shader disk cache as Mesa finds it: MESA_SHADER_CACHE_DIR, else $XDG_CACHE_HOME, else
 * ~/.cache; the single-file database (`mesa_shader_cache_db`, Mesa's default since 24) or the
 * multi-file layout (`mesa_shader_cache`). Warm means it holds more than an empty index.
 */
export function mesaShaderCache(env: NodeJS.ProcessEnv = process.env): ShaderCache {
  const disabled = ['1', 'true', 'yes'].includes((env['MESA_SHADER_CACHE_DISABLE'] ?? '').toLowerCase());
  const base = env['MESA_SHADER_CACHE_DIR'] ?? join(env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'));
  const candidates = env['MESA_SHADER_CACHE_DIR'] ? [base] : [join(base, 'mesa_shader_cache_db'), join(base, 'mesa_shader_cache')];
  let best: { path: string; files: number; bytes: number } | null = null;
  for (const p of candidates) {
    if (!existsSync(p)) continue;
    const s = folderSize(p);
    if (!best || s.bytes > best.bytes) best = { path: p, ...s };
  }
  // An index alone is a few KiB; compiled kernels are tens of KiB each.
  return { path: best?.path ?? null, disabled, files: best?.files ?? 0, bytes: best?.bytes ?? 0, warm: !disabled && (best?.bytes ?? 0) > 1 << 20 };
}

async function runDoctor(values: { json?: boolean }, _args: Args, out: Output): Promise<number> {
  const cache = mesaShaderCache();
  const node = process.versions.node;
  let adapter: Record<string, unknown> | null = null;
  let problem: string | null = null;
  try {
    const kd = await getDevice();
    const info = kd.adapter.info;
    const limits = Object.fromEntries(LIMITS.map((l) => [l, kd.limits[l]]));
    adapter = {
      name: kd.adapterName,
      vendor: info.vendor,
      architecture: info.architecture,
      device: info.device,
      description: info.description,
      features: [...kd.adapter.features].sort(),
      subgroup_size: kd.subgroupSize ?? null,
      limits,
    };
  } catch (e) {
    if (!(e instanceof NoAdapterError)) throw e;
    problem = e.message;
  }
  if (values.json) {
    out.stdout(JSON.stringify({ node, adapter, problem, shader_cache: cache }));
    return adapter ? 0 : 3;
  }
  const mib = (b: number) => `${(b / (1 << 20)).toFixed(1)} MiB`;
  out.stdout(`node ${node}`);
  if (adapter) {
    const a = adapter as { name: string; features: string[]; subgroup_size: number | null; limits: Record<string, number> };
    out.stdout(`adapter: ${a.name}`);
    out.stdout(`features: ${a.features.join(', ') || '(none)'}${a.subgroup_size ? ` (subgroup size ${a.subgroup_size})` : ''}`);
    for (const [k, v] of Object.entries(a.limits)) out.stdout(`  ${k.padEnd(34)} ${v >= 1 << 20 ? `${v} (${mib(v)})` : v}`);
  } else out.stderr(`error: ${problem}`);
  const where = cache.path ?? 'none yet';
  const state = cache.disabled ? 'disabled (MESA_SHADER_CACHE_DISABLE)' : cache.warm ? 'warm' : 'cold';
  out.stdout(`Mesa shader cache: ${state}, ${where}${cache.path ? ` (${cache.files} files, ${mib(cache.bytes)})` : ''}`);
  return adapter ? 0 : 3;
}
