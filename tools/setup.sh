#!/usr/bin/env bash
# Set up gscomp in ./.venv on a fresh machine (Python 3.11, CPU only).
#   bash tools/setup.sh            core + test + viewer dependencies
#   bash tools/setup.sh --cuda     also gsplat (installed --no-deps: its deps would pull a CUDA torch)
#   bash tools/setup.sh --bench    also the peers of tools/bench_codec.py (gaussforge, gsplat's PngCompression)
# torch is pinned to 2.13.0 (the CPU wheel); torchvision is never installed (a CUDA build breaks imports).
set -euo pipefail
cd "$(dirname "$0")/.."
# PYTHON=/path/to/python3.11 picks the interpreter (else python3.11, else python3)
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
  command -v "$PY" >/dev/null 2>&1 || { echo "gscomp setup: error: PYTHON=$PY is not an interpreter" >&2; exit 1; }
else
  PY=python3.11
  command -v "$PY" >/dev/null 2>&1 || PY=python3
fi
if [ ! -x .venv/bin/python ]; then
  echo "gscomp setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
# PyPI's Linux torch wheel is the CUDA build (GBs): where pip reaches PyPI itself, point it at
# PyTorch's CPU index, TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu (this machine's pip
# config finds the CPU wheel on disk)
$PIP install -q --disable-pip-version-check ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
$PIP install -q --disable-pip-version-check -e ".[test,viewer]"
if [ "${1:-}" = "--cuda" ] || [ "${1:-}" = "--bench" ]; then
  $PIP install -q --disable-pip-version-check packaging
  $PIP install -q --disable-pip-version-check --no-deps gsplat
fi
if [ "${1:-}" = "--bench" ]; then
  $PIP install -q --disable-pip-version-check -e ".[test,viewer,bench]"
fi
if .venv/bin/python -m pip list 2>/dev/null | grep -qi '^torchvision '; then
  echo "gscomp setup: error: torchvision is installed in .venv; remove it (pip uninstall torchvision)" >&2
  exit 1
fi
.venv/bin/python -c "import torch; torch.version.cuda and print(f'gscomp setup: note: torch {torch.__version__} is a CUDA build; on a CPU-only machine TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu gets the small CPU wheel')"
.venv/bin/python -c "import torch, gscomp; print(f'gscomp setup: ok (torch {torch.__version__}, gscomp {gscomp.__version__})')"
