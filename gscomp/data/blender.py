"""NeRF-synthetic / Blender scenes: ``transforms_{train,val,test}.json`` + RGBA PNGs.

``transform_matrix`` is camera-to-world in the OpenGL/Blender convention (x right, y up, z back);
flipping its y and z columns gives OpenCV. Focal length from ``camera_angle_x`` (horizontal field
of view), principal point at the image centre. These scenes have no SfM points, so the initial
cloud is random (uniform in [-1.3, 1.3]^3, 100k points by default, as in the 3DGS reference; the
box is scaled and moved to the cameras when they are not around the origin as there: `init_box`).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from ..camera import Camera, Photo, affine_inverse
from ..errors import FormatError, GscompError, LayoutError, check_int, one_line
from .images import capped_scale, check_image_sizes, find_image, image_size, open_image, parallel_map, rotation_note

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise GscompError(f"file not found: {path}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # (ValueError: also int digit limit)
        raise FormatError(f"{path}: not valid JSON ({one_line(e, 200)})") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a JSON object at the top level")
    return data


def c2w_opengl_to_w2c(matrix, where: str) -> torch.Tensor:
    """OpenGL camera-to-world (3x4 or 4x4 list) -> OpenCV world-to-camera 4x4."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise FormatError(f"{where}: transform_matrix is not a numeric matrix") from None
    if m.shape == (3, 4):
        m = np.vstack([m, [0, 0, 0, 1]])
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise FormatError(f"{where}: transform_matrix must be a finite 4x4 matrix, got shape {m.shape}")
    c2w = m @ OPENGL_TO_OPENCV
    try:
        w2c = affine_inverse(c2w)
    except torch.linalg.LinAlgError:
        raise FormatError(f"{where}: transform_matrix is singular") from None
    if not bool(torch.isfinite(w2c).all()):
        raise FormatError(f"{where}: transform_matrix is singular")
    return w2c


MAX_POINTS = 50_000_000  # random initial points (Blender / NGP scenes)


def random_points(num_points: int, lo, hi, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform random points in the box [lo, hi] with uniform random colours (seeded)."""
    check_int("num_points", num_points, 1, MAX_POINTS)
    g = torch.Generator().manual_seed(int(seed))
    lo, hi = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
    pts = lo + (hi - lo) * torch.rand(int(num_points), 3, generator=g)
    return pts, torch.rand(int(num_points), 3, generator=g)


UNIT_BOX = 1.3  # the 3DGS reference's random cloud: [-1.3, 1.3]^3, for cameras ~4 units around the origin
LEGO_RADIUS = 4.03  # NeRF-synthetic's camera distance from the origin, which that box is made for


def init_box(cams: list[Camera]) -> tuple[list[float], list[float]]:
    """The box of the random initial cloud: the reference's [-1.3, 1.3]^3 when the cameras stand
    around it as in NeRF-synthetic, else the same box scaled and moved to the cameras (a scene
    exported in other units, or away from the origin: the fixed box trained to a blank model)."""
    if not cams:
        return [-UNIT_BOX] * 3, [UNIT_BOX] * 3
    c2w = torch.stack([c.camera_to_world.double() for c in cams])
    centres, axes = c2w[:, :3, 3], c2w[:, :3, 2]  # (OpenCV: +z looks forward)
    # the point nearest to every optical axis (least squares), which the cameras look at
    proj = torch.eye(3, dtype=torch.float64) - axes[:, :, None] * axes[:, None, :]
    a, b = proj.sum(0), (proj @ centres[:, :, None]).sum(0)[:, 0]
    mid = torch.linalg.solve(a, b) if float(torch.linalg.det(a)) > 1e-9 * len(cams) ** 3 else centres.mean(0)
    radius = float((centres - mid).norm(dim=1).median())
    if float(mid.norm()) <= 0.5 * radius and UNIT_BOX < radius <= 20 * LEGO_RADIUS:
        return [-UNIT_BOX] * 3, [UNIT_BOX] * 3
    half = UNIT_BOX * max(radius, 1e-6) / LEGO_RADIUS
    return (mid - half).tolist(), (mid + half).tolist()


def _frames(root: Path, split: str) -> tuple[list[tuple[str, Path, torch.Tensor]], float] | None:
    path = root / f"transforms_{split}.json"
    if not path.is_file():
        return None
    meta = read_json(path)
    if not isinstance(meta.get("frames"), list):
        raise FormatError(f"{path}: needs 'camera_angle_x' and a 'frames' list")
    if "camera_angle_x" not in meta:
        raise LayoutError(f"{path}: needs 'camera_angle_x' and a 'frames' list")
    fov = meta["camera_angle_x"]
    if not isinstance(fov, (int, float)) or isinstance(fov, bool) or not 1e-3 < fov < math.pi - 1e-3:
        raise FormatError(f"{path}: camera_angle_x must be a number in (0, pi) radians, got {fov!r}"[:300])
    out = []
    for i, fr in enumerate(meta["frames"]):
        where = f"{path} frame {i}"
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise FormatError(f"{where}: needs 'file_path' and 'transform_matrix'")
        img = find_image(root, str(fr["file_path"]))
        if img is None:
            raise GscompError(f"{where}: image file not found: {root / fr['file_path']}")
        out.append((str(fr["file_path"]), img, c2w_opengl_to_w2c(fr["transform_matrix"], where)))
    out.sort(key=lambda f: f[0])
    return out, fov


def _load_views(frames, fov: float, split: str, downscale: float, background, threads,
                max_width: int) -> list[Camera]:
    def one(fr):
        name, img, w2c = fr
        w, h = image_size(img)
        fx = 0.5 * w / math.tan(0.5 * fov)
        cam = Camera(fx, fx, w / 2.0, h / 2.0, w, h, w2c, name=f"{split}/{Path(name).name}")
        scale = capped_scale(w, 1.0 / downscale, max_width)
        if scale != 1:
            cam = cam.scaled(scale)
        arr = np.asarray(open_image(img, size=(cam.width, cam.height)))
        cam.image = Photo(arr, background)
        return cam

    return parallel_map(one, frames, threads)


def load_blender(path: str | os.PathLike, *, downscale: float = 1, background=(1.0, 1.0, 1.0),
                 max_images: int | None = None, with_test: bool = True, num_points: int = 100_000,
                 seed: int = 0, threads: int | None = None, max_width: int = 0):
    """Return (train cameras, test cameras or None (= hold out from train), points, colours, meta).

    Test views come from ``transforms_test.json``, else ``transforms_val.json``; when neither
    exists the caller holds out every ``test_every``-th train view. ``with_test=False`` skips them.
    ``max_width``: images that would load wider are shrunk to it (0: none are).
    """
    from . import subsample

    root = Path(path)
    if not root.exists():
        raise GscompError(f"Blender scene not found: {root}")
    if not root.is_dir():
        root = root.parent  # a transforms_*.json file was given
    train = _frames(root, "train")
    if train is None:
        raise LayoutError(f"no transforms_train.json in {root}")
    if not train[0]:
        raise FormatError(f"{root / 'transforms_train.json'} lists no frames")
    test, test_split = None, ""
    if with_test:
        for test_split in ("test", "val"):
            test = _frames(root, test_split)
            if test is not None:
                break
    train_frames = subsample(train[0], max_images)
    width_note = check_image_sizes([(fr[1], 1.0 / downscale)
                                    for fr in train_frames + (test[0] if test is not None else [])],
                                   f"Blender scene {root}", downscale, max_width)
    train_cams = _load_views(train_frames, train[1], "train", downscale, background, threads, max_width)
    test_cams = None
    if test is not None:
        test_cams = _load_views(test[0], test[1], test_split, downscale, background, threads, max_width)
    elif not with_test:
        test_cams = []
    lo, hi = init_box(train_cams)
    pts, cols = random_points(num_points, lo, hi, seed)
    meta = {"source": "blender", "root": str(root), "test_split": test_split if test is not None else "holdout",
            "notes": [rotation_note([fr[1] for fr in train[0] + (test[0] if test is not None else [])]), width_note]}
    return train_cams, test_cams, pts, cols, meta
