// The peer for the transformer-block section: the same LLaMA decoder layer as bench/block.kiln
// (RMSNorm, rotate_half RoPE, causal attention, SwiGLU), written in tfjs and differentiated with
// tf.variableGrads, on tfjs's WebGPU backend over the same dawn.node device.
import { loadTfjs } from './matmul.js';

type Tf = Awaited<ReturnType<typeof loadTfjs>>;
type T = ReturnType<Tf['tensor']>;

export interface BlockDims {
  T: number;
  d: number;
  heads: number;
  ffn: number;
  eps: number;
  theta: number;
}

/** Parameter names as bench/block.kiln gives them. */
export const BLOCK_PARAMS = [
  'layer.input_layernorm.weight',
  'layer.self_attn.q_proj.weight',
  'layer.self_attn.k_proj.weight',
  'layer.self_attn.v_proj.weight',
  'layer.self_attn.o_proj.weight',
  'layer.post_attention_layernorm.weight',
  'layer.mlp.gate_proj.weight',
  'layer.mlp.up_proj.weight',
  'layer.mlp.down_proj.weight',
] as const;

export interface TfjsBlock {
  /** one forward + backward; resolves when the GPU work is done and every gradient is read back. */
  step(): Promise<{ loss: number; grads: Map<string, Float32Array> }>;
  dispose(): void;
}

export async function tfjsBlock(dims: BlockDims, params: ReadonlyMap<string, { shape: readonly number[]; data: Float32Array }>, x: Float32Array): Promise<TfjsBlock> {
  const tf = await loadTfjs();
  const { T: seq, d, heads } = dims;
  const hd = d / heads;
  const vars = new Map<string, ReturnType<Tf['variable']>>();
  for (const name of BLOCK_PARAMS) {
    const p = params.get(name)!;
    vars.set(name, tf.variable(tf.tensor(p.data, [...p.shape]), true, name));
  }
  const v = (n: (typeof BLOCK_PARAMS)[number]) => vars.get(n)!;
  const input = tf.tensor(x, [seq, d]);
  // RoPE tables [T, hd] in the rotate_half layout: cat(freqs, freqs).
  const cos = new Float32Array(seq * hd);
  const sin = new Float32Array(seq * hd);
  for (let t = 0; t < seq; t++)
    for (let j = 0; j < hd; j++) {
      const f = t / Math.pow(dims.theta, (2 * (j % (hd / 2))) / hd);
      cos[t * hd + j] = Math.cos(f);
      sin[t * hd + j] = Math.sin(f);
    }
  const cosT = tf.tensor(cos, [1, seq, hd]);
  const sinT = tf.tensor(sin, [1, seq, hd]);
  const mask = tf.tensor(Float32Array.from({ length: seq * seq }, (_, i) => (i % seq > Math.floor(i / seq) ? -1e30 : 0)), [seq, seq]);

  const rms = (h: T, w: T) => tf.mul(tf.mul(h, tf.rsqrt(tf.add(tf.mean(tf.square(h), -1, true), dims.eps))), w);
  const linear = (h: T, w: T) => tf.matMul(h, w, false, true);
  const split = (h: T) => tf.transpose(tf.reshape(h, [seq, heads, hd]), [1, 0, 2]);
  const rope = (h: T) => {
    const [a, b] = tf.split(h, 2, -1) as [T, T];
    return tf.add(tf.mul(h, cosT), tf.mul(tf.concat([tf.neg(b), a], -1), sinT));
  };
  const loss = () =>
    tf.tidy(() => {
      const h1 = rms(input, v('layer.input_layernorm.weight'));
      const q = rope(split(linear(h1, v('layer.self_attn.q_proj.weight'))));
      const k = rope(split(linear(h1, v('layer.self_attn.k_proj.weight'))));
      const vv = split(linear(h1, v('layer.self_attn.v_proj.weight')));
      const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(hd)), mask);
      const att = tf.matMul(tf.softmax(scores), vv);
      const merged = tf.reshape(tf.transpose(att, [1, 0, 2]), [seq, d]);
      const h = tf.add(input, linear(merged, v('layer.self_attn.o_proj.weight')));
      const h2 = rms(h, v('layer.post_attention_layernorm.weight'));
      const gate = linear(h2, v('layer.mlp.gate_proj.weight'));
      const ff = linear(tf.mul(tf.mul(gate, tf.sigmoid(gate)), linear(h2, v('layer.mlp.up_proj.weight'))), v('layer.mlp.down_proj.weight'));
      const y = tf.add(h, ff);
      return tf.mean(tf.square(y)) as ReturnType<Tf['scalar']>;
    });

  return {
    async step() {
      const { value, grads } = tf.variableGrads(loss);
      const out = new Map<string, Float32Array>();
      for (const name of BLOCK_PARAMS) out.set(name, (await grads[name]!.data()) as Float32Array);
      const l = (await value.data())[0]!;
      value.dispose();
      for (const g of Object.values(grads)) g.dispose();
      return { loss: l, grads: out };
    },
    dispose() {
      for (const t of [...vars.values(), input, cosT, sinT, mask]) t.dispose();
    },
  };
}
