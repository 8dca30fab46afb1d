// Random graphs for the fusion and plan property tests: elementwise chains with broadcasting,
// views (transpose, slice, reshape, broadcast), reductions, matmuls and linears, built from a
// fast-check recipe so a failure shrinks to a small graph.
import fc from 'fast-check';
import { GraphBuilder, ShapeError } from '../../../compiler/ir/builder.js';
import type { Graph } from '../../../compiler/ir/graph.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { input } from '../ops/harness.js';
import { f32, uniform } from '../../runtime/webgpu/compare.js';

export type StepKind = 'unary' | 'binary' | 'transpose' | 'slice' | 'reshape' | 'broadcast' | 'reduce' | 'where' | 'matmul' | 'linear';

export interface Step {
  kind: StepKind;
  a: number;
  b: number;
  pick: number;
  flag: boolean;
}

export interface Recipe {
  shape: number[];
  /** which of x's axes y keeps (others are 1) */
  yMask: boolean[];
  steps: Step[];
  /** extra requested values, as positions among the built nodes */
  extra: number[];
}

const UNARY = ['neg', 'tanh', 'sigmoid', 'silu', 'abs', 'relu', 'gelu', 'quick_gelu'];
const BINARY = ['add', 'sub', 'mul', 'maximum', 'minimum'];
const REDUCE = ['sum', 'mean', 'max'];

export function recipe(kinds: readonly StepKind[], maxSteps = 10): fc.Arbitrary<Recipe> {
  const step = fc.record({ kind: fc.constantFrom(...kinds), a: fc.nat(99), b: fc.nat(99), pick: fc.nat(999), flag: fc.boolean() });
  return fc.integer({ min: 1, max: 3 }).chain((rank) =>
    fc.record({
      shape: fc.array(fc.integer({ min: 1, max: 6 }), { minLength: rank, maxLength: rank }),
      yMask: fc.array(fc.boolean(), { minLength: rank, maxLength: rank }),
      steps: fc.array(step, { minLength: 1, maxLength: maxSteps }),
      extra: fc.array(fc.nat(99), { maxLength: 3 }),
    }),
  );
}

export interface Built {
  graph: Graph;
  feeds: Map<string, HostTensor>;
  wanted: number[];
}

/** Builds the recipe; steps whose shapes do not fit are skipped (the shape rule says so). */
export function build(r: Recipe, seed = 1): Built {
  const b = new GraphBuilder();
  const yShape = r.shape.map((d, i) => (r.yMask[i] ? d : 1));
  const x = input(b, 'x', 'f32', r.shape);
  const y = input(b, 'y', 'f32', yShape);
  const vals = [x, y];
  const made: number[] = [];
  const shapeOf = (id: number): number[] => b.type(id).shape as number[];
  for (const s of r.steps) {
    const a = vals[s.a % vals.length]!;
    const c = vals[s.b % vals.length]!;
    const sa = shapeOf(a);
    const rank = sa.length;
    try {
      let id: number;
      switch (s.kind) {
        case 'unary':
          id = b.add(UNARY[s.pick % UNARY.length]!, [a]);
          break;
        case 'binary':
          id = b.add(BINARY[s.pick % BINARY.length]!, [a, c]);
          break;
        case 'where':
          id = b.add('where', [b.add('gt', [a, c]), a, c]);
          break;
        case 'transpose': {
          const perm = [...sa.keys()];
          for (let i = rank - 1; i > 0; i--) {
            const j = (s.pick + i * 7) % (i + 1);
            [perm[i], perm[j]] = [perm[j]!, perm[i]!];
          }
          id = b.add('transpose', [a], { perm });
          break;
        }
        case 'slice': {
          const axis = s.pick % rank;
          const n = sa[axis]!;
          const start = s.b % n;
          id = b.add('slice', [a], { axis, start, stop: start + 1 + (s.pick % (n - start)) });
          break;
        }
        case 'reshape': {
          const n = sa.reduce((p, d) => p * d, 1);
          const shape = s.flag || rank < 2 ? [n] : [...sa.slice(0, -2), sa[rank - 2]! * sa[rank - 1]!];
          id = b.add('reshape', [a], { shape });
          break;
        }
        case 'broadcast':
          if (rank >= 4) continue;
          id = b.add('broadcast', [a], { shape: [2, ...sa] });
          break;
        case 'reduce':
          id = b.add(REDUCE[s.pick % REDUCE.length]!, [a], { axis: [s.b % rank], keepdims: s.flag });
          if (shapeOf(id).length === 0) id = b.add('reshape', [id], { shape: [1] });
          break;
        case 'matmul': {
          // a [..., M, K] against a fresh weight input [K, N] (or [N, K] transposed in)
          const K = sa[rank - 1]!;
          const N = 1 + (s.pick % 5);
          const w = input(b, `w${vals.length}`, 'f32', s.flag ? [N, K] : [K, N]);
          const lhs = rank >= 2 ? a : b.add('reshape', [a], { shape: [1, K] });
          id = b.add('matmul', [lhs, s.flag ? b.add('transpose', [w], { perm: [1, 0] }) : w]);
          break;
        }
        case 'linear': {
          const K = sa[rank - 1]!;
          const N = 1 + (s.pick % 6);
          const w = input(b, `w${vals.length}`, 'f32', [N, K]);
          const bias = input(b, `bias${vals.length}`, 'f32', [N]);
          id = b.add('linear', s.flag ? [a, w, bias] : [a, w]);
          break;
        }
      }
      vals.push(id);
      made.push(id);
    } catch (e) {
      if (!(e instanceof ShapeError)) throw e;
    }
  }
  if (made.length === 0) made.push(b.add('neg', [x]));
  const wanted = [...new Set([made[made.length - 1]!, ...r.extra.map((e) => made[e % made.length]!)])];
  const graph = b.build();
  const feeds = new Map<string, HostTensor>();
  let k = seed;
  for (const inp of graph.inputs) {
    const shape = graph.nodes[inp.node]!.type.shape as number[];
    const n = shape.reduce((p, d) => p * d, 1);
    feeds.set(inp.name, f32(shape, uniform(n, k++ * 7919, -1.5, 1.5)));
  }
  return { graph, feeds, wanted };
}
