// Every command's --help names each option once: the shared spec options' lines and a command's
// own description of the same flag (generate and train describe their --json) must not both appear.
import { describe, expect, it } from 'vitest';
import { commands } from '../../../compiler/cli/commands.js';
import { main } from '../../../compiler/cli/main.js';
import { Output } from '../../../compiler/cli/output.js';

describe.each(Object.keys(commands))('kiln %s --help', (name) => {
  it('lists each option once', async () => {
    const out = new Output(true);
    expect(await main([name, '--help'], out)).toBe(0);
    const flags = out.out.join('\n').split('\n').map((l) => /^\s+(--[a-z0-9-]+)/.exec(l)?.[1]).filter((f): f is string => f !== undefined);
    expect(flags.filter((f, i) => flags.indexOf(f) !== i)).toEqual([]);
  });
});
