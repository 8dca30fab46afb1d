// Fused attention, forward and the q gradient: no [T, S] score matrix in memory.
//
// A group of L lanes owns L query rows of one (batch, kv head): lane l takes row t0 + l of query
// head h, the row blocks of the G = Hq / Hkv heads sharing that kv head numbered together
// (blk = hg * ceil(T / L) + t0 / L). Keys go by in blocks of L: each lane loads ONE key (and
// value) row, 4 elements at a time, and subgroupBroadcast hands them to the other lanes
// (matmul.ts's trick: on lavapipe every load is a per-lane scalar loop, a broadcast a register
// shuffle), so a key costs each lane (D + Dv) / L loads instead of D + Dv. Scores live in
// registers (L per lane); the online softmax keeps a running max m and sum l and rescales the
// output accumulator by exp(m_old - m_new). With L = 1 a lane owns one row and walks the keys
// one at a time. Rows that see no key (causal, T > S) get 0, as the reference defines. A sliding
// window gives each row a first key too (lo): the key loop starts at the block's first row's,
// and keys before a lane's own lo are masked like those past its lim.
//
// What lavapipe needs besides: the q row is reloaded per key block rather than held (a lane's
// vectors cost 4 SIMD registers per vec4 there), the accumulator row is a per-lane array in
// workgroup memory (laneArrays), and loops over the head dim have opaque bounds: unrolled, these
// kernels took tens of seconds to compile for D = 128.
import type { Attrs } from '../../ir/graph.js';
import { windowOf, type AttentionDims } from '../attention.js';
import type { KernelBody, LowerContext } from '../../codegen/kernel.js';
import { body, chooseLanes, entry, f32, laneArrays, NEG_BIG, OPAQUE_ZERO, type LaneArray, type Lanes } from './lanes.js';

const POS_BIG = '3.402823466e+38f';

export interface Att extends AttentionDims {
  G: number;
  lanes: Lanes;
  L: number;
  /** row blocks per head, and per kv head (G heads) */
  nbt: number;
  nblk: number;
  /** workgroup memory for per-lane arrays */
  budget: number;
}

export function attDims(ctx: LowerContext): Att {
  const lanes = chooseLanes(ctx.device, true, 32);
  const [B, Hq, T, D] = ctx.inputs[0]!.shape as [number, number, number, number];
  const [, Hkv, S] = ctx.inputs[1]!.shape as [number, number, number];
  const Dv = ctx.inputs[2]!.shape[3]!;
  const attrs: Attrs = ctx.attrs;
  const scale = typeof attrs['scale'] === 'number' ? attrs['scale'] : 1 / Math.sqrt(D);
  const L = lanes.L;
  const nbt = Math.ceil(T / L);
  const G = Hq / Hkv;
  return { B, Hq, Hkv, G, T, S, D, Dv, scale, causal: attrs['causal'] === true, window: windowOf(attrs), lanes, L, nbt, nblk: G * nbt, budget: ctx.device.workgroupMemoryBytes };
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
export const v4 = (n: number): number => Math.max(1, Math.ceil(n / 4));
const sum = (n: number, f: (j: number) => string): string => range(n).map(f).join(' + ');

/** `for c in 0..n` over vec4 chunks, with a bound the compiler cannot unroll. */
export function forC(n: number, stmts: string): string {
  return `for (var c = 0u; c < ${n}u + ${OPAQUE_ZERO}; c++) {\n${stmts}\n    }`;
}

/** fn k_ld<k>(base, c) -> vec4: elements 4c..4c+3 of input k from `base`, zero past `width`. */
export function vecLoader(k: number, width: number): string {
  const full = Math.floor(width / 4);
  const rem = width % 4;
  const all = `vec4<f32>(${range(4).map((e) => `load${k}(i + ${e}u)`).join(', ')})`;
  const tail = `vec4<f32>(${range(4).map((e) => (e < rem ? `load${k}(i + ${e}u)` : '0.0')).join(', ')})`;
  const b = rem === 0 ? `return ${all};` : `if (c < ${full}u) { return ${all}; }\n  return ${tail};`;
  return `fn k_ld${k}(base: u32, c: u32) -> vec4<f32> {\n  let i = base + 4u * c;\n  ${b}\n}`;
}

/** Statements storing the `width` valid elements of the vec4 chunks `chunk(c)` (times `mul`) at `base`. */
export function storeVec(chunk: (c: string) => string, width: number, base: string, mul: string): string {
  const full = Math.floor(width / 4);
  const rem = width % 4;
  const lines = [
    forC(full, `      let o = ${chunk('c')} * ${mul};
      let i = ${base} + 4u * c;
      store(i, o.x); store(i + 1u, o.y); store(i + 2u, o.z); store(i + 3u, o.w);`),
  ];
  if (rem > 0) lines.push(`{ let o = ${chunk(`${full}u`)} * ${mul};\n      ${range(rem).map((e) => `store(${base} + ${4 * full + e}u, o[${e}]);`).join(' ')} }`);
  return lines.join('\n    ');
}

/** The lane's clamped row offsets for row block `blk`: t0, t, tc, h, qo (q row), go (output / g row). */
export function rowOffsets(a: Att, blk: string): string {
  return `  let hg = (${blk}) / ${a.nbt}u;
  let t0 = ((${blk}) % ${a.nbt}u) * ${a.L}u;
  let t = t0 + lane;
  let tc = min(t, ${Math.max(a.T - 1, 0)}u);
  let h = kvh * ${a.G}u + hg;
  let qo = ((b * ${a.Hq}u + h) * ${a.T}u + tc) * ${a.D}u;
  let go = ((b * ${a.Hq}u + h) * ${a.T}u + tc) * ${a.Dv}u;`;
}

/** Keys row t sees end before this (causal: j <= t + S - T), as an expression. */
function limOf(a: Att, t: string): string {
  return a.causal ? `u32(clamp(i32(${t}) + ${a.S - a.T + 1}i, 0i, ${a.S}i))` : `${a.S}u`;
}

/** The first key row t sees (sliding window W: j > t + S - T - W), as an expression. */
function loOf(a: Att, t: string): string {
  return a.window > 0 ? `u32(clamp(i32(${t}) + ${a.S - a.T - a.window + 1}i, 0i, ${a.S}i))` : '0u';
}

/**
 * Statements after rowOffsets: `lo` and `lim` (the keys the lane's row sees: lo <= j < lim),
 * `jbeg` and `jend` (keys any row of the block sees: the key loop's bounds, uniform over the
 * group).
 */
export function keyRange(a: Att): string {
  const tmax = `min(t0 + ${a.L - 1}u, ${Math.max(a.T - 1, 0)}u)`;
  return `  let lim = ${limOf(a, 't')};\n  let jend = ${a.L === 1 ? 'lim' : limOf(a, tmax)};
  let lo = ${loOf(a, 't')};\n  let jbeg = ${a.L === 1 ? 'lo' : loOf(a, 't0')};`;
}

/** `ok` for key `j` of the lane's row. */
function seesKey(a: Att, j: string): string {
  return a.window > 0 ? `${j} < lim && ${j} >= lo` : `${j} < lim`;
}

/** `causal` / `causal window W`, for kernel labels. */
export function maskLabel(a: Att): string {
  return a.causal ? ` causal${a.window > 0 ? ` window ${a.window}` : ''}` : '';
}

/** kvh, b, kb (k head offset), vb (v head offset) from the (batch, kv head) index `bk`. */
export function headOffsets(a: Att, bk: string): string {
  return `  let kvh = (${bk}) % ${a.Hkv}u;
  let b = (${bk}) / ${a.Hkv}u;
  let kb = (b * ${a.Hkv}u + kvh) * ${a.S}u * ${a.D}u;
  let vb = (b * ${a.Hkv}u + kvh) * ${a.S}u * ${a.Dv}u;`;
}

/**
 * Statements for the key block at j0 (lanes = rows): jl (the key this lane loads), scores
 * s0..s{L-1} of the lane's row against keys j0..j0+L-1 (scaled), ok<j> (row sees key j0+j).
 */
export function scoreBlock(a: Att): string {
  const { lanes, L } = a;
  return [
    `    let jl = min(j0 + lane, ${Math.max(a.S - 1, 0)}u);`,
    ...range(L).map((j) => `    var s${j} = 0.0;`),
    `    ${forC(
      v4(a.D),
      `      let kv = k_ld1(kb + jl * ${a.D}u, c);
      let qc = k_ld0(qo, c);
${range(L).map((j) => `      s${j} += dot(qc, ${lanes.bcast('kv', j)});`).join('\n')}`,
    )}`,
    ...range(L).map((j) => `    s${j} *= ${f32(a.scale)};\n    let ok${j} = ${seesKey(a, `j0 + ${j}u`)};`),
  ].join('\n');
}

/**
 * Statements: online-softmax update of m, l with this block's scores; p0..p{L-1}, `corr`. Keys a
 * row does not see take no part: every product with one of their rows is selected away (not
 * multiplied by p = 0), so a NaN there cannot reach the row, as in the reference.
 */
export function onlineUpdate(a: Att): string {
  return [
    '    var mx = m;',
    ...range(a.L).map((j) => `    if (ok${j}) { mx = max(mx, s${j}); }`),
    '    let corr = exp(m - mx);',
    ...range(a.L).map((j) => `    let p${j} = select(0.0, exp(s${j} - mx), ok${j});`),
    `    l = l * corr + ${sum(a.L, (j) => `p${j}`)};`,
    '    m = mx;',
  ].join('\n');
}

/** Statements: dp<j> = (lane's g row) . (v row of key j0+j). */
export function dpBlock(a: Att): string {
  return [
    ...range(a.L).map((j) => `    var dp${j} = 0.0;`),
    `    ${forC(
      v4(a.Dv),
      `      let vv = k_ld2(vb + jl * ${a.Dv}u, c);
      let gc = k_ld3(go, c);
${range(a.L).map((j) => `      dp${j} += dot(gc, ${a.lanes.bcast('vv', j)});`).join('\n')}`,
    )}`,
  ].join('\n');
}

/** Lanes = keys: dp<r> = (lane's key's v row) . (g row of the block's row r, broadcast). */
export function dpBlockKeys(a: Att): string {
  return [
    ...range(a.L).map((r) => `      var dp${r} = 0.0;`),
    `      ${forC(
      v4(a.Dv),
      `        let vc = k_ld2(vb + jl * ${a.Dv}u, c);
        let gc = k_ld3(go, c);
${range(a.L).map((r) => `        dp${r} += dot(vc, ${a.lanes.bcast('gc', r)});`).join('\n')}`,
    )}`,
  ].join('\n');
}

/**
 * Statements for the backward's statistics of the lane's row: m, l and u = sum_j exp(s_j - m)
 * dp_j (online, rescaled like l), giving lse and delta = u / l = rowsum(P * dP) (= g . O).
 */
export function statsPass(a: Att, withDelta: boolean): string {
  return `  var m = ${NEG_BIG};
  var l = 0.0;
  var u = 0.0;
  for (var j0 = jbeg; j0 < jend; j0 += ${a.L}u) {
${scoreBlock(a)}
${onlineUpdate(a)}
${withDelta ? `${dpBlock(a)}\n    u = u * corr + ${sum(a.L, (j) => `select(0.0, p${j} * dp${j}, ok${j})`)};` : ''}
  }
  // A row that sees no key: lse = +big makes every p 0. A row that sees keys keeps whatever
  // l is (0 when every score is -inf, NaN after a NaN score): non-finite, as in torch.
  let lse = select(m + log(l), ${POS_BIG}, lim == 0u);
  let delta = select(u / l, 0.0, lim == 0u);`;
}

export function loaders(a: Att, n: number): string {
  return [vecLoader(0, a.D), vecLoader(1, a.D), vecLoader(2, a.Dv), vecLoader(3, a.Dv)].slice(0, n).join('\n');
}

function rowKernel(ctx: LowerContext, a: Att, label: string, n: number, arrays: LaneArray[], stmts: (at: (name: string, i: string) => string) => string): KernelBody {
  const groups = a.B * a.Hkv * a.nblk;
  const arr = laneArrays(a.lanes, arrays, a.budget);
  const main = `${arr.local}
${headOffsets(a, `grp / ${a.nblk}u`)}
${rowOffsets(a, `grp % ${a.nblk}u`)}
${keyRange(a)}
${stmts(arr.at)}`;
  const code = `${loaders(a, n)}\n${arr.module}\n${entry(a.lanes, groups, main)}`;
  return body(ctx, `${label} ${a.B}x${a.Hq}/${a.Hkv}x${a.T}x${a.S}x${a.D}/${a.Dv}${maskLabel(a)}`, a.lanes, groups, code);
}

/** attention: q (0), k (1), v (2) -> [B, Hq, T, Dv]. */
export function lowerAttention(ctx: LowerContext): KernelBody {
  const a = attDims(ctx);
  const n = v4(a.Dv);
  return rowKernel(ctx, a, 'attention', 3, [{ name: 'acc', type: 'vec4<f32>', n }], (at) => `  ${forC(n, `      ${at('acc', 'c')} = vec4<f32>();`)}
  var m = ${NEG_BIG};
  var l = 0.0;
  for (var j0 = jbeg; j0 < jend; j0 += ${a.L}u) {
${scoreBlock(a)}
${onlineUpdate(a)}
    ${forC(
      n,
      `      let vv = k_ld2(vb + jl * ${a.Dv}u, c);
      ${at('acc', 'c')} = ${at('acc', 'c')} * corr + ${sum(a.L, (j) => `select(vec4<f32>(), p${j} * ${a.lanes.bcast('vv', j)}, ok${j})`)};`,
    )}
  }
  if (t < ${a.T}u) {
    let inv = select(1.0 / l, 0.0, lim == 0u);
    ${storeVec((c) => at('acc', c), a.Dv, 'go', 'inv')}
  }`);
}

/** attention_grad wrt q: inputs q, k, v, g; dq = scale sum_j P_j (dP_j - delta) k_j. */
export function lowerAttentionGradQ(ctx: LowerContext): KernelBody {
  const a = attDims(ctx);
  const n = v4(a.D);
  return rowKernel(ctx, a, 'attention_grad q', 4, [{ name: 'dq', type: 'vec4<f32>', n }], (at) => `${statsPass(a, true)}
  ${forC(n, `      ${at('dq', 'c')} = vec4<f32>();`)}
  for (var j0 = jbeg; j0 < jend; j0 += ${a.L}u) {
${scoreBlock(a)}
${dpBlock(a)}
${range(a.L).map((j) => `    let ds${j} = select(0.0, exp(s${j} - lse) * (dp${j} - delta), ok${j});`).join('\n')}
    ${forC(
      n,
      `      let kv = k_ld1(kb + jl * ${a.D}u, c);
      ${at('dq', 'c')} += ${sum(a.L, (j) => `select(vec4<f32>(), ds${j} * ${a.lanes.bcast('kv', j)}, ok${j})`)};`,
    )}
  }
  if (t < ${a.T}u) {
    ${storeVec((c) => at('dq', c), a.D, 'qo', f32(a.scale))}
  }`);
}
