"""PlayCanvas / SuperSplat "compressed PLY" reader and writer.

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
Coordinates are those of the INRIA PLY (no axis change). The writer (`write_compressed_ply`,
``OUT.compressed.ply``) puts the Gaussians in Morton order, so each chunk of 256 is a small box,
and writes the colour range.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from plyfile import PlyData, PlyListProperty

from ..errors import FormatError
from ..splats import SH_C0, Splats
from .common import (LossySaveWarning, atomic_open, build_splats, degree_for_rest, logit, normalize_quats, sigmoid,
                     splats_numpy, to_u8)

CHUNK_SIZE = 256
CHUNK_PROPS = ("min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
               "min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z")
COLOR_PROPS = ("min_r", "min_g", "min_b", "max_r", "max_g", "max_b")
VERTEX_PROPS = ("packed_position", "packed_rotation", "packed_scale", "packed_color")


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


def _sh_of_byte() -> np.ndarray:
    """float32 SH value of each byte of the sh element: 0 and 255 are the range's ends, the others
    their bucket's centre ((b + 0.5) / 256), on [-4, 4]. A table: the 45 columns of millions of
    Gaussians went through float64 temporaries (1.6 KB per Gaussian to read a file)."""
    b = np.arange(256, dtype=np.float64)
    u = np.where(b == 0, 0.0, np.where(b == 255, 1.0, (b + 0.5) / 256.0))
    return ((u - 0.5) * 8.0).astype(np.float32)


SH_OF_BYTE = _sh_of_byte()


def _packed_u8(element, name: str, path) -> np.ndarray:
    """An sh column as uint8 (the layout's uchar; a wider integer column must hold bytes)."""
    col = _column(element, name, path)
    if col.dtype != np.uint8:
        if col.dtype.kind not in "ui" or (len(col) and (col.min() < 0 or col.max() > 255)):
            raise FormatError(f"{path}: property '{name}' of the sh element must hold bytes 0..255 ({col.dtype})")
        col = col.astype(np.uint8)
    return col


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
        b = np.stack([_packed_u8(sh, f"f_rest_{i}", path) for i in range(n_rest)], 1)
        shN = SH_OF_BYTE[b].reshape(n, 3, k).transpose(0, 2, 1)  # channel-major -> (N, K, 3)
    return build_splats(path, means, quats, scales, opacities, sh0, shN)


# ---------------------------------------------------------------------------- writing
SH_RANGE = 4.0  # the sh element's uchar covers (n - 0.5) * 8: [-4, 4]
SH_ROWS = 1 << 16  # rows of SH rest quantized at a time


def chunk_order(means: np.ndarray) -> np.ndarray:
    """Indices of the Gaussians in the order they are written: Morton order of their positions on
    a 2^16 grid of their bounding box (stable), so that the 256 of a chunk lie close together and
    its min/max box gives the 11/10/11-bit positions fine steps. In an unbounded scene (a far
    background around a core, `gscomp.codec.posgrid.core_bounds`) the core comes first and the
    background after it, each in its own Morton order: interleaved, a chunk holding one far
    Gaussian gave its core neighbours steps of its own size (6% of them moved more than their
    size in a 1%-background test)."""
    from ..codec.posgrid import core_bounds, in_box

    n = len(means)
    if n == 0:
        return np.zeros(0, np.int64)
    m = np.asarray(means, np.float32)
    bounds = core_bounds(m)
    if bounds is None:
        return _morton_order(m)
    far = np.flatnonzero(~in_box(m, *bounds))
    near = np.setdiff1d(np.arange(n), far)
    return np.concatenate([near[_morton_order(m[near])], far[_morton_order(m[far])]])


def _morton_order(m: np.ndarray) -> np.ndarray:
    """Stable Morton order of positions on a 2^16 grid of their bounding box."""
    from ..codec.quant import morton_encode

    if not len(m):
        return np.zeros(0, np.int64)
    m = m.astype(np.float64)
    lo, hi = m.min(0), m.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    q = np.clip(np.floor((m - lo) / span * 65535.0), 0, 65535).astype(np.int64)
    return np.argsort(morton_encode(q), kind="stable")


def _chunk_range(v: np.ndarray, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-chunk min and max of each column of v (rows in write order; the last chunk may be short)."""
    pad = n_chunks * CHUNK_SIZE - len(v)
    padded = np.concatenate([v, np.repeat(v[-1:], pad, 0)]).reshape(n_chunks, CHUNK_SIZE, -1)
    return padded.min(1), padded.max(1)


def _to_unorm(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """v in [lo, hi] (per row) -> round((v - lo) / (hi - lo) * (2^bits - 1)) as uint32 (0 when hi == lo)."""
    top = (1 << bits) - 1
    d = hi - lo
    t = np.where(d > 0, (v - lo) / np.where(d > 0, d, 1.0), 0.0)
    return np.clip(np.floor(t * top + 0.5), 0, top).astype(np.uint32)


def encode_compressed_ply(splats: Splats, name="<compressed.ply>") -> bytes:
    """The bytes of a PlayCanvas compressed PLY of ``splats`` (see the module docstring)."""
    a = splats_numpy(splats)
    order = chunk_order(a["means"])
    n, k = len(order), a["shN"].shape[1]
    n_chunks = (n + CHUNK_SIZE - 1) // CHUNK_SIZE
    ci = np.arange(n) // CHUNK_SIZE
    means = a["means"][order].astype(np.float64)
    scales = a["scales"][order].astype(np.float64)
    rgb = 0.5 + SH_C0 * a["sh0"][order, 0, :].astype(np.float64)
    chunks = np.zeros((n_chunks, 18), np.float32)
    packed = np.zeros((n, 4), np.uint32)
    if n:
        cols = []
        for j, (v, bits) in enumerate(((means, (11, 10, 11)), (scales, (11, 10, 11)), (rgb, (8, 8, 8)))):
            lo, hi = _chunk_range(v, n_chunks)
            lo, hi = lo.astype(np.float32), hi.astype(np.float32)  # as stored: the reader lerps these
            chunks[:, 6 * j:6 * j + 3], chunks[:, 6 * j + 3:6 * j + 6] = lo, hi
            cols.append([_to_unorm(v[:, c], lo[ci, c].astype(np.float64), hi[ci, c].astype(np.float64), b)
                         for c, b in enumerate(bits)])
        (px, py, pz), (sx, sy, sz), (cr, cg, cb) = cols
        packed[:, 0] = (px << np.uint32(21)) | (py << np.uint32(11)) | pz
        packed[:, 2] = (sx << np.uint32(21)) | (sy << np.uint32(11)) | sz
        with np.errstate(over="ignore"):  # (a logit of -1e30: alpha 0)
            ca = to_u8(sigmoid(a["opacities"][order]) * 255.0).astype(np.uint32)
        packed[:, 3] = (cr << np.uint32(24)) | (cg << np.uint32(16)) | (cb << np.uint32(8)) | ca
        q = normalize_quats(a["quats"][order])  # wxyz
        which = np.argmax(np.abs(q), 1)
        q *= np.where(q[np.arange(n), which] < 0, -1.0, 1.0)[:, None]  # largest positive: the same rotation
        other = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[which]
        small = q[np.arange(n)[:, None], other]  # (n, 3), each in [-1/sqrt2, 1/sqrt2]
        u = np.clip(np.floor((small / np.sqrt(2.0) + 0.5) * 1023.0 + 0.5), 0, 1023).astype(np.uint32)
        packed[:, 1] = (which.astype(np.uint32) << np.uint32(30)) | (u[:, 0] << np.uint32(20)) | (u[:, 1] << np.uint32(10)) | u[:, 2]
    # chunk columns: position box, scale box, colour range (the reader's CHUNK_PROPS + COLOR_PROPS order)
    header = ["ply", "format binary_little_endian 1.0", f"element chunk {n_chunks}"]
    header += [f"property float {p}" for p in CHUNK_PROPS + COLOR_PROPS]
    header += [f"element vertex {n}"] + [f"property uint {p}" for p in VERTEX_PROPS]
    body = [chunks.astype("<f4").tobytes(), packed.astype("<u4").tobytes()]
    if k:
        b = np.empty((n, 3 * k), np.uint8)
        clipped = 0
        for r in range(0, n, SH_ROWS):  # a block at a time: float64 of every row took ~1 KB per Gaussian
            sh = a["shN"][order[r:r + SH_ROWS]].transpose(0, 2, 1).reshape(-1, 3 * k).astype(np.float64)  # channel-major
            clipped += int((np.abs(sh) > SH_RANGE + 4.0 / 256).any(1).sum())
            b[r:r + SH_ROWS] = np.clip(np.floor((sh / 8.0 + 0.5) * 256.0), 0, 255)
        if clipped:
            warnings.warn(f"{name}: {clipped:,} Gaussian{' has' if clipped == 1 else 's have'} SH coefficients beyond "
                          f"the sh element's range +-{SH_RANGE:g}, clamped", LossySaveWarning, stacklevel=3)
        header += [f"element sh {n}"] + [f"property uchar f_rest_{i}" for i in range(3 * k)]
        body.append(b.tobytes())
    header.append("end_header\n")
    return "\n".join(header).encode("ascii") + b"".join(body)


def write_compressed_ply(path: str | os.PathLike, splats: Splats) -> None:
    """Write ``splats`` as a PlayCanvas compressed PLY, atomically (Gaussians in `chunk_order`)."""
    data = encode_compressed_ply(splats, os.path.basename(os.fspath(path)))
    with atomic_open(path) as f:
        f.write(data)


__all__ = ["chunk_order", "encode_compressed_ply", "splats_from_plydata",
           "write_compressed_ply"]
