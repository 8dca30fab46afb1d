// The Python with torch (and transformers, tokenizers, Pillow for data.py) that the export tests
// run exported code with. .ci/run creates the venv at .venv-torch/ (scripts/setup-torch.sh: the
// machine's wheel folders, as test/golden/README.md installs them) and sets KILN_TORCH_PYTHON; locally the same folder, or the golden README's /tmp/gvenv, serves.
// A missing torch fails the tests that need it (never a skip: CI must run them).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

const CANDIDATES = [process.env['KILN_TORCH_PYTHON'], resolve('.venv-torch/bin/python'), '/tmp/gvenv/bin/python'];

let found: string | undefined;

/** The path of a python that imports torch, safetensors, transformers and PIL (data.py); throws saying how to make one. */
export function torchPython(): string {
  if (found) return found;
  const tried: string[] = [];
  for (const p of CANDIDATES) {
    if (!p) continue;
    tried.push(p);
    if (!existsSync(p)) continue;
    const r = spawnSync(p, ['-c', 'import torch, safetensors, transformers, PIL'], { encoding: 'utf8' });
    if (r.status === 0) return (found = p);
  }
  throw new Error(
    `no Python with torch, safetensors, transformers and Pillow (tried ${tried.join(', ')}); create one as .ci/run does: ` +
      'bash scripts/setup-torch.sh (a venv at .venv-torch/ from the machine\'s wheel folders), or set KILN_TORCH_PYTHON',
  );
}

/** Runs `python args...` in the repository root; returns stdout, throwing with stderr on failure. */
export function runPython(args: readonly string[], env: Record<string, string> = {}, timeoutMs = 300_000): string {
  const r = spawnSync(torchPython(), [...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`python ${args.join(' ')} exited ${r.status ?? r.signal}:\n${r.stderr}`);
  return r.stdout;
}
