// `kiln/runtime`: what a page needs to run what `kiln compile` wrote, and nothing of the compiler.
// Browser-safe: no Node built-in and no Node package is reachable from here (test/runtime/
// bundle.test.ts bundles this file for the browser and checks). Node adds runtime/node/.
export * from './tensor.js';
export * from './errors.js';
export * from './f16.js';
export * from './safetensors.js';
export * from './optim/schedule.js';
export * from './eval/answers.js';
export * from './webgpu/device.js';
export * from './webgpu/buffers.js';
export * from './artefact.js';
export * from './fetch.js';
export * from './generate.js';
export * from './random.js';
export * from './webgpu/program.js';
export * from './webgpu/store.js';
export { deviceArray, paddedBytes, unlessLost } from './webgpu/bytes.js';
export * from './webgpu/profile.js';
