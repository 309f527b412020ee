#!/usr/bin/env bash
# Set up gscomp in ./.venv on a fresh machine (Python 3.11, CPU only).
#   bash tools/setup.sh            core + test + viewer dependencies
#   bash tools/setup.sh --cuda     also gsplat (installed --no-deps: its deps would pull a CUDA torch)
#   bash tools/setup.sh --bench    also the peers of tools/bench_codec.py (gaussforge, gsplat's PngCompression)
#                                  and matplotlib (tools/bench_rd.py's plot); options combine
# torch is pinned to 2.13.0 (the CPU wheel); torchvision is never installed (a CUDA build breaks imports).
set -euo pipefail
cuda=0 bench=0
for arg in "$@"; do
  case "$arg" in
    --cuda) cuda=1 ;;
    --bench) bench=1 ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gscomp setup: error: unknown option $arg (options: --cuda, --bench)" >&2; exit 2 ;;
  esac
done
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
  ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$ver" = "3.11" ] || echo "gscomp setup: note: gscomp is tested on Python 3.11, not $ver (PYTHON=/path/to/python3.11 picks one)" >&2
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
# PyPI's Linux torch wheel is the CUDA build (GBs): where pip reaches PyPI itself, point it at
# PyTorch's CPU index, TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu (this machine's pip
# config finds the CPU wheel on disk)
$PIP install -q --disable-pip-version-check ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
$PIP install -q --disable-pip-version-check -e ".[test,viewer]"
if [ $cuda = 1 ] || [ $bench = 1 ]; then
  $PIP install -q --disable-pip-version-check packaging
  $PIP install -q --disable-pip-version-check --no-deps gsplat
fi
if [ $bench = 1 ]; then
  $PIP install -q --disable-pip-version-check -e ".[test,viewer,bench]"
fi
if .venv/bin/python -m pip list 2>/dev/null | grep -qi '^torchvision '; then
  echo "gscomp setup: error: torchvision is installed in .venv; remove it (pip uninstall torchvision)" >&2
  exit 1
fi
.venv/bin/python -c "import torch; torch.version.cuda and print(f'gscomp setup: note: torch {torch.__version__} is a CUDA build; on a CPU-only machine TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu gets the small CPU wheel')"
.venv/bin/python -c "import torch, gscomp; print(f'gscomp setup: ok (torch {torch.__version__}, gscomp {gscomp.__version__})')"
