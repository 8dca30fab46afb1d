// Checkpoint folders as people have them, beyond what save_pretrained writes today, on both
// backends: each loads as transformers loads it and gives the golden loss, or is refused with a
// message naming the tensor.
import { describe, expect, it } from 'vitest';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../compiler/cli/main.js';
import { Output } from '../../compiler/cli/output.js';

const BACKENDS = ['cpu', 'webgpu'] as const;

async function loss(golden: string, llava: string, backend: string) {
  const out = new Output(true);
  const args = ['loss', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', llava, '--vision-tower', join('test/golden', golden, 'clip')];
  const code = await main([...args, '--batch', join('test/golden', golden, 'batch.safetensors'), '--json', '--backend', backend], out);
  const stdout = out.out.join('');
  return { code, stderr: out.err.join('\n'), loss: code === 0 ? (JSON.parse(stdout) as { loss: number }).loss : NaN };
}

const expectedLoss = (golden: string) => (JSON.parse(readFileSync(join('test/golden', golden, 'expected.json'), 'utf8')) as { loss: number }).loss;

describe('a shard tensor the index does not list', () => {
  // mistral_gqa's two shards with model.norm.weight dropped from the weight_map. Before: "missing
  // from the checkpoint". transformers loads every tensor of the shards the index names.
  const dir = mkdtempSync(join(tmpdir(), 'kiln-unindexed-'));
  cpSync('test/golden/mistral_gqa/llava', dir, { recursive: true });
  const indexPath = join(dir, 'model.safetensors.index.json');
  const index = JSON.parse(readFileSync(indexPath, 'utf8')) as { weight_map: Record<string, string> };
  delete index.weight_map['model.norm.weight'];
  writeFileSync(indexPath, JSON.stringify(index));

  it.each(BACKENDS)('loads it with a warning naming the shard, and the loss is the golden one (%s)', async (backend) => {
    const r = await loss('mistral_gqa', dir, backend);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`warning: ${indexPath}: tensor 'model.norm.weight' is in shard 'model-00002-of-00002.safetensors' but not in the index's weight_map`);
    expect(Math.abs(r.loss - expectedLoss('mistral_gqa')) / expectedLoss('mistral_gqa')).toBeLessThan(2e-4);
  }, 600_000);
});
