import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { KilnError } from '../../runtime/errors.js';
import { f16BitsToF32, f32BitsToBf16, f32BitsToF16, parseSafetensors } from '../../runtime/safetensors.js';
import { openSafetensors, readSafetensors, writeSafetensors } from '../../runtime/node/safetensors-file.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { expectKilnError } from '../helpers/errors.js';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-st-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A file from a header (object or raw JSON text) and data bytes; `len` overrides the length field. */
function build(header: unknown, data: Uint8Array = new Uint8Array(0), len?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, len ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

const f32Bits = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0]!;
const bitsF32 = (b: number) => new Float32Array(new Uint32Array([b]).buffer)[0]!;
const u16Bytes = (xs: number[]) => new Uint8Array(new Uint16Array(xs).buffer);

describe('round trip', () => {
  const tensors = new Map<string, HostTensor>([
    ['w', { dtype: 'f32', shape: [2, 3], data: new Float32Array([1, -2.5, 3e-8, Infinity, -0, 65504]) }],
    ['ids', { dtype: 'i32', shape: [4], data: new Int32Array([0, -1, 2147483647, -2147483648]) }],
    ['mask', { dtype: 'bool', shape: [3], data: new Int32Array([1, 0, 1]) }],
    ['scalar', { dtype: 'f32', shape: [], data: new Float32Array([7]) }],
    ['empty', { dtype: 'f32', shape: [0, 4], data: new Float32Array(0) }],
    ['h', { dtype: 'f16', shape: [2], data: new Float32Array([0.5, -1024]) }],
  ]);

  it('f32, i32, bool and scalars survive write + read exactly', () => {
    const p = path.join(dir, 'rt.safetensors');
    writeSafetensors(p, tensors, { dtype: 'f32' });
    const back = readSafetensors(p);
    expect([...back.keys()].sort()).toEqual([...tensors.keys()].sort());
    for (const [name, t] of tensors) {
      const b = back.get(name)!;
      expect(b.shape).toEqual(t.shape);
      expect(b.dtype).toBe(t.dtype === 'f16' ? 'f32' : t.dtype);
      expect(Array.from(b.data)).toEqual(Array.from(t.data));
    }
    expect(Object.is(back.get('w')!.data[4], -0)).toBe(true);
    expect(back.get('ids')!.data).toBeInstanceOf(Int32Array);
  });

  it('f16 storage rounds to half precision and reads back as Float32Array', () => {
    const p = path.join(dir, 'rt16.safetensors');
    const t = new Map<string, HostTensor>([['x', { dtype: 'f32', shape: [5], data: new Float32Array([1, 1 / 3, 1e-7, 70000, -0.1]) }]]);
    writeSafetensors(p, t, { dtype: 'f16' });
    const f = openSafetensors(p);
    expect(f.entries.get('x')!.dtype).toBe('F16');
    const x = f.load('x');
    expect(x.dtype).toBe('f16');
    expect(x.data).toBeInstanceOf(Float32Array);
    expect(Array.from(x.data)).toEqual([1, 0.333251953125, 1.1920928955078125e-7, Infinity, -0.0999755859375]);
  });

  it('bf16 storage, the tensor\'s own dtype by default, and the i32 tensors stay I32', () => {
    const p = path.join(dir, 'rtb.safetensors');
    writeSafetensors(p, tensors);
    const f = openSafetensors(p);
    expect(f.entries.get('h')!.dtype).toBe('F16');
    expect(f.entries.get('w')!.dtype).toBe('F32');
    writeSafetensors(p, tensors, { dtype: 'bf16' });
    const g = openSafetensors(p);
    expect(g.entries.get('w')!.dtype).toBe('BF16');
    expect(g.entries.get('ids')!.dtype).toBe('I32');
    expect(Array.from(g.load('w').data)).toEqual([1, -2.5, 3.003515303134918e-8, Infinity, -0, 65536]);
  });

  it('aligns like the reference writer, writes __metadata__ format=pt, leaves no temp file', () => {
    const p = path.join(dir, 'align.safetensors');
    writeSafetensors(p, tensors, { dtype: 'f16' });
    const bytes = new Uint8Array(fs.readFileSync(p));
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const f = openSafetensors(p);
    expect(f.metadata).toEqual({ format: 'pt' });
    for (const e of f.entries.values()) expect(e.begin % ({ F32: 4, I32: 4, F16: 2, BOOL: 1 } as Record<string, number>)[e.dtype]!).toBe(0);
    expect(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(parseSafetensors(bytes, p).get('ids')!.data).toEqual(new Int32Array([0, -1, 2147483647, -2147483648]));
  });

  it('reports write failures as KilnError naming the file', () => {
    const p = path.join(dir, 'no-such-dir', 'x.safetensors');
    expectKilnError(() => writeSafetensors(p, tensors), p, 'cannot write');
    const bad = new Map<string, HostTensor>([['t', { dtype: 'f32', shape: [3], data: new Float32Array(2) }]]);
    expectKilnError(() => writeSafetensors(path.join(dir, 'b.safetensors'), bad), 'b.safetensors', "tensor 't'");
  });

  it('random tensor maps round-trip through f32 files', () => {
    const tensorArb = fc.oneof(
      fc.array(fc.float({ noDefaultInfinity: false }), { maxLength: 12 }).map((xs): HostTensor => ({ dtype: 'f32', shape: [xs.length], data: new Float32Array(xs) })),
      fc.array(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), { maxLength: 12 }).map((xs): HostTensor => ({ dtype: 'i32', shape: [xs.length], data: new Int32Array(xs) })),
    );
    const nameArb = fc.string({ maxLength: 8 }).filter((s) => s !== '__metadata__');
    const prop = fc.property(fc.dictionary(nameArb, tensorArb, { maxKeys: 5 }), (obj) => {
      const m = new Map(Object.entries(obj));
      writeSafetensors(path.join(dir, 'prop.safetensors'), m);
      const back = readSafetensors(path.join(dir, 'prop.safetensors'));
      expect(back.size).toBe(m.size);
      for (const [k, t] of m) expect(Array.from(back.get(k)!.data)).toEqual(Array.from(t.data));
    });
    fc.assert(prop, { numRuns: 200 });
  });
});

describe('half-precision decoding and encoding', () => {
  // [bits, value]: zero, normals, the largest finite, smallest normal, subnormals, infinities.
  const f16Cases: [number, number][] = [[0x0000, 0], [0x3c00, 1], [0xc000, -2], [0x3555, 0.333251953125], [0x7bff, 65504],
    [0x0400, 2 ** -14], [0x0001, 2 ** -24], [0x03ff, 1023 * 2 ** -24], [0x8001, -(2 ** -24)], [0x7c00, Infinity], [0xfc00, -Infinity]];
  const bf16Cases: [number, number][] = [[0x3f80, 1], [0xc000, -2], [0x4049, 3.140625], [0x0001, 2 ** -133], [0x0080, 2 ** -126],
    [0x7f7f, 3.3895313892515355e38], [0x7f80, Infinity], [0xff80, -Infinity]];

  it('decodes known F16 bit patterns from a file (subnormals, inf, nan, -0)', () => {
    const bits = [...f16Cases.map(([b]) => b), 0x8000, 0x7e00, 0x7c01, 0xfe00];
    const file = build({ x: { dtype: 'F16', shape: [bits.length], data_offsets: [0, 2 * bits.length] } }, u16Bytes(bits));
    const x = Array.from(parseSafetensors(file, 'h.st').get('x')!.data);
    expect(x.slice(0, f16Cases.length)).toEqual(f16Cases.map(([, v]) => v));
    expect(Object.is(x[f16Cases.length], -0)).toBe(true);
    for (const v of x.slice(f16Cases.length + 1)) expect(v).toBeNaN();
  });

  it('decodes known BF16 bit patterns from a file', () => {
    const bits = [...bf16Cases.map(([b]) => b), 0x8000, 0x7fc0, 0xffc1];
    const file = build({ x: { dtype: 'BF16', shape: [bits.length], data_offsets: [0, 2 * bits.length] } }, u16Bytes(bits));
    const x = Array.from(parseSafetensors(file, 'b.st').get('x')!.data);
    expect(x.slice(0, bf16Cases.length)).toEqual(bf16Cases.map(([, v]) => v));
    expect(Object.is(x[bf16Cases.length], -0)).toBe(true);
    for (const v of x.slice(bf16Cases.length + 1)) expect(v).toBeNaN();
  });

  it('f16 and bf16 encoders invert the decoders on every non-NaN pattern', () => {
    for (let h = 0; h < 65536; h++) {
      const v = f16BitsToF32(h);
      if (!Number.isNaN(v)) expect(f32BitsToF16(f32Bits(v))).toBe(h);
      else expect(Number.isNaN(f16BitsToF32(f32BitsToF16(f32Bits(v))))).toBe(true);
      const w = bitsF32(h << 16);
      if (!Number.isNaN(w)) expect(f32BitsToBf16(f32Bits(w))).toBe(h);
      else expect(Number.isNaN(bitsF32(f32BitsToBf16(f32Bits(w)) << 16))).toBe(true);
    }
  });

  it('rounds to nearest even, overflows to inf, underflows through subnormals', () => {
    expect(f32BitsToF16(f32Bits(1 + 2 ** -11))).toBe(0x3c00);
    expect(f32BitsToF16(f32Bits(1 + 3 * 2 ** -11))).toBe(0x3c02);
    expect(f32BitsToF16(f32Bits(65519))).toBe(0x7bff);
    expect(f32BitsToF16(f32Bits(65520))).toBe(0x7c00);
    expect(f32BitsToF16(f32Bits(2 ** -25))).toBe(0x0000);
    expect(f32BitsToF16(f32Bits(1.5 * 2 ** -25))).toBe(0x0001);
    expect(f32BitsToF16(f32Bits(3 * 2 ** -25))).toBe(0x0002);
    expect(f32BitsToF16(f32Bits(1023.5 * 2 ** -24))).toBe(0x0400);
    expect(f32BitsToF16(f32Bits(-1e-30))).toBe(0x8000);
    expect(f32BitsToBf16(f32Bits(1 + 2 ** -8))).toBe(0x3f80);
    expect(f32BitsToBf16(f32Bits(1 + 3 * 2 ** -8))).toBe(0x3f82);
    expect(f32BitsToBf16(0x7f7fffff)).toBe(0x7f80);
  });

  it('matches correctly rounded f16 on random floats', () => {
    fc.assert(
      fc.property(fc.float({ noNaN: true, min: -70000, max: 70000 }), (x) => {
        const got = f16BitsToF32(f32BitsToF16(f32Bits(x)));
        // No representable half is strictly closer than the one chosen.
        const h = f32BitsToF16(f32Bits(x));
        for (const n of [h - 1, h + 1]) {
          const v = f16BitsToF32(n & 0xffff);
          if (Number.isFinite(v) && Number.isFinite(got)) expect(Math.abs(v - x)).toBeGreaterThanOrEqual(Math.abs(got - x));
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('integer dtypes', () => {
  const i64 = (xs: bigint[]) => new Uint8Array(new BigInt64Array(xs).buffer);

  it('reads I64 in int32 range and rejects values outside it, naming the tensor', () => {
    const ok = build({ pos: { dtype: 'I64', shape: [3], data_offsets: [0, 24] } }, i64([0n, -(2n ** 31n), 2n ** 31n - 1n]));
    expect(parseSafetensors(ok, 'ok.st').get('pos')!.data).toEqual(new Int32Array([0, -(2 ** 31), 2 ** 31 - 1]));
    const bad = build({ pos: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, i64([1n, 2n ** 31n]));
    expectKilnError(() => parseSafetensors(bad, 'big.st'), 'big.st', "tensor 'pos'", '2147483648', 'int32');
    const neg = build({ pos: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, i64([-(2n ** 40n)]));
    expectKilnError(() => parseSafetensors(neg, 'neg.st'), 'neg.st', String(-(2n ** 40n)));
  });

  it('reads U8, BOOL, I8, F64', () => {
    const data = new Uint8Array([255, 0, 2, 0x80, ...new Uint8Array(new Float64Array([0.1]).buffer)]);
    const f = build(
      {
        u: { dtype: 'U8', shape: [1], data_offsets: [0, 1] },
        b: { dtype: 'BOOL', shape: [2], data_offsets: [1, 3] },
        i: { dtype: 'I8', shape: [1], data_offsets: [3, 4] },
        d: { dtype: 'F64', shape: [1], data_offsets: [4, 12] },
      },
      data,
    );
    const m = parseSafetensors(f, 'mix.st');
    expect(Array.from(m.get('u')!.data)).toEqual([255]);
    expect(m.get('b')!).toMatchObject({ dtype: 'bool' });
    expect(Array.from(m.get('b')!.data)).toEqual([0, 1]);
    expect(Array.from(m.get('i')!.data)).toEqual([-128]);
    expect(m.get('d')!.data[0]).toBe(Math.fround(0.1));
  });
});

const ok4 = new Uint8Array(16);
const f32At = (n: number, at: number) => ({ dtype: 'F32', shape: [n], data_offsets: [at, at + 4 * n] });
const malformed: [string, Uint8Array, string[]][] = [
  ['shorter than 8 bytes', new Uint8Array(5), ['8-byte']],
  ['absurd header length', build({}, ok4, 200_000_000n), ['limit']],
  ['header length past the end', build({}, ok4, 1000n), ['past the end']],
  ['header not JSON', build('{"a": ', ok4), ['not valid JSON']],
  ['header not UTF-8', build('{"a":{}}').map((b, i) => (i === 10 ? 0xff : b)), ['not valid JSON']],
  ['header an array', build([1, 2]), ['not a JSON object']],
  ['header null', build('null'), ['not a JSON object']],
  ['entry not an object', build({ t: 3 }), ["tensor 't'", 'not an object']],
  ['no dtype', build({ t: { shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)), ["tensor 't'", 'no dtype']],
  ['no shape', build({ t: { dtype: 'F32', data_offsets: [0, 4] } }, new Uint8Array(4)), ["tensor 't'", 'no shape']],
  ['no data_offsets', build({ t: { dtype: 'F32', shape: [1] } }, new Uint8Array(4)), ["tensor 't'", 'no data_offsets']],
  ['unknown dtype', build({ t: { dtype: 'F128', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)), ["tensor 't'", 'unknown dtype "F128"']],
  ['inherited-name dtype', build({ t: { dtype: 'toString', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)), ['unknown dtype']],
  ['negative dim', build({ t: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4)), ["tensor 't'", 'non-negative integer']],
  ['fractional dim', build({ t: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, new Uint8Array(4)), ['non-negative integer']],
  ['shape not an array', build({ t: { dtype: 'F32', shape: 4, data_offsets: [0, 4] } }, new Uint8Array(4)), ['not an array']],
  ['offsets not a pair', build({ t: { dtype: 'F32', shape: [1], data_offsets: [0] } }, new Uint8Array(4)), ['pair']],
  ['negative offset', build({ t: { dtype: 'F32', shape: [0], data_offsets: [-4, 0] } }, new Uint8Array(4)), ['pair']],
  ['begin > end', build({ t: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, new Uint8Array(4)), ['begin is after end']],
  ['offsets past the data', build({ t: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(4)), ["tensor 't'", 'past the end']],
  ['overlapping ranges', build({ a: f32At(2, 0), b: f32At(1, 4) }, new Uint8Array(8)), ["tensor 'b'", "overlap tensor 'a'"]],
  ['gap between tensors', build({ a: f32At(1, 0), b: f32At(1, 8) }, new Uint8Array(12)), ["tensor 'b'", 'covered by no tensor']],
  ['gap at the start', build({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)), ["tensor 'a'", 'bytes 0..4']],
  ['too few bytes for the shape', build({ t: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, new Uint8Array(4)), ["tensor 't'", 'needs 8 bytes']],
  ['too many bytes for the shape', build({ t: { dtype: 'F16', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)), ['needs 2 bytes']],
  ['astronomical shape', build({ t: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 4] } }, new Uint8Array(4)), ['needs more than 4']],
  ['metadata not strings', build({ __metadata__: { format: 1 } }), ['__metadata__']],
];

describe('malformed files', () => {
  it.each(malformed)('%s: a KilnError naming the file (in memory)', (_what, bytes, parts) => {
    expectKilnError(() => parseSafetensors(bytes, 'bad.safetensors'), 'bad.safetensors', ...parts);
  });

  it.each(malformed)('%s: a KilnError naming the file (on disk)', (what, bytes, parts) => {
    const p = path.join(dir, `bad-${what.replace(/\W+/g, '-')}.safetensors`);
    fs.writeFileSync(p, bytes);
    expectKilnError(() => openSafetensors(p), p, ...parts);
  });

  it('allows trailing bytes after the last tensor', () => {
    const f = build({ t: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array([0, 0, 0x80, 0x3f, 9, 9, 9]));
    expect(Array.from(parseSafetensors(f).get('t')!.data)).toEqual([1]);
  });

  it('accepts F8 headers but refuses to load F8 data, naming the tensor', () => {
    const f = build({ q: { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2));
    expectKilnError(() => parseSafetensors(f, 'f8.st'), 'f8.st', "tensor 'q'", 'F8_E4M3');
  });

  it('names missing files and unknown tensors', () => {
    const p = path.join(dir, 'missing.safetensors');
    expectKilnError(() => readSafetensors(p), p, 'no such file');
    expectKilnError(() => openSafetensors(dir), dir);
    const q = path.join(dir, 'one.safetensors');
    writeSafetensors(q, new Map([['a', { dtype: 'f32', shape: [1], data: new Float32Array(1) }]]));
    expectKilnError(() => openSafetensors(q).load('b'), q, "tensor 'b'");
  });

  it('notices a file truncated after it was opened', () => {
    const p = path.join(dir, 'shrink.safetensors');
    writeSafetensors(p, new Map([['a', { dtype: 'f32', shape: [64], data: new Float32Array(64) }]]));
    const f = openSafetensors(p);
    fs.truncateSync(p, fs.statSync(p).size - 100);
    expectKilnError(() => f.load('a'), p, "tensor 'a'", 'ended early');
  });
});

describe('fuzz: parse succeeds or throws KilnError, with allocations bounded by the file', () => {
  /** Succeeds or throws KilnError; output is at most 4x the file (U8/BOOL widen to int32). */
  function check(bytes: Uint8Array): void {
    let out: Map<string, HostTensor>;
    try {
      out = parseSafetensors(bytes, 'fuzz.st');
    } catch (e) {
      if (!(e instanceof KilnError)) throw e;
      expect(e.message.startsWith('fuzz.st: ')).toBe(true);
      return;
    }
    let total = 0;
    for (const t of out.values()) total += t.data.byteLength;
    expect(total).toBeLessThanOrEqual(4 * bytes.length);
  }

  it('random bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 256 }), (b) => check(b)), { numRuns: 2000 });
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.nat({ max: 80 }), (b, n) => check(build(new TextDecoder().decode(b), new Uint8Array(n)))),
      { numRuns: 2000 },
    );
  });

  const dtypeArb = fc.constantFrom('F32', 'F16', 'BF16', 'I64', 'I32', 'U8', 'BOOL', 'F64', 'U64', 'U32', 'I16', 'F8_E5M2', 'X9', 7, null);
  const numArb = fc.oneof(fc.integer({ min: -3, max: 40 }), fc.constantFrom(1.5, 2 ** 53, 2 ** 60, -0, 'x', null, 1e300));
  const entryArb = fc.oneof(
    fc.record({ dtype: dtypeArb, shape: fc.array(numArb, { maxLength: 3 }), data_offsets: fc.array(numArb, { minLength: 1, maxLength: 3 }) }, { requiredKeys: [] }),
    fc.anything({ maxDepth: 2 }),
  );

  it('random header JSON', () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.oneof(fc.string({ maxLength: 4 }), fc.constant('__metadata__'), fc.constant('__proto__')), entryArb, { maxKeys: 4 }),
        fc.uint8Array({ maxLength: 96 }),
        (header, data) => check(build(header, data)),
      ),
      { numRuns: 3000 },
    );
  });

  const valid = (() => {
    const p = path.join(os.tmpdir(), `kiln-st-valid-${process.pid}.safetensors`);
    const a: HostTensor = { dtype: 'f32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) };
    const b: HostTensor = { dtype: 'i32', shape: [3], data: new Int32Array([7, 8, 9]) };
    writeSafetensors(p, new Map([['a', a], ['b', b], ['c', { dtype: 'bool', shape: [2], data: new Int32Array([1, 0]) }]]), { dtype: 'f16' });
    const bytes = new Uint8Array(fs.readFileSync(p));
    fs.rmSync(p);
    return bytes;
  })();

  it('corruptions of a valid file: truncation, byte flips, length and offset edits', () => {
    const text = new TextDecoder().decode(valid);
    const corruption = fc.oneof(
      fc.nat({ max: valid.length }).map((n) => valid.slice(0, n)),
      fc.array(fc.tuple(fc.nat({ max: valid.length - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }).map((flips) => {
        const b = valid.slice();
        for (const [i, v] of flips) b[i] = v;
        return b;
      }),
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((len) => {
        const b = valid.slice();
        new DataView(b.buffer).setBigUint64(0, len, true);
        return b;
      }),
      fc.tuple(fc.nat({ max: 5 }), fc.integer({ min: -30, max: 30 })).map(([k, delta]) => {
        // Move one begin or end offset of one tensor; the header length field is left as it was.
        let seen = 0;
        const edited = text.replace(/"data_offsets":\[(\d+),(\d+)\]/g, (m, a: string, b: string) => {
          if (seen++ !== k >> 1) return m;
          const [x, y] = k & 1 ? [Number(a), Math.max(0, Number(b) + delta)] : [Math.max(0, Number(a) + delta), Number(b)];
          return `"data_offsets":[${x},${y}]`;
        });
        return new TextEncoder().encode(edited);
      }),
      fc.uint8Array({ minLength: 1, maxLength: 16 }).map((extra) => new Uint8Array([...valid, ...extra])),
    );
    fc.assert(fc.property(corruption, (b) => check(b)), { numRuns: 3000 });
  });

  it('on-disk corruptions behave the same way through openSafetensors', () => {
    const p = path.join(dir, 'fuzz.safetensors');
    fc.assert(
      fc.property(fc.nat({ max: valid.length - 1 }), fc.integer({ min: 0, max: 255 }), fc.nat({ max: valid.length }), (i, v, cut) => {
        const b = valid.slice(0, Math.max(cut, 1));
        if (i < b.length) b[i] = v;
        fs.writeFileSync(p, b);
        try {
          const f = openSafetensors(p);
          for (const n of f.names) f.load(n);
        } catch (e) {
          if (!(e instanceof KilnError)) throw e;
          expect(e.message).toContain(p);
        }
      }),
      { numRuns: 300 },
    );
  });
});
