// The `kiln` command line: parses arguments, runs one command, and turns every failure into a
// message and an exit code (1: bad spec or input file, 2: bad usage, 3: no usable WebGPU adapter
// for --backend webgpu). No stack traces.
import { DiagnosticError, renderDiagnostics } from '../diagnostics.js';
import { UsageError } from '../check/index.js';
import { KilnError, NoAdapterError } from '../../runtime/errors.js';
import { Command, CommanderError } from 'commander';
import { addCommand, examplesText } from './args.js';
import { commands } from './commands.js';
import { Output } from './output.js';
import { readFileSync } from 'node:fs';

/** `kiln --version`: Kiln's version, and the Node and Dawn binding it runs on. */
export function versionText(): string {
  const pkg = (rel: string): string => {
    try {
      return (JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { version: string }).version;
    } catch {
      return 'unknown';
    }
  };
  return `kiln ${pkg('../../package.json')} (node ${process.versions.node}, webgpu ${pkg('../../node_modules/webgpu/package.json')})`;
}

const EXIT_CODES = `Exit codes: 0 ok; 1 bad input (a spec, data, weights or a file that cannot be read or
written); 2 bad usage (an unknown option, a missing argument, a bad flag value); 3 no usable
WebGPU adapter where one is required (see kiln doctor).`;

/**
 * The `kiln` program as commander sees it, writing through `out`: one subcommand per entry of
 * `commands`, errors thrown (exitOverride) rather than exiting, so main decides the exit code.
 */
export function program(out: Output, done: (code: number) => void): Command {
  const strip = (s: string) => s.replace(/\n$/, '');
  const p = new Command('kiln')
    .description('Kiln: a declarative model-graph compiler: spec -> typed graph -> autodiff -> fused WGSL kernels -> WebGPU')
    .usage('<command> [SPEC] [options]')
    .version(versionText(), '-V, --version', "Kiln's version, and the Node and Dawn binding it runs on")
    .exitOverride()
    .showSuggestionAfterError(true)
    .configureOutput({
      writeOut: (s) => out.stdout(strip(s)),
      writeErr: (s) => out.stderr(strip(s)),
      // commander's "error: ..." in the form Kiln's own usage errors take.
      outputError: (s, write) => write(s.replace(/^error: /, 'kiln: ')),
    });
  for (const [name, spec] of Object.entries(commands)) addCommand(p, name, spec, out, done);
  p.showHelpAfterError('(kiln --help lists the commands)');
  p.addHelpText(
    'after',
    `${examplesText([
      { run: 'kiln check models/vwlmm.kiln --config tiny', does: "the tiny config's parameters, with totals per component" },
      { run: 'kiln train --help', does: "one command's options and examples" },
    ])}\n\n${EXIT_CODES}`,
  );
  return p;
}

/** Runs `kiln argv...`, writing through `out`; returns the exit code (never throws). */
export async function main(argv: readonly string[], out: Output = new Output()): Promise<number> {
  let code = 0;
  // `kiln version` as well as `kiln --version`, as before commander.
  const args = argv[0] === 'version' ? ['--version', ...argv.slice(1)] : [...argv];
  try {
    await program(out, (c) => (code = c)).parseAsync(args, { from: 'user' });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version end parsing through the same path as a usage error.
      return e.code === 'commander.helpDisplayed' || e.code === 'commander.version' ? 0 : 2;
    }
    return report(e, out);
  }
}

export function report(e: unknown, out: Output): number {
  if (e instanceof DiagnosticError) {
    out.stderr(renderDiagnostics(e.diagnostics, out.sources));
    return e.diagnostics.some((d) => d.code === 'usage') ? 2 : 1;
  }
  if (e instanceof UsageError) {
    out.stderr(`kiln: ${e.message}`);
    return 2;
  }
  if (e instanceof NoAdapterError) {
    out.stderr(`error: ${e.message}`);
    return 3;
  }
  if (e instanceof KilnError) {
    out.stderr(`error: ${e.message}`);
    return 1;
  }
  // A bug in Kiln, not the user's input: still no stack trace unless asked for.
  const msg = e instanceof Error ? e.message : String(e);
  out.stderr(`kiln: internal error: ${msg}${process.env['KILN_DEBUG'] ? `\n${(e as Error).stack ?? ''}` : '\n(set KILN_DEBUG=1 for details)'}`);
  return 70;
}
