// The reduction template behind sum / mean / max and sum_to: one group per output element,
// reading the input through load0 at its logical (row-major) index.
//
// Axes are first normalised: size-1 axes dropped, runs of kept or reduced axes merged, so the
// common cases become one strided loop ([rows, n] -> rows, [n, cols] -> cols). The group's lanes
// split the reduced index; with one lane the reduced axes are plain nested loops (no division in
// the inner loop). A float max propagates NaN as torch.amax does (k_max; the lanes' partial
// maxima are combined through a sum, which keeps a NaN that subgroupMax may drop).
import type { KernelBody, LowerContext } from '../../codegen/kernel.js';
import { body, chooseLanes, entry, NEG_INF_FN, product, type Lanes } from './lanes.js';

export type ReduceKind = 'sum' | 'mean' | 'max';

interface Dim {
  size: number;
  stride: number;
}

/** Kept and reduced axes of `shape` (reduced: the set), size-1 axes gone, neighbours merged. */
export function splitAxes(shape: readonly number[], reduced: (axis: number) => boolean): { kept: Dim[]; red: Dim[] } {
  const runs: { size: number; stride: number; red: boolean }[] = [];
  let stride = 1;
  for (let a = shape.length - 1; a >= 0; a--) {
    const size = shape[a]!;
    const red = reduced(a);
    if (size !== 1) {
      const last = runs[runs.length - 1];
      // Walking from the innermost axis: an outer axis continues the run when it is of the same
      // kind and its stride is the run's extent.
      if (last && last.red === red && last.stride * last.size === stride) last.size *= size;
      else runs.push({ size, stride, red });
    }
    stride *= size;
  }
  runs.reverse();
  return { kept: runs.filter((r) => !r.red), red: runs.filter((r) => r.red) };
}

/**
 * Reduces input 0 (shape `inShape`, element type of ctx.inputs[0]) over the axes `reduced` says,
 * writing one value per output element in row-major order of the kept axes.
 */
export function lowerReduce(ctx: LowerContext, kind: ReduceKind, inShape: readonly number[], reduced: (axis: number) => boolean): KernelBody {
  const { kept, red } = splitAxes(inShape, reduced);
  const outCount = product(kept.map((d) => d.size));
  const rn = product(red.map((d) => d.size));
  const isInt = ctx.inputs[0]!.dtype === 'i32' || ctx.inputs[0]!.dtype === 'bool';
  const T = isInt ? 'i32' : 'f32';
  // Lanes pay off when each output reads many values, or when outputs are too few to fill the
  // device one per invocation.
  const lanes = chooseLanes(ctx.device, rn >= 64 || (outCount < 1024 && rn >= 8));
  const lines: string[] = [];
  // Base offset of the group's first input element, from its kept-axis multi-index.
  let div = 1;
  const terms: string[] = [];
  for (let i = kept.length - 1; i >= 0; i--) {
    const d = kept[i]!;
    const idx = i === 0 ? (div === 1 ? 'grp' : `(grp / ${div}u)`) : div === 1 ? `(grp % ${d.size}u)` : `((grp / ${div}u) % ${d.size}u)`;
    terms.push(`${idx} * ${d.stride}u`);
    div *= d.size;
  }
  lines.push(`  let base = ${terms.length > 0 ? terms.join(' + ') : '0u'};`);
  const init = kind === 'max' ? (isInt ? 'bitcast<i32>(0x80000000u)' : 'k_neg_inf()') : isInt ? '0i' : '0.0';
  lines.push(`  var acc: ${T} = ${init};`);
  const fold = (v: string): string => (kind === 'max' ? `acc = ${isInt ? 'max' : 'k_max'}(acc, ${v});` : `acc += ${v};`);
  lines.push(reducedLoops(lanes, red, fold));
  if (lanes.L > 1 && kind === 'max' && !isInt)
    lines.push(`  { let nans = ${lanes.sum('select(0.0, acc, k_isnan(acc))')};\n    acc = select(${lanes.max('acc')}, k_nan(), k_isnan(nans)); }`);
  else if (lanes.L > 1) lines.push(`  acc = ${kind === 'max' ? lanes.max('acc') : lanes.sum('acc')};`);
  if (kind === 'mean') {
    // An empty mean is 0/0 as in torch; the division stays at run time (a constant 0/0 is an error).
    lines.push(`  var n = ${rn}.0;\n  acc = acc / n;`);
  }
  const guard = lanes.L > 1 ? '  if (lane == 0u) { store(grp, acc); }' : '  store(grp, acc);';
  lines.push(guard);
  const code = [`${kind === 'max' && !isInt ? NEG_INF_FN : ''}`, entry(lanes, outCount, lines.join('\n'))].join('\n');
  return body(ctx, `${kind} ${outCount}x${rn}`, lanes, outCount, code);
}

function reducedLoops(lanes: Lanes, red: Dim[], fold: (v: string) => string): string {
  if (red.length === 0) return lanes.L > 1 ? `  if (lane == 0u) { ${fold('load0(base)')} }` : `  ${fold('load0(base)')}`;
  if (lanes.L === 1) {
    // Nested loops, outermost axis first; each level adds its offset.
    let inner = fold(`load0(o${red.length - 1})`);
    for (let k = red.length - 1; k >= 0; k--) {
      const prev = k === 0 ? 'base' : `o${k - 1}`;
      inner = `for (var r${k} = 0u; r${k} < ${red[k]!.size}u; r${k}++) {\n  let o${k} = ${prev} + r${k} * ${red[k]!.stride}u;\n  ${inner}\n}`;
    }
    return inner;
  }
  const rn = product(red.map((d) => d.size));
  if (red.length === 1) {
    return `  for (var r = lane; r < ${rn}u; r += ${lanes.L}u) { ${fold(`load0(base + r * ${red[0]!.stride}u)`)} }`;
  }
  // Several reduced runs: lanes stride over the flattened reduced index and decompose it.
  const parts: string[] = [];
  let div = 1;
  for (let k = red.length - 1; k >= 0; k--) {
    const d = red[k]!;
    const idx = k === 0 ? `(r / ${div}u)` : `((r / ${div}u) % ${d.size}u)`;
    parts.push(`${idx} * ${d.stride}u`);
    div *= d.size;
  }
  return `  for (var r = lane; r < ${rn}u; r += ${lanes.L}u) { ${fold(`load0(base + ${parts.join(' + ')})`)} }`;
}
