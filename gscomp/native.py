"""Build-once loader for gscomp's native C++/OpenMP extensions (sources under `cuda/`).

``load(kind)`` returns one of the extensions named in `SOURCES` (the CPU rasterizer, the rANS coder,
...). Each is compiled at first use with `torch.utils.cpp_extension.load` into a cache directory
(``$GSCOMP_CACHE`` or ``~/.cache/gscomp``) whose name hashes the source, the flags and the
torch/Python versions, so a changed source or a new torch rebuilds instead of loading a stale binary.
Flags are ``-O3 -fno-trapping-math -ffp-contract=off -fopenmp -std=c++17`` (no fused multiply-adds:
the same results with or without FMA hardware): no ``-march=native`` (binaries and results must not depend on the
build machine) and no ``-ffast-math`` (the kernels mirror the reference's float operations).

A built module is imported straight from its cache file once a stamp file next to it says it was
finished (a process killed while linking leaves a truncated file, and importing one is a SIGBUS).
Builds are serialised by an flock on ``build.lock`` in its directory, which the kernel releases
when a process dies: torch's own lock file (``lock``, which torch waits on forever) is left behind
by a process killed while loading, so it is removed once the flock is held.

Each new build removes the builds of other versions that have not been loaded for 30 days.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from . import data_dir
from .errors import GscompError, one_line


ROOT = data_dir("cuda")  # the C++ sources
# kind -> (source file, what it is: shown while compiling and in errors, fallback advice)
SOURCES = {
    "raster": ("rasterize_cpu.cpp", "native CPU rasterizer", "or use backend='torch'"),
    "rans": ("rans_cpu.cpp", "native rANS coder", "or .gsz coding stays on constriction (slower)"),
    "hashgrid": ("hashgrid_cpu.cpp", "native hash-grid encoder", "or the colour field runs on the (slower) PyTorch hash grid"),
}
SOURCE = ROOT / SOURCES["raster"][0]  # the rasterizer's source (benchmarks print its path)
# -fno-trapping-math changes no result (traps are off anyway); it lets GCC vectorise min/max.
# -ffp-contract=off: never fuse a * b + c into one FMA (GCC does by default where the ISA has FMA,
# e.g. aarch64), so decoded floats are the same on every machine.
CFLAGS = ["-O3", "-fno-trapping-math", "-ffp-contract=off", "-fopenmp", "-std=c++17"]
LDFLAGS = ["-fopenmp"]

_lock = threading.Lock()
_modules: dict = {}
_failed: dict = {}  # kind -> its NativeBuildError: one build attempt per process (`warm`, then the user)


COMPILER = "install a C++ compiler with OpenMP"


class NativeBuildError(GscompError):
    """An extension could not be built (or loaded); ``reason`` is the one-line why (the compiler's
    first error, the cache folder's OS error), ``fix`` what the user can do about it."""

    def __init__(self, what: str, reason: str, advice: str, fix: str = COMPILER):
        self.what, self.reason, self.fix = what, reason, fix
        super().__init__(f"could not build the {what} ({reason}); {fix}, {advice}")


def _build_failure(e: Exception) -> str:
    """The telling line of a failed build's log (the compiler's first error, not ninja's last)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # torch's and ninja's own lines, and the echoed compile commands, say nothing of the cause
    said = [ln for ln in lines if not ln.startswith(("Error building extension", "[", "FAILED", "ninja:"))
            and " -o " not in ln]
    for ln in said:
        if any(k in ln.lower() for k in ("error", "not found", "no such file")):
            return ln[:300]
    return (said or lines or [type(e).__name__])[0][:300]


def cache_dir() -> Path:
    root = os.environ.get("GSCOMP_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "gscomp"


def _build_tag(source: Path) -> str:
    h = hashlib.sha256()
    h.update(source.read_bytes())
    h.update(" ".join(CFLAGS + LDFLAGS).encode())
    h.update(torch.__version__.encode())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _build_lock(build: Path, wait: bool = True):
    """Exclusive flock on ``build/build.lock`` (released by the kernel if this process dies).
    Yields whether it is held: with ``wait`` False, False when another process holds it (and
    when locks are unavailable)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's own lock file only
        yield wait
        return
    try:
        f = open(build / "build.lock", "a+b")
    except OSError:  # a read-only cache: nothing can be built there, loading needs no lock
        yield wait
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            print("gscomp: waiting for another gscomp process to finish compiling...", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _stamped(so: Path, stamp: Path) -> bool:
    """Whether ``so`` is a finished build: the stamp written after it loaded holds its size."""
    try:
        return stamp.read_text() == str(so.stat().st_size)
    except (OSError, ValueError):
        return False


def _import(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load(kind: str = "raster"):
    """Return the compiled extension ``kind`` (see `SOURCES`), compiling it once if needed."""
    mod = _modules.get(kind)
    if mod is not None:
        return mod
    with _lock:
        if kind in _modules:
            return _modules[kind]
        if kind in _failed:
            raise _failed[kind]
        try:
            mod = _load(kind)
        except NativeBuildError as e:
            _failed[kind] = e
            raise
        _modules[kind] = mod
        return mod


def _load(kind: str):
    """`load` under its lock: find, build or rebuild, and import one extension."""
    fname, what, advice = SOURCES[kind]
    source = ROOT / fname
    if not source.exists():
        raise NativeBuildError(what, f"its source {source} is missing", advice,
                               "reinstall gscomp (pip install from its source tree)")
    tag = _build_tag(source)
    name = f"gscomp_{kind}_cpu_{tag}"
    build = cache_dir() / "native" / tag
    so, stamp = build / f"{name}.so", build / f"{name}.so.ok"
    try:
        if not _stamped(so, stamp):  # (a read-only cache that holds the build still loads)
            build.mkdir(parents=True, exist_ok=True)
        with _build_lock(build):  # (not while another process writes the file)
            mod = None
            if _stamped(so, stamp):
                try:
                    mod = _import(name, so)
                    _mark_used(stamp)
                except (ImportError, OSError) as e:  # a damaged file, or built where other libraries were
                    print(f"gscomp: the cached {what} does not load ({one_line(e, 200)}); rebuilding it",
                          file=sys.stderr, flush=True)
            if mod is None:  # never built, or cut short: importing a truncated .so is a SIGBUS, so relink
                mod = _build(name, source, build, what, advice)
                stamp.write_text(str(so.stat().st_size))
                _prune(build.parent, keep=build)
    except OSError as e:  # the cache folder: read-only, not a folder, full, no permission
        raise NativeBuildError(what, f"its build cache {build.parent.parent}: {e.strerror or e}", advice,
                               "set GSCOMP_CACHE to a writable folder") from None
    return mod


def warm(*kinds: str) -> None:
    """Load (building on first use) the given extensions now, so that a first-ever build is not
    counted in the time or rate a command reports next. A failure is left for the code that needs
    the extension: it falls back or says why, as it would have anyway."""
    for kind in kinds:
        with contextlib.suppress(GscompError):
            load(kind)


DAY = 86400.0
UNUSED_DAYS = 30  # a build no process has loaded for this long is removed (when a new one is made)


def _mark_used(stamp: Path) -> None:
    """Touch the stamp at most once a day: its mtime says when the build was last loaded."""
    with contextlib.suppress(OSError):  # a read-only cache is never pruned either
        if time.time() - stamp.stat().st_mtime > DAY:
            os.utime(stamp)


def _prune(native: Path, keep: Path) -> None:
    """Remove the builds under ``native`` that no process has loaded for UNUSED_DAYS (each gscomp
    or torch version and each source change makes its own, ~1-2 MB), and unfinished ones left
    for a day. Run only after a new build, so loading never pays for it."""
    now = time.time()
    with contextlib.suppress(OSError):
        for d in native.iterdir():
            if d == keep or not d.is_dir():
                continue
            with contextlib.suppress(OSError):
                stamps = list(d.glob("*.so.ok"))
                last = max((st.stat().st_mtime for st in stamps), default=d.stat().st_mtime)
                if now - last > (UNUSED_DAYS if stamps else 1) * DAY:
                    with _build_lock(d, wait=False) as held:  # never under a process loading it
                        if held:
                            shutil.rmtree(d)


def _prctl_subreaper(on: bool) -> bool:
    """Make this process the "child subreaper" of its descendants (Linux only): an orphaned
    descendant is reparented to it instead of to init. Whether that worked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _children_in(folder: Path) -> list[int]:
    """This process's child processes whose working folder is ``folder`` (Linux /proc)."""
    me, found = os.getpid(), []
    with contextlib.suppress(OSError):
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{d}/stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # (the name in parentheses may hold spaces)
                if ppid == me and os.readlink(f"/proc/{d}/cwd") == str(folder):
                    found.append(int(d))
    return found


@contextlib.contextmanager
def _reaping_compilers(build: Path):
    """A build stopped by a signal (SIGTERM raises `Stopped` here) makes subprocess.run kill
    ninja, but not the compilers ninja started: they ran on for the rest of the ~40 s build,
    writing into the cache. Inside this block, this process adopts such orphans (subreaper),
    and when the block is left by an exception it kills and reaps the ones working in ``build``,
    and the children they leave in turn (a compiler driver's cc1plus, as, ld)."""
    adopting = _prctl_subreaper(True)
    try:
        yield
    except BaseException:
        if adopting:
            for _ in range(8):  # generations: sh -c -> c++ -> cc1plus
                pids = _children_in(Path(os.path.realpath(build)))
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                for pid in pids:
                    with contextlib.suppress(OSError):
                        os.waitpid(pid, 0)
        raise
    finally:
        if adopting:
            _prctl_subreaper(False)


def _build(name: str, source: Path, build: Path, what: str, advice: str):
    """Compile with torch's cpp_extension (under `_build_lock`)."""
    print(f"gscomp: compiling the {what} (once, ~40 s)...", file=sys.stderr, flush=True)
    for stale in (build / "lock", build / f"{name}.so"):  # left by a killed process (we hold the flock)
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    import logging

    from torch.utils.cpp_extension import load as _load

    # torch logs a many-line banner (e.g. about an unknown compiler); the error below says enough
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with _reaping_compilers(build):
            return _load(
                name=name,
                sources=[str(source)],
                # copies: torch appends its own -L/-l flags to the lists it is given, which would
                # change the next module's build tag and make every process rebuild it
                extra_cflags=list(CFLAGS),
                extra_ldflags=list(LDFLAGS),
                build_directory=str(build),
                verbose=False,
            )
    except Exception as e:  # compiler missing or failing: say what to do instead
        # (a full disk fails the compiler too: more compilers would not help)
        fix = (f"free disk space for the build ({build.parent.parent} and the compiler's temporary folder)"
               if "No space left on device" in str(e) else COMPILER)
        raise NativeBuildError(what, _build_failure(e), advice, fix) from e
    finally:
        log.setLevel(level)


__all__ = ["load", "warm", "cache_dir", "NativeBuildError", "SOURCES", "SOURCE"]
