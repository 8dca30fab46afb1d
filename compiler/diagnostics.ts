// Diagnostics are data: a code, a message, the span it is about and notes pointing elsewhere.
// They are rendered in one place, with the source line and a caret under the spot, and every
// user-facing error in Kiln goes through here (never a stack trace).
import type { Span } from './syntax/ast.js';

export interface DiagnosticNote {
  message: string;
  span?: Span;
}

export interface Diagnostic {
  /** stable, greppable: 'parse', 'name', 'config', 'shape', 'dtype', 'import', 'usage', ... */
  code: string;
  message: string;
  span?: Span;
  notes?: DiagnosticNote[];
}

/** Thrown inside the compiler, caught at the edges (CLI, library entry points). */
export class DiagnosticError extends Error {
  constructor(readonly diagnostics: Diagnostic[]) {
    super(diagnostics.map((d) => d.message).join('\n'));
  }
}

export function fail(code: string, message: string, span?: Span, notes?: DiagnosticNote[]): never {
  throw new DiagnosticError([{ code, message, ...(span ? { span } : {}), ...(notes ? { notes } : {}) }]);
}

/** file path -> its text, for rendering source lines. */
export type SourceMap = ReadonlyMap<string, string>;

function sourceLine(text: string, line: number): string {
  return text.split(/\r?\n/)[line - 1] ?? '';
}

function renderSpan(span: Span, sources: SourceMap, indent: string): string[] {
  const text = sources.get(span.file);
  const out = [`${indent}--> ${span.file}:${span.line}:${span.col}`];
  if (text === undefined) return out;
  const line = sourceLine(text, span.line).replace(/\t/g, ' ');
  const gutter = String(span.line);
  const pad = ' '.repeat(gutter.length);
  // Underline the whole span when it stays on one line, else mark its first character.
  const lineStartOffset = span.start - (span.col - 1);
  const lineEndOffset = lineStartOffset + line.length;
  const width = Math.max(1, Math.min(span.end, lineEndOffset) - span.start);
  out.push(`${indent}${pad} |`);
  out.push(`${indent}${gutter} | ${line}`);
  out.push(`${indent}${pad} | ${' '.repeat(Math.max(0, span.col - 1))}${'^'.repeat(width)}`);
  return out;
}

export function renderDiagnostic(d: Diagnostic, sources: SourceMap): string {
  const where = d.span ? `${d.span.file}:${d.span.line}:${d.span.col}: ` : '';
  const lines = [`${where}error[${d.code}]: ${d.message}`];
  if (d.span) lines.push(...renderSpan(d.span, sources, '  '));
  for (const n of d.notes ?? []) {
    const nwhere = n.span ? `${n.span.file}:${n.span.line}:${n.span.col}: ` : '';
    lines.push(`  note: ${nwhere}${n.message}`);
    if (n.span) lines.push(...renderSpan(n.span, sources, '    '));
  }
  return lines.join('\n');
}

export function renderDiagnostics(ds: readonly Diagnostic[], sources: SourceMap): string {
  return ds.map((d) => renderDiagnostic(d, sources)).join('\n\n');
}
