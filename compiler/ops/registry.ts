// Every op Kiln knows, by name. The graph builder, the checker (through surfaces), autodiff, the
// reference executor and the backends all look ops up here. Op files import nothing from the
// builder but types (ShapeError has its own module), so importing this file never cycles.
import type { OpDef } from './types.js';
import { attentionOp } from './attention.js';
import { attentionGradOp } from './attention_grad.js';
import { binaryOps } from './binary.js';
import { broadcastOp } from './broadcast.js';
import { castOp } from './cast.js';
import { compareOps, isfiniteOp } from './compare.js';
import { concatOp } from './concat.js';
import { crossEntropyOp } from './cross_entropy.js';
import { crossEntropyGradOp } from './cross_entropy_grad.js';
import { embeddingOp } from './embedding.js';
import { embeddingGradOp } from './embedding_grad.js';
import { fillOp } from './fill.js';
import { iotaOp } from './iota.js';
import { klDivOp } from './kl_div.js';
import { klDivGradOp } from './kl_div_grad.js';
import { layerNormOp } from './layer_norm.js';
import { layerNormGradOp } from './layer_norm_grad.js';
import { linearOp } from './linear.js';
import { linearLossOps } from './linear_loss.js';
import { matmulOp } from './matmul.js';
import { patchEmbedOp } from './patch_embed.js';
import { patchEmbedGradOp } from './patch_embed_grad.js';
import { reduceOps } from './reduce.js';
import { reshapeOp } from './reshape.js';
import { rmsNormOp } from './rms_norm.js';
import { rmsNormGradOp } from './rms_norm_grad.js';
import { ropeOp } from './rope.js';
import { sliceOp } from './slice.js';
import { softmaxOps } from './softmax.js';
import { softmaxGradOp } from './softmax_grad.js';
import { inputOp, paramOp } from './sources.js';
import { spliceOp } from './splice.js';
import { spliceGradOp } from './splice_grad.js';
import { stopGradientOp } from './stop_gradient.js';
import { sumToOp } from './sum_to.js';
import { transposeOp } from './transpose.js';
import { unaryGrad, unaryOps } from './unary.js';
import { whereOp } from './where.js';
import { writeAtOp } from './write_at.js';
import { decodeAttentionMergeOp, decodeAttentionSplitOp } from './decode_attention.js';

let table: Map<string, OpDef> | null = null;

// Built on first use rather than at load time, so even an unexpected import order cannot leave
// an op undefined in the table.
function ops(): Map<string, OpDef> {
  if (table) return table;
  const list: OpDef[] = [
    inputOp,
    paramOp,
    fillOp,
    iotaOp,
    ...unaryOps,
    unaryGrad,
    castOp,
    ...binaryOps,
    ...compareOps,
    isfiniteOp,
    whereOp,
    writeAtOp,
    decodeAttentionSplitOp,
    decodeAttentionMergeOp,
    stopGradientOp,
    ...reduceOps,
    sumToOp,
    reshapeOp,
    transposeOp,
    broadcastOp,
    sliceOp,
    concatOp,
    matmulOp,
    linearOp,
    ...softmaxOps,
    softmaxGradOp,
    layerNormOp,
    layerNormGradOp,
    rmsNormOp,
    rmsNormGradOp,
    ropeOp,
    attentionOp,
    attentionGradOp,
    embeddingOp,
    embeddingGradOp,
    patchEmbedOp,
    patchEmbedGradOp,
    spliceOp,
    spliceGradOp,
    crossEntropyOp,
    crossEntropyGradOp,
    klDivOp,
    klDivGradOp,
    ...linearLossOps,
  ];
  const m = new Map<string, OpDef>();
  for (const op of list) {
    if (m.has(op.name)) throw new Error(`op ${op.name} is registered twice`);
    m.set(op.name, op);
  }
  table = m;
  return m;
}

export function getOp(name: string): OpDef {
  const op = ops().get(name);
  if (!op) throw new Error(`unknown op ${name}`);
  return op;
}

export function hasOp(name: string): boolean {
  return ops().has(name);
}

export function allOps(): OpDef[] {
  return [...ops().values()];
}

/** The ops a spec may call by name. */
export function surfaceOps(): OpDef[] {
  return allOps().filter((op) => op.surface !== undefined);
}
