// f32 matmul GFLOP/s: Kiln's generated kernel against @tensorflow/tfjs's WebGPU backend, both on
// the same dawn.node GPU object (so the same adapter and driver). Each side is warmed up (the
// first dispatch compiles the shader), then timed as submit -> queue.onSubmittedWorkDone, median
// of `runs`; each result is read back once at the end and spot-checked against an f64 dot product,
// so a kernel that silently did nothing cannot post a good number.
import { matmulWGSL } from '../compiler/codegen/matmul.js';
import { bindAll, dispatch, getPipeline, readFloat32, uploadBuffer, createStorageBuffer } from '../runtime/webgpu/buffers.js';
import { getGPU, gpuStep, type KilnDevice } from '../runtime/node/device.js';

export interface MatmulRow {
  n: number;
  kiln_gflops: number;
  tfjs_gflops: number;
  /** kiln / tfjs */
  ratio: number;
}

export interface MatmulBenchOptions {
  sizes: number[];
  runs: number;
  log: (msg: string) => void;
}

type Tf = typeof import('@tensorflow/tfjs');

interface TfWebGPUBackend {
  device: GPUDevice;
  commandEncoder: unknown;
  endComputePassEncoder(): void;
  submitQueue(): void;
}

function randomMatrix(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n * n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32) * 2 - 1;
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Largest |C - A@B| over a fixed sample of entries, in f64. */
function spotCheck(n: number, A: Float32Array, B: Float32Array, C: Float32Array): number {
  let worst = 0;
  for (let t = 0; t < 64; t++) {
    const i = (t * 7919) % n;
    const j = (t * 104729 + 13) % n;
    let s = 0;
    for (let k = 0; k < n; k++) s += A[i * n + k]! * B[k * n + j]!;
    worst = Math.max(worst, Math.abs(s - C[i * n + j]!));
  }
  return worst;
}

export async function timeRuns(runs: number, once: () => Promise<number>): Promise<number> {
  await once(); // compile + first touch of the buffers
  await once();
  const ts: number[] = [];
  for (let i = 0; i < runs; i++) ts.push(await once());
  return median(ts);
}

async function kilnMatmul(kd: KilnDevice, n: number, A: Float32Array, B: Float32Array, runs: number): Promise<{ ms: number; C: Float32Array }> {
  const { device } = kd;
  const kernel = matmulWGSL({ M: n, N: n, K: n }, { subgroupSize: kd.subgroupSize, maxComputeWorkgroupsPerDimension: kd.limits.maxComputeWorkgroupsPerDimension });
  const a = uploadBuffer(device, A, 'bench A');
  const b = uploadBuffer(device, B, 'bench B');
  const c = createStorageBuffer(device, n * n * 4, 'bench C');
  try {
    const pipeline = await gpuStep(device, `compiling ${kernel.label}`, () => getPipeline(device, kernel.code, kernel.label));
    const bindGroup = bindAll(device, pipeline, [a, b, c]);
    const ms = await timeRuns(runs, async () => {
      const t0 = performance.now();
      dispatch(device, pipeline, bindGroup, kernel.workgroups);
      await device.queue.onSubmittedWorkDone();
      return performance.now() - t0;
    });
    return { ms, C: await readFloat32(device, c, n * n) };
  } finally {
    a.destroy();
    b.destroy();
    c.destroy();
  }
}

let tfPromise: Promise<Tf> | undefined;

/** tfjs with its WebGPU backend on Kiln's GPU object: navigator.gpu must exist before the import. */
export function loadTfjs(): Promise<Tf> {
  tfPromise ??= (async () => {
    const gpu = await getGPU();
    const g = globalThis as { navigator?: { gpu?: GPU } };
    if (!g.navigator) Object.defineProperty(globalThis, 'navigator', { value: {}, configurable: true, writable: true });
    if (!g.navigator!.gpu) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
    const tf = await import('@tensorflow/tfjs');
    await import('@tensorflow/tfjs-backend-webgpu');
    if (!(await tf.setBackend('webgpu'))) throw new Error('tfjs could not initialise its webgpu backend');
    await tf.ready();
    return tf;
  })();
  return tfPromise;
}

async function tfjsMatmul(tf: Tf, n: number, A: Float32Array, B: Float32Array, runs: number): Promise<{ ms: number; C: Float32Array }> {
  const backend = tf.backend() as unknown as TfWebGPUBackend;
  const a = tf.tensor2d(A, [n, n]);
  const b = tf.tensor2d(B, [n, n]);
  let last: ReturnType<Tf['matMul']> | undefined;
  try {
    const ms = await timeRuns(runs, async () => {
      last?.dispose();
      const t0 = performance.now();
      last = tf.matMul(a, b);
      // tfjs batches dispatches into its own encoder; flush it so the wait covers this matmul.
      if (backend.commandEncoder) {
        backend.endComputePassEncoder();
        backend.submitQueue();
      }
      await backend.device.queue.onSubmittedWorkDone();
      return performance.now() - t0;
    });
    return { ms, C: (await last!.data()) as Float32Array };
  } finally {
    last?.dispose();
    a.dispose();
    b.dispose();
  }
}

export async function benchMatmul(kd: KilnDevice, opts: MatmulBenchOptions): Promise<MatmulRow[]> {
  const tf = await loadTfjs();
  const rows: MatmulRow[] = [];
  for (const n of opts.sizes) {
    const A = randomMatrix(n, n);
    const B = randomMatrix(n, n + 1);
    const gflop = (2 * n * n * n) / 1e9;
    const kiln = await kilnMatmul(kd, n, A, B, opts.runs);
    const tfjs = await tfjsMatmul(tf, n, A, B, opts.runs);
    // f32 sums of n products of values in [-1, 1]: errors far below 1e-3 * sqrt(n).
    for (const [who, r] of [['kiln', kiln], ['tfjs', tfjs]] as const) {
      const err = spotCheck(n, A, B, r.C);
      if (!(err <= 1e-3 * Math.sqrt(n))) throw new Error(`bench: ${who} matmul n=${n} is wrong (max error ${err})`);
    }
    const row: MatmulRow = {
      n,
      kiln_gflops: round(gflop / (kiln.ms / 1e3)),
      tfjs_gflops: round(gflop / (tfjs.ms / 1e3)),
      ratio: round(tfjs.ms / kiln.ms),
    };
    opts.log(`matmul n=${n}: kiln ${row.kiln_gflops} GFLOP/s, tfjs ${row.tfjs_gflops} GFLOP/s, ratio ${row.ratio}`);
    rows.push(row);
  }
  return rows;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
