"""gscomp: train, compress, decode and view 3D Gaussian Splatting scenes."""
import os as _os

# GNU OpenMP (torch's threads and our kernels') busy-waits 300k spins for the next parallel region.
# On a 2-core machine that other processes also use, the spinning thread starves the working one:
# 300 training steps took 21-25 s beside two busy processes, 11.6-12.5 s with 10k spins (5 s either
# way on an idle machine, where encode/decode times did not change). It only takes effect when set
# before torch loads OpenMP, i.e. when gscomp is imported first (the CLI); a user's own setting wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from .camera import Camera, Scene
from .errors import FormatError, GscompError
from .splats import Splats


# `gscomp.render` is the render subpackage, callable as its `render` function: a plain function
# under that name would be replaced by the subpackage as soon as anything imports it.
from . import render  # noqa: E402


__all__ = ["Splats", "Camera", "Scene", "render", "GscompError", "FormatError"]
__version__ = "0.1.0"
