// What the exported-trainer tests share: the per-step JSON lines `kiln train --json` and the
// exported train.py --json print, their worst relative difference, and a port for torchrun.
import { expect } from 'vitest';

/** One optimiser step's line. */
export interface Step {
  step: number;
  loss: number;
  terms: Record<string, number>;
  grad_norm: number;
}

/** The step lines of a run's stdout, in order. */
export const steps = (stdout: string): Step[] => stdout.split('\n').filter((l) => l.startsWith('{"step"')).map((l) => JSON.parse(l) as Step);

/** A rendezvous port for one torch process group (random, so parallel test files rarely collide). */
export const port = (): string => String(20000 + Math.floor(Math.random() * 20000));

/** The worst relative difference of `a` from `b` over loss, every term and grad_norm; the steps must match. */
export function worst(a: readonly Step[], b: readonly Step[]): number {
  expect(a.map((s) => s.step)).toEqual(b.map((s) => s.step));
  const rel = (x: number, y: number) => Math.abs(x - y) / Math.abs(y);
  let w = 0;
  a.forEach((s, i) => {
    const t = b[i]!;
    w = Math.max(w, rel(s.loss, t.loss), rel(s.grad_norm, t.grad_norm), ...Object.keys(t.terms).map((k) => rel(s.terms[k]!, t.terms[k]!)));
  });
  return w;
}
