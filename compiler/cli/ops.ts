// `kiln ops`: the functions a spec can call, from the op registry's own surfaces.
import { surfaceOps } from '../ops/registry.js';
import { defineCommand, type Args } from './args.js';
import type { Output } from './output.js';

export const opsCommand = defineCommand({
  summary: 'list the functions a spec can call',
  description: 'Lists the functions a spec can call, with their arguments.',
  args: [],
  options: { json: { type: 'boolean', help: '[{"name", "inputs", "attrs", "doc"}] on stdout' } },
  examples: [
    { run: 'kiln ops', does: "every op's signature and what it computes" },
    { run: 'kiln ops --json', does: 'the same as JSON' },
  ],
  run: runOps,
});

async function runOps(values: { json?: boolean }, _args: Args, out: Output): Promise<number> {
  const ops = surfaceOps();
  if (values.json) {
    out.stdout(JSON.stringify(ops.map((o) => ({ name: o.name, inputs: o.surface!.inputs, attrs: o.surface!.attrs, doc: o.surface!.doc }))));
    return 0;
  }
  const builtins = [
    'dim(x, axis): the size of an axis, as a compile-time dimension',
    'py_index(i, n): Python\'s index i into n entries as 0 .. n-1 (negative i counts from the end); out of range is an error',
    'rope_inv_freq(head_dim, theta): transformers\' rotary inv_freq as a list of f32 numbers (for `buffer` checks)',
    'x[a:b, i, :]: slicing and indexing (negative bounds count from the end)', 'a + b, a - b, a * b, a / b, a @ b, comparisons: elementwise with broadcasting; numbers become scalars'];
  out.stdout([...ops.map((o) => o.surface!.doc), ...builtins].join('\n'));
  return 0;
}
