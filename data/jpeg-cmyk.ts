// CMYK and YCCK JPEG decoding with libjpeg's arithmetic, for the one JPEG kind the libjpeg-based
// decoders in npm refuse (they all ask libjpeg for RGB, which it cannot make from CMYK). Pillow asks
// libjpeg for CMYK instead (out_color_space JCS_CMYK): Huffman decoding (jdhuff.c, jdphuff.c), the
// islow integer IDCT (jidctint.c), fancy upsampling (jdsample.c), for YCCK the YCC->CMYK step
// (jdcolor.c); then Pillow inverts ("CMYK;I") and converts with cmyk2rgb (Convert.c). This file
// does exactly that for sequential and progressive Huffman JPEGs with integral sampling ratios.
// Browser-safe: no Node imports.

/** The file is broken: why (the caller names the file). */
export class JpegFormatError extends Error {}
/** The file is a valid JPEG of a kind this decoder does not read: which (the caller names the file). */
export class JpegUnsupportedError extends Error {}

const ZIGZAG = new Int32Array([
  0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
  28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61,
  54, 47, 55, 62, 63,
]);

interface Huffman {
  /** code -> (length << 8 | symbol), looked up by (length, code) through maxcode/valptr as in libjpeg. */
  maxcode: Int32Array; // [18], maxcode[l] = largest code of length l, -1 if none
  valptr: Int32Array; // [17]
  mincode: Int32Array; // [17]
  values: Uint8Array;
}

function buildHuffman(counts: Uint8Array, values: Uint8Array): Huffman {
  const maxcode = new Int32Array(18).fill(-1);
  const valptr = new Int32Array(17);
  const mincode = new Int32Array(17);
  let code = 0;
  let p = 0;
  for (let l = 1; l <= 16; l++) {
    const n = counts[l - 1]!;
    if (n > 0) {
      valptr[l] = p;
      mincode[l] = code;
      code += n;
      p += n;
      maxcode[l] = code - 1;
    }
    code <<= 1;
  }
  maxcode[17] = 0x7fffffff;
  return { maxcode, valptr, mincode, values };
}

interface Component {
  id: number; h: number; v: number; tq: number;
  /** blocks across and down the component, padded to whole MCUs. */
  bw: number; bh: number;
  coefs: Int16Array; // bw * bh * 64, natural order
  dc?: Huffman; ac?: Huffman; pred: number;
}

class BitReader {
  private pos: number;
  private buf = 0;
  private bits = 0;
  /** set when a marker stops the entropy-coded data (libjpeg then feeds zeros, and warns). */
  hitMarker = false;
  constructor(private readonly data: Uint8Array, start: number) { this.pos = start; }
  get position(): number { return this.pos; }
  private fill(): void {
    while (this.bits <= 24) {
      let byte = 0;
      if (!this.hitMarker && this.pos < this.data.length) {
        byte = this.data[this.pos]!;
        if (byte === 0xff) {
          const next = this.data[this.pos + 1];
          if (next === 0x00) this.pos += 2;
          else { this.hitMarker = true; byte = 0; }
        } else this.pos++;
      } else this.hitMarker = true;
      this.buf = (this.buf << 8) | byte;
      this.bits += 8;
    }
  }
  bit(): number {
    if (this.bits === 0) this.fill();
    this.bits--;
    return (this.buf >>> this.bits) & 1;
  }
  receive(n: number): number {
    if (n === 0) return 0;
    if (this.bits < n) this.fill();
    this.bits -= n;
    return (this.buf >>> this.bits) & ((1 << n) - 1);
  }
  decode(h: Huffman): number {
    let code = this.bit();
    let l = 1;
    while (code > h.maxcode[l]!) {
      code = (code << 1) | this.bit();
      l++;
      if (l > 16) throw new JpegFormatError('corrupt JPEG data: bad Huffman code');
    }
    const v = h.values[h.valptr[l]! + code - h.mincode[l]!];
    if (v === undefined) throw new JpegFormatError('corrupt JPEG data: bad Huffman code');
    return v;
  }
  /** Drop the bits left in the byte and move past an RSTn marker. */
  restart(expected: number): void {
    this.bits = 0;
    this.buf = 0;
    this.hitMarker = false;
    // skip fill bytes up to the marker
    while (this.pos < this.data.length && !(this.data[this.pos] === 0xff && this.data[this.pos + 1] !== 0 && this.data[this.pos + 1] !== 0xff)) this.pos++;
    if (this.data[this.pos + 1] !== 0xd0 + expected) throw new JpegFormatError('corrupt JPEG data: restart marker missing');
    this.pos += 2;
  }
}

function extend(v: number, s: number): number {
  return v < 1 << (s - 1) ? v - (1 << s) + 1 : v;
}

// jidctint.c constants (CONST_BITS 13)
const F0_298631336 = 2446, F0_390180644 = 3196, F0_541196100 = 4433, F0_765366865 = 6270, F0_899976223 = 7373,
  F1_175875602 = 9633, F1_501321110 = 12299, F1_847759065 = 15137, F1_961570560 = 16069, F2_053119869 = 16819,
  F2_562915447 = 20995, F3_072711026 = 25172;
const CONST_BITS = 13, PASS1_BITS = 2;
/** (x + 2^(n-1)) >> n on values that may exceed 32 bits (JLONG is 64-bit where Pillow runs). */
const descale = (x: number, n: number): number => Math.floor((x + 2 ** (n - 1)) / 2 ** n);

// libjpeg's post-IDCT range limit: index (x & 1023) -> clamp(x + 128) for |x| < 512 (jdmaster.c).
const IDCT_LIMIT = (() => {
  const t = new Uint8Array(1024);
  for (let i = 0; i < 1024; i++) t[i] = i < 128 ? i + 128 : i < 512 ? 255 : i < 896 ? 0 : i - 896;
  return t;
})();

/** jpeg_idct_islow: 64 dequantised-on-the-fly coefficients (natural order) -> 8x8 samples. */
function idctIslow(coef: Int16Array, off: number, q: Int32Array, out: Uint8Array, outOff: number, stride: number, ws: Float64Array): void {
  for (let c = 0; c < 8; c++) {
    const i = (k: number): number => coef[off + k * 8 + c]! * q[k * 8 + c]!;
    if (coef[off + 8 + c] === 0 && coef[off + 16 + c] === 0 && coef[off + 24 + c] === 0 && coef[off + 32 + c] === 0 &&
        coef[off + 40 + c] === 0 && coef[off + 48 + c] === 0 && coef[off + 56 + c] === 0) {
      const dc = i(0) * (1 << PASS1_BITS);
      for (let r = 0; r < 8; r++) ws[r * 8 + c] = dc;
      continue;
    }
    let z2 = i(2), z3 = i(6);
    let z1 = (z2 + z3) * F0_541196100;
    let tmp2 = z1 + z3 * -F1_847759065;
    let tmp3 = z1 + z2 * F0_765366865;
    z2 = i(0); z3 = i(4);
    let tmp0 = (z2 + z3) * (1 << CONST_BITS);
    let tmp1 = (z2 - z3) * (1 << CONST_BITS);
    const tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3, tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;
    tmp0 = i(7); tmp1 = i(5); tmp2 = i(3); tmp3 = i(1);
    z1 = tmp0 + tmp3; z2 = tmp1 + tmp2; z3 = tmp0 + tmp2;
    let z4 = tmp1 + tmp3;
    const z5 = (z3 + z4) * F1_175875602;
    tmp0 *= F0_298631336; tmp1 *= F2_053119869; tmp2 *= F3_072711026; tmp3 *= F1_501321110;
    z1 *= -F0_899976223; z2 *= -F2_562915447; z3 *= -F1_961570560; z4 *= -F0_390180644;
    z3 += z5; z4 += z5;
    tmp0 += z1 + z3; tmp1 += z2 + z4; tmp2 += z2 + z3; tmp3 += z1 + z4;
    const n = CONST_BITS - PASS1_BITS;
    ws[c] = descale(tmp10 + tmp3, n); ws[56 + c] = descale(tmp10 - tmp3, n);
    ws[8 + c] = descale(tmp11 + tmp2, n); ws[48 + c] = descale(tmp11 - tmp2, n);
    ws[16 + c] = descale(tmp12 + tmp1, n); ws[40 + c] = descale(tmp12 - tmp1, n);
    ws[24 + c] = descale(tmp13 + tmp0, n); ws[32 + c] = descale(tmp13 - tmp0, n);
  }
  const n2 = CONST_BITS + PASS1_BITS + 3;
  for (let r = 0; r < 8; r++) {
    const w = r * 8;
    const o = outOff + r * stride;
    if (ws[w + 1] === 0 && ws[w + 2] === 0 && ws[w + 3] === 0 && ws[w + 4] === 0 && ws[w + 5] === 0 && ws[w + 6] === 0 && ws[w + 7] === 0) {
      const v = IDCT_LIMIT[descale(ws[w]!, PASS1_BITS + 3) & 1023]!;
      for (let k = 0; k < 8; k++) out[o + k] = v;
      continue;
    }
    let z2 = ws[w + 2]!, z3 = ws[w + 6]!;
    let z1 = (z2 + z3) * F0_541196100;
    let tmp2 = z1 + z3 * -F1_847759065;
    let tmp3 = z1 + z2 * F0_765366865;
    let tmp0 = (ws[w]! + ws[w + 4]!) * (1 << CONST_BITS);
    let tmp1 = (ws[w]! - ws[w + 4]!) * (1 << CONST_BITS);
    const tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3, tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;
    tmp0 = ws[w + 7]!; tmp1 = ws[w + 5]!; tmp2 = ws[w + 3]!; tmp3 = ws[w + 1]!;
    z1 = tmp0 + tmp3; z2 = tmp1 + tmp2; z3 = tmp0 + tmp2;
    let z4 = tmp1 + tmp3;
    const z5 = (z3 + z4) * F1_175875602;
    tmp0 *= F0_298631336; tmp1 *= F2_053119869; tmp2 *= F3_072711026; tmp3 *= F1_501321110;
    z1 *= -F0_899976223; z2 *= -F2_562915447; z3 *= -F1_961570560; z4 *= -F0_390180644;
    z3 += z5; z4 += z5;
    tmp0 += z1 + z3; tmp1 += z2 + z4; tmp2 += z2 + z3; tmp3 += z1 + z4;
    out[o] = IDCT_LIMIT[descale(tmp10 + tmp3, n2) & 1023]!;
    out[o + 7] = IDCT_LIMIT[descale(tmp10 - tmp3, n2) & 1023]!;
    out[o + 1] = IDCT_LIMIT[descale(tmp11 + tmp2, n2) & 1023]!;
    out[o + 6] = IDCT_LIMIT[descale(tmp11 - tmp2, n2) & 1023]!;
    out[o + 2] = IDCT_LIMIT[descale(tmp12 + tmp1, n2) & 1023]!;
    out[o + 5] = IDCT_LIMIT[descale(tmp12 - tmp1, n2) & 1023]!;
    out[o + 3] = IDCT_LIMIT[descale(tmp13 + tmp0, n2) & 1023]!;
    out[o + 4] = IDCT_LIMIT[descale(tmp13 - tmp0, n2) & 1023]!;
  }
}

/** jdcolor.c's build_ycc_rgb_table (SCALEBITS 16) and ycck_cmyk_convert, in place on Y, Cb, Cr. */
function yccToCmyk(planes: Plane[], width: number, height: number): void {
  const fix = (x: number): number => Math.floor(x * 65536 + 0.5);
  const crR = new Int32Array(256), cbB = new Int32Array(256), crG = new Float64Array(256), cbG = new Float64Array(256);
  for (let i = 0; i < 256; i++) {
    const x = i - 128;
    crR[i] = Math.floor((fix(1.402) * x + 32768) / 65536);
    cbB[i] = Math.floor((fix(1.772) * x + 32768) / 65536);
    crG[i] = -fix(0.71414) * x;
    cbG[i] = -fix(0.34414) * x + 32768;
  }
  const clamp = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : v);
  const [py, pb, pr] = planes as [Plane, Plane, Plane];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const iy = y * py.width + x, ib = y * pb.width + x, ir = y * pr.width + x;
      const yy = py.data[iy]!, cb = pb.data[ib]!, cr = pr.data[ir]!;
      py.data[iy] = clamp(255 - (yy + crR[cr]!));
      pb.data[ib] = clamp(255 - (yy + Math.floor((cbG[cb]! + crG[cr]!) / 65536)));
      pr.data[ir] = clamp(255 - (yy + cbB[cb]!));
    }
  }
}

/** Pillow's MULDIV255: a * b / 255 rounded, in integers. */
function muldiv255(a: number, b: number): number {
  const t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

/**
 * Decode a 4-component (CMYK or YCCK) Huffman JPEG, sequential or progressive, to RGB exactly as
 * Pillow's `Image.open(f).convert("RGB")` does.
 * @throws JpegFormatError on corrupt or truncated data.
 * @throws JpegUnsupportedError on 12-bit, arithmetic-coded or lossless files and fractional sampling.
 */
export function decodeCmykJpegExact(data: Uint8Array): { width: number; height: number; data: Uint8Array } {
  const qt: Int32Array[] = [];
  const dcTables: Huffman[] = [];
  const acTables: Huffman[] = [];
  let adobeTransform = -1;
  let restartInterval = 0;
  let width = 0, height = 0;
  let comps: Component[] = [];
  let maxH = 1, maxV = 1, mcusX = 0, mcusY = 0;
  let frameSeen = false;
  let progressive = false;
  let pos = 2;
  const u16 = (p: number): number => ((data[p]! << 8) | data[p + 1]!) >>> 0;
  const need = (p: number): void => { if (p > data.length) throw new JpegFormatError('truncated JPEG file'); };
  let scanned = false;
  for (;;) {
    need(pos + 2);
    if (data[pos] !== 0xff) throw new JpegFormatError(`no marker at byte ${pos}`);
    const marker = data[pos + 1]!;
    if (marker === 0xff) { pos++; continue; }
    if (marker === 0xd9) break;
    if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7)) { pos += 2; continue; }
    need(pos + 4);
    const len = u16(pos + 2);
    const seg = pos + 4;
    const end = pos + 2 + len;
    need(end);
    switch (marker) {
      case 0xdb: { // DQT
        let p = seg;
        while (p < end) {
          const pq = data[p]! >> 4, tq = data[p]! & 15;
          const t = new Int32Array(64);
          for (let k = 0; k < 64; k++) t[ZIGZAG[k]!] = pq ? u16(p + 1 + 2 * k) : data[p + 1 + k]!;
          qt[tq] = t;
          p += 1 + (pq ? 128 : 64);
        }
        break;
      }
      case 0xc4: { // DHT
        let p = seg;
        while (p < end) {
          const tc = data[p]! >> 4, th = data[p]! & 15;
          const counts = data.subarray(p + 1, p + 17);
          const total = counts.reduce((a, b) => a + b, 0);
          const t = buildHuffman(counts, data.slice(p + 17, p + 17 + total));
          (tc === 0 ? dcTables : acTables)[th] = t;
          p += 17 + total;
        }
        break;
      }
      case 0xdd: restartInterval = u16(seg); break;
      case 0xee:
        if (len >= 14 && String.fromCharCode(...data.subarray(seg, seg + 5)) === 'Adobe') adobeTransform = data[seg + 11]!;
        break;
      case 0xc0: case 0xc1: case 0xc2: {
        if (frameSeen) throw new JpegFormatError('two frame headers');
        frameSeen = true;
        progressive = marker === 0xc2;
        if (data[seg] !== 8) throw new JpegUnsupportedError(`${data[seg]}-bit samples (only 8-bit JPEGs are read)`);
        height = u16(seg + 1);
        width = u16(seg + 3);
        const n = data[seg + 5]!;
        if (n !== 4) throw new JpegUnsupportedError(`${n} components where 4 (CMYK) were expected`);
        if (width === 0 || height === 0) throw new JpegFormatError(`image size ${width}x${height}`);
        comps = [];
        for (let c = 0; c < n; c++) {
          const b = seg + 6 + 3 * c;
          comps.push({ id: data[b]!, h: data[b + 1]! >> 4, v: data[b + 1]! & 15, tq: data[b + 2]!, bw: 0, bh: 0, coefs: new Int16Array(0), pred: 0 });
        }
        maxH = Math.max(...comps.map((c) => c.h));
        maxV = Math.max(...comps.map((c) => c.v));
        if (comps.some((c) => c.h < 1 || c.v < 1 || c.h > 4 || c.v > 4)) throw new JpegFormatError('sampling factors outside 1..4');
        // libjpeg refuses fractional ratios too ("Fractional sampling not implemented yet"), so PIL does.
        if (comps.some((c) => maxH % c.h !== 0 || maxV % c.v !== 0)) throw new JpegUnsupportedError('fractional sampling ratios between components');
        mcusX = Math.ceil(width / (8 * maxH));
        mcusY = Math.ceil(height / (8 * maxV));
        for (const c of comps) {
          c.bw = mcusX * c.h;
          c.bh = mcusY * c.v;
          c.coefs = new Int16Array(c.bw * c.bh * 64);
        }
        break;
      }
      case 0xda: { // SOS
        if (!frameSeen) throw new JpegFormatError('scan before the frame header');
        const ns = data[seg]!;
        const scomps: Component[] = [];
        for (let i = 0; i < ns; i++) {
          const id = data[seg + 1 + 2 * i]!, tables = data[seg + 2 + 2 * i]!;
          const c = comps.find((x) => x.id === id);
          if (c === undefined) throw new JpegFormatError(`scan names component ${id}, not in the frame`);
          c.dc = dcTables[tables >> 4];
          c.ac = acTables[tables & 15];
          c.pred = 0;
          scomps.push(c);
        }
        const ss = data[seg + 1 + 2 * ns]!, se = data[seg + 2 + 2 * ns]!, ahal = data[seg + 3 + 2 * ns]!;
        const ah = ahal >> 4, al = ahal & 15;
        if (!progressive && (ss !== 0 || se !== 63 || ahal !== 0)) throw new JpegFormatError('sequential scan with a spectral selection');
        if (progressive && (se > 63 || ss > se || (ss === 0 && se !== 0) || (ss > 0 && ns !== 1) || al > 13)) {
          throw new JpegFormatError('invalid progressive scan parameters');
        }
        // Only the tables this scan reads must exist (progressive AC scans carry no DC table).
        const needDc = ss === 0 && ah === 0, needAc = ss > 0 || !progressive;
        if (scomps.some((c) => (needDc && c.dc === undefined) || (needAc && c.ac === undefined))) {
          throw new JpegFormatError('scan uses an undefined Huffman table');
        }
        const br = new BitReader(data, end);
        let eobrun = 0;
        // jdphuff.c: the four kinds of progressive scan, on coefficients kept between scans.
        const decodeProgressive = (c: Component, row: number, col: number): void => {
          const off = (row * c.bw + col) * 64;
          const co = c.coefs;
          if (ss === 0) {
            if (ah === 0) {
              const t = br.decode(c.dc!);
              if (t > 16) throw new JpegFormatError('corrupt JPEG data: bad DC difference');
              c.pred += t === 0 ? 0 : extend(br.receive(t), t);
              co[off] = c.pred * (1 << al);
            } else if (br.bit()) co[off] = co[off]! | (1 << al);
            return;
          }
          if (ah === 0) {
            if (eobrun > 0) { eobrun--; return; }
            for (let k = ss; k <= se; k++) {
              const rs = br.decode(c.ac!);
              const r = rs >> 4, sz = rs & 15;
              if (sz !== 0) {
                k += r;
                if (k > 63) throw new JpegFormatError('corrupt JPEG data: coefficient index past 63');
                co[off + ZIGZAG[k]!] = extend(br.receive(sz), sz) * (1 << al);
              } else if (r === 15) {
                k += 15;
              } else {
                eobrun = (1 << r) - 1 + (r ? br.receive(r) : 0);
                break;
              }
            }
            return;
          }
          const p1 = 1 << al, m1 = -1 << al;
          const refine = (pos: number): void => {
            const v = co[pos]!;
            if (br.bit() && (v & p1) === 0) co[pos] = v >= 0 ? v + p1 : v + m1;
          };
          let k = ss;
          if (eobrun === 0) {
            for (; k <= se; k++) {
              const rs = br.decode(c.ac!);
              let r = rs >> 4;
              let sz = rs & 15;
              if (sz !== 0) {
                sz = br.bit() ? p1 : m1;
              } else if (r !== 15) {
                eobrun = (1 << r) + (r ? br.receive(r) : 0);
                break;
              }
              do {
                const pos = off + ZIGZAG[k]!;
                if (co[pos] !== 0) refine(pos);
                else if (--r < 0) break;
                k++;
              } while (k <= se);
              if (sz !== 0) {
                if (k > 63) throw new JpegFormatError('corrupt JPEG data: coefficient index past 63');
                co[off + ZIGZAG[k]!] = sz;
              }
            }
          }
          if (eobrun > 0) {
            for (; k <= se; k++) {
              const pos = off + ZIGZAG[k]!;
              if (co[pos] !== 0) refine(pos);
            }
            eobrun--;
          }
        };
        const decodeBlock = progressive ? decodeProgressive : (c: Component, row: number, col: number): void => {
          const off = (row * c.bw + col) * 64;
          const t = br.decode(c.dc!);
          if (t > 16) throw new JpegFormatError('corrupt JPEG data: bad DC difference');
          c.pred += t === 0 ? 0 : extend(br.receive(t), t);
          c.coefs[off] = c.pred;
          for (let k = 1; k < 64;) {
            const rs = br.decode(c.ac!);
            const r = rs >> 4, s = rs & 15;
            if (s === 0) {
              if (r !== 15) break;
              k += 16;
              continue;
            }
            k += r;
            if (k > 63) throw new JpegFormatError('corrupt JPEG data: coefficient index past 63');
            c.coefs[off + ZIGZAG[k]!] = extend(br.receive(s), s);
            k++;
          }
        };
        const single = ns === 1;
        // A single-component scan covers the component's own blocks, not whole MCUs.
        const unitsX = single ? Math.ceil(Math.ceil((width * scomps[0]!.h) / maxH) / 8) : mcusX;
        const unitsY = single ? Math.ceil(Math.ceil((height * scomps[0]!.v) / maxV) / 8) : mcusY;
        let rst = 0;
        for (let u = 0, total = unitsX * unitsY; u < total; u++) {
          if (restartInterval > 0 && u > 0 && u % restartInterval === 0) {
            br.restart(rst);
            rst = (rst + 1) & 7;
            for (const c of scomps) c.pred = 0;
            eobrun = 0;
          }
          const my = Math.floor(u / unitsX), mx = u % unitsX;
          if (single) decodeBlock(scomps[0]!, my, mx);
          else for (const c of scomps) for (let v = 0; v < c.v; v++) for (let h = 0; h < c.h; h++) decodeBlock(c, my * c.v + v, mx * c.h + h);
        }
        if (br.hitMarker && !atMarkerEnd(data, br.position)) throw new JpegFormatError('Premature end of JPEG file');
        // continue at the next marker after the entropy-coded data
        let p = br.position;
        while (p + 1 < data.length && !(data[p] === 0xff && data[p + 1] !== 0 && !(data[p + 1]! >= 0xd0 && data[p + 1]! <= 0xd7))) p++;
        if (p + 1 >= data.length) throw new JpegFormatError('Premature end of JPEG file');
        pos = p;
        scanned = true;
        continue;
      }
      default:
        if (marker >= 0xc3 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
          throw new JpegUnsupportedError(`CMYK with ${marker === 0xc3 || marker === 0xc7 || marker === 0xcb || marker === 0xcf ? 'lossless' : 'arithmetic'} coding (SOF${marker - 0xc0})`);
        }
    }
    pos = end;
  }
  if (!scanned) throw new JpegFormatError('no image data');
  for (const c of comps) if (qt[c.tq] === undefined) throw new JpegFormatError('a component uses an undefined quantisation table');

  // IDCT every block, then upsample each component to full resolution as libjpeg does.
  const planes = comps.map((c) => {
    const stride = c.bw * 8;
    const plane = new Uint8Array(stride * c.bh * 8);
    const ws = new Float64Array(64);
    const q = qt[c.tq]!;
    for (let r = 0; r < c.bh; r++) for (let b = 0; b < c.bw; b++) idctIslow(c.coefs, (r * c.bw + b) * 64, q, plane, r * 8 * stride + b * 8, stride, ws);
    const dw = Math.ceil((width * c.h) / maxH), dh = Math.ceil((height * c.v) / maxV);
    return upsample(plane, stride, dw, dh, maxH / c.h, maxV / c.v);
  });

  // libjpeg's colour step for out_color_space JCS_CMYK: none from CMYK; from YCCK (Adobe
  // transform 2) ycck_cmyk_convert with jdcolor.c's fixed-point tables. Then Pillow: "CMYK;I"
  // stores 255 - sample, and cmyk2rgb maps with nk = 255 - K: out = nk - MULDIV255(C, nk).
  if (adobeTransform === 2) yccToCmyk(planes, width, height);
  const out = new Uint8Array(width * height * 3);
  const [p0, p1, p2, p3] = planes as [Plane, Plane, Plane, Plane];
  for (let y = 0; y < height; y++) {
    const r0 = y * p0.width, r1 = y * p1.width, r2 = y * p2.width, r3 = y * p3.width;
    for (let x = 0; x < width; x++) {
      const nk = p3.data[r3 + x]!; // 255 - (255 - k)
      const o = (y * width + x) * 3;
      // nk - MULDIV255(255 - c, nk) lies in [0, nk]: Pillow's CLIP8 never acts.
      out[o] = nk - muldiv255(255 - p0.data[r0 + x]!, nk);
      out[o + 1] = nk - muldiv255(255 - p1.data[r1 + x]!, nk);
      out[o + 2] = nk - muldiv255(255 - p2.data[r2 + x]!, nk);
    }
  }
  return { width, height, data: out };
}

/**
 * libjpeg-turbo's upsampling (jdsample.c, do_fancy_upsampling on, as Pillow leaves it) of one
 * component's samples (dw x dh real samples in rows of `stride`) by integral factors: fancy
 * (triangle) filters for 2x1 (when dw > 2), 1x2 and 2x2 (when dw > 2), replication otherwise.
 * Rows above the top and below the last real row repeat the edge row (jdmainct.c's context rows).
 * Returns a plane at least as wide and tall as the image.
 */
interface Plane { width: number; data: Uint8Array }

function upsample(src: Uint8Array, stride: number, dw: number, dh: number, fx: number, fy: number): Plane {
  if (fx === 1 && fy === 1) return { width: stride, data: src };
  const ow = dw * fx, oh = dh * fy;
  const out = new Uint8Array(ow * oh);
  const row = (r: number): number => (r < 0 ? 0 : r >= dh ? dh - 1 : r) * stride;
  if (fx === 2 && fy === 1 && dw > 2) {
    for (let y = 0; y < dh; y++) {
      const i = y * stride, o = y * ow;
      out[o] = src[i]!;
      out[o + 1] = (src[i]! * 3 + src[i + 1]! + 2) >> 2;
      for (let x = 1; x < dw - 1; x++) {
        const v = src[i + x]! * 3;
        out[o + 2 * x] = (v + src[i + x - 1]! + 1) >> 2;
        out[o + 2 * x + 1] = (v + src[i + x + 1]! + 2) >> 2;
      }
      out[o + 2 * dw - 2] = (src[i + dw - 1]! * 3 + src[i + dw - 2]! + 1) >> 2;
      out[o + 2 * dw - 1] = src[i + dw - 1]!;
    }
  } else if (fx === 1 && fy === 2) {
    for (let y = 0; y < dh; y++) {
      for (let v = 0; v < 2; v++) {
        const i0 = row(y), i1 = row(v === 0 ? y - 1 : y + 1), bias = v === 0 ? 1 : 2;
        const o = (2 * y + v) * ow;
        for (let x = 0; x < dw; x++) out[o + x] = (src[i0 + x]! * 3 + src[i1 + x]! + bias) >> 2;
      }
    }
  } else if (fx === 2 && fy === 2 && dw > 2) {
    for (let y = 0; y < dh; y++) {
      for (let v = 0; v < 2; v++) {
        const i0 = row(y), i1 = row(v === 0 ? y - 1 : y + 1);
        const o = (2 * y + v) * ow;
        const sum = (x: number): number => src[i0 + x]! * 3 + src[i1 + x]!;
        let last = sum(0), cur = last, next = sum(1);
        out[o] = (cur * 4 + 8) >> 4;
        out[o + 1] = (cur * 3 + next + 7) >> 4;
        for (let x = 1; x < dw - 1; x++) {
          last = cur; cur = next; next = sum(x + 1);
          out[o + 2 * x] = (cur * 3 + last + 8) >> 4;
          out[o + 2 * x + 1] = (cur * 3 + next + 7) >> 4;
        }
        last = cur; cur = next;
        out[o + 2 * dw - 2] = (cur * 3 + last + 8) >> 4;
        out[o + 2 * dw - 1] = (cur * 4 + 7) >> 4;
      }
    }
  } else {
    // h2v1 / h2v2 on rows of <= 2 samples, and other integral factors: replication (int_upsample)
    for (let y = 0; y < oh; y++) {
      const i = Math.floor(y / fy) * stride, o = y * ow;
      for (let x = 0; x < ow; x++) out[o + x] = src[i + Math.floor(x / fx)]!;
    }
  }
  return { width: ow, data: out };
}

/** True when the entropy-coded data stopped at a real marker (not at the end of the bytes). */
function atMarkerEnd(data: Uint8Array, pos: number): boolean {
  for (let p = Math.max(0, pos - 2); p + 1 < data.length; p++) if (data[p] === 0xff && data[p + 1] !== 0 && data[p + 1] !== 0xff) return true;
  return false;
}
