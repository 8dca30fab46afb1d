// Mutation fuzzing: the model sources with tokens deleted, duplicated, swapped or moved, and raw
// characters inserted or overwritten. Whatever comes out, parseSpec either returns an AST or
// throws one DiagnosticError whose span lies inside the text; never anything else, and never
// its "internal error" fallback.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DiagnosticError } from '../../../compiler/diagnostics.js';
import { parseSpec } from '../../../compiler/syntax/parse.js';
import { MODEL_NAMES, modelSource, spanProblem } from './helpers.js';

// Layout is kept as tokens too, so that joining the tokens gives the source back.
const TOKEN =
  /\s+|\/\/[^\n]*|"(?:[^"\\\n]|\\.)*"|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[A-Za-z_]\w*|\.\.|==|!=|<=|>=|&&|\|\||[^]/gu;

const SOURCES = MODEL_NAMES.map((n) => modelSource(n).text.match(TOKEN)!);
const ALL_TOKENS = [...new Set(SOURCES.flat())];

type Mutation =
  | { op: 'delete' | 'duplicate'; at: number; len: number }
  | { op: 'swap'; at: number; other: number }
  | { op: 'insert'; at: number; token: number }
  | { op: 'char' | 'overwrite'; at: number; char: string };

const CHARS = fc.oneof(
  fc.constantFrom(...'{}()[],;:.=-!+*/%@<>&|"\\\n\t #$`~\'?'.split(''), '\0', '\r', '\u00a0', 'é', '😀', '\ud800', '\ufeff'),
  fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)),
);
const MUTATION: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constantFrom('delete' as const, 'duplicate' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ op: fc.constant('swap' as const), at: fc.nat(), other: fc.nat() }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), token: fc.nat() }),
  fc.record({ op: fc.constantFrom('char' as const, 'overwrite' as const), at: fc.nat(), char: CHARS }),
);

function mutate(tokens: string[], mutations: Mutation[]): string {
  const t = [...tokens];
  for (const m of mutations) {
    const at = m.at % (t.length + 1);
    if (m.op === 'delete') t.splice(at, m.len);
    else if (m.op === 'duplicate') t.splice(at, 0, ...t.slice(at, at + m.len));
    else if (m.op === 'insert') t.splice(at, 0, ' ', ALL_TOKENS[m.token % ALL_TOKENS.length]!, ' ');
    else if (m.op === 'swap' && t.length > 0) {
      const i = at % t.length;
      const j = m.other % t.length;
      [t[i], t[j]] = [t[j]!, t[i]!];
    } else if (m.op === 'char' || m.op === 'overwrite') {
      // Characters land anywhere, including inside strings, comments and names.
      const text = t.join('');
      const pos = m.at % (text.length + 1);
      const rest = m.op === 'overwrite' ? pos + 1 : pos;
      return mutate([text.slice(0, pos) + m.char + text.slice(rest)], mutations.slice(mutations.indexOf(m) + 1));
    }
  }
  return t.join('');
}

/** true when the text parsed. */
function check(text: string): boolean {
  try {
    parseSpec(text, 'fuzz.kiln');
    return true;
  } catch (e) {
    if (!(e instanceof DiagnosticError)) throw new Error(`not a DiagnosticError: ${String(e)}`);
    const [d, ...more] = e.diagnostics;
    if (!d || more.length) throw new Error(`expected one diagnostic, got ${e.diagnostics.length}`);
    if (d.code !== 'parse') throw new Error(`code ${d.code}`);
    if (d.message.startsWith('internal')) throw new Error(d.message);
    const problem = spanProblem(d.span, text, 'fuzz.kiln');
    if (problem) throw new Error(`${d.message}: bad span: ${problem}`);
    return false;
  }
}

// Cases are runs of whole top-level declarations (each starts a line with import, config, module,
// model or a comment), so that the mutated text is mostly valid and the parser gets deep into it
// rather than failing at the first token; and short, so the budget buys many cases.
const DECL_START = /^(?:import|config|module|model|\/\/)/;
const CHUNKS = SOURCES.map((tokens) => {
  const starts = tokens.flatMap((tok, i) => (i === 0 || (DECL_START.test(tok) && tokens[i - 1]!.endsWith('\n')) ? [i] : []));
  return starts.map((a, k) => tokens.slice(a, starts[k + 1] ?? tokens.length));
});

const CASE = fc.record({
  source: fc.nat(SOURCES.length - 1),
  from: fc.nat(),
  count: fc.integer({ min: 1, max: 5 }),
  mutations: fc.array(MUTATION, { minLength: 1, maxLength: 4 }),
});

function window(source: number, from: number, count: number): string[] {
  const chunks = CHUNKS[source]!;
  const a = from % chunks.length;
  return chunks.slice(a, a + count).flat();
}

// KILN_FUZZ_RUNS=1000000 for a longer local run; CI keeps the default.
const RUNS = Number(process.env.KILN_FUZZ_RUNS) || 10_000;

describe('parseSpec under mutation', () => {
  it('never throws anything but a well-placed DiagnosticError (token and character mutations)', () => {
    let parsed = 0;
    fc.assert(
      fc.property(CASE, ({ source, from, count, mutations }) => {
        if (check(mutate(window(source, from, count), mutations))) parsed++;
      }),
      { numRuns: RUNS },
    );
    // Some mutations keep the text valid (a duplicated blank line, a swapped operator); if none
    // did, the cases would be failing too early to test much.
    expect(parsed).toBeGreaterThan(RUNS / 20);
  });

  it('survives arbitrary strings, and strings made of the language tokens', () => {
    const soup = fc.array(fc.oneof(fc.constantFrom(...ALL_TOKENS), CHARS), { maxLength: 60 }).map((a) => a.join(' '));
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), fc.string({ maxLength: 200 }), soup), (text) => {
        check(text);
      }),
      { numRuns: Math.ceil(RUNS / 5) },
    );
  });

  it('survives whole mutated model files', () => {
    fc.assert(
      fc.property(fc.nat(SOURCES.length - 1), fc.array(MUTATION, { minLength: 1, maxLength: 8 }), (source, mutations) => {
        check(mutate(SOURCES[source]!, mutations));
      }),
      { numRuns: Math.ceil(RUNS / 10) },
    );
  });
});
