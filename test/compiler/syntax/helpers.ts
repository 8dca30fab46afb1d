// Shared by the syntax tests: the model sources and AST comparison without spans.
import { readFileSync } from 'node:fs';
import type { Span } from '../../../compiler/syntax/ast.js';

export const MODEL_NAMES = ['common', 'llama', 'clip', 'vwlmm'] as const;

export function modelSource(name: string): { path: string; text: string } {
  const path = `models/${name}.kiln`;
  return { path, text: readFileSync(path, 'utf8') };
}

/** A deep copy without `span` fields, for comparing trees that came from different text. */
export function stripSpans(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(stripSpans);
  if (x === null || typeof x !== 'object') return x;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(x)) if (k !== 'span') out[k] = stripSpans(v);
  return out;
}

/** The span a 0-based offset has in `text`, for checking a diagnostic's line and column. */
export function lineCol(text: string, offset: number): { line: number; col: number } {
  const before = text.slice(0, offset);
  return { line: before.split('\n').length, col: offset - before.lastIndexOf('\n') };
}

/** Why `span` is not a well-formed span inside `text`, or null when it is. */
export function spanProblem(span: Span | undefined, text: string, file: string): string | null {
  if (!span) return 'no span';
  if (span.file !== file) return `file ${span.file}`;
  if (!(0 <= span.start && span.start <= span.end && span.end <= text.length)) {
    return `offsets ${span.start}..${span.end} outside 0..${text.length}`;
  }
  const { line, col } = lineCol(text, span.start);
  if (line !== span.line || col !== span.col) return `line:col ${span.line}:${span.col}, offset says ${line}:${col}`;
  return null;
}
