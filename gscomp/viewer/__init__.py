"""`gscomp view`: browser viewer on viser (see docs/viewer.md).

- `gscomp.viewer.load`: `load_view_file(path) -> ViewFile` (splats + panel facts), `find_sources`
- `gscomp.viewer.prepare`: numpy buffers for viser's splat node, initial camera, camera conversion
- `gscomp.viewer.app`: `Viewer` (the viser server, GUI, exact-render and SH-bake workers)

viser is imported only when a `Viewer` is created, so the rest works without it.
"""
from .load import ViewFile, find_sources, load_view_file
from .prepare import SplatArrays, initial_camera, prepare

__all__ = ["ViewFile", "find_sources", "load_view_file", "SplatArrays", "initial_camera", "prepare"]
