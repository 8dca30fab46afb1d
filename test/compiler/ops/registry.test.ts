import { describe, expect, it } from 'vitest';
import { allOps, getOp, surfaceOps } from '../../../compiler/ops/registry.js';

describe('op registry', () => {
  it('finds ops by name and rejects unknown ones', () => {
    expect(getOp('linear').name).toBe('linear');
    expect(() => getOp('conv3d')).toThrow('unknown op conv3d');
  });

  it('lists every op once, with surfaces for the spec-callable ones', () => {
    const names = allOps().map((o) => o.name);
    expect(new Set(names).size).toBe(names.length);
    const surface = surfaceOps().map((o) => o.name);
    for (const n of ['fill', 'gelu', 'quick_gelu', 'add', 'eq', 'where', 'stop_gradient', 'sum', 'reshape', 'slice', 'concat', 'matmul', 'linear',
      'softmax', 'log_softmax', 'layer_norm', 'rms_norm', 'rope', 'attention', 'embedding', 'patch_embed', 'splice', 'cross_entropy', 'kl_div', 'cast'])
      expect(surface).toContain(n);
    for (const n of ['input', 'param', 'sum_to', 'unary_grad', 'softmax_grad', 'attention_grad', 'embedding_grad', 'splice_grad', 'kl_div_grad'])
      expect(surface).not.toContain(n);
    expect(getOp('linear').surface!.inputs).toEqual(['x', 'weight', 'bias?']);
    expect(getOp('concat').surface!.inputs).toEqual(['inputs*']);
    expect(Object.keys(getOp('fill').surface!.attrs)).toEqual(['value', 'shape', 'dtype']);
  });

  it('gives every differentiable float op a vjp', () => {
    const noVjp = allOps().filter((o) => !o.vjp).map((o) => o.name).sort();
    expect(noVjp).toEqual(
      ['attention_grad', 'cross_entropy_grad', 'decode_attention_merge', 'decode_attention_split', 'embedding_grad', 'eq', 'fill', 'ge', 'gt', 'input', 'iota', 'isfinite', 'kl_div_grad', 'layer_norm_grad', 'le', 'linear_cross_entropy_grad', 'linear_kl_div_grad', 'lt',
        'ne', 'param', 'patch_embed_grad', 'rms_norm_grad', 'softmax_grad', 'splice_grad', 'unary_grad', 'write_at'].sort(),
    );
  });

  it('declares each op\'s fusion category, consistent with its kernel', () => {
    // The category is the op's word (fusion-rules.ts reads it); the kernel must be able to honour it.
    const kernelFor = { source: [undefined], const: ['elementwise'], view: ['view'], elementwise: ['elementwise'], matmul: ['custom'], custom: ['custom', undefined] };
    for (const op of allOps()) expect(kernelFor[op.fusion], op.name).toContain(op.kernel?.kind);
    const by = (c: string) => allOps().filter((o) => o.fusion === c).map((o) => o.name).sort();
    expect(by('source')).toEqual(['input', 'param']);
    expect(by('const')).toEqual(['fill']);
    expect(by('matmul')).toEqual(['linear', 'matmul']);
    expect(by('view')).toEqual(['broadcast', 'reshape', 'slice', 'transpose']);
    for (const n of by('matmul')) {
      const k = getOp(n).kernel;
      expect(k?.kind === 'custom' && k.matmul !== undefined, n).toBe(true);
    }
  });
});
