"""PlayCanvas SOG (version 2) reader: ``meta.json`` + lossless WebP textures.

Every attribute image is W x H RGBA, one pixel per Gaussian in row-major order:
- ``means``: two images (low and high byte) give 16-bit unorms per axis; the value is
  lerped between ``means.mins`` and ``means.maxs`` and then un-log-transformed:
  x = sign(v) * (exp(|v|) - 1).
- ``quats``: RGB are the three smallest components c of the wxyz quaternion stored as
  (c*sqrt2 + 1)/2 * 255; A = 252 + index of the largest component (reconstructed >= 0).
- ``scales``: RGB index the 256-entry ``scales.codebook`` (log scales).
- ``sh0``: RGB index ``sh0.codebook`` (f_dc), A = sigmoid(opacity) * 255.
- ``shN`` (optional): ``labels`` (R | G<<8 = palette index) select a row of ``centroids``
  (palette entry i sits at x = (i % 64) * K + k, y = i // 64 for coefficient k); the
  centroid's RGB index ``shN.codebook``.
Coordinates are the PLY's. Accepts the meta.json path, a directory holding it, or a
zipped `.sog` bundle.
"""
from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import FormatError, GscompError, one_line
from ..splats import Splats
from .common import build_splats, logit, read_bytes

MAX_MEMBER = 1 << 31  # bytes of one bundle member (textures of 100M+ Gaussians fit)


def read_sog(path: str | os.PathLike) -> Splats:
    path = Path(path)
    if path.is_dir():
        path = path / "meta.json"
        if not path.exists():
            raise GscompError(f"{path.parent}: directory has no meta.json (not a SOG scene)")
    if path.suffix.lower() == ".sog" and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())

                def load(name: str) -> bytes:
                    if name not in names:
                        raise FormatError(f"{path}: bundle has no '{name}'")
                    if z.getinfo(name).file_size > MAX_MEMBER:  # zipfile reads no more than this
                        raise FormatError(f"{path}: bundle member '{name}' is implausibly large")
                    return z.read(name)

                return decode_sog(load, path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, OSError) as e:
            # corrupt directory or CRC, unknown compression method, encrypted member
            raise FormatError(f"{path}: corrupt or unsupported .sog bundle ({one_line(e)})") from None
    base = path.parent
    meta_bytes = read_bytes(path)
    if path.suffix.lower() == ".sog" and not meta_bytes.lstrip()[:1] == b"{":
        # a bundle is a zip; zipfile found no directory at its end, so it was cut or is foreign
        raise FormatError(f"{path}: not a readable .sog bundle (a zip archive; truncated?)")
    return decode_sog(lambda name: meta_bytes if name == "meta.json" else read_bytes(base / name), path)


def _get(meta: dict, path, *keys):
    cur = meta
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            raise FormatError(f"{path}: meta.json has no '{'.'.join(keys)}'")
        cur = cur[k]
    return cur


def _int(meta: dict, path, *keys) -> int:
    v = _get(meta, path, *keys)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise FormatError(f"{path}: meta.json '{'.'.join(keys)}' must be a non-negative integer, got {v!r}"[:300])
    return v


def _floats(meta: dict, path, shape: tuple, *keys) -> np.ndarray:
    v = _get(meta, path, *keys)
    try:
        a = np.asarray(v, np.float64)
    except (TypeError, ValueError, OverflowError):
        a = None
    if a is None or a.shape != shape:
        raise FormatError(f"{path}: meta.json '{'.'.join(keys)}' must be {shape[0]} numbers")
    return a


def _files(meta: dict, path, key: str, count: int) -> list[str]:
    files = _get(meta, path, key, "files")
    if not isinstance(files, list) or len(files) < count or not all(isinstance(f, str) for f in files):
        raise FormatError(f"{path}: {key}.files must list {count} file name(s), got {files!r}")
    return files


def _rgba(load: Callable[[str], bytes], name: str, path) -> np.ndarray:
    """Decode one WebP texture to an (H, W, 4) uint8 array."""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # very large textures: PIL warns (and errors past 2x its limit)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(load(name))) as im:
                return np.asarray(im.convert("RGBA"))
    except GscompError:
        raise
    except Exception as e:  # PIL raises assorted errors on corrupt images
        raise FormatError(f"{path}: cannot decode texture '{name}' ({one_line(e)})") from None


def _image(load: Callable[[str], bytes], name: str, path, count: int) -> np.ndarray:
    """The first ``count`` pixels (row-major) of a texture, (count, 4) uint8."""
    flat = _rgba(load, name, path).reshape(-1, 4)
    if len(flat) < count:
        raise FormatError(f"{path}: texture '{name}' has {len(flat)} pixels, fewer than the {count} Gaussians")
    return flat[:count]


def decode_sog(load: Callable[[str], bytes], path) -> Splats:
    try:
        meta = json.loads(load("meta.json"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # ValueError: also int digit limit
        raise FormatError(f"{path}: meta.json is not valid JSON ({one_line(e, 200)})") from None
    if not isinstance(meta, dict):
        raise FormatError(f"{path}: meta.json is not a JSON object")
    if "lodLevels" in meta:
        names = meta.get("filenames")
        first = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else "<level>/meta.json"
        raise FormatError(f"{path}: is a SOG level-of-detail index, not a scene; "
                          f"load one level's meta.json (e.g. {first})")
    if not {"means", "scales", "quats"} & set(meta):  # some other JSON (transforms.json, cameras, ...)
        raise FormatError(f"{path}: not a SOG meta.json (none of its means/scales/quats entries)")
    version = meta.get("version")
    if version != 2:
        what = "legacy SOG v1 (no 'version')" if version is None else f"SOG version {version}"
        raise FormatError(f"{path}: {what} is not supported (only version 2)")
    n = _int(meta, path, "count")

    # means: 16-bit unorm per axis split over two textures, log-transformed range
    files = _files(meta, path, "means", 2)
    lo = _image(load, files[0], path, n).astype(np.uint32)
    hi = _image(load, files[1], path, n).astype(np.uint32)
    q16 = (lo[:, :3] | (hi[:, :3] << 8)).astype(np.float64) / 65535.0
    mins = _floats(meta, path, (3,), "means", "mins")
    maxs = _floats(meta, path, (3,), "means", "maxs")
    with np.errstate(over="ignore", invalid="ignore"):  # huge ranges: build_splats names the non-finite values
        v = mins + (maxs - mins) * q16
        means = np.sign(v) * np.expm1(np.abs(v))

    # quats: smallest three + tag 252..255 naming the largest (wxyz index)
    qt = _image(load, _files(meta, path, "quats", 1)[0], path, n)
    tag = qt[:, 3].astype(np.int64)
    valid = (tag >= 252) & (tag <= 255)
    which = np.where(valid, tag - 252, 0)
    small = (qt[:, :3].astype(np.float64) / 255.0 * 2.0 - 1.0) / np.sqrt(2.0)
    quats = np.zeros((n, 4))
    other = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[which]
    quats[np.arange(n)[:, None], other] = small
    quats[np.arange(n), which] = np.sqrt(np.maximum(0.0, 1.0 - (small ** 2).sum(1)))
    quats[~valid] = [1.0, 0.0, 0.0, 0.0]  # as the reference reader: bad tag -> identity

    def codebook(key: str) -> np.ndarray:
        return _floats(meta, path, (256,), key, "codebook")

    sc = _image(load, _files(meta, path, "scales", 1)[0], path, n)
    scales = codebook("scales")[sc[:, :3]]
    c0 = _image(load, _files(meta, path, "sh0", 1)[0], path, n)
    sh0 = codebook("sh0")[c0[:, :3]]
    opac = logit(c0[:, 3].astype(np.float64) / 255.0)

    shN = np.zeros((n, 0, 3))
    if meta.get("shN") and _get(meta, path, "shN", "bands") != 0:
        bands = _int(meta, path, "shN", "bands")
        if bands not in (1, 2, 3):
            raise FormatError(f"{path}: shN.bands = {bands!r}, expected 0, 1, 2 or 3")
        k = (bands + 1) ** 2 - 1
        palette = _int(meta, path, "shN", "count")
        cb = codebook("shN")
        cfiles = _files(meta, path, "shN", 2)
        cent = _rgba(load, cfiles[0], path)
        ch, cw = cent.shape[:2]
        if cw != 64 * k or ch * 64 < palette:
            raise FormatError(f"{path}: shN centroids texture is {cw}x{ch}, expected width {64 * k} "
                              f"and room for {palette} entries")
        # (palette, K, 3) table of codebook indices
        table = cent[:, :, :3].reshape(ch, 64, k, 3).reshape(ch * 64, k, 3)[:palette]
        lab = _image(load, cfiles[1], path, n).astype(np.int64)
        label = lab[:, 0] | (lab[:, 1] << 8)
        if n and int(label.max()) >= palette:
            raise FormatError(f"{path}: shN label {int(label.max())} outside the palette of {palette}")
        shN = cb[table[label]]
    return build_splats(path, means, quats, scales, opac, sh0, shN)


__all__ = ["read_sog", "decode_sog"]
