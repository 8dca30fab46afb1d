// The command table: each command is one file, thin over the library, exporting its CommandSpec
// (arguments, options, examples, run); main.ts turns the table into commander subcommands.
import type { CommandSpec } from './args.js';
import { checkCommand } from './check.js';
import { lossCommand } from './loss.js';
import { planCommand } from './plan.js';
import { opsCommand } from './ops.js';
import { dataCommand } from './data.js';
import { compileCommand } from './compile.js';
import { trainCommand } from './train.js';
import { generateCommand } from './generate.js';
import { graphCommand } from './graph.js';
import { profileCommand } from './profile.js';
import { doctorCommand } from './doctor.js';
import { wordsCommand } from './words.js';
import { exportCommand } from './export.js';
import { ablateCommand } from './ablate.js';

export const commands: Record<string, CommandSpec> = {
  check: checkCommand,
  ops: opsCommand,
  loss: lossCommand,
  data: dataCommand,
  compile: compileCommand,
  train: trainCommand,
  generate: generateCommand,
  graph: graphCommand,
  profile: profileCommand,
  doctor: doctorCommand,
  words: wordsCommand,
  export: exportCommand,
  ablate: ablateCommand,
  plan: planCommand,
};
