// The `kiln` command as a user runs it: a real process (bin/kiln.js), its exit code, stdout and
// stderr, so tests see the exit codes and messages a shell sees.
import { execFileSync } from 'node:child_process';

/** Runs `kiln args...` in the repository root with `env` added; never throws on a non-zero exit. */
export function kilnProcess(args: readonly string[], env: Record<string, string> = {}): { code: number; out: string; err: string } {
  try {
    const out = execFileSync('node', ['bin/kiln.js', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    return { code: 0, out, err: '' };
  } catch (e) {
    const x = e as { status: number; stdout: string; stderr: string };
    return { code: x.status, out: x.stdout, err: x.stderr };
  }
}
