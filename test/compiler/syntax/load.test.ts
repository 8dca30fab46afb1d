import { describe, expect, it } from 'vitest';
import { DiagnosticError, renderDiagnostic } from '../../../compiler/diagnostics.js';
import { loadSpec } from '../../../compiler/syntax/load.js';

/** An in-memory file system that records every read. */
function memfs(files: Record<string, string>) {
  const reads: string[] = [];
  const read = (p: string) => {
    reads.push(p);
    const text = files[p];
    if (text === undefined) throw Object.assign(new Error(`ENOENT: ${p}`), { code: 'ENOENT' });
    return text;
  };
  return { read, reads };
}

function loadError(entry: string, read: (p: string) => string) {
  const sources = new Map<string, string>();
  try {
    loadSpec(entry, read, sources);
  } catch (e) {
    expect(e).toBeInstanceOf(DiagnosticError);
    const d = (e as DiagnosticError).diagnostics[0]!;
    return { d, rendered: renderDiagnostic(d, sources) };
  }
  throw new Error('loaded');
}

describe('loadSpec', () => {
  it('loads the VW-LMM spec with its imports first, each once', () => {
    const { files, sources } = loadSpec('models/vwlmm.kiln');
    expect(files.map((f) => f.file)).toEqual(['models/common.kiln', 'models/clip.kiln', 'models/llama.kiln', 'models/vwlmm.kiln']);
    expect([...sources.keys()].sort()).toEqual(files.map((f) => f.file).sort());
    expect(files[3]!.decls[0]).toMatchObject({ kind: 'import', path: { value: 'clip.kiln' } });
  });

  it('resolves imports relative to the importing file and reads each file once', () => {
    const fs = memfs({
      'spec/main.kiln': 'import "lib/a.kiln"\nimport "lib/b.kiln"\nimport "./lib/a.kiln"',
      'spec/lib/a.kiln': 'import "b.kiln"\nconfig a {}',
      'spec/lib/b.kiln': 'import "../shared/c.kiln"\nconfig b {}',
      'spec/shared/c.kiln': 'config c {}',
    });
    const { files } = loadSpec('./spec/main.kiln', fs.read);
    expect(files.map((f) => f.file)).toEqual(['spec/shared/c.kiln', 'spec/lib/b.kiln', 'spec/lib/a.kiln', 'spec/main.kiln']);
    expect(fs.reads).toEqual(['spec/main.kiln', 'spec/lib/a.kiln', 'spec/lib/b.kiln', 'spec/shared/c.kiln']);
  });

  it('reports a missing import at the import string', () => {
    const fs = memfs({ 'm.kiln': 'config a {}\nimport "nope.kiln"\n' });
    const { d, rendered } = loadError('m.kiln', fs.read);
    expect(d.code).toBe('import');
    expect(d.span).toMatchObject({ file: 'm.kiln', line: 2, col: 8, start: 19, end: 30 });
    expect(rendered).toBe(
      [
        "m.kiln:2:8: error[import]: cannot read imported file 'nope.kiln': no such file",
        '  --> m.kiln:2:8',
        '    |',
        '  2 | import "nope.kiln"',
        '    |        ^^^^^^^^^^^',
      ].join('\n'),
    );
  });

  it('names the cycle when imports loop', () => {
    const fs = memfs({
      'a.kiln': 'import "b.kiln"',
      'b.kiln': 'import "c.kiln"',
      'c.kiln': 'config c {}\nimport "a.kiln"',
    });
    const { d } = loadError('a.kiln', fs.read);
    expect(d.code).toBe('import');
    expect(d.message).toBe('import cycle: a.kiln -> b.kiln -> c.kiln -> a.kiln');
    expect(d.span).toMatchObject({ file: 'c.kiln', line: 2, col: 8 });
    expect(loadError('s.kiln', memfs({ 's.kiln': 'import "s.kiln"' }).read).d.message).toBe('import cycle: s.kiln -> s.kiln');
  });

  it('says usage, without a span, when the entry file cannot be read', () => {
    const { d } = loadError('missing.kiln', memfs({}).read);
    expect(d).toEqual({ code: 'usage', message: "cannot read spec file 'missing.kiln': no such file" });
    let err: unknown;
    try {
      loadSpec('models');
    } catch (e) {
      err = e;
    }
    expect((err as DiagnosticError).diagnostics).toEqual([{ code: 'usage', message: "cannot read spec file 'models': it is a directory" }]);
  });

  it('passes parse errors in imported files through, with their source recorded', () => {
    const fs = memfs({ 'a.kiln': 'import "b.kiln"', 'b.kiln': 'config b {\n  x = = 1\n}' });
    const { d, rendered } = loadError('a.kiln', fs.read);
    expect(d.code).toBe('parse');
    expect(rendered).toContain('2 |   x = = 1');
  });
});
