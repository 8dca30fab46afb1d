// The assertion every malformed-input test makes: the call fails with a KilnError (the error users
// see as "error: <file>: tensor '<name>': ...") whose message contains each of the given parts.
import { expect } from 'vitest';
import { KilnError } from '../../runtime/errors.js';

export function expectKilnError(f: () => unknown, ...parts: string[]): KilnError {
  let caught: unknown;
  try {
    f();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(KilnError);
  for (const p of parts) expect((caught as KilnError).message).toContain(p);
  return caught as KilnError;
}
