// Types for the module nearleyc generates from kiln.ne (see that file for what each export does).
import type { CompiledRules, Lexer } from 'nearley';
import type { Span } from '../compiler/syntax/ast.js';

export const KEYWORDS: readonly string[];

export class LexError extends Error {
  span: Span;
}

export class KilnLexer implements Lexer {
  constructor(file?: string, maxDepth?: number);
  /** Zero-width span just after the last token read: where "unexpected end of input" points. */
  lastEnd: Span;
  /** The error the last next() threw, which nearley does not pass on. */
  failure: unknown;
  reset(data: string): void;
  next(): KilnToken | undefined;
  save(): Record<string, never>;
  has(type: string): boolean;
  formatError(token: KilnToken, message: string): string;
}

export interface KilnToken {
  type: 'ident' | 'kw' | 'boolean' | 'number' | 'string' | 'op' | 'sep';
  text: string;
  value: string;
  span: Span;
}

/** A cons cell of the lists the postprocessors build. */
export class List {
  prev: List | null;
  item: unknown;
}
export const EMPTY: List;

declare const grammar: CompiledRules;
export default grammar;
