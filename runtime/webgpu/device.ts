// WebGPU device acquisition, in one place for Node (dawn.node via the `webgpu` package, which
// runtime/node/device.ts plugs in) and browsers (navigator.gpu). Kernels are tuned against what the adapter really offers, so the device
// is requested with the adapter's own limits and optional features instead of the spec defaults
// (which would cap storage bindings at 128 MiB and workgroup memory at 16 KiB everywhere).
import { KilnError, NoAdapterError } from '../errors.js';

export interface KilnDevice {
  readonly device: GPUDevice;
  readonly adapter: GPUAdapter;
  /** "vendor architecture description", for logs and bench output. */
  readonly adapterName: string;
  readonly features: {
    readonly shaderF16: boolean;
    readonly timestampQuery: boolean;
    readonly subgroups: boolean;
  };
  /**
   * The subgroup size when the adapter reports a single one (lavapipe: 8), else undefined.
   * Kernels that assume an exact subgroup width may only be chosen when this is set.
   */
  readonly subgroupSize: number | undefined;
  readonly limits: GPUSupportedLimits;
}

const LIMITS_TO_REQUEST = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'maxUniformBufferBindingSize',
  'maxBindGroups',
  'maxBindingsPerBindGroup',
] as const;

const OPTIONAL_FEATURES = ['shader-f16', 'timestamp-query', 'subgroups'] as const;

const HOW_TO_GET_ONE =
  'In Node, run `npm run setup` (scripts/setup-webgpu.sh installs Mesa lavapipe when there is no GPU); ' +
  'in a browser, use one with WebGPU enabled (Chrome: --enable-unsafe-webgpu).';

// dawn.node aborts the process if the GPU object from create() is garbage-collected, so it lives
// here for the whole process, next to the memoised device.
let gpuInstance: GPU | undefined;
let devicePromise: Promise<KilnDevice> | undefined;

/** What the process is doing on the GPU right now, so asynchronous errors can name it. */
const running: string[] = [];
let pendingError: KilnError | undefined;

/** The GPU entry point: navigator.gpu when present, else dawn.node (its WebGPU globals installed). */
export async function getGPU(): Promise<GPU> {
  if (gpuInstance) return gpuInstance;
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) {
    gpuInstance = nav.gpu;
    return gpuInstance;
  }
  if (!gpuProvider) throw new NoAdapterError(`WebGPU is not available here (no navigator.gpu). ${HOW_TO_GET_ONE}`);
  gpuInstance = await gpuProvider();
  return gpuInstance;
}

let gpuProvider: (() => Promise<GPU>) | undefined;

/**
 * Where the GPU object comes from when there is no navigator.gpu: the Node entry
 * (runtime/node/device.ts) registers dawn.node here, so this module never names a Node package.
 */
export function setGpuProvider(provider: () => Promise<GPU>): void {
  gpuProvider = provider;
}

function whereNow(): string {
  return running.length > 0 ? `during ${running[running.length - 1]}` : 'outside any Kiln GPU step';
}

function describeAdapter(adapter: GPUAdapter): string {
  const info = adapter.info;
  return [info.vendor, info.architecture, info.description].filter((s) => s && s.length > 0).join(' ') || 'unknown adapter';
}

async function acquire(): Promise<KilnDevice> {
  const gpu = await getGPU();
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new NoAdapterError(`no WebGPU adapter found. ${HOW_TO_GET_ONE}`);

  const requiredLimits: Record<string, number> = {};
  for (const name of LIMITS_TO_REQUEST) {
    const v = adapter.limits[name];
    if (typeof v === 'number') requiredLimits[name] = v;
  }
  const requiredFeatures = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f)) as GPUFeatureName[];
  const adapterName = describeAdapter(adapter);
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredLimits, requiredFeatures, label: 'kiln' });
  } catch (err) {
    throw new KilnError(`cannot create a WebGPU device on ${adapterName}: ${String(err)}`, { cause: err });
  }

  // Errors outside any gpuStep scope arrive as events; keep the first and throw it at the next step.
  device.addEventListener('uncapturederror', (ev) => {
    const e = (ev as GPUUncapturedErrorEvent).error;
    pendingError ??= new KilnError(`WebGPU error ${whereNow()}: ${e.message}`);
  });
  void device.lost.then((info) => {
    // A destroyed device was given up on purpose; anything else poisons later work.
    if (devicePromise && info.reason !== 'destroyed') {
      pendingError ??= new KilnError(`WebGPU device lost ${whereNow()}: ${info.message || info.reason}`);
    }
    devicePromise = undefined;
  });

  const info = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
  const fixedSubgroup =
    adapter.features.has('subgroups') && info.subgroupMinSize !== undefined && info.subgroupMinSize === info.subgroupMaxSize
      ? info.subgroupMinSize
      : undefined;
  return {
    device,
    adapter,
    adapterName,
    features: {
      shaderF16: device.features.has('shader-f16'),
      timestampQuery: device.features.has('timestamp-query'),
      subgroups: device.features.has('subgroups'),
    },
    subgroupSize: fixedSubgroup,
    limits: device.limits,
  };
}

/** The process's WebGPU device, created once (again after a device loss). */
export function getDevice(): Promise<KilnDevice> {
  if (!devicePromise) {
    devicePromise = acquire();
    devicePromise.catch(() => {
      devicePromise = undefined;
    });
  }
  return devicePromise;
}

/** Throws (once) an error that arrived asynchronously: an uncaptured error or a device loss. */
export function throwPendingError(): void {
  const e = pendingError;
  if (e) {
    pendingError = undefined;
    throw e;
  }
}

const SCOPES: GPUErrorFilter[] = ['validation', 'out-of-memory', 'internal'];

/**
 * Runs one GPU step (pipeline creation, dispatch, read-back) inside error scopes, so a WebGPU
 * validation, out-of-memory or internal error becomes a KilnError naming `what` instead of a
 * console warning long after the fact. Steps are meant to run one at a time: error scopes are a
 * per-device stack, so two overlapping steps could see each other's errors.
 */
export async function gpuStep<T>(device: GPUDevice, what: string, fn: () => T | Promise<T>): Promise<T> {
  throwPendingError();
  for (const f of SCOPES) device.pushErrorScope(f);
  running.push(what);
  let result: T | undefined;
  let thrown: unknown;
  let failed = false;
  try {
    result = await fn();
  } catch (err) {
    failed = true;
    thrown = err;
  } finally {
    running.pop();
  }
  // Pop every scope even when fn threw, so the device's scope stack stays balanced.
  const errors: (GPUError | null)[] = [];
  for (let i = SCOPES.length - 1; i >= 0; i--) errors.push(await device.popErrorScope());
  const gpuError = errors.find((e): e is GPUError => e !== null);
  if (gpuError) {
    const kind = gpuError.constructor?.name ?? 'GPUError';
    throw new KilnError(`WebGPU ${kind} during ${what}: ${gpuError.message}`, failed ? { cause: thrown } : {});
  }
  if (failed) {
    if (thrown instanceof KilnError) throw thrown;
    throw new KilnError(`${what} failed: ${thrown instanceof Error ? thrown.message : String(thrown)}`, { cause: thrown });
  }
  throwPendingError();
  return result as T;
}
