// Binary elementwise arithmetic with numpy broadcasting, as a table: same-dtype operands only
// (f32 with f32, i32 with i32, which stays i32); the VJPs sum broadcast cotangents back down.
import type { GraphBuilder } from '../ir/builder.js';
import type { Node, TensorType } from '../ir/graph.js';
import type { OpDef } from './types.js';
import { scalar, unbroadcast } from './util/grad.js';
import { broadcastShapes, expectArity, fail, isFloatDType, typeToString } from './util/shape.js';
import { add, arg, div, max, min, mul, pow, rem, sub, type Expr } from './expr/ir.js';
import { fromExpr } from './expr/op.js';

type Vjp = (b: GraphBuilder, node: Node, g: number) => [number, number];

interface BinaryRow {
  /** a op b over operands 0 and 1; the primitives give the i32 forms (wrapping, floor division). */
  readonly f: Expr;
  readonly vjp: Vjp;
  readonly doc: string;
}

const [A, B] = [arg(0), arg(1)];

function minmaxVjp(pick: 'gt' | 'lt'): Vjp {
  // torch.maximum/minimum: the winner takes the gradient, ties split it in half, and the loser
  // gets 0 (written as torch does: where(x == y, g/2, g) zeroed where x loses, so a NaN operand,
  // which neither wins nor ties, passes g to both).
  return (b, node, g) => {
    const [x, y] = node.inputs as [number, number];
    const dt = node.type.dtype;
    const zero = scalar(b, 0, dt);
    const shared = b.add('where', [b.add('eq', [x, y]), b.add('mul', [g, scalar(b, 0.5, dt)]), g]);
    const other = pick === 'gt' ? 'lt' : 'gt';
    return [b.add('where', [b.add(other, [x, y]), zero, shared]), b.add('where', [b.add(pick, [x, y]), zero, shared])];
  };
}

export const BINARY: Readonly<Record<string, BinaryRow>> = {
  add: { f: add(A, B), vjp: (_b, _n, g) => [g, g], doc: 'add(a, b): a + b, broadcasting' },
  sub: {
    f: sub(A, B),
    vjp: (b, _n, g) => [g, b.add('neg', [g])],
    doc: 'sub(a, b): a - b, broadcasting',
  },
  mul: {
    f: mul(A, B),
    vjp: (b, n, g) => [b.add('mul', [g, n.inputs[1]!]), b.add('mul', [g, n.inputs[0]!])],
    doc: 'mul(a, b): a * b, broadcasting',
  },
  div: {
    f: div(A, B),
    vjp: (b, n, g) => {
      const den = n.inputs[1]!;
      return [b.add('div', [g, den]), b.add('neg', [b.add('div', [b.add('mul', [g, n.id]), den])])];
    },
    doc: 'div(a, b): a / b, broadcasting (i32: floor division)',
  },
  remainder: {
    f: rem(A, B),
    // As torch: d/da = 1, d/db = -floor(a / b); floor(a / b) is (a - remainder) / b, exact up to rounding.
    vjp: (b, n, g) => {
      const [x, y] = n.inputs as [number, number];
      const quotient = b.add('div', [b.add('sub', [x, n.id]), y]);
      return [g, b.add('neg', [b.add('mul', [g, quotient])])];
    },
    doc: 'remainder(a, b): a - floor(a / b) * b, with the sign of b (torch.remainder, Python %), broadcasting; written a % b',
  },
  maximum: { f: max(A, B), vjp: minmaxVjp('gt'), doc: 'maximum(a, b): elementwise max, broadcasting' },
  minimum: { f: min(A, B), vjp: minmaxVjp('lt'), doc: 'minimum(a, b): elementwise min, broadcasting' },
  pow: {
    f: pow(A, B),
    vjp: (b, n, g) => {
      // As torch: d/da is 0 where the exponent is 0, d/db is 0 where the base is 0.
      const [x, e] = n.inputs as [number, number];
      const dt = n.type.dtype;
      const zero = scalar(b, 0, dt);
      const da = b.add('mul', [g, b.add('mul', [e, b.add('pow', [x, b.add('sub', [e, scalar(b, 1, dt)])])])]);
      const db = b.add('mul', [g, b.add('mul', [n.id, b.add('log', [x])])]);
      return [b.add('where', [b.add('eq', [e, zero]), zero, da]), b.add('where', [b.add('eq', [x, zero]), zero, db])];
    },
    doc: 'pow(a, b): a ** b, broadcasting',
  },
};

export function binaryInfer(name: string, inputs: readonly TensorType[], allowBool: boolean): TensorType {
  expectArity(name, inputs, 2);
  const [a, b] = inputs as [TensorType, TensorType];
  if (a.dtype !== b.dtype) fail(`${name}: dtypes differ: a is ${typeToString(a)}, b is ${typeToString(b)}`, 1);
  if (!allowBool && a.dtype === 'bool') fail(`${name}: arithmetic on bool tensors is not defined (a is ${typeToString(a)})`, 0);
  return { dtype: a.dtype, shape: broadcastShapes(name, [a.shape, b.shape], ['a', 'b']) };
}

function binaryOp(name: string, row: BinaryRow): OpDef {
  return {
    name,
    surface: { inputs: ['a', 'b'], attrs: {}, doc: row.doc },
    infer: (inputs) => binaryInfer(name, inputs, false),
    vjp(b, node, g) {
      if (!isFloatDType(node.type.dtype)) return [null, null];
      const [ga, gb] = row.vjp(b, node, g);
      const [x, y] = node.inputs as [number, number];
      return [unbroadcast(b, ga, b.type(x).shape), unbroadcast(b, gb, b.type(y).shape)];
    },
    ...fromExpr(() => row.f),
  };
}

export const binaryOps: readonly OpDef[] = Object.entries(BINARY).map(([n, row]) => binaryOp(n, row));
