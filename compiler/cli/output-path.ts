// Output files are checked before any work starts: a path that cannot be written must fail in a
// second, not after the whole backward pass (which used to end in exit 70 with a bare ENOENT).
import { closeSync, mkdirSync, openSync, statSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { KilnError, describeFsError } from '../../runtime/errors.js';

/**
 * Makes sure `path` can be written by `flag` (`--grads`, `--out`): creates its folder, refuses a
 * path that is a folder, and writes and removes a probe file beside it, which catches read-only
 * file systems and missing permissions whoever the user is. Throws a KilnError naming the flag.
 */
export function checkOutputPath(flag: string, path: string): void {
  const fail = (why: string, cause?: unknown) => new KilnError(`${flag} ${path}: ${why}`, cause === undefined ? {} : { cause });
  try {
    if (statSync(path).isDirectory()) throw fail('is a folder; give a file name, e.g. grads.safetensors');
  } catch (e) {
    if (e instanceof KilnError) throw e;
  }
  const dir = dirname(path);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw fail(`cannot create the folder ${dir}: ${describeFsError(e)}`, e);
  }
  const probe = `${path}.kiln-probe-${process.pid}`;
  try {
    closeSync(openSync(probe, 'wx'));
  } catch (e) {
    throw fail(`cannot write in ${dir}: ${describeFsError(e)}`, e);
  }
  unlinkSync(probe);
}
