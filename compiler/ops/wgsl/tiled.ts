// A small tiled dot-product template for ops that are matmuls through index maps (patch_embed
// and its gradients): out(row, col) = sum over k < K of A(row, k) * B(col, k), with A, B and the
// output position given as WGSL index expressions, so unfolding patches never materialises.
//
// The scheme is matmul.ts's 'bcast' one: a group of L lanes owns L rows (one per lane) and
// Q·L columns; per step of 4 k, every lane loads its row's 4 A values and, per column block,
// the 4 B values of ONE column, and subgroupBroadcast hands each column's values to the other
// lanes. Loads per multiply-add drop by ~L against one invocation per output, which is what
// matters on lavapipe (every load a per-lane scalar loop). With L = 1 a lane owns one row and Q
// columns.
import type { KernelBody, LowerContext } from '../../codegen/kernel.js';
import { body, chooseLanes, entry, OPAQUE_ZERO, touch } from './lanes.js';

export interface DotSpec {
  readonly label: string;
  readonly M: number;
  readonly N: number;
  readonly K: number;
  /** module-scope WGSL the expressions use */
  readonly helpers: string;
  /** statements run once per lane for its (clamped, in-range) row `row` */
  rowPre(row: string): string;
  /** A(row, k) as an f32 expression (k: a u32 expression, < K) */
  a(k: string): string;
  /** statements run once per column block q for its lane's (clamped) column, named `cl${q}` */
  colPre(col: string, q: number): string;
  /** B(column of block q, k) */
  b(q: number, k: string): string;
  /** the output element index of (row, col) (both in range) */
  out(row: string, col: string): string;
  /** inputs the kernel does not read (see touch) */
  readonly unused?: readonly number[];
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

export function lowerDot(ctx: LowerContext, s: DotSpec): KernelBody {
  const lanes = chooseLanes(ctx.device, s.M >= 4, 32);
  const L = lanes.L;
  const Q = s.N >= 2 * L ? 2 : 1;
  const rowBlocks = Math.ceil(s.M / L);
  const colBlocks = Math.ceil(s.N / (L * Q));
  const groups = rowBlocks * colBlocks;
  const kMain = s.K - (s.K % 4);
  const vec = (f: (e: number) => string, n: number): string => `vec4<f32>(${range(4).map((e) => (e < n ? f(e) : '0.0')).join(', ')})`;
  const step = (k0: string, n: number): string => {
    const lines = [`    let av = ${vec((e) => s.a(`${k0} + ${e}u`), n)};`];
    for (let q = 0; q < Q; q++) lines.push(`    let bv${q} = ${vec((e) => s.b(q, `${k0} + ${e}u`), n)};`);
    for (let q = 0; q < Q; q++) for (let j = 0; j < L; j++) lines.push(`    acc${q * L + j} += dot(av, ${lanes.bcast(`bv${q}`, j)});`);
    return lines.join('\n');
  };
  const stores: string[] = [];
  for (let q = 0; q < Q; q++)
    for (let j = 0; j < L; j++) {
      stores.push(`  { let col = col0 + ${q * L + j}u; if (row < ${s.M}u && col < ${s.N}u) { store(${s.out('row', 'col')}, acc${q * L + j}); } }`);
    }
  const stmts = [
    touch(s.unused ?? []),
    `  let row = (grp / ${colBlocks}u) * ${L}u + lane;`,
    `  let col0 = (grp % ${colBlocks}u) * ${L * Q}u;`,
    `  let rowc = min(row, ${Math.max(s.M - 1, 0)}u);`,
    s.rowPre('rowc'),
    ...range(Q).map((q) => `  let cl${q} = min(col0 + ${q * L}u + lane, ${Math.max(s.N - 1, 0)}u);\n${s.colPre(`cl${q}`, q)}`),
    ...range(L * Q).map((t) => `  var acc${t} = 0.0;`),
    kMain > 0 ? `  for (var k0 = 0u; k0 < ${kMain}u + ${OPAQUE_ZERO}; k0 += 4u) {\n${step('k0', 4)}\n  }` : '',
    s.K % 4 > 0 ? `  {\n    let kt = ${kMain}u;\n${step('kt', s.K % 4)}\n  }` : '',
    ...stores,
  ];
  return body(ctx, `${s.label} ${s.M}x${s.N}x${s.K}`, lanes, groups, `${s.helpers}\n${entry(lanes, groups, stmts.filter((x) => x !== '').join('\n'))}`);
}
