// WGSL scalar expressions shared by the elementwise op kernels and the fused code generator:
// literals that survive every value JS can hold, and the few functions WGSL lacks (erf). They
// are plain expression strings; the fused generator binds every operand to a `let` first, so an
// expression may repeat its arguments freely.

/**
 * WGSL rejects a constant expression that evaluates to inf or NaN, so those values are read from
 * a private variable (a runtime value); code using them must include SPECIAL_VALUES.
 */
export const SPECIAL_VALUES = 'var<private> kf_bits: vec3<u32> = vec3<u32>(0x7f800000u, 0xff800000u, 0x7fc00000u);';

/** A WGSL f32 literal for any JS number. */
export function f32Lit(v: number): string {
  const f = Math.fround(v);
  if (Number.isNaN(f)) return 'bitcast<f32>(kf_bits.z)';
  if (f === Infinity) return 'bitcast<f32>(kf_bits.x)';
  if (f === -Infinity) return 'bitcast<f32>(kf_bits.y)';
  if (Object.is(f, -0)) return '-0.0';
  const s = String(f);
  return s.includes('.') || s.includes('e') ? `f32(${s})` : `${s}.0`;
}

export function i32Lit(v: number): string {
  const n = Math.trunc(v) | 0;
  // -2147483648 is not a valid i32 literal (the minus is a separate operator).
  return n === -2147483648 ? 'i32(-2147483647 - 1)' : `i32(${n})`;
}

function horner(coeffs: readonly number[], x: string): string {
  let e = f32Lit(coeffs[coeffs.length - 1]!);
  for (let k = coeffs.length - 2; k >= 0; k--) e = `(${e} * ${x} + ${f32Lit(coeffs[k]!)})`;
  return e;
}

// Least-squares fits (Chebyshev nodes, f64) evaluated in f32 on a 2e5-point grid: at most 8e-8
// absolute error against erf, about one ulp of f32 near 1. Abramowitz-Stegun 7.1.26 is 1.5e-7.
// |x| < 1: erf(x) = x + x * P(x^2), the leading term exact.
const ERF_SMALL = [
  0.12837916612625122, -0.3761262893676758, 0.11283625662326813, -0.02685539796948433, 0.0051912167109549046,
  -0.0008034827769733965, 7.933422602945939e-5,
];
// 1 <= |x| <= 4: erf(x) = 1 - exp(Q(|x|)), Q fitting log(erfc); past 4 erf rounds to 1 in f32.
const ERF_LARGE = [
  0.00021115252457093447, -1.1296967267990112, -0.6329595446586609, -0.10874021053314209, 0.025452034547924995,
  -0.004320585634559393, 0.0004751837986987084, -2.7218360628467053e-5, 3.8759898757234623e-7,
];

/**
 * erf(scale * x) in f32 as one expression; `x` should be an identifier (it appears several
 * times). The scale is folded into the coefficients (gelu's 1/sqrt(2) costs nothing).
 */
export function erfWGSL(x: string, scale = 1): string {
  const small = ERF_SMALL.map((c, k) => c * scale ** (2 * k));
  const large = ERF_LARGE.map((c, k) => c * scale ** k);
  const sx = scale === 1 ? x : `(${f32Lit(scale)} * ${x})`;
  const t = `min(abs(${x}), ${f32Lit(4 / scale)})`;
  return `select(sign(${x}) * (1.0 - exp(${horner(large, t)})), ${sx} + ${sx} * ${horner(small, `(${x} * ${x})`)}, abs(${x}) < ${f32Lit(1 / scale)})`;
}

/** 1 / (1 + exp(-x)) without NaN at either end (exp overflows to inf, and 1 / inf is 0). */
export function sigmoidWGSL(x: string): string {
  return `(1.0 / (1.0 + exp(-(${x}))))`;
}

/**
 * Whether the f32 `x` (an identifier) is NaN, as a bit test: WGSL lets compilers assume floats
 * are finite, so `x != x` may be folded to false; integer tests on the bits may not.
 */
export function isNanWGSL(x: string): string {
  return `((bitcast<u32>(${x}) & 0x7fffffffu) > 0x7f800000u)`;
}

/** i32 0/1 from a WGSL bool expression. */
export function boolToI32(cond: string): string {
  return `select(i32(0), i32(1), ${cond})`;
}
