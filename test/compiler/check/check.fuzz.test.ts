// Mutation fuzzing past the parser: mutated model files that still parse go through the whole
// checker (configs, modules, shapes). The only acceptable failures are diagnostics and usage
// errors; a TypeError, a stack overflow or a hang would be a bug.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { DiagnosticError } from '../../../compiler/diagnostics.js';
import { loadSpec } from '../../../compiler/syntax/load.js';
import { checkModel, UsageError } from '../../../compiler/check/index.js';

const FILES = ['models/common.kiln', 'models/llama.kiln', 'models/clip.kiln', 'models/vwlmm.kiln', 'bench/block.kiln'];
const TEXT = new Map(FILES.map((f) => [f, readFileSync(f, 'utf8')]));
const TOKEN = /\s+|\/\/[^\n]*|"(?:[^"\\\n]|\\.)*"|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[A-Za-z_]\w*|\.\.|==|!=|<=|>=|&&|\|\||[^]/gu;
const TOKENS = new Map(FILES.map((f) => [f, TEXT.get(f)!.match(TOKEN)!]));
const significant = (t: string) => !/^\s+$|^\/\//.test(t);
const VOCAB = [...new Set([...TOKENS.values()].flat().filter(significant))];

type Mutation = { op: 'delete' | 'duplicate' | 'insert' | 'replace'; at: number; token: number };

/** Mutates significant tokens only; layout tokens stay, so statements keep their lines. */
function mutate(file: string, ms: Mutation[]): string {
  const t = [...TOKENS.get(file)!];
  for (const m of ms) {
    const positions = t.map((x, i) => (significant(x) ? i : -1)).filter((i) => i >= 0);
    const at = positions[m.at % positions.length]!;
    const tok = VOCAB[m.token % VOCAB.length]!;
    if (m.op === 'delete') t.splice(at, 1);
    else if (m.op === 'duplicate') t.splice(at, 0, t[at]!, ' ');
    else if (m.op === 'insert') t.splice(at, 0, tok, ' ');
    else t[at] = tok;
  }
  return t.join('');
}

const ENTRIES: Record<string, { entry: string; config?: string }> = {
  'models/common.kiln': { entry: 'bench/block.kiln' },
  'models/llama.kiln': { entry: 'bench/block.kiln' },
  'bench/block.kiln': { entry: 'bench/block.kiln' },
  'models/clip.kiln': { entry: 'models/vwlmm.kiln', config: 'tiny' },
  'models/vwlmm.kiln': { entry: 'models/vwlmm.kiln', config: 'tiny' },
};

describe('checker fuzz', () => {
  it('mutated specs give a diagnostic or a graph, never another exception', () => {
    let checked = 0;
    fc.assert(
      fc.property(
        fc.constantFrom(...FILES),
        fc.array(fc.record({ op: fc.constantFrom('delete' as const, 'duplicate' as const, 'insert' as const, 'replace' as const), at: fc.nat(), token: fc.nat() }), { minLength: 1, maxLength: 3 }),
        (file, ms) => {
          const mutated = mutate(file, ms);
          const { entry, config } = ENTRIES[file]!;
          try {
            const { files } = loadSpec(entry, (p: string) => (p === file ? mutated : TEXT.get(p) ?? readFileSync(p, 'utf8')));
            checked++;
            checkModel(files, config ? { config } : {});
          } catch (e) {
            if (e instanceof DiagnosticError || e instanceof UsageError) return;
            throw e;
          }
        },
      ),
      { numRuns: Number(process.env['KILN_CHECK_FUZZ_RUNS'] ?? 1500), ...(process.env['KILN_CHECK_FUZZ_SEED'] ? {} : { seed: 7 }) },
    );
    // The mutations must reach the checker often enough to mean something.
    expect(checked).toBeGreaterThan(100);
  }, 120_000);
});
