// The loss heads fused with their projection: cross_entropy(linear(x, weight), labels) and
// kl_div(linear(x, weight), linear(target_x, target_weight), mask), with their gradients. They
// mean exactly what the unfused ops mean (the reference composes those ops' references, so the
// numbers are the same to the bit); what they change is where the [rows, vocab] logits live.
// compiler/passes/loss-heads.ts builds them from the spec's natural form, and on WebGPU expands
// each into row chunks of linear + loss kernels, so neither the logits nor their gradient is ever
// held whole. Their kernels are that expansion: these ops have no WGSL of their own.
import { shapeToString } from '../ir/dims.js';
import type { Attrs, Node, TensorType } from '../ir/graph.js';
import type { GraphBuilder } from '../ir/builder.js';
import type { HostTensor } from '../../runtime/tensor.js';
import type { ConcreteType, OpDef, ReferenceContext } from './types.js';
import { CROSS_ENTROPY_TORCH, crossEntropyOp } from './cross_entropy.js';
import { crossEntropyGradOp } from './cross_entropy_grad.js';
import { KL_DIV_TORCH, klDivOp } from './kl_div.js';
import { klDivGradOp } from './kl_div_grad.js';
import { linearOp } from './linear.js';
import { matmulOp } from './matmul.js';
import { transposeOp } from './transpose.js';
import { attrInt, expectArity, fail } from './util/shape.js';
import { VJP_TORCH, wrtIndex } from './util/torch.js';

const concrete = (t: HostTensor | ConcreteType): ConcreteType => ({ dtype: t.dtype, shape: [...t.shape] });

/** `rule()` with its errors naming `op` instead of the unfused op whose rule it is. */
function as<T>(op: string, rule: () => T): T {
  try {
    return rule();
  } catch (e) {
    throw e instanceof Error ? Object.assign(e, { message: e.message.replace(/^(linear|cross_entropy|kl_div):/, `${op}:`) }) : e;
  }
}

/** The logits type linear(x, weight) gives (linear's own shape rule and messages). */
function logitsType(op: string, x: TensorType, w: TensorType): TensorType {
  if (w.shape.length !== 2) fail(`${op}: weight must be [vocab, features], got ${shapeToString(w.shape)}`, 1);
  return as(op, () => linearOp.infer([x, w], {}));
}

function scalarG(op: string, g: TensorType, like: TensorType, index: number): void {
  if (g.shape.length !== 0 || g.dtype !== like.dtype) fail(`${op}: g must be a ${like.dtype} scalar, got ${shapeToString(g.shape)}`, index);
}

/** logits = x @ weight^T on the reference, rounded as the linear op rounds them. */
function logits(x: HostTensor, w: HostTensor, ctx: ReferenceContext): HostTensor {
  return linearOp.reference([x, w], {}, { dtype: x.dtype, shape: [...x.shape.slice(0, -1), w.shape[0]!] }, ctx);
}

/**
 * Cotangents of x and weight of linear(x, weight) from the logits' cotangent dz: the linear op's
 * own VJP (dx = linear(dz, weight^T), dweight = dz^T x over the flattened rows), evaluated.
 */
function linearGrad(wrt: 'x' | 'weight', x: HostTensor, w: HostTensor, dz: HostTensor, ctx: ReferenceContext): HostTensor {
  const [V, K] = w.shape as [number, number];
  if (wrt === 'x') {
    const wt = transposeOp.reference([w], { perm: [1, 0] }, { dtype: w.dtype, shape: [K, V] }, ctx);
    return linearOp.reference([dz, wt], {}, concrete(x), ctx);
  }
  const R = dz.data.length / V;
  const dzT = transposeOp.reference([{ ...dz, shape: [R, V] }], { perm: [1, 0] }, { dtype: dz.dtype, shape: [V, R] }, ctx);
  return matmulOp.reference([dzT, { ...x, shape: [R, K] }], {}, concrete(w), ctx);
}

function wrtOf(op: string, attrs: Attrs, allowed: readonly string[]): string {
  const wrt = attrs['wrt'];
  if (typeof wrt !== 'string' || !allowed.includes(wrt)) fail(`${op}: wrt must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(wrt)}`);
  return wrt;
}

const ceAttrs = (attrs: Attrs): Attrs => ({ ignore_index: attrInt('linear_cross_entropy', attrs, 'ignore_index', -100) });

/** The op in PyTorch: only the selected rows are projected (per row the same numbers as all rows). */
const LINEAR_KL_DIV_TORCH = `def _linear_kl_div(x, weight, target_x, target_weight, mask):
    rows = mask.reshape(-1) != 0
    z = F.linear(x.reshape(-1, x.shape[-1])[rows], weight)
    t = F.linear(target_x.reshape(-1, target_x.shape[-1])[rows], target_weight)
    return _kl_div(z, t, torch.ones(z.shape[0], dtype=torch.int32, device=z.device))`;

export const linearCrossEntropyOp: OpDef = {
  name: 'linear_cross_entropy',
  fusion: 'custom',
  infer(inputs, attrs) {
    expectArity('linear_cross_entropy', inputs, 3);
    const [x, w, labels] = inputs as [TensorType, TensorType, TensorType];
    return as('linear_cross_entropy', () => crossEntropyOp.infer([logitsType('linear_cross_entropy', x, w), labels], ceAttrs(attrs)));
  },
  vjp(b: GraphBuilder, node: Node, g: number) {
    const attrs = { ...ceAttrs(node.attrs) };
    const grad = (wrt: string): number => b.add('linear_cross_entropy_grad', [...node.inputs, g], { ...attrs, wrt });
    return [grad('x'), grad('weight'), null];
  },
  reference([x, w, labels], attrs, out, ctx) {
    return crossEntropyOp.reference([logits(x!, w!, ctx), labels!], ceAttrs(attrs), out, ctx);
  },
  torch: {
    expr: (c) => `_cross_entropy(F.linear(${c.inputs[0]!}, ${c.inputs[1]!}), ${c.inputs[2]!}, ${ceAttrs(c.attrs)['ignore_index'] as number})`,
    helpers: { _cross_entropy: CROSS_ENTROPY_TORCH },
  },
  // cross_entropy's count (the labels that are not ignore_index), over this op's labels.
  count: (b, node) => crossEntropyOp.count!(b, { ...node, inputs: [node.inputs[0]!, node.inputs[2]!] }),
};

export const linearCrossEntropyGradOp: OpDef = {
  name: 'linear_cross_entropy_grad',
  fusion: 'custom',
  infer(inputs, attrs) {
    expectArity('linear_cross_entropy_grad', inputs, 4);
    const [x, w, labels, g] = inputs as [TensorType, TensorType, TensorType, TensorType];
    as('linear_cross_entropy_grad', () => crossEntropyOp.infer([logitsType('linear_cross_entropy_grad', x, w), labels], ceAttrs(attrs)));
    scalarG('linear_cross_entropy_grad', g, x, 3);
    return wrtOf('linear_cross_entropy_grad', attrs, ['x', 'weight']) === 'x' ? x : w;
  },
  torch: {
    expr: (c) => {
      const [x, w, labels, g] = c.inputs as [string, string, string, string];
      const f = `lambda x, w: _cross_entropy(F.linear(x, w), ${labels}, ${ceAttrs(c.attrs)['ignore_index'] as number})`;
      return `_vjp(${f}, [${x}, ${w}], ${g}, ${wrtIndex('linear_cross_entropy_grad', c.attrs['wrt'], ['x', 'weight'])})`;
    },
    helpers: { _vjp: VJP_TORCH, _cross_entropy: CROSS_ENTROPY_TORCH },
  },
  reference([x, w, labels, g], attrs, out, ctx) {
    const z = logits(x!, w!, ctx);
    const dz = crossEntropyGradOp.reference([z, labels!, g!], ceAttrs(attrs), concrete(z), ctx);
    return linearGrad(attrs['wrt'] === 'x' ? 'x' : 'weight', x!, w!, dz, ctx);
  },
};

export const linearKlDivOp: OpDef = {
  name: 'linear_kl_div',
  fusion: 'custom',
  infer(inputs) {
    expectArity('linear_kl_div', inputs, 5);
    const [x, w, tx, tw, mask] = inputs as [TensorType, TensorType, TensorType, TensorType, TensorType];
    return as('linear_kl_div', () => klDivOp.infer([logitsType('linear_kl_div', x, w), logitsType('linear_kl_div', tx, tw), mask], {}));
  },
  vjp(b, node, g) {
    const grad = (wrt: string): number => b.add('linear_kl_div_grad', [...node.inputs, g], { wrt });
    return [grad('x'), grad('weight'), grad('target_x'), grad('target_weight'), null];
  },
  reference([x, w, tx, tw, mask], _attrs, out, ctx) {
    return klDivOp.reference([logits(x!, w!, ctx), logits(tx!, tw!, ctx), mask!], {}, out, ctx);
  },
  torch: {
    expr: (c) => `_linear_kl_div(${c.inputs.join(', ')})`,
    helpers: {
      _kl_div: KL_DIV_TORCH,
      _linear_kl_div: LINEAR_KL_DIV_TORCH,
    },
  },
  // kl_div's count (the rows where mask != 0), over this op's mask.
  count: (b, node) => klDivOp.count!(b, { ...node, inputs: [node.inputs[0]!, node.inputs[2]!, node.inputs[4]!] }),
};

export const linearKlDivGradOp: OpDef = {
  name: 'linear_kl_div_grad',
  fusion: 'custom',
  infer(inputs, attrs) {
    expectArity('linear_kl_div_grad', inputs, 6);
    const [x, w, tx, tw, mask, g] = inputs as [TensorType, TensorType, TensorType, TensorType, TensorType, TensorType];
    as('linear_kl_div_grad', () => klDivOp.infer([logitsType('linear_kl_div_grad', x, w), logitsType('linear_kl_div_grad', tx, tw), mask], {}));
    scalarG('linear_kl_div_grad', g, x, 5);
    const types: Record<string, TensorType> = { x, weight: w, target_x: tx, target_weight: tw };
    return types[wrtOf('linear_kl_div_grad', attrs, Object.keys(types))]!;
  },
  torch: {
    expr: (c) => {
      const [x, w, tx, tw, mask, g] = c.inputs as [string, string, string, string, string, string];
      const wrt = wrtIndex('linear_kl_div_grad', c.attrs['wrt'], ['x', 'weight', 'target_x', 'target_weight']);
      return `_vjp(lambda x, w, tx, tw: _linear_kl_div(x, w, tx, tw, ${mask}), [${x}, ${w}, ${tx}, ${tw}], ${g}, ${wrt})`;
    },
    helpers: { _vjp: VJP_TORCH, _kl_div: KL_DIV_TORCH, _linear_kl_div: LINEAR_KL_DIV_TORCH },
  },
  reference([x, w, tx, tw, mask, g], attrs, _out, ctx) {
    const z = logits(x!, w!, ctx);
    const t = logits(tx!, tw!, ctx);
    const wrt = String(attrs['wrt']);
    const side = wrt === 'x' || wrt === 'weight' ? 'logits' : 'target';
    const dz = klDivGradOp.reference([z, t, mask!, g!], { wrt: side }, concrete(z), ctx);
    return side === 'logits' ? linearGrad(wrt === 'x' ? 'x' : 'weight', x!, w!, dz, ctx) : linearGrad(wrt === 'target_x' ? 'x' : 'weight', tx!, tw!, dz, ctx);
  },
};

export const linearLossOps: readonly OpDef[] = [linearCrossEntropyOp, linearCrossEntropyGradOp, linearKlDivOp, linearKlDivGradOp];
