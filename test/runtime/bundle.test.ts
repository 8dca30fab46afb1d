// The boundary between compiler and runtime, checked the way a browser would meet it: the
// runtime bundled by esbuild holds none of the compiler and no Node module.
import { describe, expect, it } from 'vitest';
import { bundleRuntime } from '../../scripts/bundle-runtime.js';

describe('kiln/runtime browser bundle', () => {
  it('contains no compiler, grammar, parser library or node: module', async () => {
    const r = await bundleRuntime();
    expect(r.forbidden).toEqual([]);
    expect(r.inputs).toContain('runtime/index.ts');
    expect(r.bytes).toBeGreaterThan(1000);
  });

  it('the check itself fails on a file that reaches into the compiler', async () => {
    const r = await bundleRuntime('compiler/exec/reference.ts');
    expect(r.forbidden.some((f) => f.startsWith('compiler/'))).toBe(true);
  });
});
