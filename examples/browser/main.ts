// The page: fetches the artefact, the weights and a batch from where it is served, loads them on
// navigator.gpu through the typed bindings `kiln compile --ts` wrote (./model.ts), runs `steps`
// AdamW steps on the batch and draws each step's loss, then generates greedy tokens after a prompt
// (row 0's first ids and its image) with the trained weights, and overlays each image patch's most
// probable visual word (the VM head's output) on the image. Query: ?steps=N (default 8), ?lr=X (1e-3).
// The result is also left on `window.kiln` for test/examples/browser.test.ts.
import { ArtefactProgram, fetchArtefact, fetchBytes, getDevice, parseSafetensors, type HostTensor } from 'kiln/runtime';
import { greedyTokens, topVisualWords } from './generate.js';
import { VWLMM, type TrainStepInputs } from './model.js';
import { GENERATION_FILE, type GenerationInfo, type PageResult } from './result.js';

const result: PageResult = { done: false, losses: [], lmLosses: [], vmLosses: [], stepMs: [] };
(globalThis as unknown as { kiln: PageResult }).kiln = result;

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const status = (s: string): void => {
  $('status').textContent = s;
};
const log = (s: string): void => {
  $('log').textContent += `${s}\n`;
};

/** The loss curve: steps on x, loss on y (axes fitted to what is there so far). */
function draw(losses: readonly number[], steps: number): void {
  const canvas = $<HTMLCanvasElement>('curve');
  const g = canvas.getContext('2d');
  if (!g) return;
  const [w, h, pad] = [canvas.width, canvas.height, 48];
  g.clearRect(0, 0, w, h);
  g.strokeStyle = '#888';
  g.beginPath();
  g.moveTo(pad, pad / 2);
  g.lineTo(pad, h - pad);
  g.lineTo(w - pad / 2, h - pad);
  g.stroke();
  if (losses.length === 0) return;
  const lo = Math.min(...losses);
  const hi = Math.max(...losses);
  const span = hi - lo || 1;
  const x = (k: number): number => pad + ((w - 1.5 * pad) * k) / Math.max(1, steps - 1);
  const y = (v: number): number => h - pad - ((h - 1.5 * pad) * (v - lo)) / span;
  g.fillStyle = '#222';
  g.font = '12px sans-serif';
  g.fillText(hi.toFixed(4), 2, y(hi) + 4);
  g.fillText(lo.toFixed(4), 2, y(lo) + 4);
  g.fillText('step 1', pad, h - pad + 16);
  g.fillText(`step ${steps}`, x(steps - 1) - 30, h - pad + 16);
  g.fillText('loss', pad + 4, pad / 2 + 4);
  g.strokeStyle = '#c33';
  g.lineWidth = 2;
  g.beginPath();
  losses.forEach((v, k) => (k === 0 ? g.moveTo(x(k), y(v)) : g.lineTo(x(k), y(v))));
  g.stroke();
  g.fillStyle = '#c33';
  losses.forEach((v, k) => g.fillRect(x(k) - 2, y(v) - 2, 4, 4));
}

/**
 * The prompt's image (pixel_values [1, 3, S, S], CLIP-normalised, shown min-max stretched) with
 * each patch's most probable visual word id and its probability on top: the VW-LMM overlay.
 */
function drawWords(pixels: HostTensor, words: readonly { id: number; p: number }[]): void {
  const canvas = $<HTMLCanvasElement>('words');
  const g = canvas.getContext('2d');
  if (!g) return;
  const S = pixels.shape[2]!;
  const plane = S * S;
  let [lo, hi] = [Infinity, -Infinity];
  for (const v of pixels.data) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
  const img = new ImageData(S, S);
  for (let i = 0; i < plane; i++)
    for (let c = 0; c < 3; c++) img.data[4 * i + c] = Math.round((255 * (pixels.data[c * plane + i]! - lo)) / (hi - lo || 1));
  for (let i = 0; i < plane; i++) img.data[4 * i + 3] = 255;
  const small = document.createElement('canvas');
  [small.width, small.height] = [S, S];
  small.getContext('2d')!.putImageData(img, 0, 0);
  g.imageSmoothingEnabled = false;
  g.drawImage(small, 0, 0, canvas.width, canvas.height);
  const side = Math.round(Math.sqrt(words.length));
  const cell = canvas.width / side;
  g.font = '13px monospace';
  g.textAlign = 'center';
  words.forEach((w, k) => {
    const [x, y] = [(k % side) * cell, Math.floor(k / side) * cell];
    g.strokeStyle = 'rgba(255,255,255,0.8)';
    g.strokeRect(x, y, cell, cell);
    g.fillStyle = 'rgba(0,0,0,0.6)';
    g.fillRect(x + 4, y + cell / 2 - 16, cell - 8, 34);
    g.fillStyle = '#fff';
    g.fillText(`#${w.id}`, x + cell / 2, y + cell / 2);
    g.fillText(w.p.toFixed(3), x + cell / 2, y + cell / 2 + 14);
  });
}

async function run(): Promise<void> {
  const t0 = performance.now();
  const query = new URLSearchParams(location.search);
  const steps = Number(query.get('steps') ?? 8);
  const lr = Number(query.get('lr') ?? 1e-3);
  if (!Number.isInteger(steps) || steps < 1 || !(lr > 0)) throw new Error(`bad query: steps must be a positive integer and lr positive (got ${query.get('steps')}, ${query.get('lr')})`);
  status('requesting a WebGPU device…');
  const kd = await getDevice();
  result.adapter = kd.adapterName;
  log(`adapter: ${kd.adapterName}`);
  status('fetching the artefact, weights and batch…');
  const [artefact, weights, batchBytes] = await Promise.all([fetchArtefact('artefact/'), fetchBytes('weights.safetensors'), fetchBytes('batch.safetensors')]);
  log(`artefact: ${artefact.kernels.size} kernels; weights: ${(weights.length / 1024).toFixed(0)} KiB`);
  const batch = Object.fromEntries(parseSafetensors(batchBytes, 'batch.safetensors')) as unknown as TrainStepInputs;
  status('compiling kernels…');
  const model = await VWLMM.load(kd, artefact, weights);
  draw([], steps);
  for (let step = 1; step <= steps; step++) {
    const ts = performance.now();
    const out = await model.trainStep(batch, { lr, step });
    const [loss, lm, vm] = [out.loss.data[0]!, out['loss:lm'].data[0]!, out['loss:vm'].data[0]!];
    const now = performance.now();
    if (step === 1) result.firstStepMs = now - t0;
    else result.stepMs.push(now - ts);
    result.losses.push(loss);
    result.lmLosses.push(lm);
    result.vmLosses.push(vm);
    log(`step ${step}: loss ${loss.toFixed(6)} (lm ${lm.toFixed(6)}, vm ${vm.toFixed(6)})${step === 1 ? `, first step at ${result.firstStepMs!.toFixed(0)} ms` : ''}`);
    status(`step ${step} of ${steps}`);
    draw(result.losses, steps);
  }
  status('generating…');
  const [genArtefact, promptBytes, info] = await Promise.all([
    fetchArtefact('generate/'),
    fetchBytes('prompt.safetensors'),
    fetch(`generate/${GENERATION_FILE}`).then((r) => r.json() as Promise<GenerationInfo>),
  ]);
  // Over the trained model's own store: the weights the steps above left on the device.
  const gen = await ArtefactProgram.load(kd, genArtefact, { store: model.program.store });
  const tg = performance.now();
  result.tokens = await greedyTokens(gen, parseSafetensors(promptBytes, 'prompt.safetensors'), { ...info, onToken: (t) => log(`token ${t}`) });
  result.generateMs = performance.now() - tg;
  log(`generated ${result.tokens.length} tokens greedily in ${result.generateMs.toFixed(0)} ms: ${result.tokens.join(' ')}`);
  gen.destroy();

  status('reading the visual words…');
  const wordsProgram = await ArtefactProgram.load(kd, await fetchArtefact('words/'), { store: model.program.store });
  const pixels = parseSafetensors(promptBytes, 'prompt.safetensors').get('pixel_values')!;
  const words = await topVisualWords(wordsProgram, pixels);
  result.words = words.map((w) => w.id);
  drawWords(pixels, words);
  wordsProgram.destroy();
  model.destroy();
  status(`done: ${steps} steps, loss ${result.losses[0]!.toFixed(4)} -> ${result.losses[steps - 1]!.toFixed(4)}; generated ${result.tokens.join(' ')}`);
}

run()
  .catch((e: unknown) => {
    result.error = e instanceof Error ? e.message : String(e);
    status(`error: ${result.error}`);
    $('status').className = 'error';
  })
  .finally(() => {
    result.done = true;
  });
