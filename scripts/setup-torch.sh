#!/usr/bin/env bash
# PyTorch for the `kiln export --target torch` tests (test/compiler/export/) and the golden
# scripts: a venv at .venv-torch/ with torch from the machine's wheel folders, as
# test/golden/README.md installs it (no network). The tests find it there (or through
# KILN_TORCH_PYTHON) and fail, not skip, when torch is missing. A venv that already imports torch
# is kept. Measured: 250 s for a fresh venv on the 2-core dev machine under load.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
if ! .venv-torch/bin/python -c 'import torch, safetensors' 2>/dev/null; then
  python3 -m venv .venv-torch
  .venv-torch/bin/pip install --quiet --no-index --find-links /opt/pypi/files --find-links /opt/pypi-more/files \
    --find-links /opt/wheels "torch==2.13.0+cpu" safetensors numpy
fi
echo "setup-torch: .venv-torch ready in $(( $(date +%s) - started )) s: torch $(.venv-torch/bin/python -c 'import torch; print(torch.__version__)')"
