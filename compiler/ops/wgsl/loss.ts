// cross_entropy and kl_div with their gradients. Rows are the logits' leading positions, each V
// classes long. A row's lanes split its classes (online log-sum-exp, then a writing pass).
//
// The losses are scalars: a single group walks every row and lane 0 stores the mean, since the
// kernel contract has one dispatch and no scratch (a per-row pass into scratch and a second
// reduction would spread the rows over the device). The gradients have one group per row; each
// first counts the counted rows (labels != ignore_index, mask != 0) itself, as the scale is
// g / count.
//
// Rows are skipped on their label or mask, a branch around subgroup operations. Every lane of
// the group reads the same element there, so the branch is uniform, but WGSL's analysis cannot
// know it: the entry point switches that diagnostic off.
import type { KernelBody, LowerContext } from '../../codegen/kernel.js';
import { body, chooseLanes, entry, laneLoop, product, type Lanes } from './lanes.js';
import { onlineLse, rowKernel, rowLanes, rows, rowSum, type Rows } from './rows.js';

const UNIFORM_OFF = '@diagnostic(off, subgroup_uniformity) ';

function shape(ctx: LowerContext): { R: number; V: number } {
  const s = ctx.inputs[0]!.shape;
  return { R: product(s.slice(0, -1)), V: s[s.length - 1]! };
}

function attrsFor(lanes: Lanes): string {
  return lanes.L > 1 ? UNIFORM_OFF : '';
}

/** Statements defining `count` (f32): how many of the R row flags pass `test` (uses `f`). */
function countRows(lanes: Lanes, R: number, flag: string, test: string): string {
  const loop = laneLoop(lanes, R, 'q', `    let f = ${flag};\n    if (${test}) { count += 1.0; }`);
  return `  var count = 0.0;\n  ${loop}${lanes.L > 1 ? `\n  count = ${lanes.sum('count')};` : ''}`;
}

/** Statements with `lse` (log-sum-exp of input k over the row at `base`) defined as `${p}lse`. */
function lse(r: Rows, k: number, p: string): string {
  return `${onlineLse(r, `load${k}(at)`, p)}\n  let ${p}lse = ${p}m + log(${p}s);`;
}

function scalarKernel(ctx: LowerContext, label: string, lanes: Lanes, perRow: string, reduction: 'mean' | 'sum'): KernelBody {
  const stmts = `  var total = 0.0;
  var count = 0.0;
  for (var row = 0u; row < ${shape(ctx).R}u; row++) {
    let base = row * ${shape(ctx).V}u;
${perRow}
  }
  // No counted row: 0 rather than 0/0, as the reference defines it. 'sum': the caller divides.
  if (lane == 0u) { store(0u, ${reduction === 'sum' ? 'total' : 'select(total / count, 0.0, count == 0.0)'}); }`;
  return body(ctx, label, lanes, 1, entry(lanes, 1, stmts, attrsFor(lanes)));
}

/** cross_entropy: inputs logits [..., V], labels [...]; mean over counted rows of lse - x[label]. */
export function lowerCrossEntropy(ctx: LowerContext, ignore: number, reduction: 'mean' | 'sum' = 'mean'): KernelBody {
  const { V } = shape(ctx);
  const lanes = chooseLanes(ctx.device, true);
  const r = rows(lanes, 1, V);
  const perRow = `    let label = load1(row);
    if (label != ${ignore}i) {
${lse(r, 0, '')}
      total += lse - load0(base + u32(clamp(label, 0i, ${V - 1}i)));
      count += 1.0;
    }`;
  return scalarKernel(ctx, `cross_entropy ${shape(ctx).R}x${V}`, lanes, perRow, reduction);
}

/** cross_entropy_grad: inputs logits, labels, g []; g / count * (softmax - onehot) on counted rows. */
export function lowerCrossEntropyGrad(ctx: LowerContext, ignore: number, reduction: 'mean' | 'sum' = 'mean'): KernelBody {
  const { R, V } = shape(ctx);
  const r = rows(rowLanes(ctx, R, V), R, V);
  const stmts = `${countRows(r.lanes, R, 'load1(q)', `f != ${ignore}i`)}
  let label = load1(grp);
${lse(r, 0, '')}
  if (label == ${ignore}i) {
    // 0, or NaN when the row's log-sum-exp is not finite (torch's log_softmax covers it).
    let z = select(0.0, k_nan(), k_isnan(lse) || k_isinf(lse));
    ${r.loop('    store(at, z);')}
    return;
  }
  let scale = load2(0u)${reduction === 'sum' ? '' : ' / count'};
  ${r.loop(`    store(at, scale * (exp(load0(at) - lse) - select(0.0, 1.0, i32(i) == label)));`)}`;
  return rowKernel(ctx, 'cross_entropy_grad', r, stmts, '', attrsFor(r.lanes));
}

/** The KL term of the row at `base`: sum p (log p - log q), p = softmax(target), q = softmax(logits). */
function klRow(r: Rows): string {
  return `${lse(r, 0, 'z')}
${lse(r, 1, 't')}
${rowSum(r, 'kl', 'k_kl_term(load1(at) - tlse, load0(at) - zlse)')}`;
}

// torch's kl_div term xlogy(p, p) - p log q (kl_div.ts klTerm): 0 log 0 = 0, but NaN stays NaN
// and p = 0 against log q = -inf is NaN, as in torch.
const KL_TERM = `fn k_kl_term(logp: f32, logq: f32) -> f32 {
  let p = exp(logp);
  return select(p * logp, 0.0, p == 0.0) - p * logq;
}`;

/** kl_div: inputs logits, target_logits, mask; mean over masked rows of KL(p || q). */
export function lowerKlDiv(ctx: LowerContext, reduction: 'mean' | 'sum' = 'mean'): KernelBody {
  const { R, V } = shape(ctx);
  const lanes = chooseLanes(ctx.device, true);
  const r = rows(lanes, 1, V);
  const perRow = `    if (load2(row) != 0i) {
${klRow(r)}
      total += kl;
      count += 1.0;
    }`;
  const k = scalarKernel(ctx, `kl_div ${R}x${V}`, lanes, perRow, reduction);
  return { ...k, code: `${KL_TERM}\n${k.code}` };
}

/** kl_div_grad: inputs logits, target_logits, mask, g; wrt 'logits' or 'target'. */
export function lowerKlDivGrad(ctx: LowerContext, wrt: 'logits' | 'target', reduction: 'mean' | 'sum' = 'mean'): KernelBody {
  const { R, V } = shape(ctx);
  const r = rows(rowLanes(ctx, R, V), R, V);
  const head = `${countRows(r.lanes, R, 'load2(q)', 'f != 0i')}
  if (load2(grp) == 0i) {
    ${r.loop('    store(at, 0.0);')}
    return;
  }
  let scale = load3(0u)${reduction === 'sum' ? '' : ' / count'};`;
  const stmts =
    wrt === 'logits'
      ? `${head}
${lse(r, 0, 'z')}
${lse(r, 1, 't')}
  ${r.loop('    store(at, scale * (exp(load0(at) - zlse) - exp(load1(at) - tlse)));')}`
      : `${head}
${klRow(r)}
  ${r.loop(`    let logp = load1(at) - tlse;
    let p = exp(logp);
    store(at, select(scale * p * (logp - (load0(at) - zlse) - kl), 0.0, p == 0.0 && !k_isnan(kl) && !k_isinf(kl)));`)}`;
  return rowKernel(ctx, `kl_div_grad ${wrt}`, r, stmts, KL_TERM, attrsFor(r.lanes));
}
