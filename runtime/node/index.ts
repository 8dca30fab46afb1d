// `kiln/runtime/node`: the runtime plus what only Node has: dawn.node as the GPU (registered on
// import) and safetensors files on disk.
export * from '../index.js';
export * from './device.js';
export * from './safetensors-file.js';
export * from './artefact-files.js';
export * from './checkpoint.js';
