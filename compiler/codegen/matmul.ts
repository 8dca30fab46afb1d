// WGSL matmul generator: C[b] = A[b] @ B[b] (or A[b] @ B[b]^T for linear layers, W [out,in]),
// with every size baked in as a constant and an optional per-output epilogue for fusion.
//
// Two kernel shapes, chosen per shape and adapter (see chooseMatmulTile, and bench/README.md for
// the measurements behind them):
//
// - 'bcast' (needs a fixed subgroup size S): each lane owns rm rows, the workgroup owns rn columns;
//   per K step of S, each lane loads ONE row of B (or column of B^T) and subgroupBroadcast hands it
//   to the others. On lavapipe every storage or workgroup load is a per-lane scalar loop (~20 cycles
//   per vector load, uniform or not) while a broadcast is a register shuffle, so trading loads for
//   broadcasts is what makes this ~3x faster than shared-memory tiling there (which also pays for
//   barriers: llvmpipe turns a shader with barriers into coroutines).
// - 'cols' (portable, no subgroups or workgroup memory): lanes own columns, the workgroup owns rm
//   rows; used when no fixed subgroup size is known and for skinny M (decoding), where rows are
//   too few to fill the lanes of 'bcast'.
//
// Rows and columns past the matrix are clamped on load and skipped on store; a K that is not a
// multiple of the step gets an unrolled tail, so there is no masking in the inner loop.
//
// Two ways in and out (MatmulSpec.io): 'buffers' binds a, b, c itself and loads vec4s where the
// layout allows (the fast path); 'accessors' reads through load0/load1 and writes through store,
// the kernel contract of compiler/codegen/kernel.ts, so fused code can feed it views, prologues
// and tensors split across bindings, and apply epilogues through store.

export interface MatmulEpilogue {
  /**
   * WGSL f32 expression applied to every output; in scope: `acc` (f32, the dot product), `row`,
   * `col`, `batch` (u32), the constants M, N, K, BATCH, the extra bindings and `helpers`, and
   * with io 'buffers' `c_at(i)`: element i of C as it is before this kernel writes it (an epilogue
   * that updates C in place reads it so, whether C is bound as f32 or vec4).
   * Example: `acc + bias[col]`, `max(acc, 0.0)`, `acc + res[(batch * M + row) * N + col]`.
   */
  expr: string;
  /** extra storage buffers, bound after a, b, c in this order (read-only unless access says) */
  bindings?: readonly { name: string; type: 'f32' | 'i32' | 'u32'; access?: 'read' | 'read_write' }[];
  /** module-scope WGSL (functions, constants) the expression uses */
  helpers?: string;
}

export type MatmulTile =
  | { kind: 'bcast'; sg: number; wg: number; rm: number; rn: number }
  | { kind: 'cols'; wg: number; rm: number; rn: number };

export interface MatmulSpec {
  M: number;
  N: number;
  K: number;
  /** number of independent matmuls (default 1); A and C are [batch, M, *] */
  batch?: number;
  /** B shared by every batch entry (weights); default false: B is [batch, K, N] */
  broadcastB?: boolean;
  /** B is stored [N, K] (a linear layer's weight) and used transposed */
  transposeB?: boolean;
  /** A is stored [K, M] and used transposed (weight gradients: x^T g); scalar loads of A */
  transposeA?: boolean;
  epilogue?: MatmulEpilogue;
  /** override the tile chooser (tuning, tests) */
  tile?: MatmulTile;
  /** 'buffers' (default): binds a, b, c; 'accessors': load0/load1/store, no bindings */
  io?: 'buffers' | 'accessors';
  /**
   * WGSL u32 expressions of the batch index `bz` giving the element offset of A's and B's matrix
   * (broadcast batch dims); default bz * M * K, and bz * K * N or 0 (broadcastB).
   */
  batchOffsetA?: string;
  batchOffsetB?: string;
}

export interface MatmulTarget {
  /** fixed subgroup size of the adapter, if it has one (KilnDevice.subgroupSize) */
  subgroupSize?: number | undefined;
  maxComputeWorkgroupsPerDimension?: number;
}

export interface MatmulKernel {
  code: string;
  workgroups: [number, number, number];
  /** binding order: a, b, c, then the epilogue's bindings */
  bindings: string[];
  tile: MatmulTile;
  label: string;
  /** WGSL extensions the code needs; with io 'accessors' the caller writes the enable lines */
  enables: string[];
}

export function chooseMatmulTile(spec: MatmulSpec, target: MatmulTarget = {}): MatmulTile {
  const { M, N } = spec;
  const sg = target.subgroupSize;
  // 'bcast' wastes lanes when rows are fewer than a subgroup (decode steps have M = 1..B).
  if (sg !== undefined && sg >= 4 && sg <= 64 && M >= sg) {
    const rn = spec.transposeB ? sg : N <= 4 ? 4 : 8;
    // Two subgroups per workgroup and two rows per lane measured best at 1024 and 2048 on lavapipe.
    const rm = M >= 4 * sg ? 2 : 1;
    const wg = M >= 2 * sg * rm ? 2 * sg : sg;
    return { kind: 'bcast', sg, wg, rm, rn };
  }
  const rm = Math.min(M, 4);
  const rn = N >= 256 ? 2 : 1;
  return { kind: 'cols', wg: Math.min(64, Math.max(8, 2 ** Math.ceil(Math.log2(Math.ceil(N / rn))))), rm, rn };
}

const ceilDiv = (a: number, b: number): number => Math.ceil(a / b);
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const lines = (n: number, f: (i: number) => string, indent = '  '): string => range(n).map((i) => indent + f(i)).join('\n');
const u = (n: number): string => `${n}u`;

function checkSpec(spec: MatmulSpec, tile: MatmulTile): void {
  for (const [k, v] of [['M', spec.M], ['N', spec.N], ['K', spec.K], ['batch', spec.batch ?? 1]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`matmul: ${k} must be a positive integer, got ${v}`);
  }
  if (tile.rm < 1 || tile.rn < 1 || tile.wg < 1) throw new Error(`matmul: bad tile ${JSON.stringify(tile)}`);
  if (tile.kind === 'bcast') {
    if (tile.wg % tile.sg !== 0) throw new Error('matmul: bcast workgroup must be whole subgroups');
    if (spec.transposeB ? tile.rn % tile.sg !== 0 : tile.rn % 4 !== 0) {
      throw new Error(`matmul: bcast rn ${tile.rn} must be a multiple of ${spec.transposeB ? 'the subgroup size' : '4'}`);
    }
  }
}

/** Generates the kernel for `spec`; the caller binds a, b, c (+ epilogue buffers) at group 0. */
export function matmulWGSL(spec: MatmulSpec, target: MatmulTarget = {}): MatmulKernel {
  const tile = spec.tile ?? chooseMatmulTile(spec, target);
  checkSpec(spec, tile);
  const batch = spec.batch ?? 1;
  const io = ioOf(spec);
  const body = tile.kind === 'bcast' ? bcastBody(spec, tile, io) : colsBody(spec, tile, io);
  const rowsPerWg = tile.kind === 'bcast' ? tile.wg * tile.rm : tile.rm;
  const colsPerWg = tile.kind === 'bcast' ? tile.rn : tile.wg * tile.rn;
  const workgroups: [number, number, number] = [ceilDiv(spec.N, colsPerWg), ceilDiv(spec.M, rowsPerWg), batch];
  const maxWg = target.maxComputeWorkgroupsPerDimension ?? 65535;
  if (workgroups.some((w) => w > maxWg)) throw new Error(`matmul: dispatch ${workgroups.join('x')} exceeds ${maxWg} per dimension`);

  const epi = spec.epilogue;
  const extra = epi?.bindings ?? [];
  const decls = [
    `@group(0) @binding(0) var<storage, read> a: array<${body.aType}>;`,
    `@group(0) @binding(1) var<storage, read> b: array<${body.bType}>;`,
    `@group(0) @binding(2) var<storage, read_write> c: array<${body.cType}>;`,
    ...extra.map((x, i) => `@group(0) @binding(${i + 3}) var<storage, ${x.access ?? 'read'}> ${x.name}: array<${x.type}>;`),
  ];
  const acc = spec.io === 'accessors';
  const enables = tile.kind === 'bcast' ? ['subgroups'] : [];
  const code = [
    !acc && tile.kind === 'bcast' ? 'enable subgroups;\n' : '',
    ...(acc ? [] : [...decls, `fn c_at(i: u32) -> f32 { return ${body.cType === 'vec4f' ? 'c[i / 4u][i % 4u]' : 'c[i]'}; }`]),
    `const M = ${u(spec.M)};\nconst N = ${u(spec.N)};\nconst K = ${u(spec.K)};\nconst BATCH = ${u(batch)};`,
    epi?.helpers ?? '',
    `fn epilogue(acc: f32, row: u32, col: u32, batch: u32) -> f32 {\n  return ${epi ? epi.expr : 'acc'};\n}`,
    body.main,
  ].join('\n');
  const t = `${spec.transposeA ? ' A^T' : ''}${spec.transposeB ? 'T' : ''}`;
  const label = `matmul${t} ${batch > 1 ? `${batch}x` : ''}${spec.M}x${spec.N}x${spec.K} ${tile.kind} wg${tile.wg} ${tile.rm}x${tile.rn}`;
  return { code, workgroups, bindings: acc ? [] : ['a', 'b', 'c', ...extra.map((x) => x.name)], tile, label, enables };
}

/** How the body reads A and B and writes C: array indexing, or the kernel contract's accessors. */
interface Io {
  a(idx: string): string;
  b(idx: string): string;
  c(idx: string, v: string): string;
  /** vec4 array types are allowed */
  vec: boolean;
}

function ioOf(spec: MatmulSpec): Io {
  if (spec.io === 'accessors') {
    return { a: (i) => `load0(${i})`, b: (i) => `load1(${i})`, c: (i, v) => `store(${i}, ${v});`, vec: false };
  }
  return { a: (i) => `a[${i}]`, b: (i) => `b[${i}]`, c: (i, v) => `c[${i}] = ${v};`, vec: true };
}

interface Body {
  aType: 'f32' | 'vec4f';
  bType: 'f32' | 'vec4f';
  cType: 'f32' | 'vec4f';
  main: string;
}

/** Batch offsets (in f32 elements) of A, B, C for batch index `bz`. */
function batchOffsets(spec: MatmulSpec): string {
  const bStride = spec.broadcastB ? 0 : spec.K * spec.N;
  return [
    `  let bz = wid.z;`,
    `  let aOff = ${spec.batchOffsetA ?? `bz * ${u(spec.M * spec.K)}`};`,
    `  let bOff = ${spec.batchOffsetB ?? `bz * ${u(bStride)}`};`,
    `  let cOff = bz * ${u(spec.M * spec.N)};`,
  ].join('\n');
}

/**
 * Expressions loading 4 consecutive f32 of `arr` from element index `idx` (a multiple of 4 when
 * the array is vec4-typed), or `n` < 4 of them zero-padded.
 */
function load4(read: (idx: string) => string, vec: boolean, idx: string, n = 4, step?: string): string {
  if (vec && n === 4) return read(`(${idx}) / 4u`);
  // `step`: elements between consecutive values (a transposed A reads down a column).
  const parts = range(4).map((i) => (i < n ? read(step ? `${idx} + ${u(i)} * ${step}` : `${idx} + ${u(i)}`) : '0.0'));
  return `vec4f(${parts.join(', ')})`;
}

function bcastBody(spec: MatmulSpec, tile: Extract<MatmulTile, { kind: 'bcast' }>, io: Io): Body {
  const { M, N, K } = spec;
  const { sg: S, wg, rm, rn } = tile;
  const tB = spec.transposeB === true;
  const tA = spec.transposeA === true;
  const aVec = io.vec && !tA && K % 4 === 0;
  const bVec = io.vec && (tB ? K % 4 === 0 : N % 4 === 0);
  const cVec = io.vec && !tB && N % 4 === 0;
  const Q = tB ? rn / S : rn / 4; // B loads per lane per step
  const kMain = K - (K % S);
  const rem = K % S;
  const out: string[] = [];
  out.push(`@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) sl: u32) {
${batchOffsets(spec)}
  let m0 = wid.y * ${u(wg * rm)} + lid;
  let n0 = wid.x * ${u(rn)};`);
  // Rows past M load row M-1 (in bounds) and are never stored.
  // Row i of A starts at ra (its element k at ra + k), or for A^T at ra + k * M.
  out.push(lines(rm, (i) => `let ra${i} = aOff + min(m0 + ${u(i * wg)}, ${u(M - 1)})${tA ? '' : ' * K'};`));
  if (tB) {
    out.push(lines(Q, (p) => `let cb${p} = bOff + min(n0 + sl + ${u(p * S)}, ${u(N - 1)}) * K;`));
    out.push(lines(rm * rn, (t) => `var acc${t} = 0.0;`));
  } else {
    out.push(lines(Q, (q) => `let cb${q} = bOff + min(n0 + ${u(4 * q)}, ${u(Math.max(0, N - 4))});`));
    out.push(lines(rm * Q, (t) => `var acc${t} = vec4f();`));
  }
  const step = (k0: string, steps: number): string => {
    const s: string[] = [];
    const hv = Math.ceil(steps / 4);
    for (let i = 0; i < rm; i++) {
      for (let h = 0; h < hv; h++) {
        const n = Math.min(4, steps - 4 * h);
        const at = tA ? `ra${i} + (${k0} + ${u(4 * h)}) * M` : `ra${i} + ${k0} + ${u(4 * h)}`;
        s.push(`let a${i}_${h} = ${load4(io.a, aVec && n === 4, at, n, tA ? 'M' : undefined)};`);
      }
    }
    if (tB) {
      // lane sl holds column n0 + sl + p*S, K values k0..k0+steps-1
      for (let p = 0; p < Q; p++) {
        for (let h = 0; h < hv; h++) {
          const n = Math.min(4, steps - 4 * h);
          s.push(`let bt${p}_${h} = ${load4(io.b, bVec && n === 4, `cb${p} + ${k0} + ${u(4 * h)}`, n)};`);
        }
      }
      for (let j = 0; j < rn; j++) {
        const p = Math.floor(j / S);
        for (let h = 0; h < hv; h++) {
          s.push(`{ let w = subgroupBroadcast(bt${p}_${h}, ${u(j % S)});`);
          for (let i = 0; i < rm; i++) s.push(`  acc${i * rn + j} += dot(a${i}_${h}, w);`);
          s.push('}');
        }
      }
    } else {
      // lane sl holds row k0 + sl of B (clamped in the tail), columns n0..n0+rn-1
      const krow = steps === S ? `${k0} + sl` : `${k0} + min(sl, ${u(steps - 1)})`;
      for (let q = 0; q < Q; q++) {
        const load = bVec
          ? io.b(`((${krow}) * N + cb${q}) / 4u`)
          : `vec4f(${range(4).map((e) => io.b(`bOff + (${krow}) * N + min(n0 + ${u(4 * q + e)}, ${u(N - 1)})`)).join(', ')})`;
        s.push(`let b${q} = ${load};`);
      }
      for (let kk = 0; kk < steps; kk++) {
        for (let q = 0; q < Q; q++) {
          s.push(`{ let w = subgroupBroadcast(b${q}, ${u(kk)});`);
          for (let i = 0; i < rm; i++) s.push(`  acc${i * Q + q} += a${i}_${kk >> 2}[${kk & 3}] * w;`);
          s.push('}');
        }
      }
    }
    return s.map((x) => '    ' + x).join('\n');
  };
  if (kMain > 0) out.push(`  for (var k0 = 0u; k0 < ${u(kMain)}; k0 += ${u(S)}) {\n${step('k0', S)}\n  }`);
  if (rem > 0) out.push(`  {\n    let kt = ${u(kMain)};\n${step('kt', rem)}\n  }`);
  // Stores: rows and columns past the matrix are skipped.
  for (let i = 0; i < rm; i++) {
    out.push(`  { let row = m0 + ${u(i * wg)};\n  if (row < M) {`);
    if (tB) {
      for (let j = 0; j < rn; j++) {
        out.push(`    if (n0 + ${u(j)} < N) { ${io.c(`cOff + row * N + n0 + ${u(j)}`, `epilogue(acc${i * rn + j}, row, n0 + ${u(j)}, bz)`)} }`);
      }
    } else {
      for (let q = 0; q < Q; q++) {
        const col = `n0 + ${u(4 * q)}`;
        const vals = range(4).map((e) => `epilogue(acc${i * Q + q}[${e}], row, ${col} + ${u(e)}, bz)`);
        if (cVec) {
          const full = N % rn === 0 ? '' : `if (${col} < N) `;
          out.push(`    ${full}{ c[(cOff + row * N + ${col}) / 4u] = vec4f(${vals.join(', ')}); }`);
        } else {
          for (let e = 0; e < 4; e++) {
            out.push(`    if (${col} + ${u(e)} < N) { ${io.c(`cOff + row * N + ${col} + ${u(e)}`, vals[e]!)} }`);
          }
        }
      }
    }
    out.push('  } }');
  }
  out.push('}');
  return { aType: aVec ? 'vec4f' : 'f32', bType: bVec ? 'vec4f' : 'f32', cType: cVec ? 'vec4f' : 'f32', main: out.join('\n') };
}

function colsBody(spec: MatmulSpec, tile: Extract<MatmulTile, { kind: 'cols' }>, io: Io): Body {
  const { M, N, K } = spec;
  const { wg, rm, rn } = tile;
  const tB = spec.transposeB === true;
  const tA = spec.transposeA === true;
  const aVec = io.vec && !tA && K % 4 === 0;
  const bVec = io.vec && tB && K % 4 === 0;
  const kMain = K - (K % 4);
  const rem = K % 4;
  const out: string[] = [];
  out.push(`@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${batchOffsets(spec)}
  let m0 = wid.y * ${u(rm)};
  let n0 = wid.x * ${u(wg * rn)} + lid;`);
  out.push(lines(rm, (i) => `let ra${i} = aOff + min(m0 + ${u(i)}, ${u(M - 1)})${tA ? '' : ' * K'};`));
  out.push(lines(rn, (j) => `let cn${j} = min(n0 + ${u(j * wg)}, ${u(N - 1)});`));
  out.push(lines(rm * rn, (t) => `var acc${t} = 0.0;`));
  const step = (k0: string, n: number): string => {
    const s: string[] = [];
    for (let i = 0; i < rm; i++) s.push(`let a${i} = ${load4(io.a, aVec && n === 4, tA ? `ra${i} + ${k0} * M` : `ra${i} + ${k0}`, n, tA ? 'M' : undefined)};`);
    for (let j = 0; j < rn; j++) {
      if (tB) s.push(`let b${j} = ${load4(io.b, bVec && n === 4, `bOff + cn${j} * K + ${k0}`, n)};`);
      else s.push(`let b${j} = vec4f(${range(4).map((e) => (e < n ? io.b(`bOff + (${k0} + ${u(e)}) * N + cn${j}`) : '0.0')).join(', ')});`);
    }
    for (let i = 0; i < rm; i++) for (let j = 0; j < rn; j++) s.push(`acc${i * rn + j} += dot(a${i}, b${j});`);
    return s.map((x) => '    ' + x).join('\n');
  };
  if (kMain > 0) out.push(`  for (var k0 = 0u; k0 < ${u(kMain)}; k0 += 4u) {\n${step('k0', 4)}\n  }`);
  if (rem > 0) out.push(`  {\n    let kt = ${u(kMain)};\n${step('kt', rem)}\n  }`);
  for (let i = 0; i < rm; i++) {
    for (let j = 0; j < rn; j++) {
      out.push(`  { let row = m0 + ${u(i)}; let col = n0 + ${u(j * wg)};
    if (row < M && col < N) { ${io.c('cOff + row * N + col', `epilogue(acc${i * rn + j}, row, col, bz)`)} } }`);
    }
  }
  out.push('}');
  return { aType: aVec ? 'vec4f' : 'f32', bType: bVec ? 'vec4f' : 'f32', cType: 'f32', main: out.join('\n') };
}
