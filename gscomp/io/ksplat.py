"""mkkellogg GaussianSplats3D `.ksplat` reader (compression modes 0, 1 and 2).

Layout (little-endian): a 4096-byte main header (u8 major = 0, u8 minor >= 1, u32
maxSections @4, u32 numSplats @16, u16 compressionMode @20, f32 min/max SH value @36/@40 for
mode 2, defaulting to -1.5/1.5), ``maxSections`` 1024-byte section headers (u32 splatCount @0,
maxSplatCount @4, bucketCapacity @8, bucketCount @12, f32 spatialBlockSize @16, u16
bucketStorageSize @20, u32 quantizationRange @24, fullBucketCount @32, partialBucketCount @36,
u16 shDegree @40), then per section: u32 sizes of the partial buckets, f32 xyz bucket
centres, and ``maxSplatCount`` fixed-size splat records:
- mode 0: f32 position, f32 linear scale, f32 rotation (rot_0..3 as in the PLY), u8 RGBA,
  f32 SH;
- modes 1/2: u16 position (bucket centre + (v - range) * blockSize / 2 / range), f16 scale,
  f16 rotation, u8 RGBA, then SH as f16 (mode 1) or u8 lerped in [min, max] (mode 2).
SH per splat are grouped by band and, inside a band, channel-major (R coefficients, then G,
then B). Colour/opacity are as in `.splat`. Coordinates are the PLY's. Read only.
"""
from __future__ import annotations

import os
import struct
import warnings

import numpy as np

from ..errors import DataWarning, FormatError
from ..splats import SH_C0, Splats
from .common import build_splats, logit, read_bytes

MAIN_HEADER = 4096
SECTION_HEADER = 1024
SH_DIM = (0, 3, 8, 15)


def _sh_order(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """For each stored SH value: its (coefficient, channel) in `Splats.shN`."""
    coeff, chan = [], []
    start = 0
    for band in range(1, degree + 1):
        width = 2 * band + 1
        for c in range(3):
            for j in range(width):
                coeff.append(start + j)
                chan.append(c)
        start += width
    return np.array(coeff, np.int64), np.array(chan, np.int64)


def read_ksplat(path: str | os.PathLike) -> Splats:
    return decode_ksplat(read_bytes(path), path)


def decode_ksplat(data: bytes, name="<ksplat>") -> Splats:
    if len(data) < MAIN_HEADER:
        raise FormatError(f"{name}: too small for a .ksplat header ({len(data)} bytes)")
    major, minor = data[0], data[1]
    if major != 0 or minor < 1:
        raise FormatError(f"{name}: unsupported .ksplat version {major}.{minor}")
    (max_sections,) = struct.unpack_from("<I", data, 4)
    (total,) = struct.unpack_from("<I", data, 16)
    (mode,) = struct.unpack_from("<H", data, 20)
    sh_min, sh_max = struct.unpack_from("<ff", data, 36)
    sh_min, sh_max = sh_min or -1.5, sh_max or 1.5
    if mode > 2:
        raise FormatError(f"{name}: unknown .ksplat compression mode {mode}")
    if MAIN_HEADER + max_sections * SECTION_HEADER > len(data):
        raise FormatError(f"{name}: truncated .ksplat section headers")
    fbytes = 4 if mode == 0 else 2
    sh_bytes = (4, 2, 1)[mode]
    base_bytes = 3 * fbytes + 3 * fbytes + 4 * fbytes + 4

    sections = []
    for s in range(max_sections):
        h = MAIN_HEADER + s * SECTION_HEADER
        count, max_count, capacity, n_buckets = struct.unpack_from("<IIII", data, h)
        block, = struct.unpack_from("<f", data, h + 16)
        bucket_storage, = struct.unpack_from("<H", data, h + 20)
        qrange, = struct.unpack_from("<I", data, h + 24)
        full, partial = struct.unpack_from("<II", data, h + 32)
        degree, = struct.unpack_from("<H", data, h + 40)
        if degree > 3:
            raise FormatError(f"{name}: section {s} has unsupported SH degree {degree}")
        sections.append((count, max_count, capacity, n_buckets, block, bucket_storage,
                         qrange or (1 if mode == 0 else 32767), full, partial, degree))
    degree = max([sec[-1] for sec in sections if sec[0] > 0], default=0)

    parts = []
    offset = MAIN_HEADER + max_sections * SECTION_HEADER
    for s, (count, max_count, capacity, n_buckets, block, bucket_storage, qrange, full, partial,
            sdeg) in enumerate(sections):
        n_sh = 3 * SH_DIM[sdeg]
        rec = base_bytes + n_sh * sh_bytes
        # the partial sizes, then one f32 xyz centre per bucket, in every mode (GaussianSplats3D's
        # bucket storage is a constant 12 bytes; another value would shift every record after it)
        if n_buckets and bucket_storage != 12:
            raise FormatError(f"{name}: section {s} has bucket storage {bucket_storage} bytes, expected 12")
        meta = 12 * n_buckets + 4 * partial
        end = offset + meta + rec * max_count
        if count > max_count or end > len(data):
            raise FormatError(f"{name}: section {s} is truncated or inconsistent")
        if not count:  # (its SH degree may differ from the scene's: nothing of it is read)
            offset = end
            continue
        raw = np.frombuffer(data, np.uint8, rec * count, offset + meta).reshape(count, rec)
        ft = np.dtype("<f4") if mode == 0 else np.dtype("<f2")

        def field(start: int, k: int, dtype) -> np.ndarray:
            width = np.dtype(dtype).itemsize
            return raw[:, start:start + k * width].copy().view(dtype).astype(np.float64)

        if mode == 0:
            means = field(0, 3, "<f4")
        else:
            sizes = np.frombuffer(data, "<u4", partial, offset).astype(np.int64)
            centres = np.frombuffer(data, "<f4", 3 * n_buckets, offset + 4 * partial).reshape(-1, 3)
            # the bucket of each of the `count` splats: `full` buckets of `capacity`, then the partial
            # ones by their sizes (computed for the splats only: the declared sizes are untrusted)
            in_full = min(full * capacity, count)
            idx = np.arange(count - in_full)
            bucket = np.concatenate([np.arange(in_full) // max(capacity, 1),
                                     full + np.searchsorted(np.cumsum(sizes), idx, side="right")])
            if count and (len(idx) and idx[-1] >= sizes.sum() or bucket.max() >= n_buckets):
                raise FormatError(f"{name}: section {s} bucket table does not cover its splats")
            means = ((field(0, 3, "<u2") - qrange) * (block / 2.0 / qrange)
                     + centres[bucket].astype(np.float64))
        lin = field(3 * fbytes, 3, ft)
        scales = np.where(lin > 0, np.log(np.where(lin > 0, lin, 1.0)), -10.0)  # as splat-transform
        quats = field(6 * fbytes, 4, ft)
        rgba = raw[:, 10 * fbytes:10 * fbytes + 4].astype(np.float64) / 255.0
        shN = np.zeros((count, SH_DIM[degree], 3))
        if n_sh:
            if mode == 2:
                vals = sh_min + raw[:, base_bytes:].astype(np.float64) / 255.0 * (sh_max - sh_min)
            else:
                vals = field(base_bytes, n_sh, ft)
            coeff, chan = _sh_order(sdeg)
            shN[:, coeff, chan] = vals
        parts.append((means, quats, scales, logit(rgba[:, 3]), (rgba[:, :3] - 0.5) / SH_C0, shN))
        offset = end
    got = sum(len(p[0]) for p in parts)
    if got != total:
        raise FormatError(f"{name}: header says {total} splats, sections hold {got}")
    if offset < len(data):  # (read as before, but not in silence: a damaged or concatenated file)
        warnings.warn(f"{name}: {len(data) - offset:,} bytes after the last section are ignored", DataWarning,
                      stacklevel=3)
    if not parts:
        return build_splats(name, *(np.zeros((0, d)) for d in (3, 4, 3)), np.zeros(0),
                            np.zeros((0, 3)), np.zeros((0, SH_DIM[degree], 3)))
    cat = [np.concatenate([p[i] for p in parts]) for i in range(6)]
    return build_splats(name, *cat)


__all__ = ["read_ksplat", "decode_ksplat"]
