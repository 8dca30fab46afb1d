// The browser-safe data pipeline in one entry (data/node.ts and data/image-node.ts add file
// reading in Node): records -> prompts and labels -> samples -> batches, and builtin:shapes.
export * from './batch.js';
export * from './builtin.js';
export * from './dataset.js';
export * from './encode.js';
export * from './image.js';
export * from './llava-json.js';
export * from './random.js';
export * from './shapes.js';
export * from './template.js';
export * from './tokenizer.js';
export * from './wordlevel.js';
