"""instant-ngp scenes: one ``transforms.json`` (as written by ``colmap2nerf.py``) + images.

- Poses: ``transform_matrix`` is camera-to-world in the NeRF/OpenGL convention (same as Blender).
- Intrinsics per frame or global: ``fl_x``/``fl_y``/``cx``/``cy``/``w``/``h``, falling back to
  ``camera_angle_x``/``camera_angle_y`` and the image centre; ``w``/``h`` default to the file's size
  (and when they disagree with the file, the intrinsics are rescaled to it).
- Distortion ``k1 k2 p1 p2`` (+ ``k3``, the r^6 term -> FULL_OPENCV, or ``is_fisheye`` or nerfstudio's
  ``camera_model: OPENCV_FISHEYE`` -> OPENCV_FISHEYE with ``k1..k4``; other non-perspective models are
  refused): images are undistorted with COLMAP's undistorter exactly as for COLMAP scenes (same
  cache). A perspective ``k4`` (nerfstudio's r^8 term, from Metashape) has no COLMAP model: it is
  left out, with a warning.
- Frames whose image file is missing are skipped with one warning that counts them.
- Initial points: nerfstudio's ``ply_file_path`` (its SfM points, in the frames' coordinates) when
  given; else random in instant-ngp's unit cube mapped back to the JSON's coordinates,
  ``(box - offset) / scale`` with ngp's defaults scale 0.33, offset 0.5 (i.e. about [-1.5, 1.5]^3).
  ``aabb_scale`` (how far ngp lets the background extend) is kept in ``meta``.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from ..camera import Camera, Photo
from ..errors import DataWarning, FormatError, GscompError, LayoutError, one_line
from .blender import c2w_opengl_to_w2c, random_points, read_json
from .images import check_image_sizes, find_image, image_size, parallel_map, rotation_note

INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y",
                  "k1", "k2", "k3", "k4", "p1", "p2", "is_fisheye", "camera_model")
# nerfstudio's `camera_model` key: the perspective models it writes, and its OpenCV fisheye (as
# ``is_fisheye``); the others (EQUIRECTANGULAR, FISHEYE624, ...) are refused, not read as pinholes
PERSPECTIVE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")


def _num(d: dict, key: str, where: str) -> float | None:
    if key not in d or d[key] is None:
        return None
    try:
        if isinstance(d[key], bool):
            raise TypeError
        v = float(d[key])
    except (TypeError, ValueError, OverflowError):
        raise FormatError(f"{where}: {key} must be a number, got {d[key]!r}"[:300]) from None
    if not math.isfinite(v):
        raise FormatError(f"{where}: {key} is not finite")
    return v


def camera_spec(p: dict, size: tuple[int, int], where: str) -> tuple[str, int, int, tuple[float, ...]]:
    """COLMAP camera (model, width, height, params) for one frame from merged global+frame
    intrinsics ``p``, in the form `colmap.match_camera_to_image` takes.

    ``size`` is the image file's (w, h); the camera is expressed at the JSON's w/h (if given) and
    then rescaled to the file, so a JSON written for another resolution still lines up."""
    w = _num(p, "w", where) or size[0]
    h = _num(p, "h", where) or size[1]
    if round(w) < 1 or round(h) < 1:
        raise FormatError(f"{where}: w and h must be at least 1 pixel, got {w:g} x {h:g}")
    fx, fy = _num(p, "fl_x", where), _num(p, "fl_y", where)
    ax, ay = _num(p, "camera_angle_x", where), _num(p, "camera_angle_y", where)
    for key, a in (("camera_angle_x", ax), ("camera_angle_y", ay)):
        if a is not None and not 0 < a < math.pi:  # (degrees would give a silently wrong focal length)
            raise FormatError(f"{where}: {key} must be a number in (0, pi) radians, got {a:g}")
    if fx is None and ax is not None:
        fx = 0.5 * w / math.tan(0.5 * ax)
    if fy is None and ay is not None:
        fy = 0.5 * h / math.tan(0.5 * ay)
    fx, fy = fx or fy, fy or fx
    if fx is None or fx <= 0 or fy <= 0:
        raise FormatError(f"{where}: no focal length (need fl_x/fl_y or camera_angle_x/camera_angle_y > 0)")
    cx = _num(p, "cx", where)
    cy = _num(p, "cy", where)
    cx = w / 2.0 if cx is None else cx
    cy = h / 2.0 if cy is None else cy
    k = {n: _num(p, n, where) or 0.0 for n in ("k1", "k2", "k3", "k4", "p1", "p2")}
    named = p.get("camera_model")
    if named is not None and named not in PERSPECTIVE_MODELS + ("OPENCV_FISHEYE",):
        raise FormatError(f"{where}: camera_model {named!r} is not supported "
                          f"(supported: {', '.join(PERSPECTIVE_MODELS)}, OPENCV_FISHEYE)"[:300])
    if p.get("is_fisheye") or named == "OPENCV_FISHEYE":
        model, params = "OPENCV_FISHEYE", [fx, fy, cx, cy, k["k1"], k["k2"], k["k3"], k["k4"]]
    elif k["k3"]:  # (k4, nerfstudio's r^8 term, has no COLMAP model: `load_ngp` warns that it is left out)
        model, params = "FULL_OPENCV", [fx, fy, cx, cy, k["k1"], k["k2"], k["p1"], k["p2"], k["k3"], 0, 0, 0]
    else:
        model, params = "OPENCV", [fx, fy, cx, cy, k["k1"], k["k2"], k["p1"], k["p2"]]
    return model, int(round(w)), int(round(h)), tuple(float(v) for v in params)


def read_point_cloud(path: Path, where: str):
    """(points (M, 3), colours (M, 3) in [0, 1]) float32 torch tensors of a point-cloud .ply
    (x y z, and red green blue as uint8 or floats in [0, 1]; grey without them)."""
    import torch

    from ..io.ply import read_plydata  # (counts checked against the file's size before allocating)

    if not path.is_file():
        raise GscompError(f"{where}: ply_file_path {path} not found")
    try:
        v = read_plydata(path)["vertex"]
        xyz = np.stack([np.asarray(v[c], dtype=np.float64) for c in "xyz"], 1)
        if all(c in v.data.dtype.names for c in ("red", "green", "blue")):
            rgb = np.stack([np.asarray(v[c]) for c in ("red", "green", "blue")], 1)
            rgb = rgb.astype(np.float64) / (255.0 if rgb.dtype.kind in "ui" else 1.0)
        else:
            rgb = np.full_like(xyz, 0.5)
    except Exception as e:  # (read_plydata's one-line errors, or no vertex element / x, y, z)
        detail = one_line(e) if isinstance(e, GscompError) else type(e).__name__
        raise FormatError(f"{where}: ply_file_path {path} is not a point-cloud .ply with a vertex element "
                          f"and x, y, z ({detail})") from None
    keep = np.isfinite(xyz).all(1)
    if not keep.any():
        raise FormatError(f"{where}: ply_file_path {path} holds no finite points")
    return (torch.from_numpy(xyz[keep]).float(), torch.from_numpy(np.clip(np.nan_to_num(rgb[keep]), 0, 1)).float())


# nerfstudio keys this loader does not apply, and what that means
IGNORED_KEYS = {
    "mask_path": "masks are not applied: masked-out pixels are trained on",
    "depth_file_path": "depth is not used",
    "train_filenames": "the test views are every data.test_every-th view, not nerfstudio's split",
}


def read_frames(path) -> tuple[Path, dict, list[tuple[str, Path | None, torch.Tensor, dict, str]]]:
    """(transforms.json path, its JSON, frames as (file_path, image file or None if missing,
    world-to-camera, merged global + frame intrinsics, 'where' for messages))."""
    p = Path(path)
    if not p.exists():
        raise GscompError(f"instant-ngp scene not found: {p}")
    jpath = p if p.is_file() else p / "transforms.json"
    if not jpath.is_file():
        raise LayoutError(f"no transforms.json in {p}")
    meta_json = read_json(jpath)
    frames = meta_json.get("frames")
    if not isinstance(frames, list) or not frames:
        raise FormatError(f"{jpath}: needs a non-empty 'frames' list")
    glob = {k: meta_json[k] for k in INTRINSIC_KEYS if k in meta_json}
    out = []
    for i, fr in enumerate(frames):
        where = f"{jpath} frame {i}"
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise FormatError(f"{where}: needs 'file_path' and 'transform_matrix'")
        intr = {**glob, **{k: fr[k] for k in INTRINSIC_KEYS if k in fr}}
        out.append((str(fr["file_path"]), find_image(jpath.parent, str(fr["file_path"])),
                    c2w_opengl_to_w2c(fr["transform_matrix"], where), intr, where))
    return jpath, meta_json, out


def ngp_cameras(path) -> list[Camera]:
    """The views of a transforms.json as the pinhole cameras `load_ngp` makes of them, without
    decoding an image: sizes come from w/h, else from the image file's header (a frame with
    neither is left out, as `load_ngp` leaves out frames without images). For `compress
    --cameras`, which needs only poses and intrinsics."""
    from .colmap import match_camera_to_image, pinhole_of

    jpath, _, frames = read_frames(path)
    cams = []
    for name, img, w2c, intr, where in frames:
        w, h = _num(intr, "w", where), _num(intr, "h", where)
        if w is None or h is None:
            if img is None:
                continue
            w, h = image_size(img)
        size = (int(round(w)), int(round(h)))
        pcam = match_camera_to_image(camera_spec(intr, size, where), size, where)
        fx, fy, cx, cy, pw, ph = pinhole_of(pcam)
        cams.append(Camera(fx, fy, cx, cy, pw, ph, w2c, name=name))
    if not cams:
        raise GscompError(f"{jpath}: no frame has w/h or an image file to take its size from")
    return cams


def load_ngp(path: str | os.PathLike, *, downscale: float = 1, background=(1.0, 1.0, 1.0),
             max_images: int | None = None, num_points: int = 100_000, seed: int = 0,
             threads: int | None = None, max_width: int = 0):
    """Return (cameras with images sorted by file name, points, colours, meta). ``max_width``:
    images that would load wider are shrunk to it (0: none are)."""
    from . import subsample
    from .colmap import _pycolmap, is_distorted, load_view, match_camera_to_image

    jpath, meta_json, frames = read_frames(path)
    root = jpath.parent
    items = [f for f in frames if f[1] is not None]
    missing = len(frames) - len(items)
    if missing:
        warnings.warn(f"{missing} of {len(frames)} frames skipped: image file missing", DataWarning, stacklevel=2)
    with_k4 = sum(1 for _, _, _, intr, where in items if _num(intr, "k4", where)
                  and not (intr.get("is_fisheye") or intr.get("camera_model") == "OPENCV_FISHEYE"))
    if with_k4:
        warnings.warn(f"{with_k4} of {len(items)} frames have k4 (nerfstudio's r^8 distortion term), which no COLMAP "
                      "camera model holds: it is left out, so their images stay slightly distorted towards the corners",
                      DataWarning, stacklevel=2)
    ignored = [k for k in IGNORED_KEYS if k in meta_json or any(k in f for f in meta_json["frames"])]
    if ignored:
        warnings.warn(f"{jpath}: {', '.join(ignored)} ignored ({'; '.join(IGNORED_KEYS[k] for k in ignored)})",
                      DataWarning, stacklevel=2)
    if not items:
        raise GscompError(f"{jpath}: none of the {len(frames)} frames has an image file")
    items.sort(key=lambda it: it[0])
    items = subsample(items, max_images)

    distorted = []

    def one(it):
        name, img, w2c, intr, where = it
        size = image_size(img)
        pcam = match_camera_to_image(camera_spec(intr, size, where), size, str(img))
        distorted.append(is_distorted(pcam))
        arr, cam = load_view(img, pcam, 1.0 / downscale, name, max_width)
        cam.world_to_camera = w2c
        cam.image = Photo(arr, background)
        return cam

    width_note = check_image_sizes([(it[1], 1.0 / downscale) for it in items], f"scene {jpath}", downscale, max_width)
    _pycolmap()  # here, not first in a loader thread (`colmap._pycolmap`)
    cams = parallel_map(one, items, threads)
    scale = _num(meta_json, "scale", str(jpath))
    scale = 0.33 if scale is None else scale
    if scale <= 0:
        raise FormatError(f"{jpath}: scale must be > 0, got {scale}")
    off = meta_json.get("offset", [0.5, 0.5, 0.5])
    try:
        off = np.broadcast_to(np.asarray(off, dtype=np.float64), (3,))
    except (TypeError, ValueError):
        raise FormatError(f"{jpath}: offset must be three numbers, got {off!r}") from None
    ply = meta_json.get("ply_file_path")
    if ply is not None:  # nerfstudio's SfM points (sparse_pc.ply), in the frames' coordinates
        pts, cols = read_point_cloud(root / str(ply), str(jpath))
    else:
        lo, hi = (0.0 - off) / scale, (1.0 - off) / scale
        pts, cols = random_points(num_points, lo, hi, seed)
    meta = {"source": "ngp", "transforms": str(jpath), "aabb_scale": meta_json.get("aabb_scale", 1),
            "skipped_frames": missing, "undistorted_images": sum(distorted),
            "notes": [rotation_note([it[1] for it in items]), width_note]}
    return cams, pts, cols, meta
