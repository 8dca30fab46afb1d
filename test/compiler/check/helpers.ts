// Checks spec text held in memory: each test writes its files as a map, no disk needed.
import { loadSpec } from '../../../compiler/syntax/load.js';
import { checkModel, type CheckOptions, type CheckedModel } from '../../../compiler/check/index.js';
import { DiagnosticError, renderDiagnostics } from '../../../compiler/diagnostics.js';

export function checkTexts(files: Record<string, string>, entry: string, opts: CheckOptions = {}): CheckedModel {
  const { files: parsed } = loadSpec(entry, (p: string) => {
    const t = files[p];
    if (t === undefined) throw Object.assign(new Error(`ENOENT: ${p}`), { code: 'ENOENT' });
    return t;
  });
  return checkModel(parsed, opts);
}

/** The rendered diagnostic a spec gives (throws if it checks). */
export function diagnose(files: Record<string, string>, entry: string, opts: CheckOptions = {}): string {
  try {
    checkTexts(files, entry, opts);
  } catch (e) {
    if (e instanceof DiagnosticError) return renderDiagnostics(e.diagnostics, new Map(Object.entries(files)));
    throw e;
  }
  throw new Error('expected a diagnostic');
}
