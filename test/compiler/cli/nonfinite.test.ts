// Non-finite numbers are never hidden (issue 8, section 2): a NaN or inf in the checkpoint or the
// batch, or one an op produces, ends `kiln loss` with exit 1 and a message naming where it began,
// on both backends; f16 storage names a parameter it cannot hold. Small inputs are the llama_b2
// golden case with one value poked in.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';
import { poked as pokedCopy } from '../../helpers/poked.js';

const G = 'test/golden/llama_b2';

const poked = (file: string, tensor: string, index: number, value: number): string => pokedCopy(G, file, tensor, index, value);

async function loss(dir: string, ...extra: string[]) {
  const out = new Output(true);
  const args = ['loss', 'models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', join(dir, 'llava'), '--vision-tower', join(dir, 'clip'), '--batch', join(dir, 'batch.safetensors')];
  const code = await main([...args, ...extra], out);
  return { code, stdout: out.out.join('\n'), stderr: out.err.join('\n') };
}

const backends = ['cpu', 'webgpu'] as const;

describe('kiln loss with non-finite values', () => {
  // Before: `vm 0.0000000` and a finite total (the KL sum skipped the NaN class).
  it.each(backends)('one NaN in vm_head.weight: the vm term is NaN, naming the parameter and the op (%s)', async (backend) => {
    const r = await loss(poked('llava/model.safetensors', 'vm_head.weight', 7, NaN), '--backend', backend);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain("loss term 'vm' is not finite: NaN");
    expect(r.stderr).toContain("parameter 'vm_head.weight' holds one NaN (at [0, 7])");
    // The VM head's projection and the KL are one op (compiler/passes/loss-heads.ts); on WebGPU
    // the kernel named is the chunk's projection that read the NaN.
    expect(r.stderr).toMatch(/first op with a non-finite output: linear_kl_div \(node \d+, models\/vwlmm\.kiln:\d+:\d+\) reading 'lm_head\.weight', 'vm_head\.weight'/);
    if (backend === 'webgpu') expect(r.stderr).toMatch(/in kernel step \d+ \(linear /);
    // The lm term does not read vm_head: it stays finite, as in PyTorch.
    expect(r.stderr).toMatch(new RegExp(`\\(${backend}: loss NaN, lm 4\\.79\\d+, vm NaN\\)`));
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  // Before: a NaN total while the vm term printed a finite value.
  it.each(backends)('one inf pixel: every term is NaN, naming pixel_values (%s)', async (backend) => {
    const r = await loss(poked('batch.safetensors', 'pixel_values', 100, Infinity), '--backend', backend);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("input tensor 'pixel_values' holds one inf (at [0, 0, 3, 16])");
    expect(r.stderr).toMatch(/first op with a non-finite output: patch_embed \(node \d+, models\/clip\.kiln:\d+:\d+\) reading 'pixel_values'/);
    expect(r.stderr).toContain(`(${backend}: loss NaN, lm NaN, vm NaN)`);
  });

  it.each(backends)('one NaN pixel: every term is NaN, naming pixel_values (%s)', async (backend) => {
    const r = await loss(poked('batch.safetensors', 'pixel_values', 5, NaN), '--backend', backend);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("input tensor 'pixel_values' holds one NaN (at [0, 0, 0, 5])");
    expect(r.stderr).toContain(`(${backend}: loss NaN, lm NaN, vm NaN)`);
  });

  // Finite inputs, an overflow inside the model: the op that made the first inf is named.
  it.each(backends)('a finite weight that overflows f32 in a projection names that op (%s)', async (backend) => {
    const r = await loss(poked('llava/model.safetensors', 'model.layers.0.self_attn.q_proj.weight', 0, 3.4e38), '--backend', backend);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("loss term 'lm' is not finite: NaN");
    expect(r.stderr).not.toContain('it comes from');
    expect(r.stderr).toMatch(/first op to produce a non-finite value from finite inputs: linear \(node \d+, [^)]*\) reading 'model\.layers\.0\.self_attn\.q_proj\.weight'/);
  });

  // Before: a NaN loss printed as null with exit 0.
  it('--dtype f16 names a parameter past the f16 range when it is converted', async () => {
    const r = await loss(poked('llava/model.safetensors', 'vm_head.weight', 7, 70000), '--dtype', 'f16');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("parameter 'vm_head.weight' does not fit in f16 storage: element 7 (flat, of [97, 48]) is 70000");
    // 65504 is f16's largest finite value: it converts (what the model then computes from it
    // in f16 storage is the non-finite check's business).
    const edge = await loss(poked('llava/model.safetensors', 'vm_head.weight', 7, 65504), '--dtype', 'f16', '--json');
    expect(edge.stderr).not.toContain('does not fit in f16');
  });
});
