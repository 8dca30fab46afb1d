// Checkpoint folders as people have them, beyond what save_pretrained writes today, on both
// backends: each loads as transformers loads it and gives the golden loss, or is refused with a
// message naming the tensor.
import { describe, expect, it } from 'vitest';
import { copyFileSync, cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../compiler/cli/main.js';
import { Output } from '../../compiler/cli/output.js';
import { readSafetensors, writeSafetensors } from '../../runtime/node/safetensors-file.js';
import type { HostTensor } from '../../runtime/tensor.js';

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

describe('rotary inv_freq buffers of older LLaMA checkpoints', () => {
  // llama_b2's weights plus model.layers.{0,1}.self_attn.rotary_emb.inv_freq as transformers
  // computes them (inv_freq/llama_b2.safetensors, from make_golden.py). Before: "2 tensors match no
  // parameter of the model". The spec's `buffer` declares them: equal to rope_inv_freq(head_dim,
  // rope_theta), else an error naming the tensor.
  const inv = readSafetensors('test/golden/inv_freq/llama_b2.safetensors').get('inv_freq')!;
  const weights = readSafetensors('test/golden/llama_b2/llava/model.safetensors');
  const folderWith = (buffers: Record<string, HostTensor>) => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-inv-freq-'));
    copyFileSync('test/golden/llama_b2/llava/config.json', join(dir, 'config.json'));
    writeSafetensors(join(dir, 'model.safetensors'), new Map([...weights, ...Object.entries(buffers)]), { dtype: 'f32' });
    return dir;
  };
  const name = (i: number) => `model.layers.${i}.self_attn.rotary_emb.inv_freq`;

  it.each(BACKENDS)('accepts them when they equal the frequencies Kiln computes (%s)', async (backend) => {
    const r = await loss('llama_b2', folderWith({ [name(0)]: inv, [name(1)]: inv }), backend);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(Math.abs(r.loss - expectedLoss('llama_b2')) / expectedLoss('llama_b2')).toBeLessThan(2e-4);
  }, 600_000);

  it.each(BACKENDS)('refuses one that differs, naming the tensor and the element (%s)', async (backend) => {
    const off = { ...inv, data: Float32Array.from(inv.data, (x, i) => (i === 3 ? x * 1.001 : x)) };
    const r = await loss('llama_b2', folderWith({ [name(0)]: inv, [name(1)]: off }), backend);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`tensor '${name(1)}'`);
    expect(r.stderr).toContain('element 3 is 0.01000');
    expect(r.stderr).toContain('rope_inv_freq(c.text.head_dim, c.text.rope_theta)');
    const short = await loss('llama_b2', folderWith({ [name(0)]: { ...inv, shape: [5], data: inv.data.slice(0, 5) } }), backend);
    expect(short.code).toBe(1);
    expect(short.stderr).toContain('shape [5], but the model computes this buffer as rope_inv_freq(c.text.head_dim, c.text.rope_theta), [6]');
  }, 600_000);
});
