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
import re
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import FormatError, GscompError, one_line
from ..memory import check_decode_memory
from ..splats import Splats
from .common import build_splats, logit, read_bytes

MAX_MEMBER = 1 << 31  # bytes of one bundle member (textures of 100M+ Gaussians fit)
MAX_META = 4 << 20  # bytes of meta.json (its codebooks and file names take a few KB)


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

                def load(name: str, limit: int = MAX_MEMBER) -> bytes:
                    if name not in names:
                        raise FormatError(f"{path}: bundle has no {_quote(name)}")
                    if z.getinfo(name).file_size > limit:  # zipfile reads no more than this
                        raise FormatError(f"{path}: bundle member {_quote(name)} is implausibly large "
                                          f"({z.getinfo(name).file_size:,} bytes)")
                    return z.read(name)

                return decode_sog(load, path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, OSError) as e:
            # corrupt directory or CRC, unknown compression method, encrypted member
            raise FormatError(f"{path}: corrupt or unsupported .sog bundle ({one_line(e)})") from None
    base = path.parent
    if _size(path) > MAX_META:
        raise FormatError(f"{path}: too large for a SOG meta.json ({_size(path):,} bytes)")
    meta_bytes = read_bytes(path)
    if path.suffix.lower() == ".sog" and not meta_bytes.lstrip()[:1] == b"{":
        # a bundle is a zip; zipfile found no directory at its end, so it was cut or is foreign
        raise FormatError(f"{path}: not a readable .sog bundle (a zip archive; truncated?)")

    def load(name: str, limit: int = MAX_MEMBER) -> bytes:
        if name == "meta.json":
            return meta_bytes
        if _size(base / name) > limit:
            raise FormatError(f"{path}: texture {_quote(name)} is implausibly large ({_size(base / name):,} bytes)")
        return read_bytes(base / name)

    return decode_sog(load, path)


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0  # (missing: read_bytes says so)


def _quote(name: str) -> str:
    """A file name from meta.json for an error line (any length, any characters)."""
    return repr(name) if len(name) <= 120 else repr(name[:117] + "...")


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
    if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        v = None  # (numpy reads "1" and true as numbers)
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
        raise FormatError(f"{path}: {key}.files must list {count} file name(s), got {files!r}"[:300])
    for f in files[:count]:
        # a texture sits beside meta.json (or in the bundle): a name that leaves the folder is refused
        # rather than read (meta.json could otherwise make gscomp open any file it can reach)
        if not f or f != os.path.basename(f) or f in (".", "..") or "\\" in f or "\0" in f:
            raise FormatError(f"{path}: {key}.files names {_quote(f)}, not a file beside meta.json")
    return files


def _rgba(load: Callable[..., bytes], name: str, path, pixels: int) -> np.ndarray:
    """Decode one WebP texture to an (H, W, 4) uint8 array; a texture declaring far more than
    ``pixels`` pixels (a few bytes of WebP can declare 16383 x 16383) is refused before decoding."""
    from PIL import Image

    # padding: writers round each side up to a multiple of 4 (or the centroids to rows of 64)
    most = 2 * pixels + 4096
    try:
        with warnings.catch_warnings():  # very large textures: PIL warns (and errors past 2x its limit)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # lossless WebP takes at most about 4 bytes a pixel (RGBA); more is not a texture of this scene
            with Image.open(io.BytesIO(load(name, 5 * most + (1 << 20)))) as im:
                w, h = im.size
                if w * h > most:
                    raise FormatError(f"{path}: texture {_quote(name)} is {w}x{h}, far more than the {pixels:,} "
                                      "pixels it needs")
                return np.asarray(im.convert("RGBA"))
    except GscompError:
        raise
    except Exception as e:  # PIL raises assorted errors on corrupt images
        # (PIL names the buffer it was given, '<_io.BytesIO object at 0x7f...>': an address, not a file)
        why = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", one_line(e))[:200]
        raise FormatError(f"{path}: cannot decode texture {_quote(name)} ({why})") from None


def _image(load: Callable[..., bytes], name: str, path, count: int, width: int) -> np.ndarray:
    """The first ``count`` pixels (row-major) of a texture, (count, 4) uint8. ``width``: that of
    the scene's first texture, which every per-Gaussian texture shares (one pixel per Gaussian at
    the same place in each)."""
    img = _rgba(load, name, path, count)
    if img.shape[1] != width:
        raise FormatError(f"{path}: texture {_quote(name)} is {img.shape[1]} pixels wide, the scene's first "
                          f"texture {width}: their pixels would not belong to the same Gaussians")
    return _pixels(img, count, name, path)


def _pixels(img: np.ndarray, count: int, name: str, path) -> np.ndarray:
    flat = img.reshape(-1, 4)
    if len(flat) < count:
        raise FormatError(f"{path}: texture {_quote(name)} has {len(flat)} pixels, fewer than the {count} Gaussians")
    return flat[:count]


def decode_sog(load: Callable[[str], bytes], path) -> Splats:
    try:
        meta = json.loads(load("meta.json", MAX_META))
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
    if type(version) is not int:  # (2.0 and true compare equal to 2 and 1)
        if version is None:
            raise FormatError(f"{path}: legacy SOG v1 (no 'version') is not supported (only version 2)")
        raise FormatError(f"{path}: meta.json 'version' must be the integer 2, got {version!r}"[:300])
    if version != 2:
        raise FormatError(f"{path}: SOG version {version} is not supported (only version 2)"[:300])
    n = _int(meta, path, "count")
    bands = _get(meta, path, "shN", "bands") if meta.get("shN") else 0
    # (before any texture is decoded: a few KB of WebP can hold millions of pixels)
    check_decode_memory(n, bands if bands in (1, 2, 3) else 0, path)

    # means: 16-bit unorm per axis split over two textures, log-transformed range
    files = _files(meta, path, "means", 2)
    first = _rgba(load, files[0], path, n)
    width = first.shape[1]

    def texture(name: str) -> np.ndarray:
        return _image(load, name, path, n, width)

    lo = _pixels(first, n, files[0], path).astype(np.uint32)
    hi = texture(files[1]).astype(np.uint32)
    q16 = (lo[:, :3] | (hi[:, :3] << 8)).astype(np.float64) / 65535.0
    mins = _floats(meta, path, (3,), "means", "mins")
    maxs = _floats(meta, path, (3,), "means", "maxs")
    with np.errstate(over="ignore", invalid="ignore"):  # huge ranges: build_splats names the non-finite values
        v = mins + (maxs - mins) * q16
        means = np.sign(v) * np.expm1(np.abs(v))

    # quats: smallest three + tag 252..255 naming the largest (wxyz index)
    qt = texture(_files(meta, path, "quats", 1)[0])
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

    sc = texture(_files(meta, path, "scales", 1)[0])
    scales = codebook("scales")[sc[:, :3]]
    c0 = texture(_files(meta, path, "sh0", 1)[0])
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
        cent = _rgba(load, cfiles[0], path, 64 * k * -(-palette // 64))
        ch, cw = cent.shape[:2]
        if cw != 64 * k or ch * 64 < palette:
            raise FormatError(f"{path}: shN centroids texture is {cw}x{ch}, expected width {64 * k} "
                              f"and room for {palette} entries")
        # (palette, K, 3) table of codebook indices
        table = cent[:, :, :3].reshape(ch, 64, k, 3).reshape(ch * 64, k, 3)[:palette]
        lab = texture(cfiles[1]).astype(np.int64)
        label = lab[:, 0] | (lab[:, 1] << 8)
        if n and int(label.max()) >= palette:
            raise FormatError(f"{path}: shN label {int(label.max())} outside the palette of {palette}")
        shN = cb[table[label]]
    return build_splats(path, means, quats, scales, opac, sh0, shN)


__all__ = ["read_sog", "decode_sog"]
