#!/usr/bin/env node
// The `kiln` command: TypeScript sources run through tsx, so there is no build step to forget.
//
// dawn.node prints two notices straight to file descriptor 2 from native code when an adapter is
// requested ("maxDynamic{Uniform,Storage}BuffersPerPipelineLayout artificially reduced ..."):
// they say nothing about the user's run, and no JavaScript hook or Dawn toggle silences them.
// So the command runs in a child process whose stderr passes through a line filter that drops
// exactly those two lines and forwards everything else unchanged, as it arrives.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const DAWN_NOTICE = /^Warning: maxDynamic(Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.\r?$/;

const drained = (stream) => new Promise((resolve) => stream.write('', resolve));

if (process.env.KILN_STDERR_FILTERED !== '1') {
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: ['inherit', 'inherit', 'pipe'],
    env: { ...process.env, KILN_STDERR_FILTERED: '1' },
  });
  let pending = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    const lines = (pending + chunk).split('\n');
    pending = lines.pop();
    const kept = lines.filter((l) => !DAWN_NOTICE.test(l));
    if (kept.length > 0) process.stderr.write(`${kept.join('\n')}\n`);
  });
  // The terminal's Ctrl-C reaches both processes; a signal sent to this one alone is passed on.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  const [code, signal] = await new Promise((resolve) => child.on('close', (c, s) => resolve([c, s])));
  if (pending !== '' && !DAWN_NOTICE.test(pending)) process.stderr.write(pending);
  await drained(process.stderr);
  if (signal) {
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
  }
  process.exit(code ?? 1);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  const { main } = await import('../compiler/cli/main.ts');
  const code = await main(process.argv.slice(2));
  // dawn.node keeps the process alive, so it exits explicitly; but only once stdout and stderr
  // have drained, or a pipe (`kiln check ... | less`) would lose the tail of the output.
  await Promise.all([drained(process.stdout), drained(process.stderr)]);
  process.exit(code);
}
