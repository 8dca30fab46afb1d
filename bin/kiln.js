#!/usr/bin/env node
// The `kiln` command: TypeScript sources run through tsx, so there is no build step to forget.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../compiler/cli/main.ts');
const code = await main(process.argv.slice(2));
process.exit(code);
