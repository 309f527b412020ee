"""`.gsz` encode / decode / info on top of the container and the stage pipeline.

    encode_gsz(splats, path, pipeline_cfg, state=None, progress=None, consume=False) -> stats dict
    decode_gsz(path) -> Splats
    gsz_info(path) -> dict
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from ..errors import FormatError
from ..fileio import atomic_write_bytes, input_file
from .container import pack_gsz, read_gsz, unpack_gsz

# bits/Gaussian are reported per Splats field: a section counts toward the field it is named after,
# else toward the fields its stage owns ("scales+quats" for rvq's codebooks and indices), else toward
# "importance" (the classes) or "other"
_FIELD_OF = {"classes": "importance", "means": "means", "quats": "quats", "scales": "scales", "opacities": "opacities", "sh0": "sh0", "shN": "shN"}


def _section_stats(header: dict[str, Any], sections, pipe) -> dict[str, Any]:
    n = int(header.get("n", 0))
    owners = {nm: "+".join(st.owns) for nm, st in zip(pipe.names, pipe.stages)}
    per_section = {s.name: len(s.payload) for s in sections}
    per_attr: dict[str, int] = {}
    for s in sections:
        stage, _, local = s.name.partition("/")
        key = _FIELD_OF.get(local.split("/")[0]) or owners.get(stage) or "other"
        per_attr[key] = per_attr.get(key, 0) + len(s.payload)
    bpg = {k: 8.0 * v / n if n else None for k, v in per_attr.items()}  # (None: no Gaussians)
    return {"n": n, "sections": per_section, "bytes_per_attribute": per_attr, "bits_per_gaussian_per_attribute": bpg}


def encode_gsz(splats, path: str | os.PathLike, pipeline_cfg, state=None, progress=None,
               consume: bool = False) -> dict[str, Any]:
    """Compress ``splats`` with the pipeline config into ``path`` (atomic write). Returns stats:
    n, bytes per section, total bytes on disk, bits per Gaussian (total and per attribute).
    ``progress(what, done, total)``, when given, is called as the stages work. ``consume``: the
    caller does not use ``splats`` again, so the encoder may replace its fields (less memory)."""
    from ..stages.pipeline import Pipeline

    pipe = pipeline_cfg if isinstance(pipeline_cfg, Pipeline) else Pipeline.from_config(pipeline_cfg)
    header, sections = pipe.encode(splats, state, progress, consume=consume)
    data = pack_gsz(header, sections)
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


def decode_bytes(data: bytes, what: str = "file"):
    from ..stages.pipeline import Pipeline

    header, sections = unpack_gsz(data, what)
    try:
        return Pipeline.decode(header, sections)
    except FormatError as e:
        raise FormatError(f"{what}: {e}") from None


def decode_gsz(path: str | os.PathLike):
    """Read, validate and decode a `.gsz` into `Splats` (bit-identical on any machine). The
    Gaussians come in the encoder's order (Morton order of their positions), not the input's:
    a .gsz stores no permutation (docs/gsz-format.md)."""
    p = input_file(path)
    return decode_bytes(p.read_bytes(), str(p))


def gsz_info(path: str | os.PathLike) -> dict[str, Any]:
    """Header and size breakdown of a `.gsz` (validates checksums, does not decode payloads)."""
    from ..stages.pipeline import Pipeline

    header, sections = read_gsz(path)
    try:  # the same header checks as decoding, so info never reports what decode would refuse
        pipe = Pipeline.check_header(header, sections)[0]
    except FormatError as e:
        raise FormatError(f"{path}: {e}") from None
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
    )
    return stats


__all__ = ["encode_gsz", "decode_gsz", "decode_bytes", "gsz_info"]
