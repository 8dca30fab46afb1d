// A spec and everything it imports, each file parsed once, imports before their importers (so a
// checker can register names in order). Import paths are relative to the importing file, and
// every file is named by its path joined onto the entry path's directory: the names in spans are
// the strings handed to readFile, so a caller recording sources by that string can render them.
import { readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { DiagnosticError, fail } from '../diagnostics.js';
import type { ImportDecl, SpecFile } from './ast.js';
import { parseSpec } from './parse.js';

export interface LoadedSpec {
  files: SpecFile[];
  sources: Map<string, string>;
}

function reason(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EISDIR') return 'it is a directory';
  return e instanceof Error ? e.message : String(e);
}

/**
 * Reads and parses `entryPath` and its imports. Throws DiagnosticError: 'usage' when the entry
 * file cannot be read, 'import' for a missing import or a cycle, 'parse' from parseSpec.
 * `sources` is filled as files are read, so that when loading fails the caller can still show
 * the offending line.
 */
export function loadSpec(
  entryPath: string,
  readFile: (p: string) => string = (p) => readFileSync(p, 'utf8'),
  sources: Map<string, string> = new Map(),
): LoadedSpec {
  const files: SpecFile[] = [];
  const done = new Set<string>();
  // Files being loaded, outermost first: an import of one of them closes a cycle.
  const active: string[] = [];

  const visit = (path: string, text: string): void => {
    sources.set(path, text);
    const spec = parseSpec(text, path);
    active.push(path);
    for (const d of spec.decls) {
      if (d.kind === 'import') visitImport(path, d);
    }
    active.pop();
    done.add(path);
    files.push(spec);
  };

  const visitImport = (from: string, d: ImportDecl): void => {
    const path = normalize(join(dirname(from), d.path.value));
    if (done.has(path)) return;
    const at = active.indexOf(path);
    if (at >= 0) {
      const cycle = [...active.slice(at), path].join(' -> ');
      fail('import', `import cycle: ${cycle}`, d.path.span);
    }
    let text: string;
    try {
      text = readFile(path);
    } catch (e) {
      if (e instanceof DiagnosticError) throw e;
      fail('import', `cannot read imported file '${path}': ${reason(e)}`, d.path.span);
    }
    visit(path, text);
  };

  const entry = normalize(entryPath);
  let text: string;
  try {
    text = readFile(entry);
  } catch (e) {
    if (e instanceof DiagnosticError) throw e;
    fail('usage', `cannot read spec file '${entryPath}': ${reason(e)}`);
  }
  visit(entry, text);
  return { files, sources };
}
