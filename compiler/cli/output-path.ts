// Output files are checked before any work starts: a path that cannot be written must fail in a
// second, not after the whole backward pass (which used to end in exit 70 with a bare ENOENT).
import { closeSync, existsSync, mkdirSync, openSync, statSync, unlinkSync } from 'node:fs';
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
  // One level at a time from the nearest existing folder: Node's recursive mkdir loops forever
  // under /proc (ENOENT that no parent creation fixes), and this names the level that failed.
  const missing: string[] = [];
  for (let d = dir; !existsSync(d) && dirname(d) !== d; d = dirname(d)) missing.unshift(d);
  for (const d of missing) {
    try {
      mkdirSync(d);
    } catch (e) {
      throw fail(`cannot create the folder ${d}: ${describeFsError(e)}`, e);
    }
  }
  if (!statSync(dir).isDirectory()) throw fail(`${dir} is not a folder`);
  const probe = `${path}.kiln-probe-${process.pid}`;
  try {
    closeSync(openSync(probe, 'wx'));
  } catch (e) {
    throw fail(`cannot write in ${dir}: ${describeFsError(e)}`, e);
  }
  unlinkSync(probe);
}
