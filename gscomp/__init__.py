"""gscomp: train, compress, decode and view 3D Gaussian Splatting scenes."""
import os as _os

# GNU OpenMP (torch's threads and our kernels') busy-waits 300k spins for the next parallel region.
# On a 2-core machine that other processes also use, the spinning thread starves the working one:
# 300 training steps took 21-25 s beside two busy processes, 11.6-12.5 s with 10k spins (5 s either
# way on an idle machine, where encode/decode times did not change). It only takes effect when set
# before torch loads OpenMP, i.e. when gscomp is imported first (the CLI); a user's own setting wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "10000")

# The public names load on first use (PEP 562), so `import gscomp.cli` does not load torch: the
# CLI imports it where a Ctrl-C during the import is handled (`gscomp.signals.deferred`).
_LAZY = {"Camera": ".camera", "Scene": ".camera", "Splats": ".splats", "GscompError": ".errors", "FormatError": ".errors"}


def __getattr__(name: str):
    if name == "render":
        # `gscomp.render` is the render subpackage, callable as its `render` function: a plain
        # function under that name would be replaced by the subpackage as soon as anything imports it.
        import importlib

        return importlib.import_module(".render", __name__)
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gscomp' has no attribute {name!r}")


def data_dir(name: str):
    """A folder of the source tree gscomp reads at run time (``configs``, ``cuda``): the copy a
    regular install puts at ``gscomp/_<name>`` (setup.py's package data), else ``<name>/`` beside
    the package (a checkout, or an editable install)."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    installed = here / f"_{name}"
    return installed if installed.is_dir() else here.parent / name


def __dir__():
    return sorted(set(globals()) | set(__all__))


__all__ = ["Splats", "Camera", "Scene", "render", "GscompError", "FormatError"]
__version__ = "0.1.0"
