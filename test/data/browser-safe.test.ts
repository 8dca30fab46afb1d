// The data pipeline runs in browsers: only the files named Node-only may import node: modules,
// and no core file may import them, even indirectly through data/.
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

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
});
