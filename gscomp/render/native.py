"""Build-once loader for the native CPU rasterizer (`cuda/rasterize_cpu.cpp`).

The extension is compiled at first use with `torch.utils.cpp_extension.load` into a cache directory
(``$GSCOMP_CACHE`` or ``~/.cache/gscomp``) whose name hashes the source, the flags and the
torch/Python versions, so a changed source or a new torch rebuilds instead of loading a stale binary.
Flags are ``-O3 -fno-trapping-math -fopenmp``: no ``-march=native`` (binaries and results must not depend on the
build machine) and no ``-ffast-math`` (the kernels mirror the reference's float operations).
"""
from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path

import torch

from ..errors import GscompError

SOURCE = Path(__file__).resolve().parents[2] / "cuda" / "rasterize_cpu.cpp"
# -fno-trapping-math changes no result (traps are off anyway); it lets GCC vectorise min/max.
CFLAGS = ["-O3", "-fno-trapping-math", "-fopenmp", "-std=c++17"]
LDFLAGS = ["-fopenmp"]

_lock = threading.Lock()
_module = None


def cache_dir() -> Path:
    root = os.environ.get("GSCOMP_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "gscomp"


def _build_tag() -> str:
    h = hashlib.sha256()
    h.update(SOURCE.read_bytes())
    h.update(" ".join(CFLAGS + LDFLAGS).encode())
    h.update(torch.__version__.encode())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def load():
    """Return the compiled extension module, compiling it once if needed."""
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is not None:
            return _module
        if not SOURCE.exists():
            raise GscompError(f"native CPU rasterizer source is missing: {SOURCE}")
        tag = _build_tag()
        name = f"gscomp_raster_cpu_{tag}"
        build = cache_dir() / "native" / tag
        build.mkdir(parents=True, exist_ok=True)
        if not (build / f"{name}.so").exists():
            print("gscomp: compiling native CPU rasterizer (once, ~40 s)...", file=sys.stderr, flush=True)
        from torch.utils.cpp_extension import load as _load

        try:
            _module = _load(
                name=name,
                sources=[str(SOURCE)],
                extra_cflags=CFLAGS,
                extra_ldflags=LDFLAGS,
                build_directory=str(build),
                verbose=False,
            )
        except Exception as e:  # compiler missing or failing: say what to do instead
            msg = str(e).strip().splitlines()
            raise GscompError(
                f"could not build the native CPU rasterizer ({msg[-1] if msg else type(e).__name__}); "
                "install a C++ compiler with OpenMP, or use backend='torch'"
            ) from e
        return _module


__all__ = ["load", "cache_dir", "SOURCE"]
