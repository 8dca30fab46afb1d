// Parameter values from the spec's initialisers (`init normal(0.02)`, `zeros`, ...), with a
// seeded generator so that a run is reproducible: what `kiln train` starts from without a
// checkpoint, and what tests and benchmarks use for models nobody has weights for.
import type { ParamInfo } from '../ir/graph.js';
import { evalShape } from '../ir/dims.js';
import type { HostTensor } from '../../runtime/tensor.js';
import { numel } from '../../runtime/tensor.js';
import { seededRandom } from '../../runtime/random.js';

export { seededRandom };

/** Standard normal samples by Box-Muller. */
function normal(rand: () => number): () => number {
  return () => {
    const u = Math.max(rand(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
  };
}

export function initParam(p: ParamInfo, rand: () => number): HostTensor {
  const shape = evalShape(p.type.shape, new Map());
  const data = new Float32Array(numel(shape));
  const init = p.init;
  switch (init.kind) {
    case 'zeros':
      break;
    case 'ones':
      data.fill(1);
      break;
    case 'constant':
      data.fill(init.value);
      break;
    case 'normal': {
      const n = normal(rand);
      for (let i = 0; i < data.length; i++) data[i] = init.mean + init.std * n();
      break;
    }
    case 'uniform':
      for (let i = 0; i < data.length; i++) data[i] = init.low + (init.high - init.low) * rand();
      break;
  }
  return { dtype: 'f32', shape, data };
}

/** Every parameter of a graph, initialised in declaration order from one seed. */
export function initParams(params: readonly ParamInfo[], seed = 0): Map<string, HostTensor> {
  const rand = seededRandom(seed);
  return new Map(params.map((p) => [p.name, initParam(p, rand)]));
}
