#!/usr/bin/env bash
# PyTorch for the `kiln export --target torch` tests (test/compiler/export/) and the golden
# scripts: a venv at .venv-torch/ with torch from the machine's wheel folders, as
# test/golden/README.md installs it (no network), and transformers, tokenizers and Pillow for the
# exported data.py (Kiln's data pipeline in Python; Pillow 12.3.0 is the version the image golden
# files were made with, so pixels compare exactly). The tests find it there (or through
# KILN_TORCH_PYTHON) and fail, not skip, when it is missing. A venv that already imports everything
# is kept; one with torch alone gets the rest added. Measured: 250 s for a fresh venv on the 2-core
# dev machine under load; adding transformers, tokenizers and Pillow: 14 s.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
WHEELS=(--no-index --find-links /opt/pypi/files --find-links /opt/pypi-more/files --find-links /opt/wheels)
if ! .venv-torch/bin/python -c 'import torch, safetensors' 2>/dev/null; then
  python3 -m venv .venv-torch
  .venv-torch/bin/pip install --quiet "${WHEELS[@]}" "torch==2.13.0+cpu" safetensors numpy
fi
if ! .venv-torch/bin/python -c 'import transformers, tokenizers, PIL' 2>/dev/null; then
  .venv-torch/bin/pip install --quiet "${WHEELS[@]}" "transformers==5.18.0" "tokenizers==0.23.2" "pillow==12.3.0"
fi
echo "setup-torch: .venv-torch ready in $(( $(date +%s) - started )) s: torch $(.venv-torch/bin/python -c 'import torch; print(torch.__version__)'), transformers $(.venv-torch/bin/python -c 'import transformers; print(transformers.__version__)')"
