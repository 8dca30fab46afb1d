// Where an entry's time goes: the entry loaded step by step (ArtefactProgram's stepByStep mode:
// each dispatch submitted alone and waited for), every dispatch's submit -> onSubmittedWorkDone
// wall time recorded by wrapping the queue's two methods. A dispatch's time here includes one
// submission round trip, which the normal run (one submission for all) does not pay; the bench
// reports that round trip beside it so the kernels' own share can be read off.
import type { Artefact } from '../runtime/artefact.js';
import type { HostTensor } from '../runtime/tensor.js';
import type { KilnDevice } from '../runtime/node/device.js';
import { ArtefactProgram } from '../runtime/webgpu/program.js';
import { median, round } from './vwlmm-inputs.js';

export interface DispatchTime {
  label: string;
  ms: number;
}

export async function profileDispatches(kd: KilnDevice, artefact: Artefact, entry: string, params: ReadonlyMap<string, HostTensor>, feeds: ReadonlyMap<string, HostTensor>, runs = 3): Promise<{ dispatches: DispatchTime[]; total_ms: number }> {
  const program = await ArtefactProgram.load(kd, artefact, { stepByStep: true, entries: [entry] });
  const queue = kd.device.queue;
  const submit = queue.submit.bind(queue);
  const done = queue.onSubmittedWorkDone.bind(queue);
  try {
    program.store.write(new Map([...params].filter(([n]) => program.store.has(n))));
    await program.run(entry, feeds);
    const labels = artefact.manifest.entries[entry]!.dispatches.map((d) => d.label);
    const times = labels.map((): number[] => []);
    let submitted = 0;
    let k = 0;
    queue.submit = (buffers: Iterable<GPUCommandBuffer>) => {
      submitted = performance.now();
      submit(buffers);
    };
    queue.onSubmittedWorkDone = async () => {
      await done();
      if (k < labels.length) times[k]!.push(performance.now() - submitted);
      k++;
    };
    for (let r = 0; r < runs; r++) {
      k = 0;
      await program.run(entry, feeds);
    }
    const dispatches = labels.map((label, i) => ({ label, ms: round(median(times[i]!), 3) }));
    return { dispatches, total_ms: round(dispatches.reduce((a, d) => a + d.ms, 0), 2) };
  } finally {
    queue.submit = submit;
    queue.onSubmittedWorkDone = done;
    program.destroy();
    program.store.destroy();
  }
}

/** The `n` slowest dispatches, summed by label. */
export function slowest(d: readonly DispatchTime[], n: number): DispatchTime[] {
  const by = new Map<string, number>();
  for (const x of d) by.set(x.label, (by.get(x.label) ?? 0) + x.ms);
  return [...by]
    .map(([label, ms]) => ({ label, ms: round(ms, 3) }))
    .sort((a, b) => b.ms - a.ms)
    .slice(0, n);
}
