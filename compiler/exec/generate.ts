// Token generation over the prefill and decode graphs of compiler/passes/kv-cache.ts, on the
// reference executor or on WebGPU (one artefact, two entries over one TensorStore whose state is
// the KV cache), with greedy decoding or sampling as transformers' generate() samples.
import { artefactStepRunner, decodeFeeds, PROMPT_START, type StepRunner } from '../../runtime/generate.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { ArtefactProgram, type RunOptions } from '../../runtime/webgpu/program.js';
import type { KilnDevice } from '../../runtime/webgpu/device.js';
import type { DeviceTraits } from '../codegen/kernel.js';
import { compileArtefact } from '../emit/artefact.js';
import { generationEntries } from '../emit/entries.js';
import type { Graph } from '../ir/graph.js';
import { generationGraphs, type GenerationGraphs } from '../passes/kv-cache.js';
import { runReference } from './reference.js';
import { deviceTraits } from './webgpu.js';

const asF32 = (t: HostTensor): Float32Array => (t.data instanceof Float32Array ? t.data : Float32Array.from(t.data));

/** The reference executor (f32) over the two graphs; the caches live on the host. */
export function referenceRunner(g: GenerationGraphs, params: ReadonlyMap<string, HostTensor>): StepRunner {
  let start: HostTensor | undefined;
  const caches = new Map<string, HostTensor>();
  const run = (graph: Graph, feeds: ReadonlyMap<string, HostTensor>): Float32Array => {
    const logits = graph.outputs.find((o) => o.name === 'logits')!.node;
    const updates = graph.updates ?? [];
    const all = new Map([...params, ...caches, ...feeds]);
    const out = runReference(graph, all, [logits, ...updates.map((u) => u.node)], { precision: 'f32' });
    for (const u of updates) caches.set(u.name, out.get(u.node)!);
    return asF32(out.get(logits)!);
  };
  for (const name of g.caches) {
    const node = g.decode.nodes[g.decode.inputs.find((i) => i.name === name)!.node]!;
    const shape = node.type.shape as number[];
    caches.set(name, { dtype: 'f32', shape, data: new Float32Array(shape.reduce((a, x) => a * x, 1)) });
  }
  return {
    prefill: async (feeds) => {
      start = feeds.get(PROMPT_START);
      return run(g.prefill, feeds);
    },
    decode: async (token, position) => run(g.decode, decodeFeeds(g, token, position, start)),
    destroy: () => caches.clear(),
  };
}

/**
 * One artefact with entries `prefill` and `decode`, the caches as its kv-cache state and the
 * manifest's `generation` block saying how they were built. `traits`: the device's (deviceTraits)
 * or, for an artefact compiled without one, DEFAULT_TRAITS.
 */
export function compileGeneration(g: GenerationGraphs, traits: DeviceTraits, source?: Readonly<Record<string, string>>) {
  const { specs, kvCaches, generation, perCall } = generationEntries(g);
  return compileArtefact(specs, { bindings: new Map(), traits, kvCaches, generation, perCall, ...(source ? { source } : {}) });
}

/** WebGPU: the compiled artefact's two entries over one TensorStore holding weights and caches; `runOptions` goes to every run (a profiler). */
export async function webgpuRunner(g: GenerationGraphs, params: ReadonlyMap<string, HostTensor>, kd: KilnDevice, runOptions: RunOptions = {}): Promise<StepRunner> {
  const { artefact } = compileGeneration(g, deviceTraits(kd));
  const program = await ArtefactProgram.load(kd, artefact);
  program.store.write(new Map([...params].filter(([name]) => program.store.has(name) && !g.caches.includes(name))));
  const steps = artefactStepRunner(program, runOptions);
  return {
    ...steps,
    destroy: () => {
      program.destroy();
      program.store.destroy();
    },
  };
}

export { generationGraphs };
export * from '../../runtime/generate.js';
export { seededRandom } from '../../runtime/random.js';
