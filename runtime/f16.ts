// f16 and bf16 bit conversions: safetensors decoding, f16 storage on the GPU and read-back
// share these, so there is one rounding rule (nearest even, IEEE 754) in the project.
let f16Table: Float32Array | undefined;
export function f16ToF32Table(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  const bits = new Uint32Array(t.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    // Subnormal halves are normal floats: mant * 2^-24 is exact in f32.
    if (exp === 0) t[h] = (sign ? -1 : 1) * mant * 2 ** -24;
    else if (exp === 31) bits[h] = sign | 0x7f800000 | (mant << 13);
    else bits[h] = sign | ((exp + 112) << 23) | (mant << 13);
  }
  return (f16Table = t);
}

export function f16BitsToF32(h: number): number {
  return f16ToF32Table()[h & 0xffff]!;
}

/** f32 bit pattern -> f16 bit pattern, round to nearest even, overflow to inf, NaN kept quiet. */
export function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112;
  if (e >= 31) return sign | 0x7c00;
  let h: number, rem: number, half: number;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    h = mant >>> shift;
    rem = mant & ((1 << shift) - 1);
    half = 1 << (shift - 1);
  } else {
    h = (e << 10) | (mant >>> 13);
    rem = mant & 0x1fff;
    half = 0x1000;
  }
  // A carry out of the mantissa bumps the exponent, which is the correctly rounded result
  // (including rounding up to inf or from the largest subnormal to the smallest normal).
  if (rem > half || (rem === half && (h & 1) === 1)) h++;
  return sign | h;
}

/** f32 bit pattern -> bf16 bit pattern, round to nearest even, NaN kept quiet. */
export function f32BitsToBf16(x: number): number {
  if ((x & 0x7fffffff) >>> 0 > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x >>> 0) + 0x7fff + ((x >>> 16) & 1)) >>> 16;
}


/** f32 values -> f16 bits, padded to whole 4-byte words (what writeBuffer requires). */
export function f32ArrayToF16(values: ArrayLike<number>): Uint16Array {
  const bits = new Uint16Array(values.length + (values.length % 2));
  const word = new Float32Array(1);
  const asInt = new Uint32Array(word.buffer);
  for (let i = 0; i < values.length; i++) {
    word[0] = values[i]!;
    bits[i] = f32BitsToF16(asInt[0]!);
  }
  return bits;
}

/** f16 bits -> f32 values (the first `length` halves of `bits`). */
export function f16ArrayToF32(bits: Uint16Array, length = bits.length): Float32Array {
  const t = f16ToF32Table();
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = t[bits[i]!]!;
  return out;
}
