// Child process of the kill test (train-checkpoint.test.ts): saves checkpoints under argv[2]
// (keep 2) forever, continuing after the newest one there as a resumed run would, printing
// "saved <step>" after each, until it is killed.
import { latestCheckpoint, openTrainingCheckpoint, saveCheckpoint } from '../../../runtime/node/checkpoint.js';
import { fakeContents } from './fake-run.js';

const [root, tensors, size, delayMs] = process.argv.slice(2);
const shape = { tensors: Number(tensors), size: Number(size), delayMs: Number(delayMs) };
const latest = latestCheckpoint(root!);
for (let step = latest === undefined ? 1 : openTrainingCheckpoint(latest).step + 1; ; step++) {
  await saveCheckpoint(root!, fakeContents(step, shape), { keep: 2 });
  process.stdout.write(`saved ${step}\n`);
}
