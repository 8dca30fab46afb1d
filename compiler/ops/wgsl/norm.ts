// layer_norm / rms_norm and their backward ops, over the last axis D. Row statistics are
// two-pass (mean, then the centred sum of squares) as the reference computes them, not
// E[x^2] - E[x]^2, whose cancellation f32 cannot afford.
import type { KernelBody, LowerContext } from '../../codegen/kernel.js';
import { body, chooseLanes, entry, f32, laneArrays, laneLoop, OPAQUE_ZERO, product, touch } from './lanes.js';
import { rowKernel, rowLanes, rows, rowSum, rowSums, type Rows } from './rows.js';

type Norm = 'layer' | 'rms';

function shapeOf(ctx: LowerContext): { R: number; D: number } {
  const x = ctx.inputs[0]!.shape;
  const D = x[x.length - 1]!;
  return { R: D === 0 ? 0 : product(x) / D, D };
}

/** Statements defining `mu` (layer only) and `rs` = 1/sqrt(var + eps) of the row at `base`. */
function stats(r: Rows, norm: Norm, eps: number): string {
  const D = `${r.n}.0`;
  if (norm === 'rms') return `${rowSum(r, 'ss', 'k_sq(load0(at))')}\n  let rs = 1.0 / sqrt(ss / ${D} + ${f32(eps)});`;
  return [
    rowSum(r, 'sx', 'load0(at)'),
    `  let mu = sx / ${D};`,
    rowSum(r, 'sv', 'k_sq(load0(at) - mu)'),
    `  let rs = 1.0 / sqrt(sv / ${D} + ${f32(eps)});`,
  ].join('\n');
}

const SQ = 'fn k_sq(v: f32) -> f32 { return v * v; }';

/** Forward: inputs x, weight (and bias for layer). */
export function lowerNorm(ctx: LowerContext, norm: Norm, eps: number): KernelBody {
  const { R, D } = shapeOf(ctx);
  const r = rows(rowLanes(ctx, R, D), R, D);
  const y = norm === 'layer' ? '(load0(at) - mu) * rs * load1(i) + load2(i)' : 'load0(at) * rs * load1(i)';
  return rowKernel(ctx, norm, r, `${stats(r, norm, eps)}\n${r.loop(`    store(at, ${y});`)}`, SQ);
}

/** Backward wrt x: inputs x, weight, g. */
export function lowerNormGradX(ctx: LowerContext, norm: Norm, eps: number): KernelBody {
  const { R, D } = shapeOf(ctx);
  const r = rows(rowLanes(ctx, R, D), R, D);
  const Df = `${D}.0`;
  if (norm === 'rms') {
    const m = rowSum(r, 'm', 'load2(at) * load1(i) * load0(at)');
    const y = 'rs * load2(at) * load1(i) - load0(at) * rs * rs * rs * mm';
    return rowKernel(ctx, 'rms_grad_x', r, `${stats(r, norm, eps)}\n${m}\n  let mm = m / ${Df};\n${r.loop(`    store(at, ${y});`)}`, SQ);
  }
  const pre = '    let gw = load2(at) * load1(i);\n';
  const ms = rowSums(r, [['m1', 'gw'], ['m2', 'gw * (load0(at) - mu) * rs']], pre);
  const write = `${pre}    store(at, rs * (gw - m1 / ${Df} - (load0(at) - mu) * rs * (m2 / ${Df})));`;
  return rowKernel(ctx, 'layer_grad_x', r, `${stats(r, norm, eps)}\n${ms}\n${r.loop(write)}`, SQ);
}

/** Most accumulators one lane keeps in a private array (columns per lane). */
const MAX_COLS_PER_LANE = 512;

/**
 * Backward wrt weight: out[c] = sum over rows of g * xhat. A reduction over rows whose terms need
 * each row's statistics, so one group owns a block of columns (lanes own columns, accumulating in
 * a per-lane array) and walks every row, computing its statistics cooperatively on the way.
 * Blocks are as wide as a lane's accumulators allow, so the statistics are computed once per
 * row: usually a single group, i.e. one core on lavapipe. (A scratch buffer of row statistics,
 * or per-row-block partial sums and a second pass, would spread the rows over the device.)
 */
export function lowerNormGradWeight(ctx: LowerContext, norm: Norm, eps: number): KernelBody {
  const { R, D } = shapeOf(ctx);
  const lanes = chooseLanes(ctx.device, D >= 32);
  const L = lanes.L;
  const cpl = Math.max(1, Math.min(Math.ceil(D / L), MAX_COLS_PER_LANE));
  const groups = Math.max(1, Math.ceil(D / (L * cpl)));
  const r: Rows = { ...rows(lanes, R, D), loop: (s) => laneLoop(lanes, D, 'i', `  let at = base + i;\n${s}`) };
  const term = norm === 'layer' ? 'load2(at) * (load0(at) - mu) * rs' : 'load2(at) * load0(at) * rs';
  const arr = laneArrays(lanes, [{ name: 'acc', type: 'f32', n: cpl }], ctx.device.workgroupMemoryBytes);
  const acc = arr.at('acc', 'k');
  const cols = `for (var k = 0u; k < ${cpl}u + ${OPAQUE_ZERO}; k++) {\n      let c = c0 + k * ${L}u;`;
  const stmts = `${touch([1])}
${arr.local}
  let c0 = grp * ${L * cpl}u + lane;
  ${cols} ${acc} = 0.0; }
  for (var row = 0u; row < ${R}u; row++) {
    let base = row * ${D}u;
${stats(r, norm, eps)}
    ${cols}
      if (c < ${D}u) { let at = base + c; ${acc} += ${term}; }
    }
  }
  ${cols}
    if (c < ${D}u) { store(c, ${acc}); }
  }`;
  return body(ctx, `${norm}_grad_w ${R}x${D}`, lanes, groups, `${SQ}\n${arr.module}\n${entry(lanes, groups, stmts)}`);
}
