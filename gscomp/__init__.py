"""gscomp: train, compress, decode and view 3D Gaussian Splatting scenes."""
from .camera import Camera, Scene
from .errors import FormatError, GscompError
from .splats import Splats


# `gscomp.render` is the render subpackage, callable as its `render` function: a plain function
# under that name would be replaced by the subpackage as soon as anything imports it.
from . import render  # noqa: E402


__all__ = ["Splats", "Camera", "Scene", "render", "GscompError", "FormatError"]
__version__ = "0.1.0"
