"""PlayCanvas / SuperSplat "compressed PLY" reader.

Layout (binary little-endian PLY):
- ``chunk`` element, one row per 256 Gaussians: float ``min_x min_y min_z max_x max_y max_z``,
  ``min_scale_x..z max_scale_x..z`` (log scales) and, in newer files, ``min_r min_g min_b
  max_r max_g max_b`` (colour range).
- ``vertex`` element, uint32 ``packed_position`` (x:11, y:10, z:11 bits from the top, unorm
  lerped between the chunk min/max), ``packed_rotation`` (2-bit index of the largest
  component of the wxyz quaternion, then the other three as 10-bit unorms of
  (v/sqrt2 + 0.5), in wxyz order), ``packed_scale`` (11/10/11 like position) and
  ``packed_color`` (RGBA8 from the top byte: colour = 0.5 + C0*f_dc, alpha = sigmoid(opacity)).
- optional ``sh`` element: uchar ``f_rest_0..`` (9, 24 or 45, INRIA channel-major order),
  value = (n - 0.5) * 8 with n = (b + 0.5)/256 except n(0) = 0 and n(255) = 1.
Coordinates are those of the INRIA PLY (no axis change).
"""
from __future__ import annotations

import os

import numpy as np
from plyfile import PlyData, PlyListProperty

from ..errors import FormatError
from ..splats import SH_C0, Splats
from .common import build_splats, degree_for_rest, logit

CHUNK_SIZE = 256
CHUNK_PROPS = ("min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
               "min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z")
COLOR_PROPS = ("min_r", "min_g", "min_b", "max_r", "max_g", "max_b")
VERTEX_PROPS = ("packed_position", "packed_rotation", "packed_scale", "packed_color")


def read_compressed_ply(path: str | os.PathLike) -> Splats:
    from .ply import read_plydata

    return splats_from_plydata(read_plydata(path), path)


def _column(element, name: str, path) -> np.ndarray:
    prop = {p.name: p for p in element.properties}.get(name)
    if prop is None:
        raise FormatError(f"{path}: missing property '{name}' in element '{element.name}'")
    if isinstance(prop, PlyListProperty):
        raise FormatError(f"{path}: property '{name}' in element '{element.name}' is a list, expected a scalar")
    return np.asarray(element.data[name])


def _packed(element, name: str, path) -> np.ndarray:
    """A packed bit-field column: integers only (a float one would be cast to bits it never held)."""
    col = _column(element, name, path)
    if col.dtype.kind not in "ui" or col.dtype.itemsize > 4:
        raise FormatError(f"{path}: property '{name}' is {col.dtype}, expected a 32-bit unsigned integer")
    return col.astype(np.uint32)


def _unorm(v: np.ndarray, shift: int, bits: int) -> np.ndarray:
    return ((v >> np.uint32(shift)) & np.uint32((1 << bits) - 1)).astype(np.float64) / ((1 << bits) - 1)


def splats_from_plydata(ply: PlyData, path) -> Splats:
    names = [e.name for e in ply.elements]
    for need in ("chunk", "vertex"):
        if need not in names:
            raise FormatError(f"{path}: compressed PLY without a '{need}' element")
    chunk, vertex = ply["chunk"], ply["vertex"]
    n = vertex.count
    if chunk.count != (n + CHUNK_SIZE - 1) // CHUNK_SIZE:
        raise FormatError(f"{path}: {chunk.count} chunks for {n} Gaussians, expected "
                          f"{(n + CHUNK_SIZE - 1) // CHUNK_SIZE} (one per {CHUNK_SIZE})")
    c = {k: _column(chunk, k, path).astype(np.float64) for k in CHUNK_PROPS}
    has_color = "min_r" in {p.name for p in chunk.properties}
    if has_color:
        c.update({k: _column(chunk, k, path).astype(np.float64) for k in COLOR_PROPS})
    v = {k: _packed(vertex, k, path) for k in VERTEX_PROPS}
    ci = np.arange(n) // CHUNK_SIZE

    def lerp(lo: str, hi: str, t: np.ndarray) -> np.ndarray:
        a, b = c[lo][ci], c[hi][ci]
        return a * (1 - t) + b * t

    def unpack_111011(p: np.ndarray):
        return _unorm(p, 21, 11), _unorm(p, 11, 10), _unorm(p, 0, 11)

    px, py, pz = unpack_111011(v["packed_position"])
    means = np.stack([lerp("min_x", "max_x", px), lerp("min_y", "max_y", py), lerp("min_z", "max_z", pz)], 1)
    sx, sy, sz = unpack_111011(v["packed_scale"])
    scales = np.stack([lerp("min_scale_x", "max_scale_x", sx), lerp("min_scale_y", "max_scale_y", sy),
                       lerp("min_scale_z", "max_scale_z", sz)], 1)

    # rotation: "smallest three" with the largest component's index in the top 2 bits
    pr = v["packed_rotation"]
    small = np.stack([(_unorm(pr, s, 10) - 0.5) * np.sqrt(2.0) for s in (20, 10, 0)], 1)
    largest = np.sqrt(np.maximum(0.0, 1.0 - (small ** 2).sum(1)))
    which = (pr >> np.uint32(30)).astype(np.int64)
    quats = np.empty((n, 4), dtype=np.float64)
    other = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[which]  # (N, 3) slots of the small ones
    rows = np.arange(n)[:, None]
    quats[rows, other] = small
    quats[np.arange(n), which] = largest

    pc = v["packed_color"]
    rgb = np.stack([_unorm(pc, 24, 8), _unorm(pc, 16, 8), _unorm(pc, 8, 8)], 1)
    if has_color:
        rgb = np.stack([lerp("min_r", "max_r", rgb[:, 0]), lerp("min_g", "max_g", rgb[:, 1]),
                        lerp("min_b", "max_b", rgb[:, 2])], 1)
    sh0 = (rgb - 0.5) / SH_C0
    opacities = logit(_unorm(pc, 0, 8))

    shN = np.zeros((n, 0, 3))
    if "sh" in names and ply["sh"].properties:  # (an `sh` element without properties: no SH)
        sh = ply["sh"]
        if sh.count != n:
            raise FormatError(f"{path}: 'sh' element has {sh.count} rows, expected {n}")
        n_rest = len(sh.properties)
        if n_rest % 3:
            raise FormatError(f"{path}: {n_rest} sh properties is not a multiple of 3 (expected 9, 24 or 45)")
        k = n_rest // 3
        degree_for_rest(path, k)
        b = np.stack([_column(sh, f"f_rest_{i}", path) for i in range(n_rest)], 1).astype(np.float64)
        u = np.where(b == 0, 0.0, np.where(b == 255, 1.0, (b + 0.5) / 256.0))
        shN = ((u - 0.5) * 8.0).reshape(n, 3, k).transpose(0, 2, 1)  # channel-major -> (N, K, 3)
    return build_splats(path, means, quats, scales, opacities, sh0, shN)


__all__ = ["read_compressed_ply", "splats_from_plydata"]
