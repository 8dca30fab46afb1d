// Where a training step runs: the compiled `train_step` entry on WebGPU (parameters and AdamW
// moments resident in one TensorStore, uploaded once, never again) or the same graph on the
// reference executor (`--backend cpu`). Both take a batch and the step's scalars and return the
// loss terms before the update and the pre-clip gradient norm; the trainer (trainer.ts) never
// sees which one it drives.
import type { CheckedModel } from '../check/index.js';
import { differentiate } from '../passes/autodiff.js';
import { gradNormNode, momentName, withAdamW, type AdamWHyper } from '../passes/optimizer.js';
import type { Graph } from '../ir/graph.js';
import { compileArtefact, type EntrySpec } from '../emit/artefact.js';
import { bindSymbols, runReference } from '../exec/reference.js';
import { deviceTraits } from '../exec/webgpu.js';
import { evaluateBatch } from '../cli/loss.js';
import { accumName, accumulateGraph, applyGraph, scaleName } from './accumulate.js';
import { inputContract } from '../passes/input-contract.js';
import type { InputContract } from '../../runtime/validate.js';
import { KilnError } from '../../runtime/errors.js';
import { adamwStepInputs } from '../../runtime/optim/schedule.js';
import { numel, type HostTensor } from '../../runtime/tensor.js';
import { constShape, momentParam } from '../checkpoint/save.js';
import type { KilnDevice } from '../../runtime/webgpu/device.js';
import { ArtefactProgram, type RunOptions } from '../../runtime/webgpu/program.js';
import { TensorStore } from '../../runtime/webgpu/store.js';
import type { KernelProfiler } from '../../runtime/webgpu/profile.js';

/** The per-step scalars of the optimiser: learning rate, torch's 1-based step count, clipping. */
export interface StepScalars {
  readonly lr: number;
  /** 1-based, as torch.optim.AdamW counts it (bias corrections 1 - beta^step). */
  readonly step: number;
  /** clip_grad_norm_'s max_norm; 0 disables clipping. */
  readonly maxGradNorm: number;
}

/** What one step reports: the loss and its terms before the update, the pre-clip gradient norm. */
export interface StepResult {
  readonly loss: number;
  readonly terms: Record<string, number>;
  readonly gradNorm: number;
}

/** The loss and its terms of a batch under the current parameters (no update). */
export interface LossResult {
  readonly loss: number;
  readonly terms: Record<string, number>;
}

export interface TrainBackend {
  readonly name: 'cpu' | 'webgpu';
  /** what computes: the adapter's name, or the reference's. */
  readonly adapter: string;
  /** the differentiated graph with clipping and AdamW appended (the train_step entry's graph). */
  readonly graph: Graph;
  /** Parameter names the step updates (the stage's trainable parameters), in graph order. */
  readonly trainable: readonly string[];
  /** what a batch must be (the model's inputs and their value rules; runtime/validate.ts). */
  readonly batchContract: InputContract;
  /** One optimiser step on `batch` (the model's inputs by name). */
  step(batch: ReadonlyMap<string, HostTensor>, s: StepScalars): Promise<StepResult>;
  /** The loss terms of `batch` under the current parameters, nothing updated (evaluation). */
  evaluate(batch: ReadonlyMap<string, HostTensor>): Promise<LossResult>;
  /**
   * The loss terms and the model's `logits` [B, L, vocab] of `batch`, nothing updated (the
   * `eval` entry; held-out answer accuracy: compiler/train/heldout.ts's ForwardPass).
   */
  forward(batch: ReadonlyMap<string, HostTensor>): Promise<{ terms: Record<string, number>; logits: HostTensor }>;
  /**
   * Gradient accumulation, one micro-batch: adds the gradients of sum_i scales[i] * w_i *
   * term_i into the accumulators (accumulate.ts) and returns the micro-batch's own terms.
   */
  accumulate(batch: ReadonlyMap<string, HostTensor>, scales: Readonly<Record<string, number>>): Promise<LossResult>;
  /** Clipping and AdamW from the accumulators, which are then zero; the pre-clip norm. */
  apply(s: StepScalars): Promise<{ gradNorm: number }>;
  /** Current values of parameters (checkpoint names) or optimiser state (`adamw.m:<param>`). */
  read(names: readonly string[]): Promise<Map<string, HostTensor>>;
  /** Replaces parameters or optimiser state (resume); shapes must match. */
  write(values: ReadonlyMap<string, HostTensor>): Promise<void>;
  /** Names of the optimiser state tensors (both moments of every trainable parameter). */
  stateNames(): string[];
  /** WebGPU: seconds each compiled program took to compile and load, by `entry B=..,T=..`. */
  readonly compileSeconds?: ReadonlyMap<string, number>;
  /**
   * Re-runs the forward and backward of `batch` under the current parameters, on this backend,
   * to name where a non-finite loss or gradient began; throws the NonFiniteError that names it,
   * or returns when this re-run is finite.
   */
  diagnose(batch: ReadonlyMap<string, HostTensor>): Promise<void>;
  destroy(): void;
}

/** The step graph (differentiate + withAdamW) and zero moments for its trainable parameters. */
function stepGraph(model: CheckedModel, hyper: AdamWHyper): Graph {
  if (model.graph.totalLoss === null) throw new KilnError(`model ${model.modelName} declares no loss: there is nothing to train`);
  const diff = differentiate(model.graph);
  if (diff.gradients.length === 0) throw new KilnError(`stage ${model.stage?.name ?? '(none)'} trains no parameter`);
  return withAdamW(diff, hyper);
}

function zeroMoments(graph: Graph, params: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const g of graph.gradients) {
    const shape = params.get(g.name)!.shape;
    for (const w of ['m', 'v'] as const) out.set(momentName(w, g.name), { dtype: 'f32', shape: [...shape], data: new Float32Array(numel(shape)) });
  }
  return out;
}

const scalarOf = (t: HostTensor | undefined): number => t!.data[0]!;
const scalar = (v: number): HostTensor => ({ dtype: 'f32', shape: [], data: Float32Array.of(v) });

/** The accumulate and apply graphs, built when a run first accumulates. */
class AccumulationGraphs {
  private built: { accumulate: Graph; apply: Graph } | null = null;
  constructor(
    private readonly model: CheckedModel,
    private readonly hyper: AdamWHyper,
  ) {}
  get(): { accumulate: Graph; apply: Graph } {
    this.built ??= { accumulate: accumulateGraph(this.model), apply: applyGraph(this.model, this.hyper) };
    return this.built;
  }
}

function zeroAccumulators(graph: Graph, params: ReadonlyMap<string, { shape: readonly number[] }>): Map<string, HostTensor> {
  return new Map(graph.gradients.map((g) => [accumName(g.name), { dtype: 'f32', shape: [...params.get(g.name)!.shape], data: new Float32Array(numel(params.get(g.name)!.shape)) }]));
}

/** The micro-batch loss from its terms: sum_i w_i term_i. */
const weighted = (graph: Graph, terms: Readonly<Record<string, number>>): number => graph.losses.reduce((a, l) => a + l.weight * terms[l.name]!, 0);
const scaleInputs = (graph: Graph, scales: Readonly<Record<string, number>>): [string, HostTensor][] => graph.losses.map((l) => [scaleName(l.name), scalar(scales[l.name] ?? 0)]);

function lossOf(graph: Graph, get: (node: number) => HostTensor | undefined): LossResult {
  return { loss: scalarOf(get(graph.totalLoss!)), terms: Object.fromEntries(graph.losses.map((l) => [l.name, scalarOf(get(l.node))])) };
}

/** The node of the model's `logits` output (what the eval entry reads back). */
function logitsNode(graph: Graph): number {
  const o = graph.outputs.find((v) => v.name === 'logits');
  if (!o) throw new KilnError(`the model has no output named 'logits' (outputs: ${graph.outputs.map((v) => v.name).join(', ')})`);
  return o.node;
}

function checkParams(graph: Graph, params: ReadonlyMap<string, HostTensor>): void {
  for (const p of graph.params) if (!params.has(p.name)) throw new KilnError(`no value for parameter ${p.name}`);
}

/** The reference executor (f32): the oracle's arithmetic, one graph run per step. */
export class ReferenceBackend implements TrainBackend {
  readonly name = 'cpu';
  readonly adapter = 'host CPU, reference executor';
  readonly graph: Graph;
  readonly trainable: readonly string[];
  readonly batchContract: InputContract;
  private readonly values: Map<string, HostTensor>;
  private readonly diff: Graph;
  private readonly accum: AccumulationGraphs;

  constructor(
    model: CheckedModel,
    readonly hyper: AdamWHyper,
    params: ReadonlyMap<string, HostTensor>,
  ) {
    this.accum = new AccumulationGraphs(model, hyper);
    this.graph = stepGraph(model, hyper);
    this.diff = differentiate(model.graph);
    checkParams(this.graph, params);
    this.trainable = this.graph.gradients.map((g) => g.name);
    this.batchContract = inputContract(model.graph);
    this.values = new Map([...params, ...zeroMoments(this.graph, params)]);
  }

  step(batch: ReadonlyMap<string, HostTensor>, s: StepScalars): Promise<StepResult> {
    const g = this.graph;
    const hyperInputs = adamwStepInputs(s.lr, s.step, this.hyper.beta1, this.hyper.beta2, s.maxGradNorm);
    const feeds = new Map([...this.values, ...batch, ...hyperInputs]);
    const norm = gradNormNode(g);
    const updates = g.updates ?? [];
    const r = runReference(g, feeds, [g.totalLoss!, ...g.losses.map((l) => l.node), norm, ...updates.map((u) => u.node)], { precision: 'f32' });
    for (const u of updates) this.values.set(u.name, r.get(u.node)!);
    return Promise.resolve({ ...lossOf(g, (n) => r.get(n)), gradNorm: scalarOf(r.get(norm)) });
  }

  accumulate(batch: ReadonlyMap<string, HostTensor>, scales: Readonly<Record<string, number>>): Promise<LossResult> {
    const g = this.accum.get().accumulate;
    if (!this.values.has(accumName(this.trainable[0]!))) for (const [n, v] of zeroAccumulators(this.graph, this.values)) this.values.set(n, v);
    const updates = g.updates ?? [];
    const r = runReference(g, new Map([...this.values, ...batch, ...scaleInputs(g, scales)]), [...g.losses.map((l) => l.node), ...updates.map((u) => u.node)], { precision: 'f32' });
    for (const u of updates) this.values.set(u.name, r.get(u.node)!);
    const terms = Object.fromEntries(g.losses.map((l) => [l.name, scalarOf(r.get(l.node))]));
    return Promise.resolve({ loss: weighted(g, terms), terms });
  }

  apply(s: StepScalars): Promise<{ gradNorm: number }> {
    const g = this.accum.get().apply;
    const norm = gradNormNode(g);
    const updates = g.updates ?? [];
    const feeds = new Map([...this.values, ...adamwStepInputs(s.lr, s.step, this.hyper.beta1, this.hyper.beta2, s.maxGradNorm)]);
    const r = runReference(g, feeds, [norm, ...updates.map((u) => u.node)], { precision: 'f32' });
    for (const u of updates) this.values.set(u.name, r.get(u.node)!);
    return Promise.resolve({ gradNorm: scalarOf(r.get(norm)) });
  }

  evaluate(batch: ReadonlyMap<string, HostTensor>): Promise<LossResult> {
    const g = this.graph;
    const r = runReference(g, new Map([...this.values, ...batch]), [g.totalLoss!, ...g.losses.map((l) => l.node)], { precision: 'f32' });
    return Promise.resolve(lossOf(g, (n) => r.get(n)));
  }

  forward(batch: ReadonlyMap<string, HostTensor>): Promise<{ terms: Record<string, number>; logits: HostTensor }> {
    const g = this.graph;
    const logits = logitsNode(g);
    const r = runReference(g, new Map([...this.values, ...batch]), [...g.losses.map((l) => l.node), logits], { precision: 'f32' });
    return Promise.resolve({ terms: Object.fromEntries(g.losses.map((l) => [l.name, scalarOf(r.get(l.node))])), logits: r.get(logits)! });
  }

  read(names: readonly string[]): Promise<Map<string, HostTensor>> {
    return Promise.resolve(
      new Map(
        names.map((n) => {
          const v = this.values.get(n);
          if (!v) throw new KilnError(`'${n}' is not a parameter or optimiser state tensor`);
          return [n, v];
        }),
      ),
    );
  }

  write(values: ReadonlyMap<string, HostTensor>): Promise<void> {
    for (const [n, v] of values) {
      const have = this.values.get(n);
      if (!have) throw new KilnError(`'${n}' is not a parameter or optimiser state tensor`);
      if (have.shape.join(',') !== v.shape.join(',')) throw new KilnError(`expected [${have.shape.join(', ')}], got [${v.shape.join(', ')}]`, { tensor: n });
      this.values.set(n, v);
    }
    return Promise.resolve();
  }

  stateNames(): string[] {
    return this.trainable.flatMap((p) => [momentName('m', p), momentName('v', p)]);
  }

  async diagnose(batch: ReadonlyMap<string, HostTensor>): Promise<void> {
    const params = new Map(this.diff.params.map((p) => [p.name, this.values.get(p.name)!]));
    await evaluateBatch(this.diff, params, batch, [this.diff.totalLoss!, ...this.diff.losses.map((l) => l.node), ...this.diff.gradients.map((g) => g.node)], { backend: 'cpu' });
  }

  destroy(): void {}
}

type Entry = 'train_step' | 'loss' | 'eval' | 'accumulate' | 'apply';

/**
 * The compiled `train_step` (and, for evaluation, `loss` and `eval`) entries on WebGPU over one shared
 * TensorStore. Every size in the WGSL is fixed by the batch symbols B and T, so one artefact is
 * compiled per batch shape the data produces (the data side buckets T to a few lengths, see
 * data.ts); all of them read and write the same parameter and moment buffers, so a new shape
 * costs one compile and nothing is re-uploaded. Parameters and zero moments are written into the
 * store once, when the first artefact declares them; the host copies are dropped after that.
 */
export class WebGpuBackend implements TrainBackend {
  readonly name = 'webgpu';
  readonly adapter: string;
  readonly graph: Graph;
  readonly trainable: readonly string[];
  readonly batchContract: InputContract;
  private readonly store: TensorStore;
  private readonly programs = new Map<string, Promise<ArtefactProgram>>();
  /**
   * The starting parameters (a LazyParams reads each from the checkpoint as it is uploaded),
   * until they are on the device; then dropped, so the host keeps no copy of the model.
   */
  private initial: ReadonlyMap<string, HostTensor> | null;
  private uploaded: Promise<void> | null = null;
  private readonly diff: Graph;
  private readonly accum: AccumulationGraphs;
  private readonly shapes: Map<string, { shape: readonly number[] }>;
  /** seconds spent compiling and loading artefacts, per key `entry B=..,T=..`. */
  readonly compileSeconds = new Map<string, number>();
  /** when set, every entry run times its kernels into it (`kiln profile`, `--profile`). */
  profiler: KernelProfiler | undefined;

  constructor(
    readonly kd: KilnDevice,
    readonly model: CheckedModel,
    readonly hyper: AdamWHyper,
    params: ReadonlyMap<string, HostTensor>,
  ) {
    this.adapter = kd.adapterName;
    this.graph = stepGraph(model, hyper);
    this.diff = differentiate(model.graph);
    this.accum = new AccumulationGraphs(model, hyper);
    checkParams(this.graph, params);
    this.trainable = this.graph.gradients.map((g) => g.name);
    this.batchContract = inputContract(model.graph);
    this.store = new TensorStore(kd, 'f32');
    this.initial = params;
    this.shapes = new Map(this.graph.params.map((p) => [p.name, { shape: constShape(p) }]));
    // Every parameter and both moments of every trainable one get their device buffers now, so
    // a value written before the first step (resume) goes straight to the device. The moments
    // start at zero, which a new WebGPU buffer already is: they are never made on the host.
    for (const p of this.graph.params) this.store.declare({ name: p.name, dtype: p.type.dtype, shape: constShape(p) });
    for (const g of this.graph.gradients) for (const w of ['m', 'v'] as const) this.store.declare({ name: momentName(w, g.name), dtype: 'f32', shape: this.shapes.get(g.name)!.shape });
  }

  /** The starting parameters on the device (once; one tensor at a time), then the host's copies dropped. */
  private ready(): Promise<void> {
    this.uploaded ??= (async () => {
      const initial = this.initial!;
      const names = this.graph.params.map((p) => p.name);
      await this.store.upload(
        (function* () {
          for (const n of names) yield [n, initial.get(n)!] as const;
        })(),
      );
      this.initial = null;
    })();
    return this.uploaded;
  }

  private spec(entry: Entry): EntrySpec {
    const lossOutputs = (g: Graph) => g.losses.map((l) => ({ name: `loss:${l.name}`, node: l.node }));
    if (entry === 'accumulate') {
      const g = this.accum.get().accumulate;
      return { name: entry, graph: g, outputs: lossOutputs(g), applyUpdates: true };
    }
    if (entry === 'apply') {
      const g = this.accum.get().apply;
      return { name: entry, graph: g, outputs: [{ name: 'grad_norm', node: gradNormNode(g) }], applyUpdates: true };
    }
    const g = this.graph;
    if (entry === 'eval') return { name: entry, graph: g, outputs: [...lossOutputs(g), { name: 'logits', node: logitsNode(g) }] };
    const outputs = [{ name: 'loss', node: g.totalLoss! }, ...lossOutputs(g)];
    return entry === 'train_step' ? { name: entry, graph: g, outputs: [...outputs, { name: 'grad_norm', node: gradNormNode(g) }], applyUpdates: true } : { name: entry, graph: g, outputs };
  }

  /** The loaded program of `entry` for the batch's symbol values, compiled on first use. */
  private program(entry: Entry, batch: ReadonlyMap<string, HostTensor>): Promise<ArtefactProgram> {
    const spec = this.spec(entry);
    const bindings = bindSymbols(spec.graph, batch);
    const key = `${entry} ${[...bindings].map(([k, v]) => `${k}=${v}`).join(',')}`;
    let p = this.programs.get(key);
    if (!p) {
      p = (async () => {
        const t0 = performance.now();
        const { artefact } = compileArtefact([spec], { bindings, traits: deviceTraits(this.kd), maxBindings: this.kd.limits.maxStorageBuffersPerShaderStage });
        await this.ready();
        // Accumulators (declared by the accumulate artefact) start at zero as new buffers do.
        const program = await ArtefactProgram.load(this.kd, artefact, { store: this.store, stepByStep: process.env['KILN_GPU_STEPS'] === '1' });
        this.compileSeconds.set(key, (performance.now() - t0) / 1000);
        return program;
      })();
      p.catch(() => this.programs.delete(key));
      this.programs.set(key, p);
    }
    return p;
  }

  private runOptions(): RunOptions {
    return this.profiler ? { profiler: this.profiler } : {};
  }

  private termsOf(g: Graph, out: Map<string, HostTensor>): Record<string, number> {
    return Object.fromEntries(g.losses.map((l) => [l.name, scalarOf(out.get(`loss:${l.name}`))]));
  }

  async step(batch: ReadonlyMap<string, HostTensor>, s: StepScalars): Promise<StepResult> {
    const program = await this.program('train_step', batch);
    const out = await program.run('train_step', new Map([...batch, ...adamwStepInputs(s.lr, s.step, this.hyper.beta1, this.hyper.beta2, s.maxGradNorm)]), undefined, this.runOptions());
    return { loss: scalarOf(out.get('loss')), terms: this.termsOf(this.graph, out), gradNorm: scalarOf(out.get('grad_norm')) };
  }

  async accumulate(batch: ReadonlyMap<string, HostTensor>, scales: Readonly<Record<string, number>>): Promise<LossResult> {
    const g = this.accum.get().accumulate;
    const program = await this.program('accumulate', batch);
    const out = await program.run('accumulate', new Map([...batch, ...scaleInputs(g, scales)]), undefined, this.runOptions());
    const terms = this.termsOf(g, out);
    return { loss: weighted(g, terms), terms };
  }

  async apply(s: StepScalars): Promise<{ gradNorm: number }> {
    const program = await this.program('apply', new Map());
    const out = await program.run('apply', adamwStepInputs(s.lr, s.step, this.hyper.beta1, this.hyper.beta2, s.maxGradNorm), undefined, this.runOptions());
    return { gradNorm: scalarOf(out.get('grad_norm')) };
  }

  async evaluate(batch: ReadonlyMap<string, HostTensor>): Promise<LossResult> {
    const program = await this.program('loss', batch);
    const out = await program.run('loss', batch, undefined, this.runOptions());
    return { loss: scalarOf(out.get('loss')), terms: this.termsOf(this.graph, out) };
  }

  async forward(batch: ReadonlyMap<string, HostTensor>): Promise<{ terms: Record<string, number>; logits: HostTensor }> {
    const program = await this.program('eval', batch);
    const out = await program.run('eval', batch, undefined, this.runOptions());
    return { terms: this.termsOf(this.graph, out), logits: out.get('logits')! };
  }

  async read(names: readonly string[]): Promise<Map<string, HostTensor>> {
    for (const n of names) if (!this.store.has(n)) throw new KilnError(`'${n}' is not a parameter or optimiser state tensor`);
    await this.ready();
    return this.store.read(names);
  }

  async write(values: ReadonlyMap<string, HostTensor>): Promise<void> {
    for (const [n, v] of values) {
      if (!this.store.has(n)) throw new KilnError(`'${n}' is not a parameter or optimiser state tensor`);
      const have = this.shapes.get(n)?.shape ?? this.shapes.get(momentParam(n) ?? '')?.shape;
      if (have !== undefined && have.join(',') !== v.shape.join(',')) throw new KilnError(`expected [${have.join(', ')}], got [${v.shape.join(', ')}]`, { tensor: n });
    }
    await this.ready();
    await this.store.upload(values);
  }

  stateNames(): string[] {
    return this.trainable.flatMap((p) => [momentName('m', p), momentName('v', p)]);
  }

  async diagnose(batch: ReadonlyMap<string, HostTensor>): Promise<void> {
    // The step that saw the NaN left the store as it was (the optimiser's guard), so these are
    // the parameters that produced it.
    const params = await this.read(this.diff.params.map((p) => p.name));
    await evaluateBatch(this.diff, params, batch, [this.diff.totalLoss!, ...this.diff.losses.map((l) => l.node), ...this.diff.gradients.map((g) => g.node)], { backend: 'webgpu' });
  }

  destroy(): void {
    void Promise.allSettled(this.programs.values()).then((ps) => ps.forEach((p) => p.status === 'fulfilled' && p.value.destroy()));
    this.store.destroy();
  }
}
