// The fusion rules, as data: what may share a kernel with what, and why. compiler/passes/fuse.ts
// applies them; each member of a fused group records the rule that put it there, so a reader (and
// `kiln plan --groups`) can say why two ops share a kernel.
//
// Vocabulary. Every op falls in one category (categoryOf). A kernel has one anchor: a matmul, a
// custom op (reductions, norms, attention, ...; the op's own template) or, when no other op
// anchors it, an elementwise "loop" over its output. Around the anchor, two placements:
//   prologue: computed inside an input accessor load<k>(i), from buffers, never written;
//   epilogue: computed inside store(i, v) from the anchor's value before (or instead of) the
//             write, element for element.
import type { Node } from '../ir/graph.js';
import { getOp } from '../ops/registry.js';
import type { FusionCategory } from '../ops/types.js';

export type Category = FusionCategory;

/** The category the node's op declares (OpDef.fusion). */
export function categoryOf(node: Node): Category {
  return getOp(node.op).fusion;
}

/** What the rule's condition sees about a producer and its readers. */
export interface RuleContext {
  readonly producer: Category;
  /** the producer is a view that permutes axes (a transpose: OpDef kernel perm). */
  readonly permutes: boolean;
  /** the category of the producer's first operand (what a view views). */
  readonly operand: Category | undefined;
  /**
   * the producer's first operand may be stored only in part: its kernel has an in-place body
   * (CustomKernel.inPlace, write_at), which cannot also store a whole transposed copy.
   */
  readonly operandPartial?: boolean;
  /** categories of the producer's readers, through inlined views. */
  readonly readers: readonly Category[];
  /** ops in the producer's inline expression, and buffers it reads (for recompute). */
  readonly exprOps: number;
  readonly exprBuffers: number;
  /** the producer is a step of a running sum over chunks (its `accumulate` attribute). */
  readonly accumulate?: boolean;
}

export interface PrologueRule {
  readonly name: string;
  readonly producer: readonly Category[];
  /** every reader must be one of these ('*': any). */
  readonly readers: readonly Category[] | '*';
  readonly fuse: boolean;
  readonly when: string;
  readonly why: string;
  readonly test: (c: RuleContext) => boolean;
}

export const RECOMPUTE_MAX_OPS = 4;

/**
 * Whether a value is computed where it is read (inlined as a prologue of every reader) or gets a
 * buffer. First matching rule wins; no match: a buffer. A requested value (a loss, gradient or
 * output) always gets a buffer.
 */
export const PROLOGUE_RULES: readonly PrologueRule[] = [
  {
    name: 'transposed-store',
    producer: ['view'],
    readers: '*',
    fuse: false,
    when: "a transpose of a custom op's result that a matmul reads (attention heads merged for o_proj)",
    why: 'the custom kernel writes its result transposed through store, so the matmul reads a plain buffer on its fast path instead of gathering through an index map',
    test: (c) => c.permutes && c.operand === 'custom' && c.operandPartial !== true && c.readers.includes('matmul'),
  },
  {
    name: 'view',
    producer: ['view'],
    readers: '*',
    fuse: true,
    when: 'always',
    why: 'a movement op is an index map in the reader\'s accessor: no kernel, no buffer',
    test: () => true,
  },
  {
    name: 'constant',
    producer: ['const'],
    readers: '*',
    fuse: true,
    when: 'always',
    why: 'a fill is a literal',
    test: () => true,
  },
  {
    name: 'matmul-operand',
    producer: ['elementwise'],
    readers: '*',
    fuse: false,
    when: 'some reader is a matmul',
    why: 'a matmul reads each operand element once per output tile: the producer would be recomputed that often',
    test: (c) => c.readers.includes('matmul'),
  },
  {
    name: 'accumulator',
    producer: ['elementwise'],
    readers: '*',
    fuse: false,
    when: "a step of a running sum over chunks (the loss heads' weight gradients, compiler/passes/loss-heads.ts)",
    why: 'inlined, the whole sum would run at its end and every chunk\'s term would stay live until then; buffered, each step joins the matmul that made its term as an epilogue and one term lives at a time',
    test: (c) => c.accumulate === true,
  },
  {
    name: 'single-use',
    producer: ['elementwise'],
    readers: ['elementwise', 'custom', 'view'],
    fuse: true,
    when: 'the value has one reader',
    why: 'computed where it is read: never written, never read back',
    test: (c) => c.readers.length === 1,
  },
  {
    name: 'recompute',
    producer: ['elementwise'],
    readers: ['elementwise', 'custom', 'view'],
    fuse: true,
    when: `several readers; its expression reads at most one buffer in at most ${RECOMPUTE_MAX_OPS} ops`,
    why: 'recomputing reads no more memory than loading the value would, and saves its buffer, its write and a dispatch',
    test: (c) => c.exprBuffers <= 1 && c.exprOps <= RECOMPUTE_MAX_OPS,
  },
];

export interface EpilogueRule {
  readonly name: string;
  /** the category of the kernel's anchor. */
  readonly anchor: readonly Category[];
  readonly consumer: readonly Category[];
  /** written at a permuted index: only for values the prologue rule of the same name buffered. */
  readonly scatter?: boolean;
  readonly when: string;
  readonly why: string;
}

/**
 * Whether a value that needs a buffer joins the kernel of one of its operands as an epilogue.
 * The conditions (fuse.ts, attachEpilogue) are the same for every row: the consumer reads that
 * kernel's values element for element (equal element counts, only reshapes and unbroadcast
 * elementwise steps between), and nothing else it reads depends on that kernel.
 */
export const EPILOGUE_RULES: readonly EpilogueRule[] = [
  {
    name: 'transposed-store',
    anchor: ['custom'],
    consumer: ['view'],
    scatter: true,
    when: 'the transpose the prologue rule of that name gave a buffer',
    why: 'store(i, v) writes v at the transposed index: a scatter instead of a later gather',
  },
  {
    name: 'matmul-epilogue',
    anchor: ['matmul'],
    consumer: ['elementwise', 'view', 'const'],
    when: 'bias, activation, residual, scaling of a matmul',
    why: 'applied to the accumulator before the one write of C',
  },
  {
    name: 'custom-epilogue',
    anchor: ['custom'],
    consumer: ['elementwise', 'view', 'const'],
    when: 'elementwise consumers of a reduction, norm, attention, ...',
    why: 'applied in store(i, v): the custom template never knows',
  },
  {
    name: 'loop-chain',
    anchor: ['elementwise', 'view', 'const'],
    consumer: ['elementwise', 'view', 'const'],
    when: 'an elementwise value whose operand has a buffer for other readers',
    why: 'one loop computes both and writes both (fusion on write)',
  },
];

export function epilogueRuleFor(anchor: Category, consumer: Category): EpilogueRule | undefined {
  return EPILOGUE_RULES.find((r) => !r.scatter && r.anchor.includes(anchor) && r.consumer.includes(consumer));
}

export function prologueRuleFor(c: RuleContext): PrologueRule | undefined {
  return PROLOGUE_RULES.find(
    (r) => r.producer.includes(c.producer) && (r.readers === '*' || c.readers.every((x) => (r.readers as readonly Category[]).includes(x))) && r.test(c),
  );
}

/** The rules as printable rows (kiln plan --rules, the report). */
export function rulesTable(): string[][] {
  return [
    ...PROLOGUE_RULES.map((r) => ['prologue', r.name, r.producer.join('|'), r.readers === '*' ? 'any' : r.readers.join('|'), r.fuse ? 'fuse' : 'buffer', r.when, r.why]),
    ...EPILOGUE_RULES.map((r) => ['epilogue', r.name, r.anchor.join('|'), r.consumer.join('|'), 'fuse', r.when, r.why]),
  ];
}
