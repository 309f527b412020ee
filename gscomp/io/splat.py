"""antimatter15 `.splat` reader and writer.

No header; one 32-byte little-endian record per Gaussian:
``f32 x y z | f32 sx sy sz (linear scales) | u8 r g b a | u8 qw qx qy qz``
with rgb = 0.5 + C0 * f_dc (the SH DC colour, no higher-order SH), a = sigmoid(opacity) and
q = normalised quaternion * 128 + 128. Coordinates are the PLY's (no axis change).
Lossy: colour and opacity to 8 bits, rotation to ~8 bits, higher-order SH dropped.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..splats import SH_C0, Splats
from .common import (LossySaveWarning, atomic_write_bytes, build_splats, clamped_rows, logit, normalize_quats,
                     read_bytes, sigmoid, splats_numpy, to_u8)

RECORD = np.dtype([("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
assert RECORD.itemsize == 32


def read_splat(path: str | os.PathLike) -> Splats:
    return decode_splat(read_bytes(path), path)


def decode_splat(data: bytes, name="<splat>") -> Splats:
    if len(data) % RECORD.itemsize:
        raise FormatError(f"{name}: size {len(data)} bytes is not a multiple of the 32-byte .splat record")
    rec = np.frombuffer(data, RECORD)
    n = len(rec)
    scales = rec["scale"].astype(np.float64)
    if not np.isfinite(scales).all() or not np.isfinite(rec["pos"]).all():
        bad = int(np.flatnonzero(~(np.isfinite(scales).all(1) & np.isfinite(rec["pos"]).all(1)))[0])
        raise FormatError(f"{name}: non-finite position or scale (first at Gaussian {bad})")
    # Linear scales must be positive; clamp zeros (degenerate splats) so the log stays finite.
    log_scales = np.log(np.maximum(np.abs(scales), 1e-30))
    rgba = rec["rgba"].astype(np.float64) / 255.0
    sh0 = (rgba[:, :3] - 0.5) / SH_C0
    opac = logit(rgba[:, 3])
    quats = normalize_quats((rec["rot"].astype(np.float64) - 128.0) / 128.0)
    return build_splats(name, rec["pos"], quats, log_scales, opac, sh0, np.zeros((n, 0, 3)))


def encode_splat(splats: Splats, notes: list[str] | None = None) -> bytes:
    """32-byte records; ``notes``, a list, receives a line on the DC colours clamped to [0, 1] and
    one on scales clamped to float32's range."""
    a = splats_numpy(splats)
    n = len(splats)
    rec = np.zeros(n, RECORD)
    rec["pos"] = a["means"]
    # linear float32 scales: exp of a log-scale above about 88.7 is inf, and below about -87.3
    # (-103 with subnormals) 0, whose log other readers take as -inf (splat-transform): clamped to
    # float32's largest and smallest normal instead, with a note
    top, tiny = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)
    scale = np.exp(a["scales"].astype(np.float64))
    if notes is not None and n and (cut := int(((scale > top) | (scale < tiny)).any(1).sum())):
        notes.append(f".splat's float32 scales clamp the scale of {cut:,} of {n:,} Gaussians (log-scale outside "
                     f"[{np.log(tiny):.1f}, {np.log(top):.1f}])")
    rec["scale"] = np.clip(scale, tiny, top)
    rgb = (0.5 + SH_C0 * a["sh0"][:, 0].astype(np.float64)) * 255.0
    if notes is not None and n and (cut := int(clamped_rows(rgb).sum())):
        notes.append(f".splat's 8-bit colours clamp the DC colour of {cut:,} of {n:,} Gaussians to [0, 1]")
    rec["rgba"][:, :3] = to_u8(rgb)
    rec["rgba"][:, 3] = to_u8(sigmoid(a["opacities"]) * 255.0)
    rec["rot"] = to_u8(normalize_quats(a["quats"]) * 128.0 + 128.0)
    return rec.tobytes()


def write_splat(path: str | os.PathLike, splats: Splats) -> None:
    notes: list[str] = []
    atomic_write_bytes(path, encode_splat(splats, notes))
    for note in notes:
        warnings.warn(f"{Path(path).name}: {note}", LossySaveWarning, stacklevel=3)


__all__ = ["read_splat", "write_splat", "decode_splat", "encode_splat"]
