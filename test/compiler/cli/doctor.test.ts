// `kiln doctor` and `kiln --version` through the real process; the shader-cache probe on folders.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mesaShaderCache } from '../../../compiler/cli/doctor.js';
import { kilnProcess as kiln } from '../../helpers/kiln-process.js';

describe('kiln doctor', () => {
  it('reports the adapter, the features Kiln uses and the limits, as JSON', () => {
    const r = kiln(['doctor', '--json']);
    expect(r.code, r.err).toBe(0);
    const d = JSON.parse(r.out);
    expect(d.adapter.name.length).toBeGreaterThan(0);
    expect(d.adapter.features).toContain('timestamp-query');
    expect(d.adapter.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 << 20);
    expect(typeof d.shader_cache.warm).toBe('boolean');
  }, 60_000);

  it('exits 3 with the way to get an adapter when there is none', () => {
    const r = kiln(['doctor'], { VK_ICD_FILENAMES: '/nonexistent/icd.json' });
    expect(r.code).toBe(3);
    expect(r.err).toContain('no WebGPU adapter found');
    expect(r.out).toContain('Mesa shader cache:');
    expect(r.err).not.toMatch(/\n\s+at .*\.(ts|js|mjs):\d+/);
  }, 60_000);

  it('--version names Kiln, Node and the Dawn binding', () => {
    expect(kiln(['--version']).out).toMatch(/^kiln \d+\.\d+\.\d+ \(node \d+\.\d+\.\d+, webgpu \d+\.\d+\.\d+\)/);
  }, 60_000);
});

describe('mesaShaderCache', () => {
  it('cold when missing or holding only an index, warm past a MiB of shaders, off when disabled', () => {
    const home = mkdtempSync(join(tmpdir(), 'kiln-cache-'));
    expect(mesaShaderCache({ XDG_CACHE_HOME: home })).toMatchObject({ path: null, warm: false, files: 0 });
    const db = join(home, 'mesa_shader_cache_db', 'part0');
    mkdirSync(db, { recursive: true });
    writeFileSync(join(db, 'index'), Buffer.alloc(1024));
    expect(mesaShaderCache({ XDG_CACHE_HOME: home })).toMatchObject({ warm: false, files: 1, bytes: 1024 });
    writeFileSync(join(db, 'mesa_cache.db'), Buffer.alloc(3 << 20));
    expect(mesaShaderCache({ XDG_CACHE_HOME: home })).toMatchObject({ path: join(home, 'mesa_shader_cache_db'), warm: true, files: 2 });
    expect(mesaShaderCache({ XDG_CACHE_HOME: home, MESA_SHADER_CACHE_DISABLE: 'true' }).warm).toBe(false);
    expect(mesaShaderCache({ MESA_SHADER_CACHE_DIR: join(home, 'mesa_shader_cache_db') }).warm).toBe(true);
  });
});
