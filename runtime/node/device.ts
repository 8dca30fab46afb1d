// The Node side of device acquisition: dawn.node (the `webgpu` package) as the GPU when there is
// no navigator.gpu. Importing this module registers it; everything else is runtime/webgpu/device.ts.
import { NoAdapterError } from '../errors.js';
import { setGpuProvider } from '../webgpu/device.js';

setGpuProvider(async () => {
  let mod: typeof import('webgpu');
  try {
    mod = await import('webgpu');
  } catch (err) {
    throw new NoAdapterError(`cannot load the 'webgpu' package (dawn.node): ${String(err)}. Run \`npm ci\`.`, { cause: err });
  }
  Object.assign(globalThis, mod.globals);
  return mod.create([]);
});

export * from '../webgpu/device.js';
