// `kiln plan SPEC` reports the plan `kiln compile` writes and the runtime runs: the same entry
// compiled, so its dispatches, intermediate bytes and gradient bytes equal what `kiln plan DIR`
// reads from the artefact's manifest.
import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';

async function kiln(...argv: string[]): Promise<unknown> {
  const out = new Output(true);
  const code = await main(argv, out);
  expect(code, out.err.join('\n')).toBe(0);
  return JSON.parse(out.out.join('\n'));
}

describe('kiln plan SPEC and kiln plan DIR', () => {
  it('the training plan of a spec is the grads entry of its artefact', async () => {
    const shape = ['--config', 'tiny', '--batch-size', '2', '--seq', '24'];
    const spec = (await kiln('plan', 'models/vwlmm.kiln', ...shape, '--train', '--json')) as { dispatches: number; gradients: number; outputs: number; activations: { slots: number } };
    const dir = mkdtempSync(join(tmpdir(), 'kiln-plan-'));
    await kiln('compile', 'models/vwlmm.kiln', ...shape, '--entries', 'grads', '--out', dir, '--json');
    const art = (await kiln('plan', dir, '--json')) as { entries: { name: string; dispatches: number; buffers: Record<'temp' | 'output', { bytes: number }> }[] };
    const grads = art.entries.find((e) => e.name === 'grads')!;
    expect(spec.dispatches).toBe(grads.dispatches);
    expect(spec.activations.slots).toBe(grads.buffers.temp.bytes);
    // The entry's outputs are the gradients and the loss scalars (the total and its two terms).
    expect(spec.gradients + spec.outputs).toBe(grads.buffers.output.bytes);
  }, 120_000);
});
