// One accepted and one rejected call for every registered op, so a new op cannot land without a
// shape-rule test (the other files test the spec-facing ops in depth; this one also covers the
// backward and source ops).
import { describe, expect, it } from 'vitest';
import { ShapeError } from '../../../compiler/ir/builder.js';
import { addDims } from '../../../compiler/ir/dims.js';
import type { Attrs, TensorType } from '../../../compiler/ir/graph.js';
import { allOps } from '../../../compiler/ops/registry.js';
import { UNARY } from '../../../compiler/ops/unary.js';
import { BINARY } from '../../../compiler/ops/binary.js';
import { B, T, infer, t } from './harness.js';

type Call = [TensorType[], Attrs];
interface Case {
  ok: Call;
  want: TensorType;
  bad: Call;
  error: string;
}

const f = (...s: (number | typeof B)[]): TensorType => t('f32', s);
const i = (...s: (number | typeof B)[]): TensorType => t('i32', s);
const x = f(B, T, 8);
const q = f(B, 4, T, 8);
const kv = f(B, 2, T, 8);

const CASES: Record<string, Case> = {
  input: { ok: [[], { name: 'ids', dtype: 'i32', shape: [B, T] }], want: i(B, T), bad: [[], { name: 'ids', dtype: 'i64', shape: [B] }], error: 'input: attribute dtype must be one of' },
  param: { ok: [[], { name: 'w', dtype: 'f32', shape: [4, 8] }], want: f(4, 8), bad: [[f(1)], { name: 'w', dtype: 'f32', shape: [4] }], error: 'param: expects 0 inputs, got 1' },
  fill: { ok: [[], { value: 1, shape: [B], dtype: 'f32' }], want: f(B), bad: [[], { value: 'x', shape: [B] }], error: 'fill: value must be a number' },
  iota: { ok: [[], { n: T }], want: i(T), bad: [[], { n: 4, dtype: 'bool' }], error: 'iota: dtype bool has no positions past 1' },
  cast: { ok: [[x], { dtype: 'bf16' }], want: t('bf16', [B, T, 8]), bad: [[x], {}], error: 'cast: attribute dtype must be one of' },
  where: { ok: [[t('bool', [B, T, 1]), x, f()], {}], want: x, bad: [[x, x, x], {}], error: 'where: cond must be i32 or bool' },
  stop_gradient: { ok: [[x], {}], want: x, bad: [[x, x], {}], error: 'stop_gradient: expects 1 input, got 2' },
  sum: { ok: [[x], { axis: -1 }], want: f(B, T), bad: [[x], { axis: 3 }], error: 'sum: axis 3 is out of range for rank 3' },
  mean: { ok: [[x], { axis: [1], keepdims: true }], want: f(B, 1, 8), bad: [[i(B)], {}], error: 'mean: x must be a float tensor' },
  max: { ok: [[x], {}], want: f(), bad: [[x], { axis: 'a' }], error: 'max: axis must be an int or a list of ints' },
  sum_to: { ok: [[x], { shape: [T, 1] }], want: f(T, 1), bad: [[x], { shape: [4] }], error: 'sum_to: cannot broadcast shape [4] with x [B, T, 8]' },
  reshape: { ok: [[x], { shape: [B, T, 2, 4] }], want: f(B, T, 2, 4), bad: [[x], { shape: [B, 8] }], error: 'reshape: x [B, T, 8] has 8*B*T elements but [B, 8] has 8*B' },
  transpose: { ok: [[x], { perm: [1, 0, 2] }], want: f(T, B, 8), bad: [[x], { perm: [0, 1] }], error: 'transpose: perm [0, 1] is not a permutation of the 3 axes of x' },
  broadcast: { ok: [[f(1, 8)], { shape: [B, T, 8] }], want: x, bad: [[f(3, 8)], { shape: [B, 2, 8] }], error: 'broadcast: cannot broadcast x [3, 8] with shape [B, 2, 8]' },
  slice: { ok: [[x], { axis: 2, start: 2, stop: 6 }], want: f(B, T, 4), bad: [[x], { axis: 2, start: 2, stop: 9 }], error: 'slice: [2:9] is out of range for axis 2' },
  concat: { ok: [[x, f(B, 2, 8)], { axis: 1 }], want: f(B, addDims(T, 2), 8), bad: [[x, f(B, T)], { axis: 1 }], error: 'concat: input 0 [B, T, 8] and input 1 [B, T] differ in rank' },
  matmul: { ok: [[x, f(8, 3)], {}], want: f(B, T, 3), bad: [[x, f(3, 8)], {}], error: 'matmul: a [B, T, 8] has 8 columns (last dim) but b [3, 8] has 3 rows (dim -2)' },
  linear: { ok: [[x, f(3, 8)], {}], want: f(B, T, 3), bad: [[x, f(8, 3)], {}], error: 'linear: x has 8 features (last dim) but weight expects 3 (weight dim 1)' },
  softmax: { ok: [[x], { axis: 1 }], want: x, bad: [[x], { axis: -4 }], error: 'softmax: axis -4 is out of range for rank 3' },
  log_softmax: { ok: [[x], {}], want: x, bad: [[i(B)], {}], error: 'log_softmax: x must be a float tensor' },
  softmax_grad: { ok: [[x, x], { axis: -1, log: false }], want: x, bad: [[x, f(B, T, 4)], { axis: -1, log: false }], error: 'softmax_grad: y f32[B, T, 8] and g f32[B, T, 4] must have the same type' },
  layer_norm: { ok: [[x, f(8), f(8)], { eps: 1e-5 }], want: x, bad: [[x, f(8), f(4)], {}], error: 'layer_norm: x has 8 features (last dim) but bias is [4]' },
  layer_norm_grad: { ok: [[x, f(8), x], { eps: 1e-5, wrt: 'weight' }], want: f(8), bad: [[x, f(8), x], { eps: 1e-5, wrt: 'bias' }], error: "layer_norm_grad: wrt must be 'x' or 'weight', got bias" },
  rms_norm: { ok: [[x, f(8)], { eps: 1e-5 }], want: x, bad: [[x, t('bf16', [8])], {}], error: 'rms_norm: dtypes differ: x is f32, weight is bf16' },
  rms_norm_grad: { ok: [[x, f(8), x], { eps: 1e-5, wrt: 'x' }], want: x, bad: [[x, f(8), f(B, 8)], { eps: 1e-5, wrt: 'x' }], error: 'rms_norm_grad: g f32[B, 8] must have the type of x f32[B, T, 8]' },
  rope: { ok: [[q], { theta: 1e6, offset: 3 }], want: q, bad: [[f(6)], {}], error: 'rope: x must be [..., T, D], got [6]' },
  attention: { ok: [[q, kv, kv], { causal: true }], want: q, bad: [[q, kv, f(B, 2, 5, 8)], {}], error: 'attention: k [B, 2, T, 8] and v [B, 2, 5, 8] differ in key length (dim 2)' },
  attention_grad: { ok: [[q, kv, kv, q], { causal: true, scale: null, wrt: 'k' }], want: kv, bad: [[q, kv, kv, kv], { wrt: 'q' }], error: "attention_grad: g [B, 2, T, 8] must have the attention output's shape [B, 4, T, 8]" },
  embedding: { ok: [[i(B, T), f(100, 8)], {}], want: x, bad: [[i(B, T), i(100, 8)], {}], error: 'embedding: weight must be a float tensor, got i32[100, 8]' },
  embedding_grad: { ok: [[i(B, T), x], { vocab: 100 }], want: f(100, 8), bad: [[i(B), x], { vocab: 100 }], error: 'embedding_grad: g [B, T, 8] must be ids [B] plus one feature dim' },
  patch_embed: { ok: [[f(B, 3, 28, 28), f(32, 3, 7, 7)], { stride: 7 }], want: f(B, 32, 4, 4), bad: [[f(B, 3, 28), f(32, 3, 7, 7)], { stride: 7 }], error: 'patch_embed: x must have rank 4, got f32[B, 3, 28]' },
  patch_embed_grad: {
    ok: [[f(B, 3, 28, 28), f(32, 3, 7, 7), f(B, 32, 4, 4)], { stride: 7, wrt: 'weight' }],
    want: f(32, 3, 7, 7),
    bad: [[f(B, 3, 28, 28), f(32, 3, 7, 7), f(B, 32, 2, 2)], { stride: 7, wrt: 'x' }],
    error: "patch_embed_grad: g [B, 32, 2, 2] must have patch_embed's output shape [B, 32, 4, 4]",
  },
  splice: { ok: [[x, f(B, 16, 8), i(B, T)], { token: -200 }], want: f(B, addDims(T, 15), 8), bad: [[x, f(B, 16, 8), f(B, T)], { token: -200 }], error: 'splice: ids must be i32, got f32[B, T]' },
  splice_grad: {
    ok: [[f(B, addDims(T, 15), 8), i(B, T)], { token: -200, part: 'seq', shape: [B, T, 8] }],
    want: x,
    bad: [[f(B, addDims(T, 15), 8), i(B, T)], { token: -200, part: 'insert', shape: [B, 16, 4] }],
    error: 'splice_grad: part insert [B, 16, 4] does not fit g [B, T + 15, 8] and ids [B, T]',
  },
  cross_entropy: { ok: [[x, i(B, T)], { ignore_index: -100 }], want: f(), bad: [[x, i(B)], {}], error: 'cross_entropy: labels [B] must be logits [B, T, 8] without the class axis, [B, T]' },
  cross_entropy_grad: { ok: [[x, i(B, T), f()], { ignore_index: -100 }], want: x, bad: [[x, i(B, T), f(1)], {}], error: 'cross_entropy_grad: g must be a f32 scalar, got [1]' },
  kl_div: { ok: [[x, x, t('bool', [B, T])], {}], want: f(), bad: [[x, x, i(B, T, 8)], {}], error: 'kl_div: mask [B, T, 8] must be logits [B, T, 8] without the class axis, [B, T]' },
  kl_div_grad: { ok: [[x, x, i(B, T), f()], { wrt: 'target' }], want: x, bad: [[x, x, i(B, T), f()], { wrt: 'mask' }], error: "kl_div_grad: wrt must be 'logits' or 'target', got \"mask\"" },
  isfinite: { ok: [[x], {}], want: t('bool', [B, T, 8]), bad: [[i(B)], {}], error: 'isfinite: x must be a float tensor, got i32[B]' },
  linear_cross_entropy: { ok: [[x, f(100, 8), i(B, T)], { ignore_index: -100 }], want: f(), bad: [[x, f(100, 4), i(B, T)], {}], error: 'linear_cross_entropy: x has 8 features (last dim) but weight expects 4' },
  linear_cross_entropy_grad: { ok: [[x, f(100, 8), i(B, T), f()], { wrt: 'weight' }], want: f(100, 8), bad: [[x, f(100, 8), i(B, T), f()], { wrt: 'labels' }], error: "linear_cross_entropy_grad: wrt must be one of 'x', 'weight', got \"labels\"" },
  linear_kl_div: { ok: [[x, f(100, 8), f(B, T, 4), f(100, 4), i(B, T)], {}], want: f(), bad: [[x, f(100, 8), f(B, T, 4), f(50, 4), i(B, T)], {}], error: 'linear_kl_div: target_logits [B, T, 50] must have the shape of logits [B, T, 100]' },
  linear_kl_div_grad: { ok: [[x, f(100, 8), f(B, T, 4), f(100, 4), i(B, T), f()], { wrt: 'target_weight' }], want: f(100, 4), bad: [[x, f(100, 8), f(B, T, 4), f(100, 4), i(B, T), f(1)], { wrt: 'x' }], error: 'linear_kl_div_grad: g must be a f32 scalar, got [1]' },
  decode_attention_split: {
    ok: [[f(B, 4, 1, 8), f(B, 2, 130, 8), f(B, 2, 130, 6), i(), i(B)], { block: 64, window: 0, scale: 0.5 }],
    want: f(B, 4, 3, 8),
    bad: [[f(B, 4, 1, 8), f(B, 2, 130, 8), f(B, 2, 130, 6), i(1)], { block: 64, window: 0, scale: 0.5 }],
    error: 'decode_attention_split: position must be an i32 scalar, got i32[1]',
  },
  decode_attention_merge: { ok: [[f(B, 4, 3, 8), i()], { block: 64 }], want: f(B, 4, 1, 6), bad: [[f(B, 4, 3, 8), i(2)], { block: 64 }], error: 'decode_attention_merge: position must be an i32 scalar, got i32[2]' },
  write_at: { ok: [[f(B, 2, 16, 8), f(B, 2, 1, 8), i()], { axis: 2 }], want: f(B, 2, 16, 8), bad: [[f(B, 2, 16, 8), f(B, 2, 1, 8), i(1)], { axis: 2 }], error: 'write_at: position must be an i32 scalar, got i32[1]' },
  unary_grad: { ok: [[x, x], { fn: 'gelu' }], want: x, bad: [[x, x], { fn: 'erf' }], error: 'unary_grad: unknown function erf' },
};
for (const op of Object.keys(UNARY)) CASES[op] = { ok: [[x], {}], want: x, bad: [[t('bool', [B])], {}], error: `${op}: x must be` };
for (const op of Object.keys(BINARY)) CASES[op] = { ok: [[x, f(8)], {}], want: x, bad: [[x, f(B, 8)], {}], error: `${op}: cannot broadcast a [B, T, 8] with b [B, 8]: axis -2 has T vs B` };
for (const op of ['eq', 'ne', 'lt', 'le', 'gt', 'ge'])
  CASES[op] = { ok: [[i(B, T), i()], {}], want: t('bool', [B, T]), bad: [[i(B), f(B)], {}], error: `${op}: dtypes differ: a is i32[B], b is f32[B]` };

describe('every op has a shape rule that accepts and rejects', () => {
  it('covers the whole registry', () => {
    expect(Object.keys(CASES).sort()).toEqual(allOps().map((o) => o.name).sort());
  });
  for (const [op, c] of Object.entries(CASES))
    it(op, () => {
      expect(infer(op, ...c.ok)).toEqual(c.want);
      expect(() => infer(op, ...c.bad)).toThrow(c.error);
      expect(() => infer(op, ...c.bad)).toThrow(ShapeError);
    });
});
