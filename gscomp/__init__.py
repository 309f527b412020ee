"""gscomp: train, compress, decode and view 3D Gaussian Splatting scenes."""
from .camera import Camera, Scene
from .errors import FormatError, GscompError
from .splats import Splats


def render(splats, cameras, *, sh_degree=None, background=None, backend="auto"):
    """Render ``splats`` from ``cameras``; see `gscomp.render.render`."""
    from .render import render as _render

    return _render(splats, cameras, sh_degree=sh_degree, background=background, backend=backend)


__all__ = ["Splats", "Camera", "Scene", "render", "GscompError", "FormatError"]
__version__ = "0.1.0"
