// What the page (main.ts) leaves on `window.kiln` for test/examples/browser.e2e.ts: its own file,
// so that Node code can import the type without main.ts's DOM.

/** What the page leaves on window.kiln: the test reads it. */
export interface PageResult {
  done: boolean;
  error?: string;
  adapter?: string;
  /** the total loss each train_step reports (computed before that step's update), in order. */
  losses: number[];
  lmLosses: number[];
  vmLosses: number[];
  /** ms from the script's start to the first step's loss on the host: fetch, load, compile, step. */
  firstStepMs?: number;
  /** ms the steps after the first took, each. */
  stepMs: number[];
  /** greedy token ids after the prompt, with the trained weights. */
  tokens?: number[];
  generateMs?: number;
  /** each image patch's most probable visual word id, row-major (the overlay). */
  words?: number[];
}

/** The file beside a generation artefact's manifest that holds its GenerationInfo. */
export const GENERATION_FILE = 'generation.json';

/** generation.json (examples/browser/build.ts): the generation artefact's prompt length and cache size. */
export interface GenerationInfo {
  readonly promptLength: number;
  readonly capacity: number;
  readonly maxTokens: number;
}
