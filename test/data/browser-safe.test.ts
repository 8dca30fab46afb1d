// The data pipeline runs in browsers: only the files named Node-only may import node: modules,
// and no core file may import them, even indirectly through data/.
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { bundleRuntime } from '../../scripts/bundle-runtime.js';

const NODE_ONLY = new Set(['node.ts', 'image-node.ts']);

describe('data/ is browser-safe', () => {
  it('imports node: modules only in its Node-only files', () => {
    const files = readdirSync('data').filter((f) => f.endsWith('.ts'));
    expect(files.length).toBeGreaterThan(8);
    for (const f of files) {
      const text = readFileSync(`data/${f}`, 'utf8');
      const imports = [...text.matchAll(/from '([^']+)'/g)].map((m) => m[1]!);
      if (NODE_ONLY.has(f)) continue;
      expect(imports.filter((i) => i.startsWith('node:') || i === 'fs' || i === 'path'), f).toEqual([]);
      expect(imports.filter((i) => i.startsWith('./') && NODE_ONLY.has(i.slice(2).replace(/\.js$/, '.ts'))), f).toEqual([]);
      expect(imports.filter((i) => /runtime\/(safetensors|checkpoint)/.test(i)), f).toEqual([]);
    }
  });

  it('bundles for the browser (esbuild, platform browser) with no compiler and no node: module', async () => {
    const r = await bundleRuntime('data/index.ts');
    expect(r.forbidden).toEqual([]);
    expect(r.inputs).toContain('data/batch.ts');
    expect(r.inputs.some((i) => i.includes('@huggingface/tokenizers'))).toBe(true);
    expect(r.inputs.some((i) => i.startsWith('data/node') || i.startsWith('data/image-node'))).toBe(false);
  });
});
