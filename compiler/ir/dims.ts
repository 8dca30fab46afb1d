// Symbolic dimensions: polynomials with integer coefficients over named symbols (batch B,
// sequence T, ...). A constant dim is a plain number; anything else is a canonical SymDim, so
// equality is structural and `T + 575` or `B * T` print and compare the way a reader expects.

export interface SymDim {
  readonly kind: 'sym';
  /** monomial ('' for the constant term; 'B*T' for products, names sorted) -> coefficient. */
  readonly terms: ReadonlyMap<string, number>;
}
export type Dim = number | SymDim;

function make(terms: Map<string, number>): Dim {
  for (const [k, v] of [...terms]) if (v === 0) terms.delete(k);
  if (terms.size === 0) return 0;
  if (terms.size === 1 && terms.has('')) return terms.get('')!;
  return { kind: 'sym', terms: new Map([...terms].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) };
}

function termsOf(d: Dim): Map<string, number> {
  return typeof d === 'number' ? new Map(d === 0 ? [] : [['', d]]) : new Map(d.terms);
}

export function sym(name: string): Dim {
  return make(new Map([[name, 1]]));
}

export function isConst(d: Dim): d is number {
  return typeof d === 'number';
}

export function addDims(a: Dim, b: Dim): Dim {
  const t = termsOf(a);
  for (const [k, v] of termsOf(b)) t.set(k, (t.get(k) ?? 0) + v);
  return make(t);
}

export function scaleDim(a: Dim, c: number): Dim {
  const t = termsOf(a);
  for (const [k, v] of t) t.set(k, v * c);
  return make(t);
}

export function subDims(a: Dim, b: Dim): Dim {
  return addDims(a, scaleDim(b, -1));
}

function mulMonomials(a: string, b: string): string {
  const parts = [...(a ? a.split('*') : []), ...(b ? b.split('*') : [])];
  return parts.sort().join('*');
}

export function mulDims(a: Dim, b: Dim): Dim {
  const t = new Map<string, number>();
  for (const [ka, va] of termsOf(a))
    for (const [kb, vb] of termsOf(b)) {
      const k = mulMonomials(ka, kb);
      t.set(k, (t.get(k) ?? 0) + va * vb);
    }
  return make(t);
}

/** a / b when it is exact for every value of the symbols, else null. */
export function divDims(a: Dim, b: Dim): Dim | null {
  if (typeof b === 'number') {
    if (b === 0) return null;
    const t = termsOf(a);
    for (const [k, v] of t) {
      if (v % b !== 0) return null;
      t.set(k, v / b);
    }
    return make(t);
  }
  // Symbolic divisor: exact only when a is a constant multiple of b, or b is a single monomial
  // dividing every term of a.
  if (b.terms.size === 1) {
    const [mono, coef] = [...b.terms][0]!;
    const bParts = mono.split('*');
    const t = new Map<string, number>();
    for (const [k, v] of termsOf(a)) {
      const parts = k ? k.split('*') : [];
      for (const p of bParts) {
        const i = parts.indexOf(p);
        if (i < 0) return null;
        parts.splice(i, 1);
      }
      if (v % coef !== 0) return null;
      t.set(parts.join('*'), v / coef);
    }
    return make(t);
  }
  return dimsEqual(a, b) ? 1 : null;
}

export function dimsEqual(a: Dim, b: Dim): boolean {
  if (typeof a === 'number' || typeof b === 'number') return a === b;
  if (a.terms.size !== b.terms.size) return false;
  for (const [k, v] of a.terms) if (b.terms.get(k) !== v) return false;
  return true;
}

export function shapesEqual(a: readonly Dim[], b: readonly Dim[]): boolean {
  return a.length === b.length && a.every((d, i) => dimsEqual(d, b[i]!));
}

export function symbolsOf(d: Dim): string[] {
  if (typeof d === 'number') return [];
  const s = new Set<string>();
  for (const k of d.terms.keys()) for (const p of k ? k.split('*') : []) s.add(p);
  return [...s];
}

/** `2*B*T + 575`; with `times` ' * ' the same as a Python or C expression (export/torch.ts). */
export function dimToString(d: Dim, times = '*'): string {
  if (typeof d === 'number') return String(d);
  const parts: string[] = [];
  let constant = 0;
  for (const [k, v] of d.terms) {
    if (k === '') {
      constant = v;
      continue;
    }
    const mono = k.split('*').join(times);
    const abs = Math.abs(v);
    const body = abs === 1 ? mono : `${abs}${times}${mono}`;
    parts.push(parts.length === 0 ? (v < 0 ? `-${body}` : body) : v < 0 ? ` - ${body}` : ` + ${body}`);
  }
  if (constant !== 0) parts.push(constant < 0 ? ` - ${-constant}` : ` + ${constant}`);
  return parts.join('');
}

export function shapeToString(shape: readonly Dim[]): string {
  return `[${shape.map((d) => dimToString(d)).join(', ')}]`;
}

export type SymbolBindings = ReadonlyMap<string, number>;

export function evalDim(d: Dim, bindings: SymbolBindings): number {
  if (typeof d === 'number') return d;
  let total = 0;
  for (const [k, v] of d.terms) {
    let m = v;
    for (const p of k ? k.split('*') : []) {
      const b = bindings.get(p);
      if (b === undefined) throw new Error(`symbolic dimension ${p} has no value`);
      m *= b;
    }
    total += m;
  }
  return total;
}

export function evalShape(shape: readonly Dim[], bindings: SymbolBindings): number[] {
  return shape.map((d) => evalDim(d, bindings));
}

/** Product of dims (1 for a scalar). */
export function numelDims(shape: readonly Dim[]): Dim {
  return shape.reduce<Dim>((acc, d) => mulDims(acc, d), 1);
}

export function isSymDim(x: unknown): x is SymDim {
  return typeof x === 'object' && x !== null && (x as { kind?: unknown }).kind === 'sym';
}
