// A temporary copy of a golden case with one tensor element changed: how tests feed a NaN, an inf
// or an out-of-range value through the real files a user would pass.
import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors } from '../../runtime/node/safetensors-file.js';

/** A copy of the golden folder `golden` with `file`'s `tensor` element `index` (flat) set to `value`; returns the copy's path. */
export function poked(golden: string, file: string, tensor: string, index: number, value: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-poked-'));
  cpSync(golden, dir, { recursive: true });
  const path = join(dir, file);
  const all = readSafetensors(path);
  const t = all.get(tensor)!;
  const data = Float32Array.from(t.data);
  data[index] = value;
  all.set(tensor, { ...t, data });
  writeSafetensors(path, all, { dtype: 'f32' });
  return dir;
}
