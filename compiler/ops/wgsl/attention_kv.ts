// attention_grad wrt k and v: dV_j = sum_r P_rj g_r, dK_j = scale sum_r P_rj (dP_rj - delta_r) q_r
// over the query rows r of the G heads sharing key j's kv head. A scatter over rows, written as
// a gather over keys: one group owns a range of key blocks of one (batch, kv head), lanes = keys.
//
// Every P_rj needs row r's softmax statistics (lse_r, and delta_r for dK), which depend on all
// keys. The group computes them the way the forward does (lanes = rows, keys broadcast) and keeps
// them in per-lane arrays (lane l holds row t0 + l's, exactly the lane that loads that row
// later, so no lane reads another's memory and no barrier is needed). Then, per key block, it
// walks the row blocks broadcasting each row's q, g, lse and delta from the lane that loads
// them; each lane accumulates its key's dK or dV row in a per-lane array. When every row's
// statistics fit in workgroup memory they are computed once per group; otherwise rows go in
// chunks and each key block recomputes them (correct, slower: only very long sequences). Key
// ranges are split across groups only as far as needed to occupy the device, since each split
// repeats the statistics pass.
import type { KernelBody, LowerContext } from '../../codegen/kernel.js';
import { body, entry, f32, laneArrays, touch } from './lanes.js';
import { attDims, dpBlockKeys, forC, headOffsets, keyRange, loaders, maskLabel, rowOffsets, statsPass, storeVec, v4, type Att } from './attention.js';

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const sum = (n: number, f: (j: number) => string): string => range(n).map(f).join(' + ');

/** Groups wanted in flight before key ranges are split. */
const TARGET_GROUPS = 8;
/** Statistics rows per lane held in private arrays when there is no workgroup memory for them. */
const MAX_PRIVATE_ROWS = 1024;

export function lowerAttentionGradKV(ctx: LowerContext, wrt: 'k' | 'v'): KernelBody {
  const a: Att = attDims(ctx);
  const { lanes, L } = a;
  const isK = wrt === 'k';
  const W = isK ? a.D : a.Dv;
  const nkb = Math.max(1, Math.ceil(a.S / L));
  const F = Math.min(nkb, Math.max(1, Math.ceil(TARGET_GROUPS / (a.B * a.Hkv))));
  const perPart = Math.ceil(nkb / F);
  const groups = a.B * a.Hkv * F;
  // Row blocks per statistics chunk: all of them when they fit next to the accumulator.
  const accBytes = L * v4(W) * 16;
  const fitRows = L > 1 ? Math.floor((a.budget - accBytes) / (L * 8)) : MAX_PRIVATE_ROWS;
  const CH = Math.max(1, Math.min(a.nblk, fitRows));
  const once = CH === a.nblk;
  const arr = laneArrays(
    lanes,
    [
      { name: 'acc', type: 'vec4<f32>', n: v4(W) },
      { name: 'lseA', type: 'f32', n: CH },
      { name: 'delA', type: 'f32', n: CH },
    ],
    a.budget,
  );
  const at = arr.at;
  const vis = (rr: number): string =>
    `t0 + ${rr}u < ${a.T}u && j < ${a.S}u${a.causal ? ` && i32(j) <= i32(t0 + ${rr}u) + ${a.S - a.T}i` : ''}${
      a.window > 0 ? ` && i32(j) > i32(t0 + ${rr}u) + ${a.S - a.T - a.window}i` : ''
    }`;
  const bc = (e: string, rr: number): string => lanes.bcast(e, rr);
  // Lanes = keys: scores of the lane's key against the block's rows, whose q chunks come from
  // the lanes that load them.
  const phase2 = `      ${range(L).map((rr) => `var s${rr} = 0.0;`).join(' ')}
      ${forC(v4(a.D), `        let kc = k_ld1(kb + jl * ${a.D}u, c);\n        let qc = k_ld0(qo, c);\n${range(L).map((rr) => `        s${rr} += dot(kc, ${bc('qc', rr)});`).join('\n')}`)}
      let lseL = ${at('lseA', 'bi')};
${range(L).map((rr) => `      let ok${rr} = ${vis(rr)};\n      let p${rr} = select(0.0, exp(s${rr} * ${f32(a.scale)} - ${bc('lseL', rr)}), ok${rr});`).join('\n')}
${
  isK
    ? `${dpBlockKeys(a)}
      let delL = ${at('delA', 'bi')};
${range(L).map((rr) => `      let ds${rr} = select(0.0, p${rr} * (dp${rr} - ${bc('delL', rr)}), ok${rr});`).join('\n')}
      ${forC(v4(a.D), `        let qc = k_ld0(qo, c);\n        ${at('acc', 'c')} += ${sum(L, (rr) => `select(vec4<f32>(), ds${rr} * ${bc('qc', rr)}, ok${rr})`)};`)}`
    : `      ${forC(v4(a.Dv), `        let gc = k_ld3(go, c);\n        ${at('acc', 'c')} += ${sum(L, (rr) => `select(vec4<f32>(), p${rr} * ${bc('gc', rr)}, ok${rr})`)};`)}`
}`;
  // Row blocks that see none of this key block: all keys after the last row's, or (window) all
  // before the first row's first key.
  const skip =
    (a.causal ? `\n      if (i32(min(t0 + ${L - 1}u, ${Math.max(a.T - 1, 0)}u)) + ${a.S - a.T}i < i32(j0)) { continue; }` : '') +
    (a.window > 0 ? `\n      if (i32(j0 + ${L - 1}u) <= i32(t0) + ${a.S - a.T - a.window}i) { continue; }` : '');
  const stmts = `${isK ? '' : touch([2])}
${arr.local}
  let part = grp % ${F}u;
${headOffsets(a, `grp / ${F}u`)}
  let kb0 = part * ${perPart}u;
  let kb1 = min(kb0 + ${perPart}u, ${nkb}u);
  for (var kbi = kb0; kbi < kb1; kbi++) {
    let j0 = kbi * ${L}u;
    let j = j0 + lane;
    let jl = min(j, ${Math.max(a.S - 1, 0)}u);
    ${forC(v4(W), `      ${at('acc', 'c')} = vec4<f32>();`)}
    for (var ch0 = 0u; ch0 < ${a.nblk}u; ch0 += ${CH}u) {
      let nch = min(${CH}u, ${a.nblk}u - ch0);
      if (${once ? 'kbi == kb0' : 'true'}) {
        for (var bi = 0u; bi < nch; bi++) {
${rowOffsets(a, 'ch0 + bi')}
${keyRange(a)}
${statsPass(a, isK)}
          ${at('lseA', 'bi')} = lse;
          ${at('delA', 'bi')} = delta;
        }
      }
      for (var bi = 0u; bi < nch; bi++) {
${rowOffsets(a, 'ch0 + bi')}${skip}
${phase2}
      }
    }
    if (j < ${a.S}u) {
      ${storeVec((c) => at('acc', c), W, isK ? `kb + j * ${a.D}u` : `vb + j * ${a.Dv}u`, isK ? f32(a.scale) : '1.0')}
    }
  }`;
  const label = `attention_grad ${wrt} ${a.B}x${a.Hq}/${a.Hkv}x${a.T}x${a.S}x${a.D}/${a.Dv}${maskLabel(a)} parts ${F}${once ? '' : ` chunks ${CH}`}`;
  return body(ctx, label, lanes, groups, `${loaders(a, 4)}\n${arr.module}\n${entry(lanes, groups, stmts)}`);
}
