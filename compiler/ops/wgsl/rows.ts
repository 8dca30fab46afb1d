// Row-wise kernels (softmax family, norms, per-row losses): one lane group per row, the row's
// lanes striding over its elements and combining partial results with sum/max. A row is n
// elements `inner` apart, so softmax along any axis is the same template ([outer, n, inner]).
import type { KernelBody, LowerContext } from '../../codegen/kernel.js';
import { body, chooseLanes, entry, laneLoop, NEG_BIG, type Lanes } from './lanes.js';

export interface Rows {
  readonly rows: number;
  readonly n: number;
  readonly inner: number;
  readonly lanes: Lanes;
  /** statements: `for` over this lane's elements with `i` (index in row) and `at` (flat index). */
  loop(stmts: string): string;
}

/**
 * Lanes split a row when it is long, or when rows are too few to occupy the device one per
 * invocation; many short rows run one per invocation (no exchanges at all).
 */
export function rowLanes(ctx: LowerContext, rows: number, n: number, maxL?: number): Lanes {
  return chooseLanes(ctx.device, n >= 32 || (rows < 256 && n >= 4), maxL);
}

export function rows(lanes: Lanes, count: number, n: number, inner = 1): Rows {
  return {
    rows: count,
    n,
    inner,
    lanes,
    loop: (stmts) => laneLoop(lanes, n, 'i', `  let at = base + i${inner === 1 ? '' : ` * ${inner}u`};\n${stmts}`),
  };
}

/** The row's first element; consecutive groups along `inner` sit next to each other. */
function baseOf(r: Rows): string {
  if (r.inner === 1) return `  let base = grp * ${r.n}u;`;
  return `  let base = (grp / ${r.inner}u) * ${r.n * r.inner}u + grp % ${r.inner}u;`;
}

export function rowKernel(ctx: LowerContext, label: string, r: Rows, stmts: string, helpers = '', attrs = ''): KernelBody {
  const code = `${helpers}\n${entry(r.lanes, r.rows, `${baseOf(r)}\n${stmts}`, attrs)}`;
  return body(ctx, `${label} ${r.rows}x${r.n}`, r.lanes, r.rows, code);
}

/**
 * Statements computing the row's running max `m` and sum of exp(x - m) `s` in one pass
 * (online softmax), combined over the lanes. `x` reads element `at`. Prefix names the pair.
 */
export function onlineLse(r: Rows, x: string, p = ''): string {
  const { lanes } = r;
  const m = `${p}m`;
  const s = `${p}s`;
  const lines = [
    `  var ${m} = ${NEG_BIG};`,
    `  var ${s} = 0.0;`,
    r.loop(`    let v = ${x};
    // A new maximum rescales the sum; starting at -FLT_MAX keeps inf out of exp (exp(-inf) = 0
    // still covers -inf inputs).
    if (v > ${m}) { ${s} = ${s} * exp(${m} - v) + 1.0; ${m} = v; } else { ${s} += exp(v - ${m}); }`),
  ];
  if (lanes.L > 1) {
    lines.push(`  { let mm = ${lanes.max(m)};\n    ${s} = ${lanes.sum(`${s} * exp(${m} - mm)`)};\n    ${m} = mm; }`);
  }
  // As torch: a +inf element makes the whole row NaN (its exp(x - max) is exp(inf - inf)); a
  // NaN element already made the sum NaN.
  lines.push(`  if (k_isinf(${m}) && ${m} > 0.0) { ${s} = k_nan(); }`);
  return lines.join('\n');
}

/**
 * Statements: `var name = sum over the row of expr` for each [name, expr] pair, in one pass
 * (exprs may use `i`, `at` and the `pre` statements' lets).
 */
export function rowSum(r: Rows, name: string, expr: string): string {
  return rowSums(r, [[name, expr]]);
}

export function rowSums(r: Rows, sums: readonly (readonly [string, string])[], pre = ''): string {
  const lines = sums.map(([name]) => `  var ${name} = 0.0;`);
  lines.push(r.loop(`${pre}${sums.map(([name, expr]) => `    ${name} += ${expr};`).join('\n')}`));
  if (r.lanes.L > 1) for (const [name] of sums) lines.push(`  ${name} = ${r.lanes.sum(name)};`);
  return lines.join('\n');
}
