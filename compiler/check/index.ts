// The checker's entry: from parsed files and options to a typed graph, with the parameter
// table, checkpoint declarations and training plan that the CLI and the runtime need.
import type { ConfigDecl, ModuleDecl, SpecFile, Span } from '../syntax/ast.js';
import { DiagnosticError, fail } from '../diagnostics.js';
import { KilnError } from '../../runtime/errors.js';
import type { Graph, ParamInfo } from '../ir/graph.js';
import { applyOverride, flatKeys, instantiateConfig, OverrideError, OverrideKindError, suggest } from './config.js';
import type { OverrideValue } from './config.js';
import { BuildContext, type TiedParam } from './context.js';
import { describe } from './values.js';
import { printExpr } from '../syntax/print.js';
import { Scope } from './evaluate.js';
import { Instantiator } from './instantiate.js';
import type { StageInfo } from './train.js';
import { resolveTrain } from './train.js';
import { fuseLossHeads } from '../passes/loss-heads.js';
import type { ConfigRecord, Value } from './values.js';

export interface Override {
  key: string;
  value: OverrideValue;
  /** where it came from, for messages: `--set` or a config.json path. */
  origin: string;
  /** a checkpoint's config may carry keys this spec does not use; --set may not. */
  optional?: boolean;
  /** an optional value the spec must nevertheless have: without the key it builds another model (bad input, not skipped). */
  needed?: boolean;
}

export interface CheckpointBuffer {
  /** glob over checkpoint names (`*` matches any run of characters). */
  pattern: string;
  values: number[];
  /** the spec's expression, for messages: `rope_inv_freq(c.text.head_dim, c.text.rope_theta)`. */
  what: string;
}

export interface CheckOptions {
  config?: string;
  model?: string;
  stage?: string;
  overrides?: readonly Override[];
}

export interface CheckpointSource {
  /** spec path of the submodule (`vision_tower`). */
  path: string;
  /** its parameters' checkpoint prefix (`model.vision_tower.vision_tower.vision_model.`). */
  ckptPrefix: string;
  /** the same tensors' prefix in their own folder (`vision_model.`). */
  filePrefix: string;
}

export interface CheckedModel {
  graph: Graph;
  modelName: string;
  configName: string;
  config: ConfigRecord;
  components: string[];
  checkpointSources: CheckpointSource[];
  unused: string[];
  /** parameters a `tie` made another (no tensor or gradient of their own), by checkpoint name. */
  tied: TiedParam[];
  /** `buffer` declarations: checkpoint tensors (glob) the model computes, with their values. */
  buffers: CheckpointBuffer[];
  stage: StageInfo | null;
  stages: string[];
}

/** Thrown for problems with options rather than the spec (exit code 2 at the CLI). */
export class UsageError extends Error {}

export function checkModel(files: readonly SpecFile[], opts: CheckOptions = {}): CheckedModel {
  const entry = files[files.length - 1];
  if (!entry) throw new UsageError('no spec file');
  const configs = new Map<string, ConfigDecl>();
  const modules = new Map<string, ModuleDecl>();
  const seen = new Map<string, Span>();
  for (const f of files)
    for (const d of f.decls) {
      if (d.kind === 'import') continue;
      const name = d.name.name;
      const prior = seen.get(name);
      if (prior) fail('name', `'${name}' is declared twice`, d.name.span, [{ message: 'first declared here', span: prior }]);
      seen.set(name, d.name.span);
      if (d.kind === 'config') configs.set(name, d);
      else modules.set(name, d);
    }

  const entryConfigs = entry.decls.filter((d): d is ConfigDecl => d.kind === 'config');
  const configName = opts.config ?? entryConfigs[0]?.name.name;
  if (!configName) throw new UsageError(`${entry.file} declares no config; pass --config NAME`);
  const configDecl = configs.get(configName);
  if (!configDecl) throw new UsageError(`--config ${configName}: no such config${suggest(configName, [...configs.keys()])} (configs: ${[...configs.keys()].join(', ')})`);

  const models = entry.decls.filter((d): d is ModuleDecl => d.kind === 'model');
  const model = opts.model ? modules.get(opts.model) : models[0];
  if (!model || model.kind !== 'model') {
    throw new UsageError(opts.model ? `--model ${opts.model}: no such model in ${entry.file}` : `${entry.file} declares no model`);
  }
  if (!opts.model && models.length > 1) throw new UsageError(`${entry.file} declares several models (${models.map((m) => m.name.name).join(', ')}); pass --model NAME`);

  const config = instantiateConfig(configDecl, configs);
  const pristine = instantiateConfig(configDecl, configs);
  for (const o of opts.overrides ?? []) {
    try {
      applyOverride(config, o.key, o.value, o.origin, true, pristine);
    } catch (e) {
      if (!(e instanceof OverrideError)) throw e;
      // A value of the wrong kind is never skipped: from --set a usage error, from a file bad input.
      if (e instanceof OverrideKindError) throw o.optional ? new KilnError(e.message) : new UsageError(e.message);
      if (!o.optional) throw new UsageError(`${e.message} (keys: ${flatKeys(config).join(', ')})`);
      if (o.needed) throw new KilnError(`${e.message}; without it the spec would build another model than the checkpoint's`);
    }
  }
  try {
    return build(model, modules, config, configName, opts);
  } catch (e) {
    throw withOverrideNote(e, opts.overrides ?? []);
  }
}

/**
 * A spec error while values from outside the spec are in play: when the message does not already
 * name its origin, a note lists the --set values and the config.json files, since an error in
 * models/common.kiln is often caused by one of them.
 */
function withOverrideNote(e: unknown, overrides: readonly Override[]): unknown {
  if (!(e instanceof DiagnosticError) || overrides.length === 0) return e;
  const sets = overrides.filter((o) => !o.optional).map((o) => o.origin);
  const files = [...new Set(overrides.filter((o) => o.optional).map((o) => o.origin.replace(/^field ".*" of /, '')))];
  const parts = [...sets, ...files.map((f) => `the values read from ${f}`)];
  const message = `config values from outside the spec are in play: ${parts.join('; ')}. If the spec is right, one of them is the cause`;
  return new DiagnosticError(
    e.diagnostics.map((d) => (/\(from (--set |field ")/.test(d.message) ? d : { ...d, notes: [...(d.notes ?? []), { message }] })),
  );
}

function build(model: ModuleDecl, modules: ReadonlyMap<string, ModuleDecl>, config: ConfigRecord, configName: string, opts: CheckOptions): CheckedModel {
  const ctx = new BuildContext(modules);
  const inst = new Instantiator(ctx);
  if (model.params.length !== 1) fail('arity', `a model takes exactly one parameter, its config: model ${model.name.name}(c)`, model.name.span);
  const args = new Map<string, Value>([[model.params[0]!.name, config]]);
  // Ties are decided by the config alone, before any parameter exists.
  const configScope = new Scope(null);
  configScope.define(model.params[0]!.name, config);
  for (const m of model.members) {
    if (m.kind !== 'tie') continue;
    const on = m.when === null ? { kind: 'bool' as const, value: true } : inst.ev.expr(m.when, configScope);
    if (on.kind !== 'bool') fail('type', `tie ... when: expected a boolean, got ${describe(on)}`, m.when!.span);
    const param = m.param.parts.map((p) => p.name).join('.');
    if (on.value) ctx.ties.set(param, { to: m.to.parts.map((p) => p.name).join('.'), span: m.span, used: false });
  }
  const buffers: CheckpointBuffer[] = [];
  for (const m of model.members) {
    if (m.kind !== 'buffer') continue;
    const v = inst.ev.expr(m.value, configScope);
    if (v.kind !== 'list' || v.items.some((i) => i.kind !== 'num' || typeof i.value !== 'number')) {
      fail('type', `buffer: expected a list of numbers, got ${describe(v)}`, m.value.span);
    }
    buffers.push({ pattern: m.pattern.value, values: v.items.map((i) => (i as { value: number }).value), what: printExpr(m.value) });
  }
  const top = inst.instantiate(model, args, '', '');
  for (const [param, tie] of ctx.ties) if (!tie.used) fail('name', `tie: '${param}' is not a parameter of ${model.name.name}`, tie.span);

  const forwardScope = new Scope(inst.memberScope(top));
  const symbols: string[] = [];
  for (const m of model.members) {
    if (m.kind !== 'input') continue;
    const shape = inst.dims(m.type, forwardScope, true, symbols);
    const id = ctx.builder.add('input', [], { name: m.name.name, dtype: m.type.dtype, shape }, { span: m.span, label: m.name.name });
    ctx.builder.inputs.push({ name: m.name.name, node: id });
    forwardScope.define(m.name.name, { kind: 'tensor', id });
  }
  ctx.builder.symbols.push(...symbols);

  const forwards = model.members.filter((m) => m.kind === 'forward');
  const fwd = forwards[0];
  if (!fwd || fwd.kind !== 'forward') return fail('syntax', `model ${model.name.name} has no forward block`, model.name.span);
  if (forwards.length > 1) fail('syntax', 'a model has one forward block', forwards[1]!.span);
  const named = new Map<string, Span>();
  const unique = (name: string, span: Span) => {
    const prior = named.get(name);
    if (prior) fail('name', `'${name}' is already an output or loss`, span, [{ message: 'first here', span: prior }]);
    named.set(name, span);
  };
  const scalarCheck = (name: string, id: number, span: Span) => {
    const t = ctx.builder.type(id);
    if (t.shape.length !== 0) fail('shape', `loss ${name} must be a scalar, got shape [${t.shape.length} dims]`, span);
  };
  inst.ev.block(fwd.body, forwardScope, {
    output: (name, node, span) => {
      unique(name, span);
      ctx.builder.outputs.push({ name, node });
    },
    loss: (name, node, weight, span) => {
      unique(name, span);
      scalarCheck(name, node, span);
      ctx.builder.losses.push({ name, node, weight });
    },
  });

  let total: number | null = null;
  for (const l of ctx.builder.losses) {
    const scaled = l.weight === 1 ? l.node : ctx.builder.add('mul', [l.node, ctx.builder.add('fill', [], { value: l.weight, shape: [], dtype: 'f32' })], {}, { label: `${l.weight}*${l.name}` });
    total = total === null ? scaled : ctx.builder.add('add', [total, scaled], {}, { label: 'loss' });
  }
  ctx.builder.totalLoss = total;

  // A tied parameter's path still names it in `trainable` and `freeze`; the tensor is its target's.
  const paths = [...ctx.params.map((p) => p.path), ...ctx.ties.keys()];
  const plan = resolveTrain(model, opts.stage, paths, inst.ev, forwardScope);
  const params: ParamInfo[] = ctx.params.map((p) => ({
    name: p.name,
    node: p.node,
    type: ctx.builder.type(p.node),
    init: p.init,
    trainable: plan.isTrainable(p.path),
    component: p.path.includes('.') ? p.path.split('.')[0]! : '(model)',
    path: p.path,
    modules: p.modules,
    span: p.span,
  }));
  ctx.builder.params.push(...params);

  const checkpointSources: CheckpointSource[] = [];
  const unused: string[] = [];
  for (const m of model.members) {
    if (m.kind === 'unused') unused.push(...m.patterns.map((p) => p.value));
    if (m.kind === 'checkpoint') {
      const sub = top.members.get(m.sub.name);
      if (!sub || sub.kind !== 'module') return fail('name', `'${m.sub.name}' is not a submodule of ${model.name.name}`, m.sub.span);
      checkpointSources.push({ path: sub.path, ckptPrefix: sub.ckpt, filePrefix: m.prefix.value ? `${m.prefix.value}.` : '' });
    }
  }
  const components = [...new Set(params.map((p) => p.component))];
  return {
    // The loss heads over projected logits fuse with their projection (compiler/passes/loss-heads.ts).
    graph: fuseLossHeads(ctx.builder.build()),
    modelName: model.name.name,
    configName,
    config,
    components,
    checkpointSources,
    unused,
    tied: ctx.tied,
    buffers,
    stage: plan.stage,
    stages: plan.stages,
  };
}
