"""Camera poses without images, for encoders that render the scene (the `importance` stage).

    load_cameras(path, max_views)   an INRIA ``cameras.json`` (what 3DGS training writes next to
                                    ``point_cloud/``, and what `gscomp train` writes; any name but
                                    transforms*.json), a COLMAP model (``sparse/0``, ``sparse`` or
                                    the folder with cameras/images/points3D .bin or .txt), or a
                                    Blender capture (transforms*.json and its images) or an
                                    instant-ngp one (transforms.json; images only for frames
                                    without w/h)
    save_cameras_json(path, cams)   INRIA ``cameras.json``
    find_cameras_json(ply)          the ``cameras.json`` of a trained model, next to the .ply or
                                    two folders up (``MODEL/point_cloud/iteration_N/point_cloud.ply``)

INRIA's ``cameras.json`` is a list of {id, img_name, width, height, position, rotation, fx, fy}:
``rotation`` (3x3, rows) and ``position`` form the camera-to-world transform (OpenCV axes: x right,
y down, z forward); the principal point is the image centre. We also write ``cx``/``cy`` and read
them when present.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..camera import Camera
from ..errors import FormatError, GscompError
from ..fileio import atomic_write_text

MAX_CAMERAS = 100_000
MAX_SIDE = 1 << 16


def find_cameras_json(ply: str | Path) -> Path | None:
    p = Path(ply)
    for cand in (p.parent / "cameras.json", p.parent.parent.parent / "cameras.json"):
        if cand.is_file():
            return cand
    return None


def load_cameras(path: str | Path, max_views: int | None = None) -> list[Camera]:
    """Cameras of ``path`` (see the module docstring), sorted by name, at most ``max_views`` of
    them evenly spread (first one included)."""
    from . import subsample

    p = Path(path)
    if not p.exists():
        raise GscompError(f"no such cameras file or folder: {p}")
    if p.is_file() and p.name.startswith("transforms"):
        p = p.parent  # a Blender / instant-ngp transforms*.json: its capture folder
    if p.is_dir() and (p / "cameras.json").is_file() and not _is_capture(p):
        p = p / "cameras.json"
    if p.is_file():
        cams = _inria(p)
    else:
        cams = _from_capture(p, max_views)
    if not cams:
        raise FormatError(f"{path}: no cameras")
    return subsample(sorted(cams, key=lambda c: c.name), max_views)


def _is_capture(d: Path) -> bool:
    from .colmap import find_model_dir

    if any((d / f).is_file() for f in ("transforms.json", "transforms_train.json")):
        return True
    try:
        find_model_dir(d)
        return True
    except GscompError:
        return False


def _from_capture(d: Path, max_views: int | None) -> list[Camera]:
    if (d / "transforms_train.json").is_file():
        from . import load_scene  # images are read only for their sizes' sake: load just the views kept

        scene = load_scene("blender", str(d), test_every=0, max_images=max_views)
        return [c.scaled(1.0) for c in scene.train]  # (drops the images)
    if (d / "transforms.json").is_file():
        from .ngp import ngp_cameras  # (sizes from w/h: the images need not be there)

        return ngp_cameras(d)
    return _colmap(d)


def _colmap(d: Path) -> list[Camera]:
    """The posed views of a COLMAP model (sorted by name, as the scene loader has them), as pinhole
    cameras of the undistorted images."""
    from .colmap import find_model_dir, pinhole_of, read_model, registered_images, world_to_camera

    model_dir = find_model_dir(d)
    rec = read_model(model_dir)
    return [_camera(*pinhole_of(rec.cameras[im.camera_id]), world_to_camera(im), str(im.name), str(model_dir))
            for im in registered_images(rec, model_dir)]


def _inria(p: Path) -> list[Camera]:
    try:
        if p.stat().st_size > 256 << 20:
            raise FormatError(f"{p}: too large for a cameras file")
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{p}: not a readable cameras.json ({type(e).__name__})") from None
    if not isinstance(data, list) or len(data) > MAX_CAMERAS:
        raise FormatError(f"{p}: expected a list of cameras (INRIA cameras.json)")
    cams = []
    for i, e in enumerate(data):
        where = f"{p} camera {i}"
        if not isinstance(e, dict):
            raise FormatError(f"{where}: not an object")
        try:
            w, h = int(e["width"]), int(e["height"])
            fx, fy = float(e["fx"]), float(e["fy"])
            rot = np.array(e["rotation"], dtype=np.float64)
            pos = np.array(e["position"], dtype=np.float64)
            cx, cy = float(e.get("cx", w / 2)), float(e.get("cy", h / 2))
        except (KeyError, TypeError, ValueError) as err:
            raise FormatError(f"{where}: bad or missing field ({type(err).__name__}: {err})") from None
        if rot.shape != (3, 3) or pos.shape != (3,):
            raise FormatError(f"{where}: rotation must be 3x3 and position 3 numbers")
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = rot, pos
        # rigid inverse (R^T, -R^T t): no LAPACK, so the same bits on every machine
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = rot.T, -(rot.T @ pos)
        cams.append(_camera(fx, fy, cx, cy, w, h, w2c, str(e.get("img_name", i)), where))
    return cams


def _camera(fx, fy, cx, cy, w, h, w2c: np.ndarray, name: str, where: str) -> Camera:
    vals = np.array([fx, fy, cx, cy, *w2c.ravel()], dtype=np.float64)
    if not np.isfinite(vals).all() or not (fx > 0 and fy > 0):
        raise FormatError(f"{where}: non-finite or non-positive camera values")
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise FormatError(f"{where}: image size {w}x{h} out of range")
    r = w2c[:3, :3]
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-3):
        raise FormatError(f"{where}: the rotation is not orthonormal")
    return Camera(fx, fy, cx, cy, w, h, torch.from_numpy(w2c), name=name)


def save_cameras_json(path: str | Path, cams: list[Camera]) -> None:
    """INRIA ``cameras.json`` (plus cx, cy) of ``cams``: lets `gscomp compress` score a trained
    model's Gaussians from the views it was trained on."""
    out = []
    for i, c in enumerate(cams):
        c2w = c.camera_to_world.double().numpy()
        out.append({"id": i, "img_name": c.name, "width": c.width, "height": c.height,
                    "position": c2w[:3, 3].tolist(), "rotation": c2w[:3, :3].tolist(),
                    "fy": c.fy, "fx": c.fx, "cx": c.cx, "cy": c.cy})
    atomic_write_text(path, json.dumps(out) + "\n")


__all__ = ["find_cameras_json", "load_cameras", "save_cameras_json"]
