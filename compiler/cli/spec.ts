// Reading a spec for a command: files (recording their text for diagnostics), then the check.
import { readFileSync } from 'node:fs';
import { loadSpec } from '../syntax/load.js';
import { checkModel, type CheckOptions, type CheckedModel } from '../check/index.js';
import type { Output } from './output.js';

export function loadAndCheck(path: string, opts: CheckOptions, out: Output): CheckedModel {
  const { files } = loadSpec(path, (p: string) => {
    const text = readFileSync(p, 'utf8');
    out.sources.set(p, text);
    return text;
  });
  return checkModel(files, opts);
}
