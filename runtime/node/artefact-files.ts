// Artefacts on disk (Node only): a folder with manifest.json and kernels/*.wgsl. Writing is
// plain files in a fixed order; reading checks the manifest and that every kernel file exists,
// naming the file that is missing or corrupt.
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { MANIFEST_FILE, parseManifest, type Artefact } from '../artefact.js';
import { KilnError, describeFsError } from '../errors.js';

/** Writes `files` (path -> text, from compiler/emit/artefact.ts `artefactFiles`) under `dir`. */
export function writeArtefact(dir: string, files: ReadonlyMap<string, string>): void {
  for (const [rel, text] of files) {
    const path = nodePath.join(dir, rel);
    try {
      fs.mkdirSync(nodePath.dirname(path), { recursive: true });
      fs.writeFileSync(path, text);
    } catch (e) {
      throw new KilnError(`cannot write: ${describeFsError(e)}`, { file: path, cause: e });
    }
  }
}

/** Reads an artefact folder: the manifest, checked, and the WGSL of every kernel it names. */
export function readArtefact(dir: string): Artefact {
  const read = (path: string, what: string): string => {
    try {
      return fs.readFileSync(path, 'utf8');
    } catch (e) {
      throw new KilnError(`${what}: ${describeFsError(e)}`, { file: path, cause: e });
    }
  };
  const manifestPath = nodePath.join(dir, MANIFEST_FILE);
  const manifest = parseManifest(read(manifestPath, 'cannot read the manifest'), manifestPath);
  const kernels = new Map<string, string>();
  for (const e of Object.values(manifest.entries))
    for (const d of e.dispatches) if (!kernels.has(d.kernel)) kernels.set(d.kernel, read(nodePath.join(dir, d.kernel), 'kernel file missing or unreadable'));
  return { manifest, kernels };
}
