// patch_embed and its gradients as tiled dot products (tiled.ts) over the unfolded patches:
// with P = GH·GW patches per image and K = C·k·k values per patch, patch m = (b, p) and patch
// value kk = (c, r, q) sit at x[b, c, gy·k + r, gx·k + q]. Patches tile the image exactly, so
// (m, kk) <-> pixel is a bijection (the x gradient is a plain store per pixel, no scatter).
import type { KernelBody, LowerContext } from '../../codegen/kernel.js';
import { lowerDot } from './tiled.js';

function sizes(ctx: LowerContext) {
  const [B, C, H, W] = ctx.inputs[0]!.shape as [number, number, number, number];
  const [O, , k] = ctx.inputs[1]!.shape as [number, number, number];
  const d = { B, C, H, W, O, k };
  const GH = d.H / d.k;
  const GW = d.W / d.k;
  const P = GH * GW;
  const K = d.C * d.k * d.k;
  // k_xrow(m): offset of patch m's first pixel; k_xk(kk): offset of value kk within a patch.
  const helpers = `fn k_xrow(m: u32) -> u32 {
  let p = m % ${P}u;
  return (m / ${P}u) * ${d.C * d.H * d.W}u + (p / ${GW}u) * ${d.k * d.W}u + (p % ${GW}u) * ${d.k}u;
}
fn k_xk(kk: u32) -> u32 {
  let rq = kk % ${d.k * d.k}u;
  return (kk / ${d.k * d.k}u) * ${d.H * d.W}u + (rq / ${d.k}u) * ${d.W}u + rq % ${d.k}u;
}`;
  return { ...d, P, K, helpers };
}

/** patch_embed: x (0), weight (1) -> [B, O, GH, GW]; rows: patches, columns: output channels. */
export function lowerPatchEmbed(ctx: LowerContext): KernelBody {
  const s = sizes(ctx);
  return lowerDot(ctx, {
    label: 'patch_embed',
    M: s.B * s.P,
    N: s.O,
    K: s.K,
    helpers: s.helpers,
    rowPre: (row) => `  let xr = k_xrow(${row});`,
    a: (k) => `load0(xr + k_xk(${k}))`,
    colPre: (col, q) => `  let wc${q} = ${col} * ${s.K}u;`,
    b: (q, k) => `load1(wc${q} + ${k})`,
    out: (row, col) => `(${row} / ${s.P}u) * ${s.O * s.P}u + ${col} * ${s.P}u + ${row} % ${s.P}u`,
  });
}

/**
 * patch_embed_grad: x (0), weight (1), g (2) [B, O, GH, GW].
 * wrt weight: dW[o, kk] = sum over patches m of g[b, o, p] x(m, kk) (rows o, columns kk);
 * wrt x: dx(m, kk) = sum over o of g[b, o, p] w[o, kk] (rows m, columns kk).
 */
export function lowerPatchEmbedGrad(ctx: LowerContext, wrt: 'x' | 'weight'): KernelBody {
  const s = sizes(ctx);
  if (wrt === 'weight') {
    return lowerDot(ctx, {
      label: 'patch_embed_grad weight',
      M: s.O,
      N: s.K,
      K: s.B * s.P,
      helpers: s.helpers,
      rowPre: (row) => `  let go = ${row} * ${s.P}u;`,
      a: (m) => `load2((${m}) / ${s.P}u * ${s.O * s.P}u + go + (${m}) % ${s.P}u)`,
      colPre: (col, q) => `  let xc${q} = k_xk(${col});`,
      b: (q, m) => `load0(k_xrow(${m}) + xc${q})`,
      out: (row, col) => `${row} * ${s.K}u + ${col}`,
      unused: [1],
    });
  }
  return lowerDot(ctx, {
    label: 'patch_embed_grad x',
    M: s.B * s.P,
    N: s.K,
    K: s.O,
    helpers: s.helpers,
    rowPre: (row) => `  let gb = (${row} / ${s.P}u) * ${s.O * s.P}u + ${row} % ${s.P}u;`,
    a: (o) => `load2(gb + (${o}) * ${s.P}u)`,
    colPre: () => '',
    b: (q, o) => `load1((${o}) * ${s.K}u + cl${q})`,
    out: (row, col) => `k_xrow(${row}) + k_xk(${col})`,
    unused: [0],
  });
}
