// The graph picture: scopes from the checker, modules collapsed or expanded, kernels outlined.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { loadSpec } from '../../../compiler/syntax/load.js';
import { checkModel } from '../../../compiler/check/index.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { withAdamW } from '../../../compiler/passes/optimizer.js';
import { adamwHyper } from '../../../compiler/emit/entries.js';
import { GRAD_SCOPE, OPTIMIZER_SCOPE } from '../../../compiler/ir/graph.js';
import { graphToDot, modulePaths, scopeLevels } from '../../../compiler/viz/graph-dot.js';

const tiny = () => checkModel(loadSpec('models/vwlmm.kiln', (p) => readFileSync(p, 'utf8')).files, { config: 'tiny' });

describe('node scopes', () => {
  it('the checker records the module instance of each op and parameter', () => {
    const g = tiny().graph;
    const q = g.params.find((p) => p.name === 'model.layers.1.self_attn.q_proj.weight')!;
    expect(g.nodes[q.node]!.scope).toBe('model.layers.1.self_attn.q_proj');
    expect(g.nodes.filter((n) => n.op === 'attention').map((n) => n.scope)).toEqual(['vision_tower.layers.0.self_attn', 'vision_tower.layers.1.self_attn', 'model.layers.0.self_attn', 'model.layers.1.self_attn']);
    expect(g.nodes.find((n) => n.op === 'splice')!.scope).toBeUndefined();
    expect(modulePaths(g)).toContain('model.layers.1.mlp');
    expect(modulePaths(g)).not.toContain('model.layers');
  });

  it('backward nodes carry the scope of the forward node they differentiate; the optimiser its own', () => {
    const m = tiny();
    const g = withAdamW(differentiate(m.graph), adamwHyper(m));
    const attnGrads = g.nodes.filter((n) => n.op.startsWith('attention') && n.scope?.startsWith(GRAD_SCOPE));
    expect(attnGrads.length).toBeGreaterThan(0);
    expect(attnGrads.every((n) => n.scope === `${GRAD_SCOPE}model.layers.0.self_attn` || n.scope === `${GRAD_SCOPE}model.layers.1.self_attn`)).toBe(true);
    const update = g.updates!.find((u) => u.name === 'model.norm.weight')!;
    expect(g.nodes[update.node]!.scope).toBe(OPTIMIZER_SCOPE);
  });

  it('a stack item is one level', () => {
    expect(scopeLevels('model.layers.12.self_attn.q_proj')).toEqual(['model', 'model.layers.12', 'model.layers.12.self_attn', 'model.layers.12.self_attn.q_proj']);
    expect(scopeLevels('')).toEqual([]);
  });
});

describe('graphToDot', () => {
  it('collapses each top-level module into one box by default, with its op and parameter counts', () => {
    const dot = graphToDot(tiny().graph);
    expect(dot).toMatch(/label="model\\n50 ops\\n20 params, 138,048 values"/);
    expect(dot).not.toContain('attention');
    expect(dot).not.toContain('cluster');
    expect(dot).toContain('label="loss lm"');
  });

  it('expanding a deep module opens the modules around it as nested clusters', () => {
    const dot = graphToDot(tiny().graph, { expand: ['model.layers.0.self_attn'] });
    expect(dot).toContain('label="model"');
    expect(dot).toContain('label="model.layers.0.self_attn"');
    expect(dot).toMatch(/attention\\nf32\[B, 4, T \+ 15, 16\]/);
    // layer 1 stays one box
    expect(dot).toMatch(/label="model.layers.1\\n\d+ ops/);
  });

  it('outlines a kernel whose nodes share a module, and is deterministic', () => {
    const g = tiny().graph;
    const kernelOf = new Map<number, number>();
    const attn = g.nodes.find((n) => n.op === 'attention')!;
    kernelOf.set(attn.id, 7);
    kernelOf.set(attn.inputs[0]!, 7);
    const dot = graphToDot(g, { expand: ['all'], kernelOf });
    expect(dot).toContain('label="kernel k7"');
    expect(graphToDot(g, { expand: ['all'], kernelOf })).toBe(dot);
  });
});
