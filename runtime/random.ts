// The one seeded generator of Kiln: parameter initialisation (compiler/exec/init.ts), synthetic
// data, and token sampling (runtime/generate.ts) draw from it, so a seed means the same numbers in
// Node, in a browser and in every command.

/** xoshiro128** seeded by splitmix32: fast, good enough for initialisation, identical everywhere. */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  const split = () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  const st = [split(), split(), split(), split()];
  return () => {
    const r = Math.imul(((Math.imul(st[1]!, 5) << 7) | (Math.imul(st[1]!, 5) >>> 25)) >>> 0, 9) >>> 0;
    const t = (st[1]! << 9) >>> 0;
    st[2]! ^= st[0]!;
    st[3]! ^= st[1]!;
    st[1]! ^= st[2]!;
    st[0]! ^= st[3]!;
    st[2]! ^= t;
    st[3] = ((st[3]! << 11) | (st[3]! >>> 21)) >>> 0;
    return (r >>> 0) / 2 ** 32;
  };
}
