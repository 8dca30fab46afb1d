// `kiln export --target torch`: the generated model.py against Kiln's reference executor on every
// golden case (loss terms within 2e-4 relative, gradients within 2e-2 relative Frobenius per
// tensor: the golden tests' tolerances), deterministic output, and the command's refusals.
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';
import { readSafetensors } from '../../../runtime/node/safetensors-file.js';
import { GOLDEN_CASES, relFrobenius } from '../../golden/compare.js';
import { runPython } from '../../helpers/torch-python.js';
import { loadAndCheck } from '../../../compiler/cli/spec.js';
import { renderGraphFunction, renderModelPy } from '../../../compiler/export/torch.js';
import { differentiate } from '../../../compiler/passes/autodiff.js';
import { checkpointOverrides } from '../../../compiler/cli/loss.js';
import { allOps, getOp, surfaceOps } from '../../../compiler/ops/registry.js';
import { DiagnosticError } from '../../../compiler/diagnostics.js';

async function kiln(args: readonly string[]): Promise<{ code: number; out: string; err: string }> {
  const out = new Output(true);
  const code = await main([...args], out);
  return { code, out: out.out.join('\n'), err: out.err.join('\n') };
}

function caseArgs(name: string): string[] {
  const dir = join('test/golden', name);
  const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as { loss: number; terms: Record<string, number> };
  const vmWeight = (expected.loss - expected.terms['lm']!) / expected.terms['vm']!;
  return ['models/vwlmm.kiln', '--config', 'tiny', '--checkpoint', join(dir, 'llava'), '--vision-tower', join(dir, 'clip'), '--set', `vm_weight=${Math.round(vmWeight * 1e6) / 1e6}`];
}

const tmp = (tag: string) => mkdtempSync(join(tmpdir(), `kiln-export-${tag}-`));

describe.each(GOLDEN_CASES)('the exported PyTorch module equals Kiln on %s', (name) => {
  it('loss terms within 2e-4 and gradients within 2e-2 (relative) of the reference executor', async () => {
    const dir = join('test/golden', name);
    const out = join(tmp(name), 'pkg');
    const exp = await kiln(['export', ...caseArgs(name), '--target', 'torch', '--out', out]);
    expect(exp.err).toBe('');
    expect(exp.code).toBe(0);

    const kilnGrads = join(tmp(name), 'kiln.safetensors');
    const ref = await kiln(['loss', ...caseArgs(name), '--batch', join(dir, 'batch.safetensors'), '--backend', 'cpu', '--grads', kilnGrads, '--json']);
    expect(ref.code).toBe(0);
    const mine = JSON.parse(ref.out) as { loss: number; terms: Record<string, number> };

    const torchGrads = join(tmp(name), 'torch.safetensors');
    const args = ['test/compiler/export/run_exported.py', out, '--checkpoint', join(dir, 'llava'), '--vision-tower', join(dir, 'clip'), '--batch', join(dir, 'batch.safetensors'), '--grads', torchGrads];
    const theirs = JSON.parse(runPython(args)) as { loss: number; terms: Record<string, number> };

    const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
    expect(Object.keys(theirs.terms).sort()).toEqual(Object.keys(mine.terms).sort());
    let worstTerm = rel(theirs.loss, mine.loss);
    for (const [k, v] of Object.entries(mine.terms)) worstTerm = Math.max(worstTerm, rel(theirs.terms[k]!, v));
    const a = readSafetensors(kilnGrads);
    const b = readSafetensors(torchGrads);
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    let worstGrad = 0;
    let worstName = '';
    for (const [k, t] of a) {
      const r = relFrobenius(b.get(k)!.data, t.data);
      if (!(r <= worstGrad)) [worstGrad, worstName] = [r, k];
    }
    console.log(`${name}: exported module vs Kiln reference: loss ${theirs.loss} vs ${mine.loss}; worst loss-term rel error ${worstTerm.toExponential(2)}, worst gradient rel error ${worstGrad.toExponential(2)} (${worstName}) over ${a.size} tensors`);
    expect(worstTerm).toBeLessThan(2e-4);
    expect(worstGrad).toBeLessThan(2e-2);
  });
});

describe('kiln export', () => {
  it('writes the same bytes twice', async () => {
    const [a, b] = [join(tmp('det'), 'a'), join(tmp('det'), 'b')];
    for (const out of [a, b]) expect((await kiln(['export', ...caseArgs('mistral_gqa'), '--target', 'torch', '--out', out])).code).toBe(0);
    expect(readdirSync(a).sort()).toEqual(['README.md', 'data.py', 'model.py', 'train.py']);
    for (const f of readdirSync(a)) expect(readFileSync(join(b, f)).equals(readFileSync(join(a, f)))).toBe(true);
    // Each decoder / CLIP layer is called as its own module, all with one shared layer function.
    const py = readFileSync(join(a, 'model.py'), 'utf8');
    expect(py).toContain('BLOCKS = ["model.vision_tower.vision_tower.vision_model.encoder.layers.0", "model.layers.0", "model.layers.1", "model.layers.2"]');
    expect(py.match(/^def _model_layers\(m, syms, x0\):$/gm)).toHaveLength(1);
    expect(py.match(/self\.get_submodule\("model\.layers\.\d"\)\(_model_layers, /g)).toHaveLength(3);
  });

  it('refuses a non-empty --out without --force, and replaces the export with it', async () => {
    const out = join(tmp('force'), 'pkg');
    mkdirSync(out);
    writeFileSync(join(out, 'notes.txt'), 'mine');
    const refused = await kiln(['export', 'models/vwlmm.kiln', '--config', 'tiny', '--target', 'torch', '--out', out]);
    expect(refused.code).toBe(2);
    expect(refused.err).toMatch(/--out .*not empty \(notes\.txt\); pass --force/);
    expect(readdirSync(out)).toEqual(['notes.txt']);
    const forced = await kiln(['export', 'models/vwlmm.kiln', '--config', 'tiny', '--target', 'torch', '--out', out, '--force']);
    expect(forced.code).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['README.md', 'data.py', 'model.py', 'notes.txt', 'train.py']);
  });

  it('needs --target torch and --out', async () => {
    expect((await kiln(['export', 'models/vwlmm.kiln', '--out', tmp('u')])).err).toMatch(/--target is required/);
    expect((await kiln(['export', 'models/vwlmm.kiln', '--target', 'onnx', '--out', tmp('u')])).err).toMatch(/--target onnx: expected torch/);
    expect((await kiln(['export', 'models/vwlmm.kiln', '--target', 'torch'])).code).toBe(2);
  });
});

describe('op renderings', () => {
  it('every op a spec can call has a PyTorch rendering', () => {
    expect(surfaceOps().filter((op) => !op.torch).map((op) => op.name)).toEqual([]);
  });

  it('every op of the registry has one (backward ops too)', () => {
    expect(allOps().filter((op) => !op.torch).map((op) => op.name)).toEqual([]);
  });

  it('an op without one is an export error naming the op and its spec line', () => {
    const model = loadAndCheck('models/vwlmm.kiln', { config: 'tiny' }, new Output(true));
    const softmax = model.graph.nodes.find((n) => n.op === 'softmax')!;
    // Every op has a rendering: take softmax's away for the length of this test.
    const op = getOp('softmax') as { torch?: unknown };
    const saved = op.torch;
    delete op.torch;
    try {
      renderModelPy(model, new Map(), {}, { spec: 'models/vwlmm.kiln', sets: [] });
      expect.unreachable('the export should have refused softmax');
    } catch (e) {
      expect(e).toBeInstanceOf(DiagnosticError);
      const d = (e as DiagnosticError).diagnostics[0]!;
      expect(d.message).toMatch(/op 'softmax' has no PyTorch rendering/);
      expect(d.span?.file).toBe('models/vwlmm.kiln');
      expect(d.span?.line).toBe(softmax.span!.line);
    } finally {
      op.torch = saved;
    }
  });
});

describe('backward op renderings', () => {
  it('the differentiated graph rendered op by op equals the reference gradients (llama_b2)', async () => {
    const dir = 'test/golden/llama_b2';
    const out = join(tmp('grad'), 'pkg');
    expect((await kiln(['export', ...caseArgs('llama_b2'), '--target', 'torch', '--out', out])).code).toBe(0);
    const kilnGrads = join(tmp('grad'), 'kiln.safetensors');
    expect((await kiln(['loss', ...caseArgs('llama_b2'), '--batch', join(dir, 'batch.safetensors'), '--backend', 'cpu', '--grads', kilnGrads, '--json'])).code).toBe(0);
    const model = loadAndCheck('models/vwlmm.kiln', { config: 'tiny', overrides: checkpointOverrides(join(dir, 'llava')).concat(checkpointOverrides(join(dir, 'clip'), '--vision-tower')) }, new Output(true));
    const graph = differentiate(model.graph);
    const backward = new Set(graph.nodes.filter((n) => n.id >= model.graph.nodes.length).map((n) => n.op));
    const fn = join(tmp('grad'), 'graph.py');
    writeFileSync(fn, renderGraphFunction(graph, graph.gradients.map((g) => g.node), 'graph_values'));
    const errors = JSON.parse(
      runPython(['test/compiler/export/run_graph.py', out, fn, '--names', JSON.stringify(graph.gradients.map((g) => g.name)), '--checkpoint', join(dir, 'llava'), '--vision-tower', join(dir, 'clip'), '--batch', join(dir, 'batch.safetensors'), '--expected', kilnGrads]),
    ) as Record<string, number>;
    const worst = Math.max(...Object.values(errors));
    console.log(`backward graph rendered op by op (${[...backward].sort().join(', ')}): worst gradient rel error ${worst.toExponential(2)} over ${Object.keys(errors).length} tensors`);
    expect(Object.keys(errors)).toHaveLength(graph.gradients.length);
    expect(worst).toBeLessThan(2e-2);
  });
});
