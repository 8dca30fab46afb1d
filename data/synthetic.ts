// A batch made up to a model's input contract: what `kiln profile` times when no --batch is
// given. The values are random but valid (ids in the vocabulary, one image placeholder per row
// in column 1, the first quarter of the labels ignored), so every kernel does its real work.
import { KilnError } from '../runtime/errors.js';
import type { HostTensor } from '../runtime/tensor.js';
import { validateBatch, type InputContract, type IndexRule } from '../runtime/validate.js';
import { numel } from '../runtime/tensor.js';

/** A small deterministic generator (mulberry32), so the same seed gives the same batch. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A valid batch for `contract` with the symbols (B, T, ...) bound by `symbols`: floats uniform in
 * [-1, 1); integer inputs under an index rule uniform in [0, size) of the tightest rule; the
 * once-per-row token at column 1 of each row; an index rule that lets the ignore index through
 * gets it at the first quarter of each row (labels of a prompt). Checked with validateBatch.
 * Throws a KilnError when a dim is neither a number nor a bound symbol.
 */
export function syntheticBatch(contract: InputContract, symbols: ReadonlyMap<string, number>, seed = 0): Map<string, HostTensor> {
  const r = mulberry32(seed);
  const out = new Map<string, HostTensor>();
  for (const decl of contract.inputs) {
    const shape = decl.shape.map((d) => {
      if (typeof d === 'number') return d;
      const v = d === null ? undefined : symbols.get(d);
      if (v === undefined) throw new KilnError(`input ${decl.name}: cannot size dim ${d ?? '(a formula)'} for a made-up batch; give --batch FILE`);
      return v;
    });
    const n = numel(shape);
    if (decl.dtype !== 'i32') {
      out.set(decl.name, { dtype: 'f32', shape, data: Float32Array.from({ length: n }, () => 2 * r() - 1) });
      continue;
    }
    const index = contract.rules.filter((x): x is IndexRule => x.kind === 'index' && x.input === decl.name);
    const size = index.length ? Math.min(...index.map((x) => x.size)) : 1;
    const ignore = index.flatMap((x) => x.also).find((s) => s.means.includes('ignore'));
    const once = contract.rules.find((x) => x.kind === 'once-per-row' && x.input === decl.name);
    const cols = shape[shape.length - 1] ?? 1;
    const data = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const col = i % cols;
      data[i] = once && col === 1 ? (once as { token: number }).token : ignore && col < Math.ceil(cols / 4) ? ignore.value : Math.floor(r() * size);
    }
    out.set(decl.name, { dtype: 'i32', shape, data });
  }
  return validateBatch(contract, out);
}
