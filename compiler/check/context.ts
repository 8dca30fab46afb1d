// State shared while one model is instantiated and its forward graph is built.
import type { ModuleDecl, Span } from '../syntax/ast.js';
import { GraphBuilder } from '../ir/builder.js';
import { ShapeError } from '../ir/shape_error.js';
import type { Attrs, Initializer } from '../ir/graph.js';
import { shapeToString } from '../ir/dims.js';
import { fail } from '../diagnostics.js';
import type { DiagnosticNote } from '../diagnostics.js';

export interface PendingParam {
  name: string;
  node: number;
  init: Initializer;
  path: string;
  /** module types from the model down to the one declaring the parameter. */
  modules: readonly string[];
  span: Span;
}

/** An active `tie`: the parameter at spec path `param` is the one at `to`. */
export interface PendingTie {
  to: string;
  span: Span;
  used: boolean;
}

/** A parameter that a `tie` made another: checkpoint names of both. */
export interface TiedParam {
  /** the tied parameter's own checkpoint name (`lm_head.weight`): no tensor, no gradient of its own. */
  name: string;
  /** the parameter it is (`model.embed_tokens.weight`). */
  to: string;
}

export class BuildContext {
  readonly builder = new GraphBuilder();
  readonly params: PendingParam[] = [];
  readonly paramNames = new Map<string, Span>();
  /** active ties by the tied parameter's spec path. */
  readonly ties = new Map<string, PendingTie>();
  readonly tied: TiedParam[] = [];
  depth = 0;

  constructor(readonly modules: ReadonlyMap<string, ModuleDecl>) {}

  /** Adds an op; a rejected shape becomes a diagnostic at `span` with each operand's type and origin. */
  op(op: string, inputs: readonly number[], attrs: Attrs, span: Span, label?: string): number {
    try {
      return this.builder.add(op, inputs, attrs, { span, ...(label ? { label } : {}) });
    } catch (e) {
      if (e instanceof ShapeError) {
        const notes: DiagnosticNote[] = inputs.map((id, i) => {
          const n = this.builder.node(id);
          const what = n.label ?? (n.op === 'input' || n.op === 'param' ? String(n.attrs['name']) : `operand ${i + 1}`);
          return { message: `${what} is ${n.type.dtype}${shapeToString(n.type.shape)}${n.span ? ', from here' : ''}`, ...(n.span ? { span: n.span } : {}) };
        });
        const chosen = e.inputIndex !== undefined && notes[e.inputIndex] ? [notes[e.inputIndex]!, ...notes.filter((_, i) => i !== e.inputIndex)] : notes;
        fail('shape', e.message, span, chosen);
      }
      throw e;
    }
  }
}
