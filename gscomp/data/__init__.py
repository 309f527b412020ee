"""Scene loaders: every source becomes one `gscomp.camera.Scene` in the OpenCV camera convention.

    load_scene(kind, path, *, downscale=1, test_every=8, background=(1, 1, 1), max_images=None,
               max_width=1600, **kw)

kinds: ``colmap`` (binary/text model; distorted cameras are undistorted with pycolmap),
``blender`` (NeRF-synthetic ``transforms_{train,val,test}.json``), ``ngp`` (instant-ngp
``transforms.json``) and ``synthetic`` (a procedural scene rendered by gscomp; ``path`` unused).

Conventions shared by all loaders:
- Views are sorted by image name. ``max_images`` keeps that many views evenly spread over the
  sorted list (so a 360 degree capture keeps its coverage). Then every ``test_every``-th view
  (index % test_every == 0) is a test view; ``test_every=0`` means no test views. Blender scenes
  that ship their own test (or else val) split use it instead of the hold-out.
- ``downscale`` (>= 0.25) divides the resolution; images are area-filtered and intrinsics scaled
  with `Camera.scaled`, so pixels and cameras always agree. Images that would still be over
  ``max_width`` pixels wide load at that width (the 3DGS reference's 1.6K rule; 0: no cap).
- Every view must come out with finite intrinsics (positive focal length), a finite rigid pose
  and at least 11 pixels a side, and the initial points must be finite: a scene file that breaks
  this is a one-line `FormatError`, not a run that trains on garbage.
- RGBA sources are composited over ``background`` (``None`` = black) and keep ``Camera.alpha``;
  ``Scene.background`` is that colour, or ``None`` for sources without alpha (photos).
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence, TypeVar

import numpy as np
import torch

from ..camera import Camera, Scene, camera_extent
from ..errors import DataWarning, FormatError, GscompError, LayoutError, Note, check_int
from .images import MAX_WIDTH

KINDS = ("colmap", "blender", "ngp", "synthetic")
OPTIONS = {  # loader-specific keyword arguments accepted by load_scene(**kw)
    "colmap": ("threads", "images"),
    "blender": ("threads", "num_points", "seed"),
    "ngp": ("threads", "num_points", "seed"),
    "synthetic": ("n_views", "resolution", "seed", "backend"),
}
T = TypeVar("T")


def subsample(items: Sequence[T], max_images: int | None) -> list[T]:
    """At most ``max_images`` items, evenly spaced over the (sorted) sequence, first one included."""
    items = list(items)
    if max_images is None or len(items) <= max_images:
        return items
    n = len(items)
    idx = sorted({min(n - 1, math.floor(i * n / max_images)) for i in range(max_images)})
    return [items[i] for i in idx]


def split(cams: Sequence[Camera], test_every: int) -> tuple[list[Camera], list[Camera]]:
    """Every ``test_every``-th camera (index % test_every == 0) is a test view; 0 = no test split."""
    if test_every <= 0 or len(cams) < 2:
        return list(cams), []
    train = [c for i, c in enumerate(cams) if i % test_every != 0]
    test = [c for i, c in enumerate(cams) if i % test_every == 0]
    return train, test


MIN_DOWNSCALE = 0.25
MIN_SIDE = 11  # pixels: the SSIM window (and less is no image to train on)


def _check_views(cams: Sequence[Camera], what: str) -> None:
    """Cameras a scene file produced must describe real pinhole views: finite intrinsics with a
    positive focal length and the principal point in the image, a finite rigid pose, and an image
    of at least MIN_SIDE pixels a side."""
    for c in cams:
        where = f"{what}: view {c.name!r}"
        if not all(math.isfinite(v) for v in (c.fx, c.fy, c.cx, c.cy)) or c.fx <= 0 or c.fy <= 0:
            raise FormatError(f"{where} has invalid intrinsics (fx={c.fx:g}, fy={c.fy:g}, cx={c.cx:g}, cy={c.cy:g})")
        if not (0 <= c.cx <= c.width and 0 <= c.cy <= c.height):
            raise FormatError(f"{where}: principal point ({c.cx:g}, {c.cy:g}) is outside its {c.width}x{c.height} "
                              "image (intrinsics written for another image size?)")
        w2c = c.world_to_camera.double()
        if not torch.isfinite(w2c).all() or (w2c[:3, :3] @ w2c[:3, :3].T - torch.eye(3, dtype=torch.float64)).abs().max() > 1e-3:
            raise FormatError(f"{where} has an invalid pose (not a finite rotation and translation)")
        if min(c.width, c.height) < MIN_SIDE:
            raise FormatError(f"{where} is {c.width}x{c.height} pixels: too small to train on "
                              f"(at least {MIN_SIDE} a side; lower data.downscale)")


def _background(bg) -> tuple[float, float, float] | None:
    if bg is None:
        return None
    try:
        t = tuple(float(v) for v in bg)
    except (TypeError, ValueError):
        raise GscompError(f"background must be three numbers in [0, 1], got {bg!r}") from None
    if len(t) != 3 or not all(0.0 <= v <= 1.0 for v in t):
        raise GscompError(f"background must be three numbers in [0, 1], got {bg!r}")
    return t


def load_scene(kind: str, path: str | None, *, downscale: float = 1, test_every: int = 8,
               background=(1.0, 1.0, 1.0), max_images: int | None = None, max_width: int = MAX_WIDTH,
               **kw) -> Scene:
    """Load a scene of ``kind`` from ``path``; see the module docstring for the shared conventions.

    Extra keyword arguments go to the loader: ``threads`` (all file loaders); ``images`` (COLMAP
    image folder name); ``num_points``/``seed`` (random initial points for blender/ngp);
    ``n_views``/``resolution``/``seed``/``backend`` (synthetic; the renderer used for the GT).
    """
    if kind not in KINDS:
        raise GscompError(f"unknown scene kind {kind!r}; choose one of {', '.join(KINDS)}")
    try:
        downscale = float(downscale)
    except (TypeError, ValueError):
        raise GscompError(f"downscale must be a number, got {downscale!r}") from None
    if not math.isfinite(downscale) or downscale < MIN_DOWNSCALE:
        raise GscompError(f"downscale must be >= {MIN_DOWNSCALE} (at most 4x upsampling), got {downscale}")
    test_every = check_int("test_every", test_every, 0, math.inf, floats=True)
    if max_images is not None:
        max_images = check_int("max_images", max_images, 1, math.inf, floats=True)
    max_width = check_int("max_width", max_width, 0, math.inf, floats=True)
    bad = sorted(set(kw) - set(OPTIONS[kind]))
    if bad:
        common = ("background", "max_images", "test_every") + (() if kind == "synthetic" else ("downscale", "max_width", "path"))
        raise GscompError(f"{kind} scenes take no option {bad[0]!r} (options: {', '.join(sorted(common + OPTIONS[kind]))})")
    if kind != "synthetic":  # (a synthetic scene is rendered at its resolution)
        kw["max_width"] = max_width
    bg = _background(background)
    if kind != "synthetic" and path is None:
        raise GscompError(f"a path is needed to load a {kind} scene")

    try:
        cams, explicit_test, points, colors, meta, scene_bg = _load(kind, path, downscale, bg, max_images,
                                                                   test_every, kw)
    except LayoutError as e:
        hint = layout_hint(path, kind)
        raise LayoutError(f"{e}{hint}") from None

    if explicit_test is not None:
        train, test = cams, explicit_test
    else:
        train, test = split(cams, test_every)
    if not train:
        raise GscompError(f"{kind} scene {path}: no training images")
    _check_views(train + test, f"{kind} scene {path}")
    bad_points = int((~torch.isfinite(points).all(1)).sum())
    if bad_points:
        raise FormatError(f"{kind} scene {path}: {bad_points} of {len(points)} initial points have non-finite positions")
    extent = camera_extent(train)
    notes = [n for n in meta.pop("notes", []) if n]
    if meta.get("undistorted_images"):
        c = train[0]
        notes.append(f"{meta['undistorted_images']} images undistorted to pinhole with COLMAP's undistorter "
                     f"(e.g. view {c.name!r}: {c.width}x{c.height} pixels)")
    for n in notes:
        warnings.warn(f"{kind} scene {path}: {n}", Note, stacklevel=2)
    cautions = [far_origin_warning(train, extent), edge_principal_point_warning(train + test)]
    if kind == "blender" and scene_bg is not None:
        cautions.append(backdrop_warning(train, scene_bg))
    for w in cautions:
        if w:
            warnings.warn(f"{kind} scene {path}: {w}", DataWarning, stacklevel=2)
    return Scene(train=train, test=test, points=points.float().contiguous(),
                 colors=colors.float().clamp(0, 1).contiguous(), extent=extent,
                 background=scene_bg, meta=meta)


def _load(kind, path, downscale, bg, max_images, test_every, kw):
    """Run the loader of ``kind``: (cameras, explicit test cameras or None, points, colours, meta,
    the background renders use)."""
    explicit_test: list[Camera] | None = None
    if kind == "colmap":
        from .colmap import load_colmap

        cams, points, colors, meta = load_colmap(path, downscale=downscale, background=bg,
                                                 max_images=max_images, **kw)
        # photos have no alpha; masked ones (RGBA) were composited over bg, which renders must match
        scene_bg = (bg or (0.0, 0.0, 0.0)) if any(c.alpha is not None for c in cams) else None
    elif kind == "blender":
        from .blender import load_blender

        cams, explicit_test, points, colors, meta = load_blender(
            path, downscale=downscale, background=bg, max_images=max_images,
            with_test=test_every > 0, **kw)
        scene_bg = bg or (0.0, 0.0, 0.0)
    elif kind == "ngp":
        from .ngp import load_ngp

        cams, points, colors, meta = load_ngp(path, downscale=downscale, background=bg,
                                              max_images=max_images, **kw)
        scene_bg = (bg or (0.0, 0.0, 0.0)) if any(c.alpha is not None for c in cams) else None
    else:
        from .synthetic import load_synthetic

        cams, points, colors, meta = load_synthetic(downscale=downscale, background=bg,
                                                    max_images=max_images, **kw)
        scene_bg = bg or (0.0, 0.0, 0.0)
    return cams, explicit_test, points, colors, meta, scene_bg


EDGE = 0.05  # a principal point this close to the border (of the side) is no lens's centre


def edge_principal_point_warning(cams: Sequence[Camera]) -> str | None:
    """Views whose principal point sits on the border of the image, or None. Real lenses put it
    near the centre; on the border it nearly always means intrinsics written for a larger image
    (e.g. an instant-ngp file without w/h whose images were shrunk afterwards)."""
    bad = [c for c in cams if min(c.cx, c.width - c.cx) < EDGE * c.width or min(c.cy, c.height - c.cy) < EDGE * c.height]
    if not bad:
        return None
    c = bad[0]
    return (f"{len(bad)} of {len(cams)} views have their principal point on the image border (e.g. view "
            f"{c.name!r}: ({c.cx:g}, {c.cy:g}) in {c.width}x{c.height}): intrinsics written for another image "
            "size? (instant-ngp: give w and h)")


def backdrop_warning(cams: Sequence[Camera], bg) -> str | None:
    """Blender-format images without alpha that stand on a plain backdrop of another colour than
    the render background, or None: training against the wrong one costs many dB (the renders
    must paint the backdrop with Gaussians). RGBA images are composited over ``bg``: no issue."""
    if not cams or any(c.alpha is not None for c in cams):
        return None

    def border(img):  # the two outermost pixel rows and columns
        return torch.cat([img[:2].reshape(-1, 3), img[-2:].reshape(-1, 3), img[:, :2].reshape(-1, 3),
                          img[:, -2:].reshape(-1, 3)])

    ring = torch.cat([border(c.image) for c in cams])
    colour = ring.median(0).values
    plain = float(((ring - colour).abs().amax(1) < 0.1).float().mean())
    far = float((colour - torch.as_tensor(bg, dtype=torch.float32)).abs().max())
    if plain < 0.8 or far < 0.25:
        return None
    rgb = ", ".join(f"{v:.2g}" for v in colour.tolist())
    return (f"its images have no alpha and stand on a plain backdrop of colour [{rgb}], but renders use "
            f"data.background={list(bg)}: set data.background=[{rgb}]")


def layout_hint(path, kind: str) -> str:
    """'; it looks like ...' naming the kind (and options) that would load ``path``, or ''."""
    from pathlib import Path

    root = Path(path)
    if root.is_file():
        root = root.parent
    has = lambda *p: root.joinpath(*p).exists()  # noqa: E731
    model = lambda d: any(has(*d, f"cameras{e}") for e in (".bin", ".txt"))  # noqa: E731
    if kind == "blender" and has("transforms_train.json"):  # (intrinsics as fl_x/fl_y, not camera_angle_x)
        return f"; with instant-ngp intrinsics it loads as data=ngp data.path={root / 'transforms_train.json'}"
    if kind != "blender" and has("transforms_train.json"):
        return "; it looks like a Blender (NeRF-synthetic) scene: data=blender"
    if kind != "ngp" and has("transforms.json"):
        return "; it holds a transforms.json (instant-ngp or nerfstudio): data=ngp"
    if kind != "colmap" and (model(("sparse", "0")) or model(("sparse",)) or model(())):
        return "; it looks like a COLMAP scene: data=colmap"
    if model(("colmap", "sparse", "0")):  # nerfstudio's processed layout
        return f"; it holds a COLMAP model in colmap/sparse/0: data=colmap data.path={root / 'colmap'} +data.images=../images"
    return ""


# Gaussians train in float32. Its step at the scene must stay below the position updates: they
# start at 1.6e-4 x extent per step (`train.lr.means`) and end 100x smaller.
FAR_STEP = 1e-5


def far_origin_warning(cams: Sequence[Camera], extent: float) -> str | None:
    """A capture so far from its coordinate origin (georeferenced: UTM, ECEF) that float32 positions
    there step by more than FAR_STEP of the scene's extent, or None. Rendering copes (`render`
    works relative to the camera); training and float32 files do not."""
    centre = torch.stack([c.center for c in cams]).mean(0)
    reach = float(centre.abs().max())
    step = float(np.spacing(np.float32(reach))) if math.isfinite(reach) else math.inf
    if step <= FAR_STEP * extent:
        return None
    return (f"its cameras are {reach:.3g} units from the coordinate origin, where float32 positions (what "
            f"Gaussians train in and .ply files hold) step by {step:.2g}, {step / extent:.1e} of the scene's extent: "
            "training will lose its fine position updates; recentre the capture first (e.g. COLMAP's "
            "model_transformer, or subtract the mean camera centre)")


from .synthetic import synthetic_gt  # noqa: E402  (public helper for tests and demos)

__all__ = ["load_scene", "KINDS", "far_origin_warning", "split", "subsample", "synthetic_gt"]
