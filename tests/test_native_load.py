"""Loading the native extensions survives what killed processes leave in the build cache."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gscomp import native

REPO = Path(__file__).resolve().parents[1]
LOAD = "from gscomp import native; native.load('rans'); print('ok')"


def _cached_build(tmp_path: Path) -> Path:
    """A copy of this machine's cached rANS build, in a cache of its own under tmp_path."""
    try:
        mod = native.load("rans")
    except Exception as e:  # no compiler here
        pytest.skip(f"native coder unavailable: {e}")
    src = Path(mod.__file__).parent
    dst = tmp_path / "cache" / "native" / src.name
    shutil.copytree(src, dst)
    return dst


def _run(cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, GSCOMP_CACHE=str(cache), PYTHONPATH=os.pathsep.join(
        [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    return subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=240)


def test_stale_torch_lock_does_not_hang(tmp_path):
    """torch's `lock` file, left by a process killed while loading, made every later process wait
    forever (torch's FileBaton); a built module is now imported directly."""
    build = _cached_build(tmp_path)
    (build / "lock").touch()
    r = _run(tmp_path / "cache")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
    assert "compiling" not in r.stderr


def test_half_written_module_is_rebuilt(tmp_path):
    """A truncated .so (a process killed while linking) is rebuilt, not a crash or a hang."""
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler")
    build = _cached_build(tmp_path)
    so = next(build.glob("gscomp_rans_cpu_*.so"))
    so.write_bytes(so.read_bytes()[:4096])
    (build / "lock").touch()
    r = _run(tmp_path / "cache")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
    assert "compiling" in r.stderr and not (build / "lock").exists()
