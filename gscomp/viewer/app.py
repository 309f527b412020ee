"""The interactive viewer: a viser server showing one (or two, to compare) splat scenes.

Rendering happens in the browser (viser's Gaussian-splat node, WebGL, sorted in a web worker).
The server only sends buffers, so it stays responsive with large scenes. Two optional
server-side jobs run in background threads, throttled, always on the latest camera:

- "view-dependent colour": evaluate the full SH for the current camera position and resend the
  colours (viser's node has no SH; the default is the DC colour);
- "exact render": render the current view with gscomp's own rasterizer (full SH) and show it as
  the scene background, with the WebGL splats hidden, so what you see is what the decoder made.
"""
from __future__ import annotations

import contextlib
import io
import math
import sys
import threading
import time
import warnings
from typing import Callable

import numpy as np
import torch

from ..errors import GscompError
from ..splats import Splats
from .load import ViewFile
from .prepare import (
    camera_from_viser, clip_planes, colors_dc, colors_view, exact_scale, initial_camera, most_visible,
    normalisation_factor, prepare, scene_center_radius,
)

FOV_DEG = 60.0
COLOR_DC = "DC (degree 0)"
COLOR_VIEW = "view-dependent (SH baked for this view)"
# viser's canvas is white; the exact render composites onto the same colour so the two match.
BACKGROUND = (1.0, 1.0, 1.0)


class LatestJobRunner:
    """One background thread that runs the most recent job per key.

    A job submitted while an older one for the same key is waiting replaces it (so a moving
    camera never builds a queue). A job runs once it has been unchanged for ``quiet`` seconds,
    and jobs start at most every ``interval`` seconds.
    """

    def __init__(self, interval: float, quiet: float = 0.0, name: str = "job"):
        self.interval, self.quiet, self.name = interval, quiet, name
        self._jobs: dict[object, tuple[float, Callable[[], None]]] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"gscomp-view-{name}", daemon=True)
        self._thread.start()

    def submit(self, key, fn: Callable[[], None]) -> None:
        with self._cond:
            self._jobs[key] = (time.monotonic(), fn)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._jobs.clear()
            self._cond.notify()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = time.monotonic()
                    ready = [k for k, (t, _) in self._jobs.items() if now - t >= self.quiet]
                    if ready:
                        break
                    wait = None if not self._jobs else self.quiet - min(now - t for t, _ in self._jobs.values())
                    self._cond.wait(timeout=wait)
                if self._stopped:
                    return
                _, fn = self._jobs.pop(ready[0])
            try:
                fn()
            except Exception as e:  # a failed render must not kill the viewer; say it once per failure
                print(f"gscomp view: {self.name} failed: {type(e).__name__}: {e}", file=sys.stderr)
            with self._cond:
                if self._stopped:
                    return
                self._cond.wait(timeout=self.interval)


class Viewer:
    """Serve ``main`` (and optionally ``compare``, e.g. the .ply a .gsz was made from)."""

    def __init__(
        self,
        main: ViewFile,
        compare: ViewFile | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        up: str = "-y",
        exact: bool = False,
        exact_max_side: int = 512,
        backend: str = "cpu",
        max_splats: int = 0,
    ):
        import viser

        # a render (exact mode, view-dependent colour) finishing after its tab was closed is
        # simply not delivered: viser warns about each one, with its source line, on stderr
        warnings.filterwarnings("ignore", r"Queued a .* on a closed connection", UserWarning)
        self.files: dict[str, ViewFile] = {"main": main}
        if compare is not None:
            self.files["compare"] = compare
        self.labels = {"main": _label(main, compare), **({"compare": _label(compare, main)} if compare else {})}
        self.current = "main"
        self.backend = backend
        self.exact_max_side = int(exact_max_side)
        self.max_splats = int(max_splats)
        # What the browser draws (maybe a subset, see --max-splats); exact mode renders all.
        self.shown: dict[str, Splats] = {}
        self._lock = threading.Lock()
        # One scale for both scenes so switching between them does not move anything.
        self.factor = normalisation_factor(main.splats)
        self.origin, radius = scene_center_radius(main.splats)  # (positions go out relative to it)
        self.exact_scale = exact_scale(radius)
        self._scaled: tuple[Splats, Splats] | None = None  # (splats, exact_scale times them), the last one

        # viser prints its own banner regardless of verbose=False; the command prints one URL line.
        with contextlib.redirect_stdout(io.StringIO()):
            self.server = viser.ViserServer(host=host, port=port, label="gscomp view", verbose=False)
        self.server.scene.set_up_direction(up)
        eye, look = initial_camera(main.splats, up, FOV_DEG)
        cam = self.server.initial_camera
        cam.fov = math.radians(FOV_DEG)
        cam.near, cam.far = clip_planes(radius)
        cam.position = tuple(eye)
        cam.look_at = tuple(look)

        self.nodes: dict[str, object] = {}
        self._add_node("main", visible=True)

        self._exact_jobs = LatestJobRunner(interval=0.1, quiet=0.05, name="exact render")
        self._bake_jobs = LatestJobRunner(interval=0.3, quiet=0.25, name="colour bake")
        self._build_gui(exact)
        self.server.on_client_connect(self._on_connect)

    # ------------------------------------------------------------------ scene nodes
    def _add_node(self, key: str, visible: bool) -> None:
        self.shown[key] = most_visible(self.files[key].splats, self.max_splats)
        arrays = prepare(self.shown[key], factor=self.factor, origin=self.origin)
        self.nodes[key] = self.server.scene.add_gaussian_splats(
            f"/splats/{key}",
            centers=arrays.centers,
            covariances=arrays.covariances,
            rgbs=arrays.rgbs,
            opacities=arrays.opacities,
            scale=arrays.node_scale,
            position=tuple(arrays.origin),
            visible=visible,
        )

    def _show(self, key: str) -> None:
        with self._lock:
            if key not in self.nodes:  # the comparison scene is only sent when first asked for
                self._add_node(key, visible=False)
            self.current = key
            for k, node in self.nodes.items():
                node.visible = (k == key) and not self.exact.value
        self._refresh_all()

    # ------------------------------------------------------------------ GUI
    def _summary(self, key: str) -> str:
        md = self.files[key].summary_markdown()
        n = len(self.files[key].splats)
        if 0 < self.max_splats < n:
            md += f"\n\nthe browser draws the {self.max_splats:,} most visible of {n:,} (--max-splats); exact mode renders all"
        return md

    def _build_gui(self, exact: bool) -> None:
        gui = self.server.gui
        with gui.add_folder("File"):
            self.info_md = gui.add_markdown(self._summary("main"))
        if "compare" in self.files:
            with gui.add_folder("Compare"):
                self.which = gui.add_button_group("Show", (self.labels["main"], self.labels["compare"]))
                self.which_md = gui.add_markdown(f"showing: **{self.labels['main']}**")

                @self.which.on_click
                def _(_evt) -> None:
                    key = "main" if self.which.value == self.labels["main"] else "compare"
                    self.which_md.content = f"showing: **{self.labels[key]}**"
                    self.info_md.content = self._summary(key)
                    self._show(key)
        with gui.add_folder("Display"):
            self.color_mode = gui.add_dropdown("Colour", (COLOR_DC, COLOR_VIEW), initial_value=COLOR_DC)
            self.exact = gui.add_checkbox(
                "Exact render", exact,
                hint="Render this view on the server with gscomp's rasterizer (full SH) instead of WebGL",
            )
            side = self.exact_max_side  # (--exact-max-side may lie outside the slider's usual range)
            self.exact_side = gui.add_slider("Exact max side (px)", min(128, side), max(2048, side), 16, side)
            self.status = gui.add_markdown("")

        @self.color_mode.on_update
        def _(_evt) -> None:
            if self.color_mode.value == COLOR_DC:
                with self._lock:
                    for key, node in self.nodes.items():
                        node.rgbs = colors_dc(self.shown[key])
            self._refresh_all()

        @self.exact.on_update
        def _(_evt) -> None:
            with self._lock:
                for k, node in self.nodes.items():
                    node.visible = (k == self.current) and not self.exact.value
            if not self.exact.value:
                for client in self.server.get_clients().values():
                    client.scene.set_background_image(None)
                self.status.content = ""
            self._refresh_all()

        @self.exact_side.on_update
        def _(_evt) -> None:
            self.exact_max_side = int(self.exact_side.value)
            self._refresh_all()

        if exact:
            for node in self.nodes.values():
                node.visible = False

    # ------------------------------------------------------------------ camera-driven jobs
    def _on_connect(self, client) -> None:
        client.camera.on_update(lambda _cam: self._refresh(client))
        self._refresh(client)

    def _refresh_all(self) -> None:
        for client in self.server.get_clients().values():
            self._refresh(client)

    def _refresh(self, client) -> None:
        try:
            client.camera.position  # noqa: B018 - raises until the client sent its first camera
        except AssertionError:
            return
        if self.exact.value:
            self._exact_jobs.submit(client.client_id, lambda: self._exact_render(client))
        if self.color_mode.value == COLOR_VIEW:
            # One shared node: bake for whichever client moved last.
            self._bake_jobs.submit("bake", lambda: self._bake(client))

    def _bake(self, client) -> None:
        eye = np.asarray(client.camera.position, dtype=np.float64)
        with self._lock:
            key = self.current
            rgbs = colors_view(self.shown[key], eye)
            if self.color_mode.value == COLOR_VIEW:
                self.nodes[key].rgbs = rgbs

    def _exact_render(self, client) -> None:
        if not self.exact.value:
            return
        img, ms = self.render_view(
            self.files[self.current].splats,
            client.camera.position, client.camera.wxyz, client.camera.fov,
            client.camera.image_width, client.camera.image_height,
        )
        if self.exact.value:  # it may have been switched off while we rendered
            client.scene.set_background_image(img, format="jpeg", jpeg_quality=92)
            h, w = img.shape[:2]
            self.status.content = f"exact: {w}x{h} in {ms:.0f} ms ({self.backend} rasterizer, SH degree {self.files[self.current].splats.sh_degree})"

    def render_view(self, splats: Splats, position, wxyz, fov_y: float, width: int, height: int):
        """Server-side render at most ``exact_max_side`` pixels on the long side -> (uint8 HxWx3, ms)."""
        from ..render import render

        s = min(1.0, self.exact_max_side / max(width, height, 1))
        w, h = max(8, round(width * s)), max(8, round(height * s))
        k = self.exact_scale
        if k != 1.0:  # a small scene: rendered scaled up, so that the near plane does not cut into it
            if self._scaled is None or self._scaled[0] is not splats:
                self._scaled = (splats, splats.replace(means=splats.means * k, scales=splats.scales + math.log(k)))
            splats, position = self._scaled[1], np.asarray(position, np.float64) * k
        cam = camera_from_viser(position, wxyz, fov_y, w, h)
        t0 = time.perf_counter()
        with torch.no_grad():
            try:
                out = render(splats, cam, background=BACKGROUND, backend=self.backend)
            except (ImportError, GscompError) as e:
                if self.backend != "cpu":
                    raise
                # The native backend cannot be built (e.g. no compiler); the reference gives the same image.
                print(f"gscomp view: native cpu rasterizer unavailable ({e}); using the torch reference", file=sys.stderr)
                self.backend = "torch"
                out = render(splats, cam, background=BACKGROUND, backend=self.backend)
        ms = 1000 * (time.perf_counter() - t0)
        img = (out.colors[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        return np.ascontiguousarray(img), ms

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        return self.server.get_port()

    def close(self) -> None:
        self._exact_jobs.stop()
        self._bake_jobs.stop()
        # viser prints "(viser) Server stopped" from its thread while we wait; keep our one line.
        with contextlib.redirect_stdout(io.StringIO()):
            self.server.stop()


def _label(f: ViewFile, other: ViewFile | None) -> str:
    if other is not None and f.name == other.name:
        return str(f.path)
    kind = "decoded" if f.is_gsz else "original" if other is not None and other.is_gsz else None
    return f"{kind}: {f.name}" if kind else f.name


__all__ = ["Viewer", "LatestJobRunner"]
