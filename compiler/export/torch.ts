// `kiln export --target torch`: the checked forward graph rendered as a PyTorch package. Each op
// is written by the rendering defined beside it (OpDef.torch in compiler/ops/), so an op is
// still defined once; this file only lays the rendered statements out and adds the data a
// trainer needs (parameter table, stages, checkpoint naming). The output is deterministic: the
// same model and options give the same bytes.
//
// model.py: an nn.Module whose parameters sit in a module tree following their checkpoint names
// (so `state_dict()` keys are the LLaVA-1.5 / VW-LMM names and `load_state_dict(strict=True)`
// takes such a checkpoint as released), a forward that is the graph in topological order, and
// load_checkpoint() with the spec's `checkpoint ... from`, `unused`, `tie` and `buffer` rules.
// train.py and README.md are static files beside this one (compiler/export/torch/).
import { readFileSync } from 'node:fs';
import type { CheckedModel } from '../check/index.js';
import { fail } from '../diagnostics.js';
import type { Dim } from '../ir/dims.js';
import { dimToString, isConst } from '../ir/dims.js';
import type { DType, Graph, Node } from '../ir/graph.js';
import { reachable } from '../ir/graph.js';
import { GraphBuilder } from '../ir/builder.js';
import { getOp } from '../ops/registry.js';
import type { TorchContext } from '../ops/types.js';
import { configNumber } from '../cli/data-source.js';

/** What the export was made from, recorded in model.py for the reader (and the README). */
export interface ExportOrigin {
  /** the spec path as given on the command line. */
  readonly spec: string;
  /** --set values and checkpoint folders, as `key=value` / folder paths. */
  readonly sets: readonly string[];
  readonly checkpoint?: string | undefined;
  readonly visionTower?: string | undefined;
}

const TORCH_DTYPE: Readonly<Record<DType, string>> = {
  f32: 'torch.float32',
  f16: 'torch.float16',
  bf16: 'torch.bfloat16',
  i32: 'torch.int32',
  bool: 'torch.bool',
};

/** A number as Python reads it back exactly (shortest round-trip form; inf and nan by name). */
export function pyNumber(v: number): string {
  if (Number.isNaN(v)) return 'math.nan';
  if (v === Infinity) return 'math.inf';
  if (v === -Infinity) return '-math.inf';
  if (Object.is(v, -0)) return '-0.0';
  return String(v).replace('e+', 'e');
}

/** A symbolic dim as a Python int expression over the symbols (`B * T`, `(T + 575)`). */
export function pyDim(d: Dim): string {
  if (isConst(d)) return String(d);
  const text = dimToString(d, ' * ');
  // One term needs no parentheses; a sum does, wherever it lands in a product.
  const terms = [...d.terms].filter(([k, v]) => k !== '' || v !== 0).length;
  return terms === 1 ? text : `(${text})`;
}

function pyShape(ds: readonly Dim[]): string {
  if (ds.length === 0) return '()';
  if (ds.length === 1) return `(${pyDim(ds[0]!)},)`;
  return `(${ds.map(pyDim).join(', ')})`;
}

/** A JSON value as a Python literal (JSON's true/false/null spelled as Python's). */
function pyLiteral(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (typeof v === 'number') return pyNumber(v);
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(pyLiteral).join(', ')}]`;
  const entries = Object.entries(v as Record<string, unknown>);
  return `{${entries.map(([k, x]) => `${JSON.stringify(k)}: ${pyLiteral(x)}`).join(', ')}}`;
}

const where = (n: Node): string => (n.span ? `${n.span.file}:${n.span.line}` : 'no spec line');

/** The Python name of a value: `v<id>`, or the parameter by checkpoint name. */
const valueName =
  (graph: Graph) =>
  (id: number): string => {
    const n = graph.nodes[id]!;
    return n.op === 'param' ? `P[${JSON.stringify(n.attrs['name'])}]` : `v${id}`;
  };

/**
 * One statement: the node's value by its op's PyTorch rendering, with the op and spec line in a
 * comment; the helpers it names are added to `helpers`. Throws a DiagnosticError naming the op
 * and the spec line for an op without a rendering.
 */
function renderNode(graph: Graph, id: number, helpers: Map<string, string>, nameOf: (id: number) => string = valueName(graph)): string {
  const n = graph.nodes[id]!;
  const op = getOp(n.op);
  if (!op.torch) return fail('export', `op '${n.op}' has no PyTorch rendering, so this model cannot be exported with --target torch`, n.span);
  const ctx: TorchContext = {
    inputs: n.inputs.map(nameOf),
    attrs: n.attrs,
    inputTypes: n.inputs.map((i) => graph.nodes[i]!.type),
    output: n.type,
    dim: pyDim,
    shape: pyShape,
    num: pyNumber,
    dtype: (d) => TORCH_DTYPE[d],
    source: (kind, src) => (kind === 'input' ? src : nameOf(id)),
  };
  for (const [fn, code] of Object.entries(op.torch.helpers ?? {})) {
    const prior = helpers.get(fn);
    if (prior !== undefined && prior !== code) throw new Error(`two different PyTorch helpers are named ${fn} (op ${n.op})`);
    helpers.set(fn, code);
  }
  const note = `${n.op}${n.label && n.op !== 'input' ? ` ${n.label}` : ''}, ${where(n)}`;
  return `${nameOf(id)} = ${op.torch.expr(ctx)}  # ${note}`;
}

/**
 * Each loss term's item count (the op's `count`: non-ignored labels, selected rows) as Python
 * statements over the inputs, and the names of the terms that have one. Data-parallel training
 * normalises each term by its count over all processes' rows, so N processes equal one.
 */
function renderCounts(graph: Graph, helpers: Map<string, string>): { lines: string[]; terms: [string, number][] } {
  const b = new GraphBuilder(graph);
  const terms: [string, number][] = [];
  for (const l of graph.losses) {
    const node = graph.nodes[l.node]!;
    const count = getOp(node.op).count;
    if (count) terms.push([l.name, count(b, node)]);
  }
  const counted = b.build();
  const ids = reachable(counted, terms.map(([, id]) => id)).filter((id) => counted.nodes[id]!.op !== 'param');
  return { lines: ids.map((id) => `        ${renderNode(counted, id, helpers)}`), terms };
}

/**
 * The forward as Python statements (8-space indented): the loss path first, then what only the
 * declared outputs need under `if return_outputs:`. A value is deleted after its last use on the
 * loss path, so a large model does not keep every intermediate alive (autograd keeps what the
 * backward needs). Throws a DiagnosticError naming the op and the spec line for an op without a
 * PyTorch rendering.
 */
/**
 * The repeated layers' parameter scopes (`model.layers.3`): each instance of a `repeat` whose
 * parameters sit under one checkpoint prefix. The forward calls each as a module (so FSDP2 can
 * shard, gather and free them one at a time).
 */
function blockScopes(graph: Graph): Map<string, Set<number>> {
  const byInstance = new Map<string, { names: string[]; nodes: Set<number> }>();
  for (const p of graph.params) {
    // The outermost repeat instance in the spec path: `model.layers.3.mlp.up_proj.weight`.
    const m = /^(.*?\.\d+)\./.exec(p.path);
    if (!m) continue;
    const e = byInstance.get(m[1]!) ?? { names: [], nodes: new Set<number>() };
    e.names.push(p.name);
    e.nodes.add(p.node);
    byInstance.set(m[1]!, e);
  }
  const scopes = new Map<string, Set<number>>();
  for (const { names, nodes } of byInstance.values()) {
    let prefix = names[0]!;
    for (const n of names) while (!n.startsWith(prefix)) prefix = prefix.slice(0, -1);
    prefix = prefix.slice(0, prefix.lastIndexOf('.'));
    // The scope must hold exactly this instance's parameters (a shared prefix is no module).
    const inside = graph.params.filter((p) => p.name.startsWith(`${prefix}.`));
    if (prefix === '' || inside.length !== names.length || scopes.has(prefix)) continue;
    scopes.set(prefix, nodes);
  }
  return scopes;
}

interface Block {
  readonly scope: string;
  /** positions in the statement order: the first and last statement of the block. */
  readonly start: number;
  readonly end: number;
}

/** Contiguous runs of statements reading one block scope's parameters and no other's. */
function findBlocks(graph: Graph, order: readonly number[], inLoss: ReadonlySet<number>): Block[] {
  const scopes = blockScopes(graph);
  const scopeOf = new Map<number, string>();
  for (const [scope, nodes] of scopes) for (const id of nodes) scopeOf.set(id, scope);
  const spans = new Map<string, { start: number; end: number }>();
  order.forEach((id, at) => {
    for (const i of graph.nodes[id]!.inputs) {
      const scope = scopeOf.get(i);
      if (scope === undefined) continue;
      const s = spans.get(scope);
      spans.set(scope, s ? { start: s.start, end: at } : { start: at, end: at });
    }
  });
  const blocks: Block[] = [];
  for (const [scope, { start, end }] of [...spans].sort((a, b) => a[1].start - b[1].start)) {
    const prior = blocks[blocks.length - 1];
    if (prior && prior.end >= start) return [];
    for (let at = start; at <= end; at++) {
      const id = order[at]!;
      if (!inLoss.has(id)) return [];
      for (const i of graph.nodes[id]!.inputs) {
        const other = graph.nodes[i]!.op === 'param' && scopeOf.get(i) !== scope;
        if (other) return [];
      }
    }
    // The layer's trailing statements (its residual add) belong to it: extend over statements
    // that read only values the block computes or receives, so it returns the layer's output.
    const mine = new Set(order.slice(start, end + 1));
    let last = end;
    while (last + 1 < order.length) {
      const next = graph.nodes[order[last + 1]!]!;
      if (!inLoss.has(next.id) || next.op === 'input' || next.inputs.length === 0 || !next.inputs.some((i) => mine.has(i))) break;
      if (next.inputs.some((i) => graph.nodes[i]!.op === 'param' || (!mine.has(i) && (order.indexOf(i) < 0 || order.indexOf(i) > last)))) break;
      mine.add(next.id);
      last++;
    }
    blocks.push({ scope, start, end: last });
  }
  return blocks;
}

/**
 * One block's statements as a function `def f(m, syms, x0, x1, ...)` over its scope module `m`
 * (parameters by name relative to it), with canonical local names so that layers computing the
 * same thing share one function. Returns the function body (without its name) and the values
 * going in and out.
 */
function renderBlock(graph: Graph, order: readonly number[], block: Block, helpers: Map<string, string>, usedAfter: (id: number, at: number) => boolean, symbols: readonly string[]): { text: string; ins: number[]; outs: number[] } {
  const inside = order.slice(block.start, block.end + 1);
  const defined = new Set(inside);
  const ins: number[] = [];
  for (const id of inside)
    for (const i of graph.nodes[id]!.inputs) if (!defined.has(i) && graph.nodes[i]!.op !== 'param' && !ins.includes(i)) ins.push(i);
  const outs = inside.filter((id) => usedAfter(id, block.end));
  const local = new Map<number, string>();
  ins.forEach((id, k) => local.set(id, `x${k}`));
  inside.forEach((id, k) => local.set(id, `t${k}`));
  const nameOf = (id: number): string => {
    const n = graph.nodes[id]!;
    if (n.op === 'param') return `Q[${JSON.stringify(String(n.attrs['name']).slice(block.scope.length + 1))}]`;
    return local.get(id)!;
  };
  const lines = [
    `(m, syms${ins.map((_, k) => `, x${k}`).join('')}):`,
    `    Q = dict(m.named_parameters())`,
    ...(symbols.length > 0 ? [`    ${symbols.join(', ')}${symbols.length === 1 ? ',' : ''} = syms`] : []),
    ...(ins.length > 0 ? [`    dev = x0.device`] : []),
    ...inside.map((id) => `    ${renderNode(graph, id, helpers, nameOf)}`),
    `    return ${outs.length === 1 ? nameOf(outs[0]!) : `(${outs.map(nameOf).join(', ')}${outs.length === 1 ? ',' : ''})`}`,
  ];
  return { text: lines.join('\n'), ins, outs };
}

/**
 * The forward as Python statements (8-space indented): the loss path first, then what only the
 * declared outputs need under `if return_outputs:`. Each repeated layer (blockScopes) runs as a
 * call of its scope module with a function shared by the layers that compute alike (`blocks`
 * collects them: name -> def). A value is deleted after its last use on the loss path, so a large
 * model does not keep every intermediate alive (autograd keeps what the backward needs). Throws a
 * DiagnosticError naming the op and the spec line for an op without a PyTorch rendering.
 */
function renderForward(graph: Graph, helpers: Map<string, string>, blocks: Map<string, string>, symbols: readonly string[]): { lines: string[]; scopes: string[] } {
  const lossRoots = [...graph.losses.map((l) => l.node), ...(graph.totalLoss === null ? [] : [graph.totalLoss])];
  const lossNodes = reachable(graph, lossRoots);
  const inLoss = new Set(lossNodes);
  const outputNodes = reachable(graph, graph.outputs.map((o) => o.node)).filter((id) => !inLoss.has(id));
  const order = [...lossNodes, ...outputNodes].filter((id) => graph.nodes[id]!.op !== 'param');
  const position = new Map(order.map((id, at) => [id, at]));
  // Values read by the outputs, the roots, and the last loss-path reader of every value.
  const keep = new Set<number>();
  for (const id of outputNodes) for (const i of graph.nodes[id]!.inputs) keep.add(i);
  for (const r of lossRoots) keep.add(r);
  for (const o of graph.outputs) keep.add(o.node);
  const lastAt = new Map<number, number>();
  order.forEach((id, at) => {
    for (const i of graph.nodes[id]!.inputs) lastAt.set(i, at);
  });
  const usedAfter = (id: number, at: number): boolean => keep.has(id) || (lastAt.get(id) ?? -1) > at;
  const found = findBlocks(graph, order, inLoss);
  const blockAt = new Map(found.map((b) => [b.start, b]));
  const name = valueName(graph);

  const lines: string[] = [];
  const live = new Set<number>();
  const free = (at: number, indent: string) => {
    const dead = [...live].filter((i) => !keep.has(i) && (lastAt.get(i) ?? -1) <= at && inLoss.has(order[at]!));
    for (const i of dead) live.delete(i);
    if (dead.length > 0) lines.push(`${indent}del ${dead.sort((a, b) => (position.get(a) ?? 0) - (position.get(b) ?? 0)).map(name).join(', ')}`);
  };
  for (let at = 0; at < order.length; at++) {
    const id = order[at]!;
    if (id === outputNodes[0]) lines.push('        if return_outputs:');
    const indent = inLoss.has(id) ? '        ' : '            ';
    const block = blockAt.get(at);
    if (block) {
      const { text, ins, outs } = renderBlock(graph, order, block, helpers, usedAfter, symbols);
      let fn = [...blocks].find(([, t]) => t === text)?.[0];
      if (fn === undefined) {
        const base = `_${pyIdentifier(block.scope.replace(/\.\d+$/, ''))}`;
        fn = blocks.has(base) || [...blocks.keys()].some((k) => k === base) ? `${base}_${blocks.size}` : base;
        blocks.set(fn, text);
      }
      const target = outs.length === 1 ? name(outs[0]!) : `${outs.map(name).join(', ')}${outs.length === 1 ? ',' : ''}`;
      const syms = symbols.length === 0 ? '()' : `(${symbols.join(', ')}${symbols.length === 1 ? ',' : ''})`;
      lines.push(`${indent}${target} = self.get_submodule(${JSON.stringify(block.scope)})(${fn}, ${syms}${ins.map((i) => `, ${name(i)}`).join('')})  # ${block.scope}`);
      for (const o of outs) live.add(o);
      at = block.end;
      free(at, indent);
      continue;
    }
    lines.push(`${indent}${renderNode(graph, id, helpers)}`);
    live.add(id);
    free(at, indent);
  }
  return { lines, scopes: found.map((b) => b.scope) };
}

/** The symbols renderInputChecks binds, in order. */
function symbolNames(graph: Graph): string[] {
  const names: string[] = [];
  for (const input of graph.inputs)
    for (const d of graph.nodes[input.node]!.type.shape) {
      if (isConst(d) || d.terms.size !== 1) continue;
      const [[sym, coef]] = [...d.terms] as [[string, number]];
      if (coef === 1 && !sym.includes('*') && sym !== '' && !names.includes(sym)) names.push(sym);
    }
  return names;
}

/** Symbols bound from the inputs' shapes, and a check of every input's rank and fixed dims. */
function renderInputChecks(graph: Graph): string[] {
  const lines: string[] = [];
  const bound = new Set<string>();
  for (const input of graph.inputs) {
    const shape = graph.nodes[input.node]!.type.shape;
    const dtype = graph.nodes[input.node]!.type.dtype;
    lines.push(`        _check_input(${JSON.stringify(input.name)}, ${input.name}, ${shape.length}, ${TORCH_DTYPE[dtype]})`);
    shape.forEach((d, axis) => {
      if (!isConst(d) && d.terms.size === 1) {
        const [[sym, coef]] = [...d.terms] as [[string, number]];
        if (coef === 1 && !sym.includes('*') && sym !== '' && !bound.has(sym)) {
          bound.add(sym);
          lines.push(`        ${sym} = ${input.name}.shape[${axis}]`);
        }
      }
    });
  }
  for (const input of graph.inputs) {
    const shape = graph.nodes[input.node]!.type.shape;
    lines.push(`        _check_shape(${JSON.stringify(input.name)}, ${input.name}, ${pyShape(shape)})`);
  }
  return lines;
}

/** A parameter's initialiser as model.py's PARAMS table writes it. */
function initLiteral(p: Graph['params'][number]): string {
  const i = p.init;
  switch (i.kind) {
    case 'zeros':
    case 'ones':
      return `(${JSON.stringify(i.kind)},)`;
    case 'normal':
      return `("normal", ${pyNumber(i.std)}, ${pyNumber(i.mean)})`;
    case 'uniform':
      return `("uniform", ${pyNumber(i.low)}, ${pyNumber(i.high)})`;
    case 'constant':
      return `("constant", ${pyNumber(i.value)})`;
  }
}

function pyIdentifier(name: string): string {
  const id = name.replace(/[^A-Za-z0-9_]/g, '_');
  return /^[0-9]/.test(id) ? `_${id}` : id;
}

/**
 * model.py for `model` (its default stage) and each of its stages' checked models (which
 * parameters each trains). `config` is the config.json a checkpoint of this model carries
 * (compiler/checkpoint/save.ts checkpointConfig), embedded so the trainer writes the same.
 */
export function renderModelPy(model: CheckedModel, stages: ReadonlyMap<string, CheckedModel>, config: Record<string, unknown>, origin: ExportOrigin): string {
  const graph = model.graph;
  if (graph.totalLoss === null) return fail('export', `model ${model.modelName} declares no loss: the exported module returns {"loss", "terms"}`);
  const helpers = new Map<string, string>();
  const symbols = symbolNames(graph);
  const blocks = new Map<string, string>();
  const { lines: forward, scopes } = renderForward(graph, helpers, blocks, symbols);
  const counts = renderCounts(graph, helpers);
  const cls = pyIdentifier(model.modelName);
  const inputNames = graph.inputs.map((i) => i.name);

  const params = graph.params.map((p) => {
    const shape = p.type.shape.map((d) => (isConst(d) ? d : NaN));
    return `    (${JSON.stringify(p.name)}, (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), ${TORCH_DTYPE[p.type.dtype]}, ${initLiteral(p)}, ${JSON.stringify(p.path)}),`;
  });
  const stageTable = [...stages].map(([name, m]) => {
    const s = m.stage;
    const trainable = m.graph.params.filter((p) => p.trainable).map((p) => JSON.stringify(p.name));
    return `    ${JSON.stringify(name)}: {\n        "optimizer": ${pyLiteral(s?.optimizer ?? null)},\n        "schedule": ${pyLiteral(s?.schedule ?? null)},\n        "settings": ${pyLiteral(s?.settings ?? {})},\n        "trainable": [\n${trainable.map((t) => `            ${t},`).join('\n')}\n        ],\n    },`;
  });
  const outputs = graph.outputs.map((o) => `                ${JSON.stringify(o.name)}: v${o.node},`);
  const terms = graph.losses.map((l) => `            ${JSON.stringify(l.name)}: v${l.node},`);
  const helperCode = [...helpers.keys()].sort().map((k) => helpers.get(k)!);
  const tail = readFileSync(new URL('./torch/model_tail.py', import.meta.url), 'utf8');

  const origins = [
    `spec ${origin.spec}, model ${model.modelName}, config ${model.configName}`,
    ...(origin.checkpoint ? [`dims from ${origin.checkpoint}/config.json`] : []),
    ...(origin.visionTower ? [`vision tower dims from ${origin.visionTower}/config.json`] : []),
    ...origin.sets.map((s) => `--set ${s}`),
  ];
  return `# Generated by \`kiln export --target torch\`; do not edit, export again.
# From ${origins.join('; ')}.
"""${model.modelName} (config ${model.configName}) as a PyTorch nn.Module, generated from the Kiln spec.

Model() builds it (parameters initialised as the spec declares, trainable per the stage);
model(${inputNames.map((n) => `${n}=...`).join(', ')}) returns {"loss": tensor, "terms": {name: tensor}}
(and "outputs" with return_outputs=True); load_checkpoint(model, checkpoint_dir, vision_tower_dir=None)
loads Hugging Face folders (single or sharded safetensors) by the spec's checkpoint names, strictly.
"""
import math
import os
import re
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

MODEL_NAME = ${JSON.stringify(model.modelName)}
CONFIG_NAME = ${JSON.stringify(model.configName)}
INPUTS = ${pyLiteral(inputNames)}
# (checkpoint name, shape, dtype, initialiser, spec path), in the spec's order.
PARAMS = [
${params.join('\n')}
]
# Parameters a \`tie\` made another one: no tensor of their own (tie_word_embeddings).
TIED = ${pyLiteral(Object.fromEntries(model.tied.map((t) => [t.name, t.to])))}
# Checkpoint tensors that may be present and are ignored (\`unused\`), as globs.
UNUSED = ${pyLiteral(model.unused)}
# Checkpoint tensors the model computes itself (\`buffer\`): accepted when equal to these values.
BUFFERS = ${pyLiteral(model.buffers.map((b) => ({ pattern: b.pattern, values: b.values, what: b.what })))}
# Submodules whose tensors may come from their own folder (\`checkpoint <sub> from "<prefix>"\`).
CHECKPOINT_SOURCES = ${pyLiteral(model.checkpointSources.map((s) => ({ path: s.path, ckpt_prefix: s.ckptPrefix, file_prefix: s.filePrefix })))}
# The repeated layers, each a module the forward calls (FSDP2 shards each on its own).
BLOCKS = ${pyLiteral(scopes)}
LOSS_WEIGHTS = ${pyLiteral(Object.fromEntries(graph.losses.map((l) => [l.name, l.weight])))}
# The spec's training stages: optimiser, schedule, settings and the parameters each trains.
STAGES = {
${stageTable.join('\n')}
}
DEFAULT_STAGE = ${pyLiteral(model.stage?.name ?? null)}
# config.json as \`kiln train\` writes it into a checkpoint of this model.
HF_CONFIG = json.loads(${JSON.stringify(JSON.stringify(config))})
# What data.py needs of the config (None where the spec has no such value): the square image
# side, the positions one image takes after the splice, the vocabulary a tokenizer must fit in.
DATA_CONFIG = ${pyLiteral(dataConfig(model))}


# ---- op renderings (each defined beside its op in Kiln's compiler/ops/) ----

${helperCode.join('\n\n\n')}


# ---- the repeated layers' computation: one function per distinct layer body ----

${[...blocks].map(([fn, text]) => `def ${fn}${text}`).join('\n\n\n')}


def _check_input(name, x, rank, dtype):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input {name}: expected a tensor, got {type(x).__name__}")
    if x.dim() != rank:
        raise ValueError(f"input {name}: expected {rank} dims, got shape {list(x.shape)}")
    if dtype != torch.int32 and x.dtype.is_floating_point != dtype.is_floating_point:
        raise ValueError(f"input {name}: expected a {dtype} tensor, got {x.dtype}")


def _check_shape(name, x, shape):
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"input {name}: shape {list(x.shape)} does not match the model's {list(shape)}")


class ${cls}(nn.Module):
    """The spec's ${model.modelName}; parameters named as in its checkpoints (state_dict keys)."""

    def __init__(self, stage=DEFAULT_STAGE, device=None, dtype=None):
        super().__init__()
        for name, shape, pdtype, _init, _path in PARAMS:
            _register(self, name, nn.Parameter(torch.empty(shape, dtype=dtype or pdtype, device=device)))
        self.reset_parameters()
        self.set_stage(stage)

    def reset_parameters(self, generator=None):
        """Initialises every parameter as the spec's \`init\` says (not Kiln's random stream)."""
        with torch.no_grad():
            for name, _shape, _dtype, init, _path in PARAMS:
                _initialise(self.get_parameter(name), init, generator)

    def set_stage(self, stage):
        """requires_grad per the stage's trainable parameters (None: all of them)."""
        trainable = None if stage is None else set(STAGES[stage]["trainable"])
        for name, p in self.named_parameters():
            p.requires_grad_(trainable is None or name in trainable)
        self.stage = stage

    def forward(self, ${inputNames.join(', ')}, return_outputs=False):
        P = dict(self.named_parameters())
        dev = ${inputNames[0]!}.device
${renderInputChecks(graph).join('\n')}
${forward.join('\n')}
        result = {
            "loss": v${graph.totalLoss},
            "terms": {
${terms.join('\n')}
            },
        }
        if return_outputs:
            result["outputs"] = {
${outputs.join('\n')}
            }
        return result

    def counts(self, ${inputNames.join(', ')}):
        """Each loss term's item count on this batch (what its mean divides by), for data-parallel training."""
        P = dict(self.named_parameters())
        dev = ${inputNames[0]!}.device
${renderInputChecks(graph).join('\n')}
${counts.lines.join('\n')}
        return {
${counts.terms.map(([name, id]) => `            ${JSON.stringify(name)}: v${id},`).join('\n')}
        }


Model = ${cls}

${tail}`;
}

/**
 * Values `roots` of any graph (a differentiated one too) as a Python function
 * `def <name>(P, <inputs>)` returning them as a list, with the helpers it needs: how the tests run
 * the renderings of the ops model.py does not use (backward ops) against the reference executor.
 */
export function renderGraphFunction(graph: Graph, roots: readonly number[], name: string): string {
  const helpers = new Map<string, string>();
  const ids = reachable(graph, roots).filter((id) => graph.nodes[id]!.op !== 'param');
  const body = ids.map((id) => `        ${renderNode(graph, id, helpers)}`);
  const inputs = graph.inputs.map((i) => i.name);
  return `${[...helpers.keys()].sort().map((k) => helpers.get(k)!).join('\n\n\n')}


def ${name}(${['P', ...inputs].join(', ')}):
    with torch.no_grad():
        dev = ${inputs.length > 0 ? inputs[0]! : 'next(iter(P.values()))'}.device
${renderInputChecks(graph).join('\n')}
${body.join('\n')}
        return [${roots.map(valueName(graph)).join(', ')}]
`;
}

/** vision.image_size, vision.patches and text.vocab of the config, null where the spec has none. */
function dataConfig(model: CheckedModel): Record<string, number | null> {
  const get = (path: string): number | null => {
    try {
      return configNumber(model, path);
    } catch {
      return null;
    }
  };
  return { image_size: get('vision.image_size'), image_tokens: get('vision.patches'), vocab: get('text.vocab') };
}

/** The static trainer, data pipeline and README, shipped beside this file. */
export function staticFile(name: 'train.py' | 'data.py' | 'README.md'): string {
  return readFileSync(new URL(`./torch/${name}`, import.meta.url), 'utf8');
}
