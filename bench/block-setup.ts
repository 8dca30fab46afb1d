// The block benchmark's inputs: bench/block.kiln checked, and deterministic random weights
// (norm weights near 1, others small) and activations, shared by Kiln and the tfjs peer.
import { readFileSync } from 'node:fs';
import { loadSpec } from '../compiler/syntax/load.js';
import { checkModel } from '../compiler/check/index.js';
import { evalShape } from '../compiler/ir/dims.js';
import type { HostTensor } from '../runtime/tensor.js';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

export function blockSetup(seq: number) {
  const files = loadSpec('bench/block.kiln', (p: string) => readFileSync(p, 'utf8')).files;
  const model = checkModel(files, {});
  const r = rng(7);
  const params = new Map<string, HostTensor>();
  for (const p of model.graph.params) {
    const shape = evalShape(p.type.shape, new Map());
    const n = shape.reduce((a, b) => a * b, 1);
    const scale = p.init.kind === 'ones' ? 0 : 0.1;
    params.set(p.name, { dtype: 'f32', shape, data: Float32Array.from({ length: n }, () => (p.init.kind === 'ones' ? 1 + 0.1 * r() : scale * r())) });
  }
  const x: HostTensor = { dtype: 'f32', shape: [1, seq, 256], data: Float32Array.from({ length: seq * 256 }, () => 2 * r()) };
  return { model, params, x };
}

