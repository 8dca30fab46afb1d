// The reference executor and autodiff against the PyTorch golden files (test/golden), on the
// VW-LMM graph built by hand: the op semantics alone, before the checker and the CLI are in the
// loop. Same tolerances as the end-to-end golden test (loss terms 2e-4, gradients 2e-2 relative
// Frobenius), computed in f32 as `kiln loss` does.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { relFrobenius } from '../../golden/compare.js';
import { describe, expect, it } from 'vitest';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { runReference } from '../../../compiler/exec/reference.js';
import { parseSafetensors } from '../../../runtime/safetensors.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import { buildMiniVwlmm, type MiniConfig } from './mini_vwlmm.js';

interface Golden {
  loss: number;
  terms: { lm: number; vm: number };
  config: {
    text: { vocab: number; hidden: number; layers: number; heads: number; kv_heads: number; ffn: number; rope_theta: number };
    vision: { image_size: number; patch: number; width: number; layers: number; heads: number; mlp: number; checkpoint_layout: string };
    vm_weight: number;
  };
}

function load(dir: string): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.safetensors'))) for (const [k, v] of parseSafetensors(readFileSync(join(dir, f)))) out.set(k, v);
  return out;
}


describe.each(['llama_b2', 'mistral_gqa', 'llama_vmw'])('reference + autodiff equal PyTorch on %s', (name) => {
  it('loss terms within 2e-4 and gradients within 2e-2', () => {
    const dir = join('test/golden', name);
    const exp = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as Golden;
    const { text, vision } = exp.config;
    const c: MiniConfig = {
      image: vision.image_size,
      patch: vision.patch,
      width: vision.width,
      vLayers: vision.layers,
      vHeads: vision.heads,
      vMlp: vision.mlp,
      hidden: text.hidden,
      layers: text.layers,
      heads: text.heads,
      kvHeads: text.kv_heads,
      ffn: text.ffn,
      vocab: text.vocab,
      theta: text.rope_theta,
    };
    const b = buildMiniVwlmm(c, (n) => !n.startsWith('vision_tower.'));
    const [lm, vm] = b.losses as [(typeof b.losses)[0], (typeof b.losses)[0]];
    b.losses[1] = { ...vm, weight: exp.config.vm_weight };
    const g = differentiate(b.build());
    const llava = load(join(dir, 'llava'));
    const clip = load(join(dir, 'clip'));
    const clipPrefix = vision.checkpoint_layout === 'unprefixed' ? '' : 'vision_model.';
    const ckpt = (n: string): string => (n.startsWith('mm_projector.') ? `model.${n}` : n);
    const feeds = parseSafetensors(readFileSync(join(dir, 'batch.safetensors')));
    for (const p of g.params) {
      const t = p.name.startsWith('vision_tower.') ? clip.get(clipPrefix + p.name.slice('vision_tower.'.length)) : llava.get(ckpt(p.name));
      expect(t, p.name).toBeDefined();
      feeds.set(p.name, t!);
    }
    const wanted = [g.totalLoss!, lm.node, vm.node, ...g.gradients.map((x) => x.node)];
    const res = runReference(g, feeds, wanted, { precision: 'f32' });
    const rel = (a: number, e: number): number => Math.abs(a - e) / Math.abs(e);
    const got = (id: number): number => res.get(id)!.data[0]!;
    expect(rel(got(lm.node), exp.terms.lm)).toBeLessThan(2e-4);
    expect(rel(got(vm.node), exp.terms.vm)).toBeLessThan(2e-4);
    expect(rel(got(g.totalLoss!), exp.loss)).toBeLessThan(2e-4);
    const theirs = parseSafetensors(readFileSync(join(dir, 'grads.safetensors')));
    expect(g.gradients.map((x) => ckpt(x.name)).sort()).toEqual([...theirs.keys()].sort());
    let worst = 0;
    for (const x of g.gradients) worst = Math.max(worst, relFrobenius(res.get(x.node)!.data, theirs.get(ckpt(x.name))!.data));
    expect(worst).toBeLessThan(2e-2);
    const terms = Math.max(rel(got(lm.node), exp.terms.lm), rel(got(vm.node), exp.terms.vm));
    console.log(`${name}: worst loss-term rel error ${terms.toExponential(2)}, worst gradient rel Frobenius ${worst.toExponential(2)}`);
  });
});
