#!/usr/bin/env node
// The `kiln` command: TypeScript sources run through tsx, so there is no build step to forget.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../compiler/cli/main.ts');
const code = await main(process.argv.slice(2));
// dawn.node keeps the process alive, so it exits explicitly; but only once stdout and stderr
// have drained, or a pipe (`kiln check ... | less`) would lose the tail of the output.
const drained = (stream) => new Promise((resolve) => stream.write('', resolve));
await Promise.all([drained(process.stdout), drained(process.stderr)]);
process.exit(code);
