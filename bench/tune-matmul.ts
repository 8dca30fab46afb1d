// Tile sweep for the matmul generator: `node bin/run-ts.js bench/tune-matmul.ts M,N,K[,t] TILE...`
// where TILE is bcast:wg:rm:rn or cols:wg:rm:rn (t = transposed B). Prints best-of-ROUNDS (default 3) GFLOP/s
// per tile; best-of because the machine is shared and noise only ever slows a run down.
import type { MatmulTile } from '../compiler/codegen/matmul.js';
import { bindAll, createStorageBuffer, dispatch, getPipeline, uploadBuffer } from '../runtime/webgpu/buffers.js';
import { getDevice } from '../runtime/node/device.js';

const [shape, ...tiles] = process.argv.slice(2);
const [M, N, K, t] = (shape ?? '1024,1024,1024').split(',');
// MATMUL_MODULE lets a sweep compare a modified generator against the committed one.
const { matmulWGSL } = (await import(process.env.MATMUL_MODULE ?? '../compiler/codegen/matmul.js')) as typeof import('../compiler/codegen/matmul.js');
const kd = await getDevice();
const { device } = kd;
const spec = { M: Number(M), N: Number(N), K: Number(K), transposeB: t === 't' };
const a = uploadBuffer(device, new Float32Array(spec.M * spec.K).fill(1));
const b = uploadBuffer(device, new Float32Array(spec.N * spec.K).fill(1));
const c = createStorageBuffer(device, spec.M * spec.N * 4);
const cands = (tiles.length > 0 ? tiles : ['auto']).map((desc) => {
  const [kind, wg, rm, rn] = desc.split(':');
  const tile: MatmulTile | undefined =
    kind === 'bcast'
      ? { kind, sg: kd.subgroupSize ?? 8, wg: Number(wg), rm: Number(rm), rn: Number(rn) }
      : kind === 'cols'
        ? { kind, wg: Number(wg), rm: Number(rm), rn: Number(rn) }
        : undefined;
  const kernel = matmulWGSL(tile ? { ...spec, tile } : spec, { subgroupSize: kd.subgroupSize });
  const pipeline = getPipeline(device, kernel.code, kernel.label);
  return { kernel, pipeline, bg: bindAll(device, pipeline, [a, b, c]), best: Infinity, cpu: Infinity };
});
// CPU time (all of lavapipe's threads are in this process) is reported next to wall time: on a
// shared machine it moves much less with other people's load.
const once = async (x: (typeof cands)[number]): Promise<number> => {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  dispatch(device, x.pipeline, x.bg, x.kernel.workgroups);
  await device.queue.onSubmittedWorkDone();
  const dt = performance.now() - t0;
  const cu = process.cpuUsage(c0);
  x.cpu = Math.min(x.cpu, (cu.user + cu.system) / 1e3);
  return dt;
};
for (const x of cands) await once(x); // compile
// Rounds interleave the candidates so a burst of load elsewhere does not sink just one of them.
for (let round = 0; round < Number(process.env.ROUNDS ?? 3); round++) {
  for (const x of cands) x.best = Math.min(x.best, await once(x));
}
for (const x of cands) {
  const gflops = (2 * spec.M * spec.N * spec.K) / x.best / 1e6;
  const perCore = (2 * spec.M * spec.N * spec.K) / x.cpu / 1e6;
  console.log(`${x.kernel.label}: ${gflops.toFixed(2)} GFLOP/s (${x.best.toFixed(1)} ms), ${perCore.toFixed(2)} GFLOP/s per CPU-second`);
}
process.exit(0);
