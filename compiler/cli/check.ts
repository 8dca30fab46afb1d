// `kiln check`: builds the graph and prints every parameter with its shape, count and whether
// it trains, with totals per component.
import type { CheckedModel } from '../check/index.js';
import { evalDim, isConst } from '../ir/dims.js';
import { checkOptions, defineCommand, specArg, specOptions, type Args, type OptionValues } from './args.js';
import type { Output } from './output.js';
import { loadAndCheck } from './spec.js';
import { numel } from '../../runtime/tensor.js';

export interface ParamRow {
  name: string;
  shape: number[];
  count: number;
  trainable: boolean;
  component: string;
}

export function paramRows(m: CheckedModel): ParamRow[] {
  return m.graph.params.map((p) => {
    const shape = p.type.shape.map((d) => (isConst(d) ? d : evalDim(d, new Map())));
    return { name: p.name, shape, count: numel(shape), trainable: p.trainable, component: p.component };
  });
}

export const fmt = (n: number): string => n.toLocaleString('en-US');

export const checkCommand = defineCommand({
  summary: 'check a spec and print its parameters (names, shapes, counts, trainable/frozen)',
  description: 'Checks a spec: names, configs, shapes and dtypes. Prints the parameter table.',
  args: [specArg],
  options: specOptions,
  examples: [
    { run: 'kiln check models/vwlmm.kiln --config vicuna7b', does: 'the parameter table, with totals per component' },
    { run: 'kiln check models/vwlmm.kiln --config tiny --set text.layers=3 --json', does: 'with one config value overridden, as JSON: {"parameters": [...], "total": N}' },
  ],
  run: runCheck,
});

async function runCheck(values: OptionValues<typeof specOptions>, args: Args, out: Output): Promise<number> {
  const spec = args[0]!;
  const model = loadAndCheck(spec, checkOptions(values), out);
  const rows = paramRows(model);
  const total = rows.reduce((a, r) => a + r.count, 0);
  if (values.json) {
    out.stdout(JSON.stringify({ parameters: rows.map(({ name, shape, count, trainable }) => ({ name, shape, count, trainable })), total }));
    return 0;
  }
  const nameW = Math.max(4, ...rows.map((r) => r.name.length));
  const shapeW = Math.max(5, ...rows.map((r) => `[${r.shape.join(', ')}]`.length));
  const countW = Math.max(5, ...rows.map((r) => fmt(r.count).length), fmt(total).length);
  const line = (a: string, b: string, c: string, d: string) => `${a.padEnd(nameW)}  ${b.padEnd(shapeW)}  ${c.padStart(countW)}  ${d}`;
  const lines = [`${model.modelName} (config ${model.configName}${model.stage ? `, stage ${model.stage.name}` : ''})`, '', line('name', 'shape', 'count', 'status'), line('-'.repeat(nameW), '-'.repeat(shapeW), '-'.repeat(countW), '-------')];
  for (const r of rows) lines.push(line(r.name, `[${r.shape.join(', ')}]`, fmt(r.count), r.trainable ? 'trainable' : 'frozen'));
  lines.push('', 'totals per component:');
  const compW = Math.max(9, ...model.components.map((c) => c.length));
  for (const c of model.components) {
    const rs = rows.filter((r) => r.component === c);
    const n = rs.reduce((a, r) => a + r.count, 0);
    const t = rs.filter((r) => r.trainable).reduce((a, r) => a + r.count, 0);
    lines.push(`  ${c.padEnd(compW)}  ${fmt(n).padStart(countW)}  ${t === n ? 'trainable' : t === 0 ? 'frozen' : `${fmt(t)} trainable`}`);
  }
  const trainable = rows.filter((r) => r.trainable).reduce((a, r) => a + r.count, 0);
  lines.push(`  ${'total'.padEnd(compW)}  ${fmt(total).padStart(countW)}  ${fmt(trainable)} trainable`);
  const g = model.graph;
  lines.push('', `graph: ${g.nodes.length} nodes, inputs ${g.inputs.map((i) => i.name).join(', ')}; outputs ${g.outputs.map((o) => o.name).join(', ') || 'none'}; losses ${g.losses.map((l) => `${l.name} (weight ${l.weight})`).join(', ') || 'none'}`);
  out.stdout(lines.join('\n'));
  return 0;
}
