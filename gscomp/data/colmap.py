"""COLMAP scenes: binary or text model (``sparse/0``, ``sparse`` or the folder itself) + ``images/``.

Models are read with pycolmap. Distorted camera models are never treated as pinhole: each image is
undistorted with COLMAP's own undistorter (`pycolmap.undistort_image`, the same code as
``colmap image_undistorter`` that the 3DGS reference runs), and the camera becomes the undistorted
pinhole camera that pycolmap returns. Undistorted (and resized) images are cached under
`cache_root()` keyed by source file, camera and output size, so a second load only decodes PNGs.

``downscale``: when ``images_N/`` exists for an integer ``downscale == N`` (the 3DGS convention),
those pre-shrunk images are used; otherwise the images are resized here. Either way intrinsics are
derived from the actual image size, so camera and pixels always agree.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch

from ..camera import Camera, Photo
from ..errors import FormatError, GscompError, LayoutError
from .images import (cache_key, cache_root, capped_scale, check_image_sizes, file_stamp, image_size, load_cached_png,
                     open_image, parallel_map, resize, rotation_note, save_png_atomic)

PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
# Perspective models COLMAP's undistorter maps to a pinhole camera. Others (spherical ones, or
# models this version of the loader has not been checked against) are refused with a clear error.
DISTORTED_MODELS = ("SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV",
                    "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE", "OPENCV_FISHEYE")
SUPPORTED_MODELS = PINHOLE_MODELS + DISTORTED_MODELS
CACHE_VERSION = 1  # bump when the undistortion/resizing recipe changes


_PYCOLMAP = None
_PYCOLMAP_LOCK = threading.Lock()


def _pycolmap():
    """pycolmap, imported once. The image loader's threads call this too: a second thread must
    wait for the first one's import to finish (a bare ``import`` there can hand it the module
    half initialised). Callers that run threads import it first in the main thread, the only one
    whose import can keep Python's signal handlers (`signals.kept`)."""
    global _PYCOLMAP
    if _PYCOLMAP is not None:
        return _PYCOLMAP
    from ..signals import kept

    with _PYCOLMAP_LOCK:
        if _PYCOLMAP is None:
            try:
                with kept():  # (pycolmap's glog would turn SIGTERM into a stack dump)
                    import pycolmap
            except ImportError:  # pragma: no cover - pycolmap is a dependency
                raise GscompError("loading COLMAP scenes needs pycolmap: pip install pycolmap") from None
            _PYCOLMAP = pycolmap
    return _PYCOLMAP


# ---------------------------------------------------------------------------------- model lookup
def _is_model(d: Path) -> bool:
    return any(all((d / f"{n}{ext}").is_file() for n in ("cameras", "images", "points3D")) for ext in (".bin", ".txt"))


def find_model_dir(root: Path) -> Path:
    for cand in (root / "sparse" / "0", root / "sparse", root):
        if _is_model(cand):
            return cand
    raise LayoutError(
        f"no COLMAP model under {root}: expected cameras/images/points3D .bin or .txt in sparse/0, sparse or the folder itself")


def _image_count(d: Path) -> int:
    """Images a model registers, from its images file (cheap: no parsing of the records)."""
    import struct

    try:
        if (d / "images.bin").is_file():
            with open(d / "images.bin", "rb") as f:
                return struct.unpack("<Q", f.read(8))[0]
        with open(d / "images.txt", "rb") as f:
            return sum(1 for line in f if line.strip() and not line.startswith(b"#")) // 2
    except (OSError, struct.error):
        return 0


def other_models_note(root: Path, model_dir: Path) -> str | None:
    """When ``sparse/`` holds several models (COLMAP's mapper splits a capture it cannot connect),
    a note naming them with their image counts; None when there is one. ``sparse/0`` is not
    always the largest."""
    if model_dir != root / "sparse" / "0":
        return None
    models = sorted((d for d in (root / "sparse").iterdir() if d.is_dir() and d.name.isdigit() and _is_model(d)),
                    key=lambda d: int(d.name))
    if len(models) < 2:
        return None
    counts = ", ".join(f"{d.name}: {_image_count(d)} images" for d in models)
    return (f"sparse/ holds {len(models)} models ({counts}); using sparse/0: to use another, "
            f"data.path={root}/sparse/N +data.images=../../images")


def _refuse_bom(txt: Path) -> None:
    """COLMAP's text reader takes a UTF-8 byte-order mark for part of the first line (a comment
    then reads as a camera or image): say so instead of its confusing error."""
    with open(txt, "rb") as f:
        if f.read(3) == b"\xef\xbb\xbf":
            raise FormatError(f"{txt} starts with a UTF-8 byte-order mark (saved by a Windows editor?), which "
                              "COLMAP's reader cannot skip: save it as UTF-8 without BOM")


def _check_text_models(model_dir: Path) -> None:
    """pycolmap only says 'Camera model does not exist'; name the model and the line instead."""
    txt = model_dir / "cameras.txt"
    if (model_dir / "cameras.bin").is_file() or not txt.is_file():
        return
    pycolmap = _pycolmap()
    known = set(pycolmap.CameraModelId.__members__)
    ids = set()
    _refuse_bom(txt)
    for lineno, line in enumerate(txt.read_text(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        ids.add(parts[0])
        if len(parts) >= 2 and (parts[1] not in known or parts[1] not in SUPPORTED_MODELS):
            raise FormatError(f"{txt}:{lineno}: unsupported camera model {parts[1]!r} "
                              f"(supported: {', '.join(SUPPORTED_MODELS)})")
        if len(parts) < 5:
            raise FormatError(f"{txt}:{lineno}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...'")
    _check_images_txt(model_dir / "images.txt", ids)


def _check_images_txt(txt: Path, camera_ids: set[str] | None = None) -> None:
    """images.txt is two lines per image, the second (the POINTS2D) possibly empty, and COLMAP's
    reader takes whatever line follows an image as its points: a hand-written file without the
    empty lines silently lost every other image, and one ending on an image line its last one.
    Walk it the way COLMAP does and name the first line that breaks the layout, a name with
    spaces (the reader stops at the first one) or a camera that cameras.txt lacks."""
    if not txt.is_file():
        return
    _refuse_bom(txt)
    with open(txt, "rb") as f:
        lines = iter(enumerate(f, 1))
        for lineno, raw in lines:
            parts = raw.split()
            if not parts or parts[0].startswith(b"#"):
                continue
            if len(parts) < 10:
                raise FormatError(f"{txt}:{lineno}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'")
            if len(parts) > 10:
                name = b" ".join(parts[9:]).decode(errors="replace")
                raise FormatError(f"{txt}:{lineno}: image name {name!r} has spaces, which COLMAP's text format "
                                  "cannot hold: use the binary model (colmap model_converter --output_type BIN)")
            if camera_ids is not None and parts[8].decode(errors="replace") not in camera_ids:
                raise FormatError(f"{txt}:{lineno}: image {parts[9].decode(errors='replace')!r} uses camera "
                                  f"{parts[8].decode(errors='replace')}, which cameras.txt does not define")
            try:
                q = [float(v) for v in parts[1:5]]
            except ValueError:
                raise FormatError(f"{txt}:{lineno}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'") from None
            if not sum(v * v for v in q) > 1e-12:  # (also NaN) pycolmap would make it the identity
                raise FormatError(f"{txt}:{lineno}: image {parts[0].decode(errors='replace')} has rotation "
                                  f"quaternion {' '.join(v.decode(errors='replace') for v in parts[1:5])} (not a rotation)")
            nxt = next(lines, None)
            if nxt is None:
                raise FormatError(f"{txt}:{lineno}: the last image has no POINTS2D line after it "
                                  "(each image takes two lines; the second may be empty)")
            pts = nxt[1].split()
            if len(pts) % 3 or (pts and not pts[2].lstrip(b"-").isdigit()):
                raise FormatError(f"{txt}:{nxt[0]}: expected the POINTS2D line of the image on line {lineno} "
                                  "('X Y POINT3D_ID ...', or an empty line): each image takes two lines")


# parameters per COLMAP camera model id (COLMAP's models.h, ids 0..10)
_NUM_PARAMS = (3, 4, 4, 5, 8, 8, 12, 5, 4, 5, 12)


def _check_binary_models(model_dir: Path) -> None:
    """Walk the binary model's records with every count checked against the bytes left, before
    pycolmap reads it: its reader trusts the counts (a truncated or corrupt file makes it allocate
    gigabytes or loop on a missing name terminator)."""
    import struct

    def walk(name: str, record) -> None:
        path = model_dir / f"{name}.bin"
        if not path.is_file():
            return
        data = path.read_bytes()
        if len(data) < 8:
            raise FormatError(f"{path}: truncated ({len(data)} bytes)")
        (count,) = struct.unpack_from("<Q", data, 0)
        pos = 8
        try:
            for i in range(count):
                if pos >= len(data):
                    raise FormatError(f"{path}: declares {count} records but ends after {i} (truncated?)")
                pos = record(data, pos)
        except struct.error:
            raise FormatError(f"{path}: truncated or corrupt record") from None
        if pos != len(data):
            raise FormatError(f"{path}: {len(data) - pos} bytes after its {count} records (corrupt?)")

    def need(data: bytes, pos: int, n: int) -> int:
        if n < 0 or pos + n > len(data):
            raise FormatError(f"COLMAP model {model_dir}: a record runs past the end of its file (truncated?)")
        return pos + n

    cameras = set()

    def camera(data, pos):
        cid, model = struct.unpack_from("<ii", data, pos)
        cameras.add(cid)
        if not 0 <= model < len(_NUM_PARAMS):
            raise FormatError(f"{model_dir / 'cameras.bin'}: unknown camera model id {model}")
        return need(data, pos, 24 + 8 * _NUM_PARAMS[model])

    def image(data, pos):
        q = struct.unpack_from("<4d", data, need(data, pos, 64) - 60)
        if not sum(v * v for v in q) > 1e-12:
            (iid,) = struct.unpack_from("<I", data, pos)
            raise FormatError(f"{model_dir / 'images.bin'}: image {iid} has rotation quaternion {q} (not a rotation)")
        (cid,) = struct.unpack_from("<i", data, pos + 60)
        pos += 64
        end = data.find(b"\0", pos)
        if end < 0:
            raise FormatError(f"{model_dir / 'images.bin'}: image name without its terminator (truncated?)")
        if (model_dir / "cameras.bin").is_file() and cid not in cameras:
            raise FormatError(f"{model_dir / 'images.bin'}: image {data[pos:end].decode(errors='replace')!r} uses "
                              f"camera {cid}, which cameras.bin does not define")
        (n2d,) = struct.unpack_from("<Q", data, need(data, end + 1, 8) - 8)
        return need(data, end + 9, 24 * n2d)

    def point(data, pos):
        (track,) = struct.unpack_from("<Q", data, need(data, pos, 51) - 8)
        return need(data, pos + 51, 8 * track)

    walk("cameras", camera)
    walk("images", image)
    walk("points3D", point)


def read_model(model_dir: Path):
    pycolmap = _pycolmap()
    _check_text_models(model_dir)
    _check_binary_models(model_dir)
    try:
        return pycolmap.Reconstruction(str(model_dir))
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FormatError(f"cannot read COLMAP model {model_dir}: {msg}") from None


# ---------------------------------------------------------------------------------- undistortion
def is_distorted(pcam) -> bool:
    """True unless the model is pinhole or a perspective one whose distortion parameters are all
    exactly zero (a fisheye with zero coefficients is still equidistant, r = f theta: distorted)."""
    if pcam.model.name in PINHOLE_MODELS:
        return False
    if "FISHEYE" in pcam.model.name:
        return True
    params = np.asarray(pcam.params, dtype=np.float64)
    return bool(np.any(params[list(pcam.extra_params_idxs())] != 0))


def _undistort_options():
    # Defaults of `colmap image_undistorter`: the output keeps only valid pixels (blank_pixels=0).
    return _pycolmap().UndistortCameraOptions()


def pinhole_of(pcam) -> tuple[float, float, float, float, int, int]:
    """Intrinsics (fx, fy, cx, cy, w, h) of the pinhole camera the image will have after loading."""
    if is_distorted(pcam):
        pcam = _pycolmap().undistort_camera(_undistort_options(), pcam)
    return (float(pcam.focal_length_x), float(pcam.focal_length_y), float(pcam.principal_point_x),
            float(pcam.principal_point_y), int(pcam.width), int(pcam.height))


def undistort_array(arr: np.ndarray, pcam) -> np.ndarray:
    """Undistort a uint8 (H, W, 3|4) image taken with ``pcam`` (sized like ``arr``) using COLMAP."""
    pycolmap = _pycolmap()
    opts = _undistort_options()
    rgb = pycolmap.Bitmap.from_array(np.ascontiguousarray(arr[..., :3]))
    out_rgb, _ = pycolmap.undistort_image(opts, rgb, pcam)
    out = out_rgb.to_array()
    if arr.shape[-1] == 4:  # warp alpha with the same map (COLMAP bitmaps are grey or RGB)
        a = pycolmap.Bitmap.from_array(np.ascontiguousarray(arr[..., 3]))
        out_a, _ = pycolmap.undistort_image(opts, a, pcam)
        out = np.concatenate([out, out_a.to_array().reshape(out.shape[0], out.shape[1], 1)], -1)
    return out


def camera_spec(pcam) -> tuple[str, int, int, tuple[float, ...]]:
    """Plain-Python description of a pycolmap camera (model, width, height, params).

    Worker threads build their own pycolmap objects from these: objects owned by a
    `Reconstruction` must not be touched from several threads (that crashed with a double free)."""
    return pcam.model.name, int(pcam.width), int(pcam.height), tuple(float(p) for p in pcam.params)


def match_camera_to_image(spec, size: tuple[int, int], what: str):
    """A new pycolmap camera from ``spec`` (see `camera_spec`), rescaled to the actual image size
    (w, h), e.g. for images from ``images_N/``. Refuses a changed aspect ratio."""
    w, h = size
    model, width, height, params = spec
    pcam = _pycolmap().Camera(model=model, width=width, height=height, params=list(params))
    if (pcam.width, pcam.height) != (w, h):
        if abs(w / pcam.width - h / pcam.height) > 0.01 * max(w / pcam.width, h / pcam.height) + 1.5 / min(w, h):
            raise GscompError(f"{what}: image is {w}x{h} but its camera is {pcam.width}x{pcam.height} "
                              f"(different aspect ratio){_turned(what)}")
        pcam.rescale(int(w), int(h))
    return pcam


def _turned(path: str) -> str:
    """The EXIF rotation of an image whose size does not fit its camera, as a hint ('' if none)."""
    from PIL import Image

    from .images import ORIENTATIONS, exif_orientation

    try:
        with Image.open(path) as im:
            o = exif_orientation(im)
    except Exception:
        return ""
    return "" if o == 1 else (f"; its EXIF Orientation tag {o} shows it {ORIENTATIONS[o]}, but gscomp and COLMAP use "
                              "the pixels as stored: compute the poses from the stored pictures")


def load_view(src: Path, pcam, scale: float, name: str, max_width: int = 0) -> tuple[np.ndarray, Camera]:
    """Load ``src`` (taken with pycolmap camera ``pcam``, already sized like the file), undistort when
    needed, resize by ``scale`` (<1 shrinks; less where the result would be over ``max_width``
    pixels wide, `capped_scale`). Returns the uint8 image and a pose-less `Camera` (identity
    world_to_camera) whose intrinsics match the returned pixels exactly."""
    fx, fy, cx, cy, w, h = pinhole_of(pcam)
    cam = Camera(fx, fy, cx, cy, w, h, torch.eye(4), name=name)
    scale = capped_scale(w, scale, max_width)
    if scale != 1:
        cam = cam.scaled(scale)
    size = (cam.width, cam.height)
    if not is_distorted(pcam):
        arr = np.asarray(open_image(src, size=size))
        if arr.shape[1] != cam.width or arr.shape[0] != cam.height:  # pragma: no cover - open_image resizes
            raise FormatError(f"{src}: decoded size {arr.shape[1]}x{arr.shape[0]} != {size}")
        return arr, cam
    key = cache_key(CACHE_VERSION, file_stamp(src), pcam.model.name, [float(p) for p in pcam.params],
                    pcam.width, pcam.height, size)
    cpath = cache_root() / "undistorted" / key[:2] / f"{Path(name).stem[:40]}-{key}.png"
    arr = load_cached_png(cpath)
    if arr is not None and arr.shape[:2] == (cam.height, cam.width):
        return arr, cam
    full = np.asarray(open_image(src))
    und = undistort_array(full, pcam)
    if und.shape[:2] != (h, w):  # pragma: no cover - pycolmap returns the camera it computed
        raise FormatError(f"{src}: undistorted image is {und.shape[1]}x{und.shape[0]}, expected {w}x{h}")
    from PIL import Image

    arr = np.asarray(resize(Image.fromarray(und), size))
    save_png_atomic(cpath, arr)
    return arr, cam


# ---------------------------------------------------------------------------------- the loader
def registered_images(rec, model_dir: Path) -> list:
    """The model's posed images sorted by name, once every camera is checked (a supported model,
    a sane size, finite parameters). Shared by the scene loader and `gscomp compress --cameras`."""
    try:
        regs = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    except UnicodeDecodeError:
        raise FormatError(f"COLMAP model {model_dir}: an image name is not UTF-8") from None
    if not regs:
        raise FormatError(f"COLMAP model {model_dir} has no registered images")
    dup = next((a.name for a, b in zip(regs, regs[1:]) if a.name == b.name), None)
    if dup is not None:  # one photo, two poses: at least one of them is wrong
        raise FormatError(f"COLMAP model {model_dir}: image {dup!r} is registered twice")
    for cam_id, pcam in rec.cameras.items():
        if pcam.model.name not in SUPPORTED_MODELS:
            raise FormatError(f"COLMAP camera {cam_id} uses unsupported model {pcam.model.name} "
                              f"(supported: {', '.join(SUPPORTED_MODELS)})")
        if not 1 <= pcam.width <= 1 << 20 or not 1 <= pcam.height <= 1 << 20:
            raise FormatError(f"COLMAP camera {cam_id} is {pcam.width}x{pcam.height} pixels")
        if not np.isfinite(np.asarray(pcam.params, np.float64)).all():
            raise FormatError(f"COLMAP camera {cam_id} has non-finite parameters {[float(v) for v in pcam.params]}")
    return regs


def world_to_camera(im) -> np.ndarray:
    """(4, 4) float64 world-to-camera matrix of a posed COLMAP image (OpenCV axes)."""
    w2c = np.eye(4)
    w2c[:3, :4] = im.cam_from_world().matrix()
    return w2c


def load_colmap(path: str | os.PathLike, *, downscale: float = 1, background=(1.0, 1.0, 1.0),
                max_images: int | None = None, images: str = "images", threads: int | None = None,
                max_width: int = 0):
    """Return (cameras with images, sorted by name; points (M,3); colours (M,3) in [0,1]; meta).

    ``images``: image folder name relative to the scene root (default ``images``); ``max_width``:
    images that would load wider are shrunk to it (0: none are)."""
    from . import subsample  # late import: the package imports this module

    root = Path(path)
    if not root.exists():
        raise GscompError(f"COLMAP scene not found: {root}")
    model_dir = find_model_dir(root)
    scene_root = root
    rec = read_model(model_dir)
    regs = registered_images(rec, model_dir)
    if len(rec.points3D) == 0:
        raise FormatError(f"COLMAP model {model_dir} has no 3D points (needed to initialise Gaussians)")

    image_dir = scene_root / images
    scale = 1.0 / float(downscale)
    n = round(float(downscale))
    if downscale > 1 and abs(downscale - n) < 1e-9 and (scene_root / f"{images}_{n}").is_dir():
        image_dir, scale = scene_root / f"{images}_{n}", 1.0  # pre-shrunk by the user (3DGS style)
    if not image_dir.is_dir():
        raise GscompError(f"image folder not found: {image_dir}")
    regs = subsample(regs, max_images)

    specs = {cid: camera_spec(c) for cid, c in rec.cameras.items()}
    jobs = []  # everything the workers need, as plain Python (see camera_spec)
    for im in regs:
        jobs.append((im.name, specs[im.camera_id], torch.from_numpy(world_to_camera(im))))

    def one(job):
        name, spec, w2c = job
        src = image_dir / name
        if not src.is_file():
            raise GscompError(f"image {name} of the COLMAP model is missing: {src}")
        pcam = match_camera_to_image(spec, image_size(src), str(src))
        arr, cam = load_view(src, pcam, scale, name, max_width)
        cam.world_to_camera = w2c
        cam.image = Photo(arr, background)
        return cam

    width_note = check_image_sizes([(image_dir / name, scale) for name, _, _ in jobs], f"COLMAP scene {root}",
                                   downscale, max_width)
    cams = parallel_map(one, jobs, threads)
    ids = sorted(rec.points3D)
    pts = np.array([rec.points3D[i].xyz for i in ids], dtype=np.float32).reshape(-1, 3)
    cols = np.array([rec.points3D[i].color for i in ids], dtype=np.float32).reshape(-1, 3) / 255.0
    distorted = sum(is_distorted(rec.cameras[im.camera_id]) for im in regs)  # main thread only
    meta = {"source": "colmap", "model_dir": str(model_dir), "image_dir": str(image_dir),
            "undistorted_images": int(distorted),
            "notes": [other_models_note(root, model_dir), rotation_note([image_dir / im.name for im in regs]),
                      width_note]}
    return cams, torch.from_numpy(pts), torch.from_numpy(cols), meta
