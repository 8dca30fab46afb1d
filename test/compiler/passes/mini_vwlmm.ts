// The VW-LMM graph (models/vwlmm.kiln) built by hand with the builder, at any size: frozen CLIP
// tower under stop_gradient, projector, LLaVA splice, LLaMA decoder with GQA and RoPE, LM and
// VM heads, both losses. Lets the autodiff tests exercise the real graph before the checker can
// build it from the spec.
import { GraphBuilder } from '../../../compiler/ir/builder.js';
import { addDims, subDims, type Dim } from '../../../compiler/ir/dims.js';
import { B, T, input, param } from '../ops/harness.js';

export interface MiniConfig {
  image: number;
  patch: number;
  width: number;
  vLayers: number;
  vHeads: number;
  vMlp: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ffn: number;
  vocab: number;
  theta?: number;
}

export const TINY: MiniConfig = { image: 28, patch: 7, width: 32, vLayers: 3, vHeads: 2, vMlp: 64, hidden: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocab: 512 };
export const IMAGE_TOKEN = -200;

export function buildMiniVwlmm(c: MiniConfig, trainable: (name: string) => boolean): GraphBuilder {
  const b = new GraphBuilder();
  const p = (name: string, shape: number[]): number => param(b, name, shape, trainable(name));
  const linear = (x: number, name: string, i: number, o: number, bias: boolean): number =>
    b.add('linear', bias ? [x, p(`${name}.weight`, [o, i]), p(`${name}.bias`, [o])] : [x, p(`${name}.weight`, [o, i])]);
  const ln = (x: number, name: string, d: number): number => b.add('layer_norm', [x, p(`${name}.weight`, [d]), p(`${name}.bias`, [d])], { eps: 1e-5 });
  const heads = (x: number, h: number, d: number): number =>
    b.add('transpose', [b.add('reshape', [x], { shape: [B, dimOf(x, 1), h, d] })], { perm: [0, 2, 1, 3] });
  const merge = (a: number, w: number): number => b.add('reshape', [b.add('transpose', [a], { perm: [0, 2, 1, 3] })], { shape: [B, dimOf(a, 2), w] });
  const dimOf = (x: number, i: number): Dim => b.type(x).shape[i]!;

  const pixels = input(b, 'pixel_values', 'f32', [B, 3, c.image, c.image]);
  const ids = input(b, 'input_ids', 'i32', [B, T]);
  const labels = input(b, 'labels', 'i32', [B, T]);

  // CLIP tower, run up to the second-to-last layer (select_layer = -2), class token dropped.
  const v = 'vision_tower';
  const grid = c.image / c.patch;
  const patches = grid * grid;
  const pe = b.add('patch_embed', [pixels, p(`${v}.embeddings.patch_embedding.weight`, [c.width, 3, c.patch, c.patch])], { stride: c.patch });
  const tokens = b.add('transpose', [b.add('reshape', [pe], { shape: [B, c.width, patches] })], { perm: [0, 2, 1] });
  const cls = b.add('broadcast', [b.add('reshape', [p(`${v}.embeddings.class_embedding`, [c.width])], { shape: [1, 1, c.width] })], { shape: [B, 1, c.width] });
  let h = b.add('add', [b.add('concat', [cls, tokens], { axis: 1 }), p(`${v}.embeddings.position_embedding.weight`, [patches + 1, c.width])]);
  h = ln(h, `${v}.pre_layrnorm`, c.width);
  const vd = c.width / c.vHeads;
  for (let i = 0; i < c.vLayers - 1; i++) {
    const n = `${v}.encoder.layers.${i}`;
    const x = ln(h, `${n}.layer_norm1`, c.width);
    const [q, k, vv] = ['q', 'k', 'v'].map((s) => heads(linear(x, `${n}.self_attn.${s}_proj`, c.width, c.width, true), c.vHeads, vd));
    h = b.add('add', [h, linear(merge(b.add('attention', [q!, k!, vv!], { causal: false }), c.width), `${n}.self_attn.out_proj`, c.width, c.width, true)]);
    const m = b.add('quick_gelu', [linear(ln(h, `${n}.layer_norm2`, c.width), `${n}.mlp.fc1`, c.width, c.vMlp, true)]);
    h = b.add('add', [h, linear(m, `${n}.mlp.fc2`, c.vMlp, c.width, true)]);
  }
  const features = b.add('stop_gradient', [b.add('slice', [h], { axis: 1, start: 1, stop: patches + 1 })]);

  const image = linear(b.add('gelu', [linear(features, 'mm_projector.0', c.width, c.hidden, true)]), 'mm_projector.2', c.hidden, c.hidden, true);
  const scalarI = (value: number): number => b.add('fill', [], { value, shape: [], dtype: 'i32' });
  // LLaVA embeds only real tokens; the placeholder's row is dropped by the splice anyway.
  const safeIds = b.add('where', [b.add('eq', [ids, scalarI(IMAGE_TOKEN)]), scalarI(0), ids]);
  const embedW = p('model.embed_tokens.weight', [c.vocab, c.hidden]);
  const x = b.add('splice', [b.add('embedding', [safeIds, embedW]), image, ids], { token: IMAGE_TOKEN });

  const hd = c.hidden / c.heads;
  h = x;
  for (let i = 0; i < c.layers; i++) {
    const n = `model.layers.${i}`;
    const a = b.add('rms_norm', [h, p(`${n}.input_layernorm.weight`, [c.hidden])], { eps: 1e-5 });
    const q = b.add('rope', [heads(linear(a, `${n}.self_attn.q_proj`, c.hidden, c.heads * hd, false), c.heads, hd)], { theta: c.theta ?? 10000 });
    const k = b.add('rope', [heads(linear(a, `${n}.self_attn.k_proj`, c.hidden, c.kvHeads * hd, false), c.kvHeads, hd)], { theta: c.theta ?? 10000 });
    const vv = heads(linear(a, `${n}.self_attn.v_proj`, c.hidden, c.kvHeads * hd, false), c.kvHeads, hd);
    h = b.add('add', [h, linear(merge(b.add('attention', [q, k, vv], { causal: true }), c.heads * hd), `${n}.self_attn.o_proj`, c.heads * hd, c.hidden, false)]);
    const m = b.add('rms_norm', [h, p(`${n}.post_attention_layernorm.weight`, [c.hidden])], { eps: 1e-5 });
    const gate = b.add('silu', [linear(m, `${n}.mlp.gate_proj`, c.hidden, c.ffn, false)]);
    const up = linear(m, `${n}.mlp.up_proj`, c.hidden, c.ffn, false);
    h = b.add('add', [h, linear(b.add('mul', [gate, up]), `${n}.mlp.down_proj`, c.ffn, c.hidden, false)]);
  }
  h = b.add('rms_norm', [h, p('model.norm.weight', [c.hidden])], { eps: 1e-5 });
  const z = linear(h, 'lm_head', c.hidden, c.vocab, false);
  const L = addDims(T, patches - 1);
  const fillI = (value: number, shape: Dim[]): number => b.add('fill', [], { value, shape, dtype: 'i32' });
  const targets = b.add('splice', [labels, fillI(-100, [B, patches]), ids], { token: IMAGE_TOKEN });
  const isImage = b.add('splice', [fillI(0, [B, T]), fillI(1, [B, patches]), ids], { token: IMAGE_TOKEN });
  const head = (t: number): number => b.add('slice', [t], { axis: 1, start: 0, stop: subDims(L, 1) });
  const tail = (t: number): number => b.add('slice', [t], { axis: 1, start: 1, stop: L });
  const lm = b.add('cross_entropy', [head(z), tail(targets)], { ignore_index: -100 });
  const vm = b.add('kl_div', [head(z), tail(linear(x, 'vm_head', c.hidden, c.vocab, false)), tail(isImage)]);
  b.outputs.push({ name: 'logits', node: z });
  b.losses.push({ name: 'lm', node: lm, weight: 1 }, { name: 'vm', node: vm, weight: 1 });
  return b;
}
