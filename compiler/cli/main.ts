// The `kiln` command line: parses arguments, runs one command, and turns every failure into a
// message and an exit code (1: bad spec or input file, 2: bad usage, 3: no usable WebGPU adapter
// for --backend webgpu). No stack traces.
import { DiagnosticError, renderDiagnostics } from '../diagnostics.js';
import { UsageError } from '../check/index.js';
import { KilnError, NoAdapterError } from '../../runtime/errors.js';
import { commands, type Command } from './commands.js';
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

const USAGE = `usage: kiln <command> SPEC [options]

commands:
${Object.entries(commands)
  .map(([name, c]) => `  ${name.padEnd(9)} ${c.summary}`)
  .join('\n')}

Run 'kiln <command> --help' for its options; 'kiln --version' for the version.`;

export async function main(argv: readonly string[], out: Output = new Output()): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    out.stdout(USAGE);
    return name ? 0 : 2;
  }
  if (name === '--version' || name === '-V' || name === 'version') {
    out.stdout(versionText());
    return 0;
  }
  const command: Command | undefined = commands[name];
  if (!command) {
    out.stderr(`kiln: unknown command '${name}'\n\n${USAGE}`);
    return 2;
  }
  try {
    return await command.run(rest, out);
  } catch (e) {
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
