"""`.gsz` encode / decode / info on top of the container and the stage pipeline.

    encode_gsz(splats, path, pipeline, cameras=None, progress=None, consume=False) -> stats dict
    encode_bytes(splats, pipeline, cameras=None, progress=None) -> bytes
    decode_gsz(path) -> Splats
    decode_bytes(data) -> Splats
    gsz_info(path) -> dict
"""
from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..errors import FormatError, GscompError, Note
from ..fileio import atomic_write_bytes, input_file
from .container import pack_gsz, read_gsz, unpack_gsz

SPLAT_EXTS = (".ply", ".spz", ".splat", ".ksplat", ".sog")  # (what encode_gsz refuses to name a .gsz)
# bits/Gaussian are reported per Splats field: a section counts toward the field it is named after,
# else toward the fields its stage owns ("scales+quats" for rvq's codebooks and indices), else toward
# "importance" (the classes) or "other"
_FIELD_OF = {"classes": "importance", "means": "means", "quats": "quats", "scales": "scales", "opacities": "opacities", "sh0": "sh0", "shN": "shN"}


def _section_stats(header: dict[str, Any], sections, pipe) -> dict[str, Any]:
    n = int(header.get("n", 0))
    owners = {nm: "+".join(st.owns) for nm, st in zip(pipe.names, pipe.stages)} if pipe is not None else {}
    per_section = {s.name: len(s.payload) for s in sections}
    per_attr: dict[str, int] = {}
    for s in sections:
        stage, _, local = s.name.partition("/")
        key = _FIELD_OF.get(local.split("/")[0]) or owners.get(stage) or "other"
        per_attr[key] = per_attr.get(key, 0) + len(s.payload)
    bpg = {k: 8.0 * v / n if n else None for k, v in per_attr.items()}  # (None: no Gaussians)
    return {"n": n, "sections": per_section, "bytes_per_attribute": per_attr, "bits_per_gaussian_per_attribute": bpg}


def _encode(splats, pipeline, state, progress, consume: bool, cameras):
    """(file bytes, header, sections, Pipeline) of ``splats`` coded by ``pipeline``."""
    from ..stages.pipeline import Pipeline

    if isinstance(pipeline, str):
        pipe = Pipeline.preset(pipeline)
    elif isinstance(pipeline, Pipeline):
        pipe = pipeline
    else:
        pipe = Pipeline.from_config(pipeline)
    if cameras is not None:
        if state is not None:
            raise GscompError("give the importance stage's views as cameras= or in state, not both")
        state = SimpleNamespace(cameras=importance_cameras(cameras, pipe))
    elif state is not None and isinstance(state, (list, tuple, dict, str, os.PathLike)):
        raise GscompError(f"state is the trainer's TrainState, not a {type(state).__name__}; give the importance "
                          "stage's views as cameras=[Camera, ...] or cameras=PATH")
    header, sections = pipe.encode(splats, state, progress, consume=consume)
    return pack_gsz(header, sections), header, sections, pipe


def importance_cameras(cameras, pipe) -> list:
    """The views for the pipeline's importance stage: Camera objects, or a path (cameras.json, a
    COLMAP model or a capture folder) read as `gscomp compress --cameras` reads it (at most the
    stage's ``views`` of them)."""
    from ..camera import Camera

    imp = [st for st in pipe.stages if st.type == "importance"]
    if not imp:
        warnings.warn("cameras are not used: this pipeline has no importance stage", Note, stacklevel=4)
    if isinstance(cameras, (str, os.PathLike)):
        from ..data.cameras import load_cameras

        return load_cameras(cameras, max_views=imp[0].params["views"] if imp else None)
    cams = list(cameras) if isinstance(cameras, (list, tuple)) else None
    if not cams or not all(isinstance(c, Camera) for c in cams):
        raise GscompError(f"cameras must be a non-empty list of gscomp.Camera or a path, got {cameras!r:.80}")
    return cams


def encode_gsz(splats, path: str | os.PathLike, pipeline, state=None, progress=None,
               consume: bool = False, cameras=None) -> dict[str, Any]:
    """Compress ``splats`` into the `.gsz` file ``path`` (atomic write). Returns stats: n, bytes
    per section, total bytes on disk, bits per Gaussian (total and per attribute).

    ``pipeline``: a preset name (``"high"``, ``"compact"``, ...), a `Pipeline` (e.g.
    ``Pipeline.preset("compact", ["pipeline.stages.importance.views=8"])``) or a pipeline config
    mapping. ``cameras``: the views an importance stage (``compact``) scores from, a list of
    `gscomp.Camera` or a path (cameras.json, COLMAP model, capture folder) as for
    ``gscomp compress --cameras``; without them it renders a sphere of views around the scene,
    which suits objects seen from outside, not rooms or unbounded captures. ``state``: a
    training run's `TrainState` (train-and-compress). ``progress(what, done, total)``, when
    given, is called as the stages work. ``consume``: the caller does not use ``splats`` again,
    so the encoder may replace its fields (less memory)."""
    ext = Path(path).suffix.lower()
    if ext in SPLAT_EXTS:
        raise GscompError(f"{path}: encode_gsz writes .gsz files; save_splats writes {ext}")
    data, header, sections, pipe = _encode(splats, pipeline, state, progress, consume, cameras)
    atomic_write_bytes(path, data)
    total = Path(path).stat().st_size
    stats = _section_stats(header, sections, pipe)
    n = stats["n"]
    stats.update(
        total_bytes=total,
        header_bytes=total - sum(stats["sections"].values()),
        bits_per_gaussian=(8.0 * total / n if n else None),  # (None: no Gaussians)
        sh_degree=header["sh_degree"],
        pipeline=header["pipeline"]["name"],
    )
    return stats


def encode_bytes(splats, pipeline, state=None, progress=None, cameras=None) -> bytes:
    """The `.gsz` file `encode_gsz` would write, as bytes in memory (same arguments)."""
    return _encode(splats, pipeline, state, progress, False, cameras)[0]


def decode_bytes(data: bytes, what: str = "file"):
    """Validate and decode a `.gsz` held in memory into `Splats` (as `decode_gsz`); ``what``
    names it in error messages."""
    from ..stages.pipeline import Pipeline

    if not isinstance(data, (bytes, bytearray, memoryview)):  # (a path: decode_gsz reads files)
        raise GscompError(f"decode_bytes takes the file's bytes, got {type(data).__name__}"
                          + (" (decode_gsz reads a path)" if isinstance(data, (str, os.PathLike)) else ""))
    header, sections = unpack_gsz(data, what)
    try:
        return Pipeline.decode(header, sections, what)
    except FormatError as e:
        raise FormatError(f"{what}: {e}") from None


def decode_gsz(path: str | os.PathLike):
    """Read, validate and decode a `.gsz` into `Splats` (bit-identical on any machine). The
    Gaussians come in the encoder's order (Morton order of their positions), not the input's:
    a .gsz stores no permutation (docs/gsz-format.md)."""
    p = input_file(path)
    return decode_bytes(p.read_bytes(), str(p))


def gsz_info(path: str | os.PathLike) -> dict[str, Any]:
    """Header and size breakdown of a `.gsz` (validates checksums, does not decode payloads).
    A file naming a stage type not installed here still gets its sizes, with ``decodable`` False,
    ``missing_stage_type`` and a `Note`; any other damage raises `FormatError`."""
    from ..stages.pipeline import Pipeline, StageNotInstalled, check_header_counts

    header, sections = read_gsz(path)
    missing = None
    try:  # the same header checks as decoding, so info never reports what decode would refuse
        try:
            pipe = Pipeline.check_header(header, sections)[0]
        except StageNotInstalled as e:
            pipe, missing, why = None, e.kind, str(e)
            check_header_counts(header, sections)
    except FormatError as e:
        raise FormatError(f"{path}: {e}") from None
    if missing is not None:
        warnings.warn(Note(f"{path}: {why}; its sizes are shown, but it cannot be decoded here"), stacklevel=2)
    total = Path(path).stat().st_size
    with open(path, "rb") as f:  # the file's own version (read_gsz accepted its major)
        major, minor = struct.unpack("<HH", f.read(12)[8:12])
    stats = _section_stats(header, sections, pipe)
    n = stats["n"]
    stats.update(
        path=str(path),
        version=f"{major}.{minor}",
        sh_degree=header.get("sh_degree"),
        antialiased=header.get("antialiased", False),
        total_bytes=total,
        header_bytes=total - sum(stats["sections"].values()),
        bits_per_gaussian=(8.0 * total / n if n else None),  # (None: no Gaussians)
        bounds=header.get("bounds"),
        pipeline=header.get("pipeline"),
        codecs={s.name: s.codec for s in sections},
        decodable=missing is None,
    )
    if missing is not None:
        stats["missing_stage_type"] = missing
    return stats


__all__ = ["encode_gsz", "encode_bytes", "decode_gsz", "decode_bytes", "gsz_info"]
