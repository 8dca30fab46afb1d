// Option parsing shared by the commands (node:util's parseArgs, errors as UsageError).
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../check/index.js';
import type { CheckOptions, Override } from '../check/index.js';
import { parseOverride } from '../check/config.js';

export const specOptions = {
  config: { type: 'string' },
  set: { type: 'string', multiple: true },
  model: { type: 'string' },
  stage: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies NonNullable<ParseArgsConfig['options']>;

/** The spec options' help lines, for a command that describes its own --json. */
export const specHelpBase = `  --config NAME     the config to build (default: the spec file's first)
  --set KEY=VALUE   override a config value, e.g. --set text.layers=2 (repeatable)
  --model NAME      the model to build when the file declares several
  --stage NAME      the training stage whose frozen/trainable split applies (default: the last)`;

/** The spec options' help lines with the generic --json line. */
export const specHelp = `${specHelpBase}
  --json            machine-readable output on stdout`;

export function parse<O extends NonNullable<ParseArgsConfig['options']>>(argv: readonly string[], options: O) {
  try {
    return parseArgs({ args: [...argv], options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/^TypeError( \[[A-Z_]+\])?: /, ''));
  }
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

export function onePositional(positionals: readonly string[], what: string): string {
  if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? `missing ${what}` : `unexpected arguments: ${positionals.slice(1).join(' ')}`);
  return positionals[0]!;
}
