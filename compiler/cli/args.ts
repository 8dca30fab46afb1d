// Option parsing shared by the commands: each command declares its arguments, options and
// examples once (a CommandSpec), and commander parses them, writes --help, and suggests the
// nearest option for an unknown one. Values stay strings, as typed: each command checks its
// numbers itself so that a bad value's message names the flag and what it expects (UsageError).
import { Command, Option } from 'commander';
import { UsageError } from '../check/index.js';
import type { CheckOptions, Override } from '../check/index.js';
import { parseOverride } from '../check/config.js';
import type { Output } from './output.js';

/** One option: `--NAME VALUE` (type 'string') or the switch `--NAME` (type 'boolean'). */
export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  /** repeatable: the values in the order given (`--set a=1 --set b=2`). */
  readonly multiple?: true;
  /** the value's name in --help, e.g. DIR (default VALUE). */
  readonly arg?: string;
  /** one line of --help; commander wraps it. */
  readonly help: string;
}

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

/** What a command receives: each option given, by its long name; absent options are absent. */
export type OptionValues<O extends OptionSpecs> = {
  [K in keyof O]?: O[K]['type'] extends 'boolean' ? boolean : O[K] extends { readonly multiple: true } ? string[] : string;
};

/** A positional argument; `required: false` ones are checked by the command itself. */
export interface ArgSpec {
  readonly name: string;
  readonly help: string;
  readonly required?: false;
}

/** An example for --help: the command line and what it does. */
export interface Example {
  readonly run: string;
  readonly does: string;
}

/** A `kiln` command: what --help shows and the function that runs it. */
export interface CommandSpec<O extends OptionSpecs = OptionSpecs> {
  /** one line in `kiln --help`. */
  readonly summary: string;
  /** what follows `kiln NAME` in the usage line (default: the arguments and [options]). */
  readonly usage?: string;
  /** the paragraph under the usage line. */
  readonly description: string;
  readonly args: readonly ArgSpec[];
  readonly options: O;
  /** at least one; `run` starts with `kiln NAME`. */
  readonly examples: readonly [Example, ...Example[]];
  /** text after the examples (notes that belong to no one option). */
  readonly epilog?: string;
  /** Runs the command: `args` in the order declared (undefined when an optional one is absent); returns the exit code. */
  run(values: OptionValues<O>, args: Args, out: Output): Promise<number>;
}

/** A command's positional arguments as `run` receives them. */
export type Args = readonly (string | undefined)[];

/** Declares a command; the identity, there so that the option table's literal types reach `run`. */
export function defineCommand<const O extends OptionSpecs>(spec: CommandSpec<O>): CommandSpec<O> {
  return spec;
}

/** The options every command that reads a spec takes. */
export const specOptions = {
  config: { type: 'string', arg: 'NAME', help: "the config to build (default: the spec file's first)" },
  set: { type: 'string', multiple: true, arg: 'KEY=VALUE', help: 'override a config value, e.g. --set text.layers=2 (repeatable)' },
  model: { type: 'string', arg: 'NAME', help: 'the model to build when the file declares several' },
  stage: { type: 'string', arg: 'NAME', help: 'the training stage whose frozen/trainable split applies (default: the last)' },
  json: { type: 'boolean', help: 'machine-readable output on stdout' },
} as const satisfies OptionSpecs;

/** The SPEC argument of the commands that read one. */
export const specArg: ArgSpec = { name: 'SPEC', help: 'a .kiln file' };

/** The examples block of a command's --help. */
export function examplesText(examples: readonly Example[]): string {
  return `\nExamples:\n${examples.map((e) => `  # ${e.does}\n  $ ${e.run}`).join('\n')}`;
}

/**
 * Adds `name` to `program` as a commander subcommand built from `spec`: its arguments, options
 * (values collected by long name, repeatable ones as arrays), --help with the examples, and an
 * action that runs the command and hands its exit code to `done`. Settings such as exitOverride
 * and the output streams are inherited from `program`, so set them before calling this.
 */
export function addCommand(program: Command, name: string, spec: CommandSpec, out: Output, done: (code: number) => void): Command {
  const cmd = program.command(name).summary(spec.summary).description(spec.description);
  if (spec.usage !== undefined) cmd.usage(spec.usage);
  for (const a of spec.args) cmd.argument(a.required === false ? `[${a.name}]` : `<${a.name}>`, a.help);
  for (const [flag, o] of Object.entries(spec.options)) {
    const opt = new Option(o.type === 'boolean' ? `--${flag}` : `--${flag} <${o.arg ?? 'VALUE'}>`, o.help);
    if (o.multiple) opt.argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]);
    cmd.addOption(opt);
  }
  cmd.addHelpText('after', examplesText(spec.examples) + (spec.epilog === undefined ? '' : `\n\n${cmd.createHelp().boxWrap(spec.epilog, 78)}`));
  cmd.showHelpAfterError(`(kiln ${name} --help lists its options)`);
  cmd.action(async (...a: unknown[]) => {
    const c = a[a.length - 1] as Command;
    const raw = c.opts();
    const values: Record<string, unknown> = {};
    for (const o of c.options) {
      const v: unknown = raw[o.attributeName()];
      if (v !== undefined && o.long !== undefined) values[o.long.slice(2)] = v;
    }
    done(await spec.run(values as OptionValues<OptionSpecs>, c.processedArgs as (string | undefined)[], out));
  });
  return cmd;
}

export function setOverrides(sets: readonly string[] | undefined): Override[] {
  return (sets ?? []).map((s) => {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new UsageError(`--set ${s}: expected KEY=VALUE, e.g. --set text.layers=2`);
    return { key: s.slice(0, eq).trim(), value: parseOverride(s.slice(eq + 1)), origin: `--set ${s}` };
  });
}

export function checkOptions(values: { config?: string; model?: string; stage?: string; set?: string[] }, extra: Override[] = []): CheckOptions {
  return {
    ...(values.config ? { config: values.config } : {}),
    ...(values.model ? { model: values.model } : {}),
    ...(values.stage ? { stage: values.stage } : {}),
    overrides: [...extra, ...setOverrides(values.set)],
  };
}

/** The one positional argument a command requires (commander checks required ones; this is for optional ones a mode needs). */
export function onePositional(positionals: readonly (string | undefined)[], what: string): string {
  const given = positionals.filter((p): p is string => p !== undefined);
  if (given.length !== 1) throw new UsageError(given.length === 0 ? `missing ${what}` : `unexpected arguments: ${given.slice(1).join(' ')}`);
  return given[0]!;
}
