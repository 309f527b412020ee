"""Splat file I/O: one `load_splats` / `save_splats` pair for every supported format.

Read: INRIA `.ply` and PlayCanvas compressed `.ply` (told apart by the header's elements),
Niantic `.spz` (versions 1-4), antimatter15 `.splat`, mkkellogg `.ksplat`, PlayCanvas SOG v2
(`meta.json`, a directory holding it, or a zipped `.sog`) and gscomp's own `.gsz` (via
`gscomp.codec`).
Write: `.ply` (INRIA, lossless), `.spz` (version 3 by default), `.splat` and PlayCanvas
`.compressed.ply` (chosen by that ending; lossy).

Every reader returns `Splats` in the INRIA PLY convention (RDF axes: x right, y down,
z forward; log scales, logit opacities, wxyz quaternions). SPZ is the only format stored in
another convention (RUB); its reader and writer convert, so PLY -> SPZ -> Splats lands where
it started. Malformed input raises `FormatError` with one line naming the file and problem.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..errors import FormatError, GscompError
from ..fileio import check_regular, missing_input
from ..splats import Splats
from .common import LossySaveWarning
from .ply import read_ply, write_ply

READ_EXTS = (".ply", ".spz", ".splat", ".ksplat", ".sog", ".json", ".gsz")
WRITE_EXTS = (".ply", ".compressed.ply", ".spz", ".splat")


def detect_format(path: str | os.PathLike) -> str:
    """Name of the reader for ``path``: 'ply', 'spz', 'splat', 'ksplat', 'sog' or 'gsz'."""
    p = Path(path)
    if p.is_dir():
        if (p / "meta.json").is_file():
            return "sog"
        check_regular(p / "meta.json")  # (a FIFO named meta.json: "has no meta.json" was wrong)
        inside = [n for n in ("point_cloud.ply", "scene.gsz") if (p / n).is_file()]  # a gscomp run's folder
        hint = f"; to use this run's model, give {p / inside[0]}" if inside else ""
        raise GscompError(f"{p}: directory has no meta.json (expected a SOG scene){hint}")
    if not p.exists():
        raise missing_input(p)
    check_regular(p)
    ext = p.suffix.lower()
    if ext == ".json":
        return "sog"
    if ext in (".ply", ".spz", ".splat", ".ksplat", ".sog", ".gsz"):
        return ext[1:]
    # Unknown extension: recognise the formats that carry a magic number.
    with open(p, "rb") as f:
        head = f.read(4)
    if head.startswith(b"ply"):
        return "ply"
    if head[:2] == b"\x1f\x8b" or head == b"NGSP":
        return "spz"
    raise FormatError(f"{p}: unrecognised splat file type '{ext or p.name}' "
                      f"(expected one of {', '.join(READ_EXTS)} or a SOG directory)")


def load_splats(path: str | os.PathLike) -> Splats:
    """Load a splat scene from any supported file (see module doc) as float32 CPU Splats."""
    fmt = detect_format(path)
    if fmt == "ply":
        return read_ply(path)
    if fmt == "spz":
        from .spz import read_spz

        return read_spz(path)
    if fmt == "splat":
        from .splat import read_splat

        return read_splat(path)
    if fmt == "ksplat":
        from .ksplat import read_ksplat

        return read_ksplat(path)
    if fmt == "sog":
        from .sog import read_sog

        return read_sog(path)
    from ..codec import decode_gsz  # written elsewhere; imported lazily so io works without it

    return decode_gsz(path)


def stored_size(path: str | os.PathLike) -> int:
    """Bytes a splat scene takes on disk: its file's size, or for a SOG scene (its folder or its
    meta.json) meta.json plus the images it lists, whichever of the two names it."""
    p = Path(path)
    if p.is_dir():
        p = p / "meta.json"  # the one folder input gscomp reads is a SOG scene
    if p.suffix.lower() != ".json":
        return p.stat().st_size
    import json

    try:
        meta = json.loads(p.read_bytes())
    except (ValueError, RecursionError):
        meta = {}
    folder = p.parent.resolve()
    files = set()  # resolved, so each file counts once; only files inside the scene's folder
    for v in meta.values() if isinstance(meta, dict) else ():  # {"means": {"files": ["means_l.webp", ...]}, ...}
        for f in v.get("files") if isinstance(v, dict) and isinstance(v.get("files"), list) else ():
            try:
                f = (folder / f).resolve() if isinstance(f, str) else None
                if f is not None and folder in f.parents and f.is_file():
                    files.add(f)
            except (OSError, ValueError):  # a name no file system takes
                pass
    return p.stat().st_size + sum(f.stat().st_size for f in files)


def splat_file_info(path: str | os.PathLike) -> dict:
    """What `gscomp info` tells of a splat file other than a `.gsz` (reading the whole scene):
    ``format`` ('compressed-ply' for PlayCanvas's layout), ``n``, ``sh_degree``, ``antialiased``,
    ``total_bytes`` on disk (a SOG scene: meta.json and the images it lists), ``bits_per_gaussian``
    (None without Gaussians) and ``bounds``, the box of the finite means as [min xyz, max xyz]
    (None without any), as `gscomp.codec.gsz_info` has them."""
    fmt = detect_format(path)
    if fmt == "gsz":
        raise GscompError(f"{path}: a .gsz file: gscomp.codec.gsz_info reads it")
    splats = load_splats(path)
    if fmt == "ply":
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        if b"\nelement chunk " in head.split(b"end_header", 1)[0]:
            fmt = "compressed-ply"
    n, total = len(splats), stored_size(path)
    means = splats.means.detach().double()
    means = means[means.isfinite().all(1)]
    return {"path": str(path), "format": fmt, "n": n, "sh_degree": splats.sh_degree,
            "antialiased": bool(splats.antialiased), "total_bytes": total,
            "bits_per_gaussian": round(8.0 * total / n, 4) if n else None,
            "bounds": [[v + 0.0 for v in m.tolist()] for m in (means.min(0).values, means.max(0).values)]
            if len(means) else None}  # (+ 0.0: no -0)


def save_splats(path: str | os.PathLike, splats: Splats) -> None:
    """Write ``splats`` to ``path`` atomically, the format chosen by the extension (a name ending in
    `.compressed.ply` is PlayCanvas's compressed layout, any other `.ply` INRIA's). `.ply`,
    `.compressed.ply` and `.spz` keep SH degrees 0-3; `.splat` records hold the DC colour only, so higher degrees are
    dropped there with a `LossySaveWarning`, as are values past SPZ's fixed 8-bit ranges. `.ply` and `.spz`
    keep `Splats.antialiased`; `.splat` and `.compressed.ply` cannot, which a `LossySaveWarning` says.
    `.compressed.ply` stores the Gaussians in its own order (chunks of 256 in Morton order), so
    compare fields with a file read back, not index by index with ``splats``. `.spz` keeps SH rest
    at SPZ's default precision (5 bits in band 1, 4 in bands 2-3, as Niantic's encoder)."""
    ext = Path(path).suffix.lower()
    compressed = Path(path).name.lower().endswith(".compressed.ply")
    if splats.antialiased and (compressed or ext == ".splat"):
        warnings.warn(f"{Path(path).name}: the scene is made for the antialiased render mode, which this format cannot "
                      "say (.ply, .spz and .gsz keep it): viewers will draw it in the classic mode",
                      LossySaveWarning, stacklevel=2)
    if compressed:  # PlayCanvas / SuperSplat's layout, by name
        from .compressed_ply import write_compressed_ply

        write_compressed_ply(path, splats)
    elif ext == ".ply":
        write_ply(path, splats)
    elif ext == ".spz":
        from .spz import write_spz

        write_spz(path, splats)
    elif ext == ".splat":
        from .splat import write_splat

        if splats.sh_degree > 0:
            warnings.warn(f"{Path(path).name}: .splat keeps SH degree 0 only (the scene has degree {splats.sh_degree})",
                          LossySaveWarning, stacklevel=2)
        write_splat(path, splats)
    else:
        raise GscompError(f"{path}: cannot write '{ext or Path(path).name}' files "
                          f"(supported: {', '.join(WRITE_EXTS)}; use the codec for .gsz)")


__all__ = ["load_splats", "save_splats", "stored_size", "splat_file_info", "LossySaveWarning", "detect_format", "read_ply", "write_ply",
           "FormatError"]
