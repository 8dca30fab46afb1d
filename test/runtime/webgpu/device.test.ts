// The smoke test CI relies on to prove real WebGPU runs: a device, a compiled shader, exact results.
import { describe, expect, it, vi } from 'vitest';
import { getDevice, gpuStep, throwPendingError } from '../../../runtime/node/device.js';
import { runKernel, uploadBuffer, readInt32 } from '../../../runtime/webgpu/buffers.js';
import { KilnError } from '../../../runtime/errors.js';

describe('webgpu device', () => {
  it('acquires a device with the adapter limits', async () => {
    const kd = await getDevice();
    expect(kd.adapterName.length).toBeGreaterThan(0);
    expect(kd.limits.maxStorageBufferBindingSize).toBe(kd.adapter.limits.maxStorageBufferBindingSize);
    expect(kd.limits.maxComputeWorkgroupStorageSize).toBe(kd.adapter.limits.maxComputeWorkgroupStorageSize);
    expect(await getDevice()).toBe(kd);
  });

  it('runs a compute shader and reads back exact results', async () => {
    const { device } = await getDevice();
    const n = 1000; // not a multiple of the workgroup size: the guard must hold
    const a = Float32Array.from({ length: n }, (_, i) => i * 0.5);
    const b = Float32Array.from({ length: n }, (_, i) => n - i);
    const code = `
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3u) {
  if (id.x < ${n}u) { out[id.x] = a[id.x] * 2.0 + b[id.x]; }
}`;
    const [out] = await runKernel(device, { code, bindings: [a, b, { output: n }], workgroups: [Math.ceil(n / 64), 1, 1] });
    // Every value is a small integer or half-integer times 2: exact in f32.
    expect(Array.from(out!)).toEqual(Array.from(a, (x, i) => x * 2 + b[i]!));
  });

  it('round-trips i32 data', async () => {
    const { device } = await getDevice();
    const data = Int32Array.from([1, -2, 3, 2147483647, -2147483648]);
    const buf = uploadBuffer(device, data);
    expect(Array.from(await readInt32(device, buf, data.length))).toEqual(Array.from(data));
    buf.destroy();
  });

  it('turns a WebGPU validation error into a KilnError naming the step', async () => {
    const { device } = await getDevice();
    const bad = gpuStep(device, 'compiling the broken test shader', () => {
      device.createShaderModule({ code: 'fn main( {' });
    });
    await expect(bad).rejects.toThrow(KilnError);
    await expect(
      gpuStep(device, 'compiling the broken test shader', () => {
        device.createShaderModule({ code: 'fn main( {' });
      }),
    ).rejects.toThrow(/compiling the broken test shader/);
  });

  it('reports an error raised outside any step at the next step', async () => {
    const { device } = await getDevice();
    // MAP_READ | STORAGE is an invalid usage: an uncaptured validation error, delivered as an event.
    device.createBuffer({ size: 4, usage: 0x01 | 0x80 });
    await device.queue.onSubmittedWorkDone();
    await new Promise((r) => setTimeout(r, 20));
    await expect(gpuStep(device, 'the next step', () => 1)).rejects.toThrow(/WebGPU error outside any Kiln GPU step: .*usage/i);
    expect(() => throwPendingError()).not.toThrow(); // reported once
  });

  it('says how to get an adapter when there is none', async () => {
    // A fresh copy of the module (its memoised GPU is per module instance) over a GPU with no adapter.
    vi.resetModules();
    const g = globalThis as { navigator?: unknown };
    const saved = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
    Object.defineProperty(globalThis, 'navigator', { value: { gpu: { requestAdapter: async () => null } }, configurable: true });
    try {
      const fresh = await import('../../../runtime/node/device.js');
      await expect(fresh.getDevice()).rejects.toThrow(/no WebGPU adapter found.*npm run setup.*--enable-unsafe-webgpu/);
    } finally {
      if (saved) Object.defineProperty(globalThis, 'navigator', saved);
      else delete g.navigator;
    }
  });
});
