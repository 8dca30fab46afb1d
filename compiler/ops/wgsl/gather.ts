// Data-dependent gathers: embedding_grad (a scatter-add written as a gather, since WGSL has no
// f32 atomics), splice and splice_grad (positions found from ids at run time).
import { wgslType, type KernelBody, type LowerContext } from '../../codegen/kernel.js';
import { body, chooseLanes, entry, laneArrays, laneLoop, OPAQUE_ZERO, product, type Lanes } from './lanes.js';

/** Accumulators per lane (laneArrays) before a vocabulary row is processed in column chunks. */
const MAX_COLS_PER_LANE = 256;

/**
 * embedding_grad: one group per vocabulary row v; its lanes own columns (per-lane accumulators)
 * and scan the ids L at a time, a subgroup ballot picking out the positions holding v, whose g
 * rows they then add in position order. Rows no id names cost one scan of the ids (V·N id loads
 * in all, over L lanes).
 */
export function lowerEmbeddingGrad(ctx: LowerContext): KernelBody {
  const [V, D] = ctx.output.shape as [number, number];
  const N = product(ctx.inputs[0]!.shape);
  const lanes = chooseLanes(ctx.device, true, 32);
  const L = lanes.L;
  const cpl = Math.max(1, Math.min(Math.ceil(D / L), MAX_COLS_PER_LANE));
  const chunk = L * cpl;
  const nch = Math.max(1, Math.ceil(D / chunk));
  const arr = laneArrays(lanes, [{ name: 'acc', type: 'f32', n: cpl }], ctx.device.workgroupMemoryBytes);
  const acc = arr.at('acc', 'k');
  const cols = `for (var k = 0u; k < ${cpl}u + ${OPAQUE_ZERO}; k++) { let c = c0 + k * ${L}u;`;
  const addRow = (n: string): string => `let row = (${n}) * ${D}u;
          ${cols} if (c < ${D}u) { ${acc} += load1(row + c); } }`;
  const scan =
    L === 1
      ? `for (var n = 0u; n < ${N}u; n++) {
      if (load0(n) == v) { ${addRow('n')} }
    }`
      : `for (var n0 = 0u; n0 < ${N}u; n0 += ${L}u) {
      let n = n0 + lane;
      let bal = subgroupBallot(n < ${N}u && load0(min(n, ${Math.max(N - 1, 0)}u)) == v).x;
      if (bal != 0u) {
        for (var j = 0u; j < ${L}u; j++) {
          if (((bal >> j) & 1u) != 0u) { ${addRow('n0 + j')} }
        }
      }
    }`;
  const stmts = `${arr.local}
  let v = i32(grp);
  for (var ch = 0u; ch < ${nch}u; ch++) {
    let c0 = ch * ${chunk}u + lane;
    // Zeroed by hand for every chunk (lavapipe also skips re-initialising loop-scoped arrays).
    ${cols} ${acc} = 0.0; }
    ${scan}
    ${cols} if (c < ${D}u) { store(grp * ${D}u + c, ${acc}); } }
  }`;
  return body(ctx, `${V}x${D} from ${N}`, lanes, V, `${arr.module}\n${entry(lanes, V, stmts)}`);
}

/** Statements defining `sp`: the last position of `token` in ids row b (0 if none). */
function findPlaceholder(lanes: Lanes, ids: number, T: number, token: number): string {
  const scan = laneLoop(lanes, T, 't', `    if (load${ids}(b * ${T}u + t) == ${token}i) { s = max(s, i32(t)); }`);
  const combine = lanes.L > 1 ? `\n  s = ${lanes.max('s')};` : '';
  // The reference rejects a row without exactly one placeholder; the kernel cannot raise, so it
  // takes the last one (or position 0) and stays in bounds.
  return `  var s = -1i;\n  ${scan}${combine}\n  let sp = u32(max(s, 0i));`;
}

/** Output rows per group: enough elements to amortise the placeholder scan. */
function rowBlock(rows: number, R: number): number {
  return Math.max(1, Math.min(rows, Math.floor(1024 / Math.max(R, 1))));
}

/**
 * A kernel over output rows [B, rows, R] where each group finds its batch row's placeholder and
 * then fills `rb` output rows; `src` gives statements setting `v` for output row l, column k.
 */
function spliceLike(ctx: LowerContext, label: string, B: number, rows: number, R: number, ids: number, T: number, token: number, src: string): KernelBody {
  const lanes = chooseLanes(ctx.device, T >= 16 || R >= 16);
  const rb = rowBlock(rows, R);
  const nblk = Math.max(1, Math.ceil(rows / rb));
  const groups = B * nblk;
  const t = wgslType(ctx.output.dtype);
  const stmts = `  let b = grp / ${nblk}u;
  let l0 = (grp % ${nblk}u) * ${rb}u;
${findPlaceholder(lanes, ids, T, token)}
  ${laneLoop(
    lanes,
    rb * R,
    'e',
    `    let l = l0 + e / ${R}u;
    let k = e % ${R}u;
    if (l < ${rows}u) {
      var v: ${t};
      ${src}
      store((b * ${rows}u + l) * ${R}u + k, v);
    }`,
  )}`;
  return body(ctx, `${label} ${B}x${rows}x${R}`, lanes, groups, entry(lanes, groups, stmts));
}

/** splice: inputs seq [B, T, ...], insert [B, P, ...], ids [B, T]. */
export function lowerSplice(ctx: LowerContext, token: number): KernelBody {
  const [B, T] = ctx.inputs[0]!.shape as [number, number];
  const P = ctx.inputs[1]!.shape[1]!;
  const R = product(ctx.inputs[0]!.shape.slice(2));
  const Lq = T - 1 + P;
  const src = `if (l < sp) { v = load0((b * ${T}u + l) * ${R}u + k); }
      else if (l < sp + ${P}u) { v = load1((b * ${P}u + l - sp) * ${R}u + k); }
      else { v = load0((b * ${T}u + l + 1u - ${P}u) * ${R}u + k); }`;
  return spliceLike(ctx, 'splice', B, Lq, R, 2, T, token, src);
}

/** splice_grad: inputs g [B, T - 1 + P, ...], ids [B, T]; part 'seq' or 'insert'. */
export function lowerSpliceGrad(ctx: LowerContext, token: number, part: 'seq' | 'insert'): KernelBody {
  const [B, Lq] = ctx.inputs[0]!.shape as [number, number];
  const T = ctx.inputs[1]!.shape[1]!;
  const P = Lq - T + 1;
  const R = product(ctx.inputs[0]!.shape.slice(2));
  const zero = ctx.output.dtype === 'i32' || ctx.output.dtype === 'bool' ? '0i' : '0.0';
  const src =
    part === 'insert'
      ? `v = load0((b * ${Lq}u + sp + l) * ${R}u + k);`
      : `if (l < sp) { v = load0((b * ${Lq}u + l) * ${R}u + k); }
      else if (l == sp) { v = ${zero}; }
      else { v = load0((b * ${Lq}u + l + ${P}u - 1u) * ${R}u + k); }`;
  return spliceLike(ctx, `splice_grad ${part}`, B, part === 'seq' ? T : P, R, 1, T, token, src);
}
