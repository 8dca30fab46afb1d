// `npm run example:node-service [-- --artefact DIR --weights FILE --port N]`: the service of
// service.ts on 127.0.0.1. Without --artefact it serves the browser example's tiny VW-LMM
// (examples/browser/build.ts: compiled loss/train_step entries, seeded initial weights), built
// first. Try: curl -s localhost:8081/ ; then POST /loss with the JSON of a batch, or
// POST /words with {"image": "<base64 of a PNG>"}.
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { getDevice, readArtefact, KilnError } from 'kiln/runtime/node';
import { startService } from './service.js';
import { GENERATION_FILE, type GenerationInfo } from '../browser/result.js';

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new KilnError(`cannot read: ${(e as Error).message}`, { file });
  }
}

const USAGE = 'usage: npm run example:node-service -- [--artefact DIR --weights FILE.safetensors [--generate DIR] [--words DIR]] [--port N (default 8081)]';

try {
  const { values } = parseArgs({ options: { artefact: { type: 'string' }, weights: { type: 'string' }, generate: { type: 'string' }, words: { type: 'string' }, port: { type: 'string', default: '8081' } } });
  if ((values.artefact === undefined) !== (values.weights === undefined)) throw new KilnError(`--artefact and --weights go together\n${USAGE}`);
  let artefactDir = values.artefact;
  let weightsFile = values.weights;
  let generateDir = values.generate;
  let wordsDir = values.words;
  if (artefactDir === undefined) {
    const { buildBrowserExample } = await import('../browser/build.js');
    const built = await buildBrowserExample();
    artefactDir = join(built.dir, 'artefact');
    weightsFile = join(built.dir, 'weights.safetensors');
    generateDir = join(built.dir, 'generate');
    wordsDir = join(built.dir, 'words');
  }
  const weights = (() => {
    try {
      return readFileSync(weightsFile!);
    } catch (e) {
      throw new KilnError(`cannot read the weights: ${(e as Error).message}`, { file: weightsFile! });
    }
  })();
  const kd = await getDevice();
  const generation = generateDir === undefined ? undefined : { artefact: readArtefact(generateDir), ...(JSON.parse(readText(join(generateDir, GENERATION_FILE))) as GenerationInfo) };
  const words = wordsDir === undefined ? undefined : { artefact: readArtefact(wordsDir) };
  const service = await startService({ kd, artefact: readArtefact(artefactDir), weights: new Uint8Array(weights), generation, words }, Number(values.port));
  process.stdout.write(`kiln service on ${service.url} (${kd.adapterName}): GET /, POST /loss${generation ? ', POST /generate' : ''}${words ? ', POST /words' : ''}; Ctrl-C stops\n`);
  process.on('SIGINT', () => void service.close().then(() => process.exit(0)));
} catch (e) {
  process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(e instanceof KilnError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? 1 : 70);
}
