// The VW-LMM peer for the train_speed and decode sections: models/vwlmm.kiln's math written once
// in tfjs, run on tfjs's WebGPU backend over Kiln's dawn.node device (bench/matmul.ts loadTfjs).
// CLIP tower (frozen, outside the tape, as LLaVA runs it under no_grad; features after
// py_index(select_layer) layers, class token dropped), mlp2x_gelu projector (erf GELU), LLaVA's
// splice (a host-made gather index over [text embeddings; projector outputs]), the LLaMA decoder
// (RMSNorm, rotate_half RoPE with HF's f32 tables, causal GQA attention, SwiGLU), LM head, VM
// head; loss = CE(z[:, :-1], targets[:, 1:], ignore -100) + vm_weight * KL(batchmean) at image
// positions (target softmax(vm_head(x)) not detached); torch's clip_grad_norm_ and AdamW.
// Differentiated by tf.variableGrads. Greedy decoding with its own KV cache (one tensor per
// layer and k/v, grown by concat each step).
import type { CheckedModel } from '../compiler/check/index.js';
import { configNumber } from '../compiler/cli/data-source.js';
import { ropeInvFreq } from '../compiler/ops/rope.js';
import type { HostTensor } from '../runtime/tensor.js';
import { loadTfjs } from './matmul.js';

type Tf = Awaited<ReturnType<typeof loadTfjs>>;
type Tensor = import('@tensorflow/tfjs').Tensor;
type Variable = import('@tensorflow/tfjs').Variable;

const VISION = 'model.vision_tower.vision_tower.vision_model.';

/** The config values the peer needs, read from the checked spec (so tiny and small stay in step). */
export interface VwlmmDims {
  readonly vision: { imageSize: number; patch: number; grid: number; channels: number; width: number; heads: number; eps: number; layersRun: number };
  readonly text: { vocab: number; hidden: number; layers: number; heads: number; kvHeads: number; headDim: number; eps: number; theta: number };
  readonly vmWeight: number;
  readonly imageToken: number;
  readonly ignoreIndex: number;
}

export function vwlmmDims(model: CheckedModel): VwlmmDims {
  const n = (p: string) => configNumber(model, p);
  if (n('text.sliding_window') !== 0) throw new Error('bench: the tfjs peer has no sliding window');
  if (!model.graph.params.some((p) => p.name === 'lm_head.weight')) throw new Error('bench: the tfjs peer expects an untied lm_head.weight');
  const layers = n('vision.layers');
  const sel = n('vision.select_layer');
  return {
    vision: { imageSize: n('vision.image_size'), patch: n('vision.patch'), grid: n('vision.grid'), channels: n('vision.channels'), width: n('vision.width'), heads: n('vision.heads'), eps: n('vision.eps'), layersRun: sel < 0 ? layers + 1 + sel : sel },
    text: { vocab: n('text.vocab'), hidden: n('text.hidden'), layers: n('text.layers'), heads: n('text.heads'), kvHeads: n('text.kv_heads'), headDim: n('text.head_dim'), eps: n('text.eps'), theta: n('text.rope_theta') },
    vmWeight: n('vm_weight'),
    imageToken: n('image_token'),
    ignoreIndex: n('ignore_index'),
  };
}

/** What the splice makes of a batch, computed on the host (ids are host data in every peer). */
interface Spliced {
  B: number;
  T: number;
  L: number;
  /** input_ids with the placeholder replaced by 0 (the spec's stand-in id), [B*T]. */
  textIds: Int32Array;
  /** row of [text embeddings (B*T); projector outputs (B*P)] for each decoder position, [B*L]. */
  gather: Int32Array;
  /** spliced labels shifted: target of position j is label j+1, -1 where ignored, [B*(L-1)]. */
  targets: Int32Array;
  /** 1 where position j+1 is an image position, [B*(L-1)]. */
  select: Float32Array;
  lmCount: number;
  vmCount: number;
}

function spliceBatch(d: VwlmmDims, ids: HostTensor, labels: HostTensor | null): Spliced {
  const [B, T] = ids.shape as [number, number];
  const P = d.vision.grid * d.vision.grid;
  const L = T - 1 + P;
  const textIds = new Int32Array(B * T);
  const gather = new Int32Array(B * L);
  const targets = new Int32Array(B * (L - 1));
  const select = new Float32Array(B * (L - 1));
  let lmCount = 0;
  let vmCount = 0;
  for (let b = 0; b < B; b++) {
    let l = 0;
    const lab = new Int32Array(L);
    const img = new Uint8Array(L);
    let images = 0;
    for (let t = 0; t < T; t++) {
      const id = ids.data[b * T + t]!;
      textIds[b * T + t] = id === d.imageToken ? 0 : id;
      if (id === d.imageToken) {
        if (++images > 1) throw new Error('bench: one image per row');
        for (let p = 0; p < P; p++, l++) {
          gather[b * L + l] = B * T + b * P + p;
          lab[l] = d.ignoreIndex;
          img[l] = 1;
        }
      } else {
        gather[b * L + l] = b * T + t;
        lab[l] = labels ? labels.data[b * T + t]! : d.ignoreIndex;
        l++;
      }
    }
    if (images !== 1) throw new Error('bench: every row needs its image placeholder');
    for (let j = 0; j < L - 1; j++) {
      const y = lab[j + 1]!;
      targets[b * (L - 1) + j] = y === d.ignoreIndex ? -1 : y;
      if (y !== d.ignoreIndex) lmCount++;
      select[b * (L - 1) + j] = img[j + 1]!;
      vmCount += img[j + 1]!;
    }
  }
  return { B, T, L, textIds, gather, targets, select, lmCount, vmCount };
}

/** cos/sin [positions, head_dim] in the rotate_half layout, rounded as HF computes them in f32. */
function ropeTables(positions: number, hd: number, theta: number): { cos: Float32Array; sin: Float32Array } {
  const inv = ropeInvFreq(hd, theta);
  const cos = new Float32Array(positions * hd);
  const sin = new Float32Array(positions * hd);
  for (let t = 0; t < positions; t++)
    for (let j = 0; j < hd; j++) {
      const f = Math.fround(inv[j % (hd / 2)]! * t);
      cos[t * hd + j] = Math.cos(f);
      sin[t * hd + j] = Math.sin(f);
    }
  return { cos, sin };
}

export interface TfjsVwlmm {
  /** One optimiser step (clip to maxGradNorm, AdamW); resolves with the loss before the update, read back. */
  trainStep(batch: ReadonlyMap<string, HostTensor>, s: { lr: number; step: number; maxGradNorm: number }): Promise<number>;
  /** Greedy decoding with a KV cache: `maxTokens` tokens after the prompt (row 0 of input_ids). */
  generate(prompt: ReadonlyMap<string, HostTensor>, maxTokens: number): Promise<{ tokens: number[]; prefillMs: number; decodeTokensPerS: number }>;
  /** tfjs's compiled WebGPU pipelines so far (its shader cache, keyed by program and shapes). */
  pipelines(): number;
  dispose(): void;
}

/**
 * The peer over `params` (Kiln's parameter names and values; copied to the device once). Only the
 * parameters in `trainable` get gradients and AdamW moments (the stage's trainable set).
 */
export async function tfjsVwlmm(model: CheckedModel, params: ReadonlyMap<string, HostTensor>, trainable: readonly string[], hyper: { beta1: number; beta2: number; eps: number; weightDecay: number }): Promise<TfjsVwlmm> {
  const tf: Tf = await loadTfjs();
  // tfjs-webgpu runs ops on small tensors on the CPU, reading them back with OffscreenCanvas,
  // which Node lacks; keep every op on the device (which is also what is being measured).
  tf.env().set('WEBGPU_CPU_HANDOFF_SIZE_THRESHOLD', 0);
  tf.env().set('WEBGPU_CPU_FORWARD', false);
  const d = vwlmmDims(model);
  const trainSet = new Set(trainable);
  const vars = new Map<string, Variable>();
  for (const [name, t] of params) {
    if (!(t.data instanceof Float32Array)) throw new Error(`bench: parameter ${name} is not f32`);
    vars.set(name, tf.variable(tf.tensor(t.data, [...t.shape]), trainSet.has(name), name));
  }
  const moments = new Map<string, [Variable, Variable]>();
  for (const name of trainable) {
    const p = vars.get(name)!;
    moments.set(name, [tf.variable(tf.zerosLike(p), false), tf.variable(tf.zerosLike(p), false)]);
  }
  const P = (name: string): Tensor => {
    const v = vars.get(name);
    if (!v) throw new Error(`bench: no parameter ${name}`);
    return v;
  };
  const { text: tx, vision: vi } = d;
  const maxPositions = 4096;
  const rope = ropeTables(maxPositions, tx.headDim, tx.theta);
  const cosAll = tf.tensor(rope.cos, [maxPositions, tx.headDim]);
  const sinAll = tf.tensor(rope.sin, [maxPositions, tx.headDim]);

  const linear = (x: Tensor, w: string, b?: string): Tensor => {
    const shape = x.shape;
    const din = shape[shape.length - 1]!;
    const W = P(w);
    let y = tf.matMul(x.reshape([-1, din]), W, false, true);
    if (b) y = tf.add(y, P(b));
    return y.reshape([...shape.slice(0, -1), W.shape[0]!]);
  };
  const layerNorm = (x: Tensor, prefix: string, eps: number): Tensor => {
    const { mean, variance } = tf.moments(x, -1, true);
    return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, eps))), P(`${prefix}.weight`)), P(`${prefix}.bias`));
  };
  const rms = (x: Tensor, w: string): Tensor => tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), tx.eps))), P(w));
  /** q [B, H, Lq, hd] against k, v [B, KV, Lk, hd] (grouped: head h reads KV head h / (H / KV)). */
  const attend = (q: Tensor, k: Tensor, v: Tensor, mask: Tensor | null): Tensor => {
    const [B, H, , hd] = q.shape as number[];
    const [, KV, Lk] = k.shape as number[];
    const g = H! / KV!;
    // rank-4 tile: tfjs-webgpu runs rank-5 tiles on the CPU.
    const rep = (t: Tensor) => (g === 1 ? t : t.reshape([B!, KV!, 1, Lk! * hd!]).tile([1, 1, g, 1]).reshape([B!, H!, Lk!, hd!]));
    let s = tf.mul(tf.matMul(q, rep(k), false, true), 1 / Math.sqrt(hd!));
    if (mask) s = tf.add(s, mask);
    return tf.matMul(tf.softmax(s), rep(v));
  };
  const heads = (x: Tensor, h: number): Tensor => {
    const [B, L] = x.shape as number[];
    return x.reshape([B!, L!, h, -1]).transpose([0, 2, 1, 3]);
  };
  const merge = (x: Tensor): Tensor => {
    const [B, H, L, hd] = x.shape as number[];
    return x.transpose([0, 2, 1, 3]).reshape([B!, L!, H! * hd!]);
  };
  const applyRope = (x: Tensor, cos: Tensor, sin: Tensor): Tensor => {
    const [a, b] = tf.split(x, 2, -1) as [Tensor, Tensor];
    return tf.add(tf.mul(x, cos), tf.mul(tf.concat([tf.neg(b), a], -1), sin));
  };

  /** CLIP features [B, P, width] (forward only: the tower is frozen). */
  const tower = (pixels: Tensor): Tensor => {
    const B = pixels.shape[0]!;
    const { patch: p, grid: g, channels: C, width: W } = vi;
    const patches = pixels.reshape([B, C, g, p, g, p]).transpose([0, 2, 4, 1, 3, 5]).reshape([B * g * g, C * p * p]);
    const emb = tf.matMul(patches, P(`${VISION}embeddings.patch_embedding.weight`).reshape([W, C * p * p]), false, true).reshape([B, g * g, W]);
    const cls = P(`${VISION}embeddings.class_embedding`).reshape([1, 1, W]).tile([B, 1, 1]);
    let h = layerNorm(tf.add(tf.concat([cls, emb], 1), P(`${VISION}embeddings.position_embedding.weight`)), `${VISION}pre_layrnorm`, vi.eps);
    for (let i = 0; i < vi.layersRun; i++) {
      const pre = `${VISION}encoder.layers.${i}.`;
      const x = layerNorm(h, `${pre}layer_norm1`, vi.eps);
      const proj = (n: string) => heads(linear(x, `${pre}self_attn.${n}.weight`, `${pre}self_attn.${n}.bias`), vi.heads);
      h = tf.add(h, linear(merge(attend(proj('q_proj'), proj('k_proj'), proj('v_proj'), null)), `${pre}self_attn.out_proj.weight`, `${pre}self_attn.out_proj.bias`));
      const f = linear(layerNorm(h, `${pre}layer_norm2`, vi.eps), `${pre}mlp.fc1.weight`, `${pre}mlp.fc1.bias`);
      h = tf.add(h, linear(tf.mul(f, tf.sigmoid(tf.mul(f, 1.702))), `${pre}mlp.fc2.weight`, `${pre}mlp.fc2.bias`));
    }
    return h.slice([0, 1, 0], [B, g * g, W]);
  };
  /** mlp2x_gelu with the erf GELU. */
  const projector = (f: Tensor): Tensor => {
    const h = linear(f, 'model.mm_projector.0.weight', 'model.mm_projector.0.bias');
    return linear(tf.mul(tf.mul(h, 0.5), tf.add(tf.erf(tf.mul(h, Math.SQRT1_2)), 1)), 'model.mm_projector.2.weight', 'model.mm_projector.2.bias');
  };
  /** The decoder layer `i` over x [B, L, d] at positions offset.., with optional cache to extend. */
  const decoderLayer = (i: number, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | null, cache: [Tensor, Tensor] | null): { y: Tensor; k: Tensor; v: Tensor } => {
    const pre = `model.layers.${i}.`;
    const h1 = rms(x, `${pre}input_layernorm.weight`);
    const q = applyRope(heads(linear(h1, `${pre}self_attn.q_proj.weight`), tx.heads), cos, sin);
    let k = applyRope(heads(linear(h1, `${pre}self_attn.k_proj.weight`), tx.kvHeads), cos, sin);
    let v = heads(linear(h1, `${pre}self_attn.v_proj.weight`), tx.kvHeads);
    if (cache) {
      k = tf.concat([cache[0], k], 2);
      v = tf.concat([cache[1], v], 2);
    }
    const h = tf.add(x, linear(merge(attend(q, k, v, mask)), `${pre}self_attn.o_proj.weight`));
    const h2 = rms(h, `${pre}post_attention_layernorm.weight`);
    const gate = linear(h2, `${pre}mlp.gate_proj.weight`);
    const y = tf.add(h, linear(tf.mul(tf.mul(gate, tf.sigmoid(gate)), linear(h2, `${pre}mlp.up_proj.weight`)), `${pre}mlp.down_proj.weight`));
    return { y, k, v };
  };
  const causalMask = (L: number): Tensor => tf.tensor(Float32Array.from({ length: L * L }, (_, i) => (i % L > Math.floor(i / L) ? -1e30 : 0)), [L, L]);
  /** The spliced decoder input x [B, L, d]. */
  const spliceInputs = (s: Spliced, features: Tensor): Tensor => {
    const emb = tf.gather(P('model.embed_tokens.weight'), tf.tensor(s.textIds, [s.B * s.T], 'int32'));
    const img = projector(features).reshape([-1, tx.hidden]);
    return tf.gather(tf.concat([emb, img], 0), tf.tensor(s.gather, [s.B * s.L], 'int32')).reshape([s.B, s.L, tx.hidden]);
  };

  const lossOf = (s: Spliced, features: Tensor): Tensor => {
    const x = spliceInputs(s, features);
    const cos = cosAll.slice([0, 0], [s.L, tx.headDim]);
    const sin = sinAll.slice([0, 0], [s.L, tx.headDim]);
    const mask = causalMask(s.L);
    let h = x;
    for (let i = 0; i < tx.layers; i++) h = decoderLayer(i, h, cos, sin, mask, null).y;
    const z = linear(rms(h, 'model.norm.weight'), 'lm_head.weight');
    const V = tx.vocab;
    const logp = tf.logSoftmax(z.slice([0, 0, 0], [s.B, s.L - 1, V]));
    // oneHot of -1 (an ignored target) is a zero row.
    const onehot = tf.oneHot(tf.tensor(s.targets, [s.B, s.L - 1], 'int32'), V);
    const lm = tf.div(tf.neg(tf.sum(tf.mul(logp, onehot))), Math.max(s.lmCount, 1));
    if (s.vmCount === 0) return lm;
    const logw = tf.logSoftmax(linear(x, 'vm_head.weight').slice([0, 1, 0], [s.B, s.L - 1, V]));
    const sel = tf.tensor(s.select, [s.B, s.L - 1, 1]);
    const vm = tf.div(tf.sum(tf.mul(sel, tf.mul(tf.exp(logw), tf.sub(logw, logp)))), s.vmCount);
    return tf.add(lm, tf.mul(vm, d.vmWeight));
  };

  const tensorOf = (t: HostTensor): Tensor => tf.tensor(t.data as Float32Array, [...t.shape]);
  const trainVars = trainable.map((n) => vars.get(n)!);

  return {
    async trainStep(batch, s) {
      const s0 = spliceBatch(d, batch.get('input_ids')!, batch.get('labels')!);
      const pixels = tensorOf(batch.get('pixel_values')!);
      const features = tf.tidy(() => tower(pixels));
      const { value, grads } = tf.variableGrads(() => lossOf(s0, features) as import('@tensorflow/tfjs').Scalar, trainVars);
      tf.tidy(() => {
        // clip_grad_norm_ (foreach, norm 2): coef = min(max_norm / (total + 1e-6), 1).
        // Pairwise adds: tfjs-webgpu's addN binds every input at once, past the adapter's 8 storage buffers.
        const total = tf.sqrt(trainable.map((n) => tf.sum(tf.square(grads[n]!))).reduce((a, b) => tf.add(a, b)));
        const coef = s.maxGradNorm > 0 ? tf.minimum(tf.div(s.maxGradNorm, tf.add(total, 1e-6)), 1) : tf.scalar(1);
        const bc1 = 1 - hyper.beta1 ** s.step;
        const bc2 = 1 - hyper.beta2 ** s.step;
        for (const n of trainable) {
          const p = vars.get(n)!;
          const [m, v] = moments.get(n)!;
          const g = tf.mul(grads[n]!, coef);
          m.assign(tf.add(tf.mul(m, hyper.beta1), tf.mul(g, 1 - hyper.beta1)));
          v.assign(tf.add(tf.mul(v, hyper.beta2), tf.mul(tf.square(g), 1 - hyper.beta2)));
          // torch.optim.AdamW: decoupled decay first, then p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps).
          const decayed = hyper.weightDecay > 0 ? tf.mul(p, 1 - s.lr * hyper.weightDecay) : p;
          p.assign(tf.sub(decayed, tf.mul(tf.div(m, tf.add(tf.div(tf.sqrt(v), Math.sqrt(bc2)), hyper.eps)), s.lr / bc1)));
        }
      });
      const loss = (await value.data())[0]!;
      value.dispose();
      for (const g of Object.values(grads)) g.dispose();
      features.dispose();
      pixels.dispose();
      return loss;
    },

    async generate(prompt, maxTokens) {
      const ids = prompt.get('input_ids')!;
      const s0 = spliceBatch(d, { ...ids, shape: [1, ids.shape[1]!], data: ids.data.slice(0, ids.shape[1]!) }, null);
      const pxAll = prompt.get('pixel_values')!;
      const per = pxAll.shape.slice(1).reduce((a, x) => a * x, 1);
      const pixels = tf.tensor(pxAll.data.slice(0, per) as Float32Array, [1, ...pxAll.shape.slice(1)]);
      const caches: [Tensor, Tensor][] = [];
      const logitsToken = async (h: Tensor): Promise<number> => {
        const id = tf.tidy(() => tf.argMax(linear(rms(h, 'model.norm.weight'), 'lm_head.weight').reshape([-1])));
        const t = (await id.data())[0]!;
        id.dispose();
        return t;
      };
      const t0 = performance.now();
      const last = tf.tidy(() => {
        const x = spliceInputs(s0, tower(pixels));
        const cos = cosAll.slice([0, 0], [s0.L, tx.headDim]);
        const sin = sinAll.slice([0, 0], [s0.L, tx.headDim]);
        const mask = causalMask(s0.L);
        let h = x;
        for (let i = 0; i < tx.layers; i++) {
          const r = decoderLayer(i, h, cos, sin, mask, null);
          caches.push([tf.keep(r.k), tf.keep(r.v)]);
          h = r.y;
        }
        return h.slice([0, s0.L - 1, 0], [1, 1, tx.hidden]);
      });
      let token = await logitsToken(last);
      last.dispose();
      const prefillMs = performance.now() - t0;
      const tokens = [token];
      const t1 = performance.now();
      for (let pos = s0.L; tokens.length < maxTokens; pos++) {
        const h = tf.tidy(() => {
          let x = tf.gather(P('model.embed_tokens.weight'), tf.tensor([token], [1], 'int32')).reshape([1, 1, tx.hidden]);
          const cos = cosAll.slice([pos, 0], [1, tx.headDim]);
          const sin = sinAll.slice([pos, 0], [1, tx.headDim]);
          for (let i = 0; i < tx.layers; i++) {
            const r = decoderLayer(i, x, cos, sin, null, caches[i]!);
            caches[i]![0].dispose();
            caches[i]![1].dispose();
            caches[i] = [tf.keep(r.k), tf.keep(r.v)];
            x = r.y;
          }
          return x;
        });
        token = await logitsToken(h);
        h.dispose();
        tokens.push(token);
      }
      const steps = tokens.length - 1;
      const decodeTokensPerS = steps > 0 ? steps / ((performance.now() - t1) / 1000) : NaN;
      for (const [k, v] of caches) {
        k.dispose();
        v.dispose();
      }
      pixels.dispose();
      return { tokens, prefillMs, decodeTokensPerS };
    },

    pipelines() {
      const backend = tf.backend() as unknown as { pipelineCache?: Record<string, unknown> };
      return backend.pipelineCache ? Object.keys(backend.pipelineCache).length : NaN;
    },

    dispose() {
      for (const v of vars.values()) v.dispose();
      for (const [m, v] of moments.values()) {
        m.dispose();
        v.dispose();
      }
      cosAll.dispose();
      sinAll.dispose();
    },
  };
}
