"""Image helpers shared by the loaders: decode, resize, composite, cache, parallel map.

Images travel as uint8 numpy arrays (H, W, 3 or 4) and stay so in the `Photo` a `Camera` holds
(its ``image`` and ``alpha`` are computed from them in float32 on each use). Resizing uses PIL's
BOX filter for reductions (an exact area average, the right anti-aliasing for integer and
fractional downscales) and LANCZOS for enlargements; PIL premultiplies RGBA while resampling, so
edges of transparent objects do not pick up the colour of invisible pixels.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np
from PIL import Image

from ..errors import DataWarning, GscompError
from ..fileio import atomic_open
from ..memory import NO_MEMORY_CHECK, available_memory, memory_check_off

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG", ".webp", ".bmp", ".tif", ".tiff", ".exr")

T = TypeVar("T")
R = TypeVar("R")


def _to_uint8_mode(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB or RGBA (8 bit); 16-bit greyscale PNGs and float greyscale TIFFs in
    [0, 1] are scaled, not clipped."""
    if im.mode in ("RGB", "RGBA"):
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        # 16-bit files are 16-bit whatever their values (a dark frame may stay below 256: scaling
        # by its own maximum made it 257x too bright); a 32-bit "I" image says nothing: its values
        # decide
        top = 65535.0 if im.mode != "I" or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode == "F":  # 32-bit float greyscale (TIFF): PIL's convert would clip 0..1 to black
        a = np.asarray(im, dtype=np.float64)
        if not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
            raise ValueError("a float image with values outside [0, 1] (HDR or depth?): convert it to 8 or 16 bit")
        return Image.fromarray((a * 255.0 + 0.5).astype(np.uint8)).convert("RGB")
    has_alpha = im.mode in ("LA", "PA", "La") or (im.mode == "P" and "transparency" in im.info)
    return im.convert("RGBA" if has_alpha else "RGB")


# Markers that may follow a JPEG scan's entropy-coded data (ITU T.81 table B.1): tables, restart
# interval, the next scan, comments, application data, DNL, the end of the image.
_AFTER_SCAN = frozenset([0xC4, 0xCC, 0xDA, 0xDB, 0xDC, 0xDD, 0xD9, 0xFE, *range(0xE0, 0xF0)])


def jpeg_damage(data: bytes) -> str | None:
    """Why a JPEG stream is damaged, or None if its marker structure is sound.

    libjpeg decodes a stream with bytes overwritten mid-scan without an error: it reports "Corrupt
    JPEG data", PIL drops that report, and the rest of the picture comes out flat grey. The damage
    nearly always shows in the structure: inside a scan a 0xFF byte may only be followed by 0x00
    (stuffing) or the next restart marker in sequence, and the scan must end in a marker that can
    follow one. Trailing bytes after the end marker (some cameras append data) are fine."""
    b = np.frombuffer(data, np.uint8)
    n, i = len(b), 2
    if n < 4 or b[0] != 0xFF or b[1] != 0xD8:
        return "no JPEG start marker"
    while True:
        if i >= n:
            return "no end-of-image marker (truncated?)"
        if b[i] != 0xFF:
            return f"a segment ends at byte {i} without a marker after it"
        while i < n and b[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return "no end-of-image marker (truncated?)"
        m = int(b[i])
        i += 1
        if m == 0xD9:
            return None
        if m == 0x01 or 0xD0 <= m <= 0xD7:
            continue
        if i + 2 > n:
            return "truncated in a segment header"
        i += (int(b[i]) << 8) | int(b[i + 1])
        if m != 0xDA:
            continue
        # entropy-coded data: find the first 0xFF that is neither stuffing nor a restart marker
        ffs = np.flatnonzero(b[i:n - 1] == 0xFF) + i
        nxt = b[ffs + 1]
        rst = (nxt >= 0xD0) & (nxt <= 0xD7)
        end = np.flatnonzero((nxt != 0x00) & (nxt != 0xFF) & ~rst)
        stop = int(ffs[end[0]]) if len(end) else n
        seq = nxt[rst & (ffs < stop)].astype(np.int64) - 0xD0
        if len(seq) and ((seq != np.arange(len(seq)) % 8).any()):
            k = int(np.flatnonzero(seq != np.arange(len(seq)) % 8)[0])
            return f"restart marker {k} of a scan is out of sequence"
        if stop >= n - 1:
            return "no end-of-image marker (truncated?)"
        if int(b[stop + 1]) not in _AFTER_SCAN:
            return f"invalid marker 0xFF{int(b[stop + 1]):02X} in the compressed data at byte {stop}"
        i = stop


def exif_orientation(im: Image.Image) -> int:
    """The EXIF Orientation tag (1 = as stored; 3 = rotated 180 degrees; 6/8 = 90 degrees)."""
    try:
        o = int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block says nothing about the pixels
        return 1
    return o if 1 <= o <= 8 else 1


ORIENTATIONS = {2: "mirrored", 3: "rotated 180 degrees", 4: "mirrored vertically",
                5: "mirrored and rotated 90 degrees", 6: "rotated 90 degrees",
                7: "mirrored and rotated 90 degrees", 8: "rotated 90 degrees"}


def open_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image file to an RGB/RGBA PIL image, optionally resized to ``size`` (w, h).

    For JPEGs, ``draft`` lets libjpeg decode directly at 1/2, 1/4 or 1/8 scale when that still is
    at least ``size``: decoding then costs a fraction of a full decode, and BOX finishes the job.
    A JPEG with damaged data (`jpeg_damage`) is decoded anyway, with a warning that names it.
    """
    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            damage = jpeg_damage(data) if im.format == "JPEG" else None
            if size is not None and im.format == "JPEG":
                im.draft("RGB", size)
            im.load()
            im = _to_uint8_mode(im)
    except FileNotFoundError:
        raise GscompError(f"image file not found: {path}") from None
    except Exception as e:  # PIL raises many types for corrupt or unknown files
        raise GscompError(f"cannot read image {path}: {type(e).__name__}: {e}".splitlines()[0]) from None
    if damage:
        warnings.warn(f"image {path} is damaged ({damage}): part of it decodes as flat grey and "
                      "is trained on as it is; re-export the file or leave it out", DataWarning, stacklevel=2)
    if size is not None and im.size != tuple(size):
        im = resize(im, size)
    return im


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise GscompError(f"image file not found: {path}") from None
    except Exception as e:
        raise GscompError(f"cannot read image {path}: {type(e).__name__}: {e}".splitlines()[0]) from None


BYTES_PER_PIXEL = 4  # 8-bit RGBA, the worst case (a `Photo` keeps the pixels in 8 bits)


MAX_WIDTH = 1600  # data.max_width's default: the 3DGS reference trains wider images at 1.6K wide


def capped_scale(width: int, scale: float, max_width: int) -> float:
    """``scale`` (< 1 shrinks), lowered where an image ``width`` pixels wide would load wider than
    ``max_width`` (0: no cap), as the 3DGS reference does to images over 1.6K wide unless told a
    resolution (training time grows with the pixels)."""
    return max_width / width if max_width and width * scale > max_width else scale


def check_image_sizes(images: Sequence[tuple[str | os.PathLike, float]], what: str, downscale: float,
                      max_width: int = 0) -> str | None:
    """From the images' headers, before any is decoded: refuse images whose pixels would take more
    than half the memory available (training needs the rest; such a run would otherwise decode for
    minutes and then be killed by the OOM killer with no message), and return a note when
    ``max_width`` shrinks any (else None). ``images``: (path, scale applied) pairs, the scale
    before ``max_width``'s cap (`capped_scale`); ``downscale``: the data.downscale they are loaded
    with (the advice multiplies it)."""
    found = [(image_size(p), scale) for p, scale in images if Path(p).is_file()]  # (the loader names missing ones)
    capped = [(w, h) for (w, h), scale in found if capped_scale(w, scale, max_width) != scale]
    note = None
    if capped:
        w, h = max(capped)
        at = f" at data.downscale={downscale:g}" if downscale != 1 else ""
        note = (f"{len(capped)} of {len(found)} images would be over data.max_width={max_width} pixels wide (e.g. "
                f"{w}x{h}{at}): they load at {max_width} wide, as in the 3DGS reference; data.max_width=0 keeps "
                "their size")
    avail = available_memory()
    if memory_check_off() or avail is None or not found:
        return note

    def need(k: int) -> float:  # bytes at k times the downscale
        return sum(w * h * capped_scale(w, scale / k, max_width) ** 2 for (w, h), scale in found) * BYTES_PER_PIXEL

    if need(1) <= avail / 2:
        return note
    k = 2
    while need(k) > avail / 2:
        k += 1
    (w, h), scale = max(found, key=lambda f: f[0][0] * f[0][1] * capped_scale(f[0][0], f[1], max_width) ** 2)
    scale = capped_scale(w, scale, max_width)
    w, h = round(w * scale), round(h * scale)  # as loaded
    gb = lambda b: f"{b / 1e9:.1f} GB"  # noqa: E731
    raise GscompError(f"{what}: its {len(images)} images (up to {w}x{h} pixels) take {gb(need(1))} in memory, more "
                      f"than half the {gb(avail)} this machine has available: train on smaller images, e.g. "
                      f"data.downscale={k * float(downscale):g} ({gb(need(k))}), or on fewer "
                      f"(data.max_images=N); {NO_MEMORY_CHECK}=1 loads them anyway")


def rotation_note(paths: Sequence[Path]) -> str | None:
    """A note when images carry an EXIF Orientation other than 1, else None.

    gscomp, like COLMAP, uses the pixels as stored; photo viewers show them turned. Poses computed
    from the turned pictures do not fit the stored pixels (90 degrees shows up as a wrong aspect
    ratio; 180 degrees and mirroring train silently on the wrong picture)."""
    turned = []
    for p in paths:
        try:
            with Image.open(p) as im:
                o = exif_orientation(im)
        except Exception:  # unreadable files get their own error when they are decoded
            continue
        if o != 1:
            turned.append((p, o))
    if not turned:
        return None
    p, o = turned[0]
    return (f"{len(turned)} of {len(paths)} images carry an EXIF Orientation tag (e.g. {p}: {o}, "
            f"{ORIENTATIONS[o]}); gscomp, like COLMAP, trains on the pixels as stored, which photo viewers "
            "show turned: the poses must be of the stored pictures")


def resize(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    w, h = int(size[0]), int(size[1])
    if (w, h) == im.size:
        return im
    shrinking = w <= im.width and h <= im.height
    return im.resize((w, h), Image.Resampling.BOX if shrinking else Image.Resampling.LANCZOS)


def find_image(base: Path, rel: str) -> Path | None:
    """Resolve a frame's ``file_path`` (NeRF files often omit the extension); None if missing."""
    try:  # (a NUL byte or an over-long name is no file either)
        p = (base / rel).resolve() if not os.path.isabs(rel) else Path(rel)
        if p.is_file():
            return p
        for ext in IMAGE_EXTS:
            q = p.with_name(p.name + ext)
            if q.is_file():
                return q
    except (ValueError, OSError):
        pass
    return None


def parallel_map(fn: Callable[[T], R], items: Sequence[T] | Iterable[T], threads: int | None = None) -> list[R]:
    """Order-preserving thread-pool map: PIL and libjpeg/zlib release the GIL while decoding."""
    items = list(items)
    n = threads or min(8, (os.cpu_count() or 1) + 1)
    if n <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=n) as ex:
        return list(ex.map(fn, items))


# ---------------------------------------------------------------------------------------- cache
def cache_root() -> Path:
    """``$GSCOMP_CACHE`` or ``~/.cache/gscomp``: derived data (undistorted images) lives here, never
    in the user's dataset folder."""
    env = os.environ.get("GSCOMP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gscomp"


def cache_key(*parts) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def file_stamp(path: Path) -> tuple[str, int, int]:
    """Identity of a source file for cache keys: absolute path, size and mtime."""
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def load_cached_png(path: Path) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            return np.asarray(_to_uint8_mode(im.copy()))
    except Exception:  # missing, or a half-written/corrupt entry: recompute it
        return None


def save_png_atomic(path: Path, arr: np.ndarray) -> None:
    """Write a PNG via a temp file + rename so concurrent loaders never see a partial file.
    Cache failures (read-only home, full disk) only cost speed, so they are ignored."""
    try:
        with atomic_open(path, make_parents=True, sweep=False) as f:
            Image.fromarray(arr).save(f, format="PNG", compress_level=1)
    except (OSError, GscompError):  # (atomic_open says a failed write as a GscompError)
        pass
