// The browser example end to end (`npm run test:browser`): builds examples/browser, serves it on
// 127.0.0.1, drives the page in headless Debian Chromium through playwright-core, and checks that
// the losses of its training steps and the greedy tokens generated after them equal the same
// artefacts' on the same bytes run by Node over Dawn. Writes the page's screenshot to out/browser-test/page.png. Needs /usr/bin/chromium
// (scripts/setup-browser.sh installs Debian's `chromium`) and a WebGPU adapter in Node.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import type { Server } from 'node:http';
import { chromium } from 'playwright-core';
import { buildBrowserExample, type BrowserExample } from '../../examples/browser/build.js';
import { serveStatic } from '../../examples/browser/serve.js';
import type { PageResult } from '../../examples/browser/result.js';
import { VWLMM, type TrainStepInputs } from '../../examples/browser/model.js';
import { getDevice } from '../../runtime/node/device.js';
import { readArtefact } from '../../runtime/node/artefact-files.js';
import { ArtefactProgram } from '../../runtime/webgpu/program.js';
import { greedyTokens, topVisualWords } from '../../examples/browser/generate.js';

const CHROMIUM = '/usr/bin/chromium';
const STEPS = 6;
const LR = 1e-3;
/**
 * Chromium's flags: WebGPU on (it is off on Linux by default), and none of the background
 * connections this sandbox's closed network refuses (/work/.library/env/machines/node.md). No
 * --disable-gpu: Chromium's WebGPU then runs on SwiftShader, its CPU Vulkan, headless.
 */
const ARGS = ['--enable-unsafe-webgpu', '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];
/**
 * Browser against Node, per step, relative. Both run the same WGSL, but through two WebGPU
 * implementations on two f32 CPU back ends: Chromium's Dawn on SwiftShader (Reactor/LLVM, subgroup
 * size 4) and dawn.node on Mesa lavapipe (llvmpipe, subgroup size 8). Each may contract a*b+c into
 * an FMA or not and vectorise reductions differently, so single ops differ by an ulp or so; the
 * golden tests' 2e-4 relative bound on a loss (f32 sums in another order) is the bound for step 1,
 * and it must still hold after a few AdamW steps at lr 1e-3, where an ulp in a gradient moves a
 * weight by at most ~lr and the loss by far less than 2e-4 of itself.
 */
const REL = 2e-4;

describe('examples/browser in headless Chromium', () => {
  let built: BrowserExample;
  let server: Server;
  let url: string;
  const outDir = resolve('out/browser-test');

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run \`bash scripts/setup-browser.sh\` (Debian's chromium package)`);
    mkdirSync(outDir, { recursive: true });
    built = await buildBrowserExample(join(outDir, 'site'));
    ({ server, url } = await serveStatic(built.dir));
  }, 300_000);
  afterAll(() => new Promise<void>((ok) => (server ? server.close(() => ok()) : ok())));

  it('the checked-in bindings are what kiln compile --ts writes for the page artefact', () => {
    expect(built.bindingsChanged).toBe(false);
  });

  it(`trains ${STEPS} steps in the page with Node's losses (WebGPU on SwiftShader against Dawn on lavapipe)`, async () => {
    // The Node run: the same artefact files, weights and batch bytes, the same bindings class.
    const kd = await getDevice();
    const model = await VWLMM.load(kd, readArtefact(join(built.dir, 'artefact')), built.weights);
    const batch = Object.fromEntries(built.batch) as unknown as TrainStepInputs;
    const node: number[] = [];
    let nodeTokens: number[];
    let nodeWords: number[];
    try {
      for (let step = 1; step <= STEPS; step++) node.push((await model.trainStep(batch, { lr: LR, step })).loss.data[0]!);
      const gen = await ArtefactProgram.load(kd, readArtefact(join(built.dir, 'generate')), { store: model.program.store });
      nodeTokens = await greedyTokens(gen, built.prompt, built.generation);
      gen.destroy();
      const words = await ArtefactProgram.load(kd, readArtefact(join(built.dir, 'words')), { store: model.program.store });
      nodeWords = (await topVisualWords(words, built.prompt.get('pixel_values')!)).map((w) => w.id);
      words.destroy();
    } finally {
      model.destroy();
    }
    expect(nodeTokens).toHaveLength(built.generation.maxTokens);
    expect(node[STEPS - 1]).toBeLessThan(node[0]!);

    const profile = mkdtempSync(join(tmpdir(), 'kiln-chromium-'));
    const ctx = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 800, height: 720 } });
    try {
      const page = ctx.pages()[0] ?? (await ctx.newPage());
      const consoleLines: string[] = [];
      page.on('console', (m) => consoleLines.push(m.text()));
      page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
      await page.goto(`${url}?steps=${STEPS}&lr=${LR}`);
      await page.waitForFunction(() => (globalThis as unknown as { kiln?: PageResult }).kiln?.done === true, undefined, { timeout: 400_000, polling: 500 });
      const r = await page.evaluate(() => (globalThis as unknown as { kiln: PageResult }).kiln);
      await page.screenshot({ path: join(outDir, 'page.png'), fullPage: true });
      expect(r.error, `page error; console:\n${consoleLines.join('\n')}`).toBeUndefined();
      expect(r.losses).toHaveLength(STEPS);
      const rel = r.losses.map((v, k) => Math.abs(v - node[k]!) / Math.abs(node[k]!));
      process.stdout.write(
        `browser (${r.adapter}) vs node: first step at ${r.firstStepMs!.toFixed(0)} ms, later steps ${r.stepMs.map((s) => s.toFixed(0)).join(', ')} ms\n` +
          r.losses.map((v, k) => `  step ${k + 1}: browser ${v} node ${node[k]} rel ${rel[k]!.toExponential(2)}\n`).join(''),
      );
      for (const [k, d] of rel.entries()) expect(d, `step ${k + 1}: browser ${r.losses[k]} vs node ${node[k]}`).toBeLessThan(REL);
      process.stdout.write(`generated: browser ${r.tokens?.join(' ')} (${r.generateMs?.toFixed(0)} ms), node ${nodeTokens.join(' ')}\n`);
      // Greedy tokens from logits that differ by a few ulps: equal unless two logits tie that closely.
      expect(r.tokens).toEqual(nodeTokens);
      process.stdout.write(`visual words: browser ${r.words?.join(' ')}, node ${nodeWords.join(' ')}\n`);
      // The same argmax rule over probabilities that differ by ulps; both implementations are
      // deterministic, so this is not flaky run to run (an untrained VM head is near-uniform, so a
      // SwiftShader or Mesa upgrade could flip a near-tie: compare the probabilities then).
      expect(r.words).toEqual(nodeWords);
      expect(readFileSync(join(outDir, 'page.png')).length).toBeGreaterThan(1000);
    } finally {
      await ctx.close();
      rmSync(profile, { recursive: true, force: true });
    }
  }, 600_000);
});
