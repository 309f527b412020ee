"""Niantic SPZ reader (versions 1-4) and writer (versions 2, 3 and 4).

Versions 1-3: the whole file is one gzip stream holding a 16-byte header
``<u32 magic 0x5053474e "NGSP", u32 version, u32 numPoints, u8 shDegree, u8 fractionalBits,
u8 flags, u8 reserved>``, optional extension records (flags & 2), then the attribute arrays,
each for all points: positions (24-bit signed fixed point x,y,z with ``fractionalBits``;
float16 in version 1), alphas (u8 sigmoid), colours (u8: f_dc*0.15*255 + 127.5), scales
(u8: (log_scale + 10) * 16), rotations (v2: xyz of the w>=0 unit quaternion as
u8 = q*127.5 + 127.5; v3+: "smallest three", u32 with the largest component's index
(in xyzw order) in the top 2 bits and 9-bit magnitude + sign for the other three, the last
one in the lowest bits) and SH (u8 = round(v*128) + 128, per point coefficient-major with
the colour channel fastest, which is exactly `Splats.shN`'s (K, 3) order).
Version 4: the file starts (uncompressed) with a 32-byte header ``<magic, version, numPoints,
u8 shDegree, u8 fractionalBits, u8 flags, u8 numStreams, u32 tocByteOffset, 12 reserved>``,
extension records, then a table of contents of ``numStreams`` pairs ``<u64 compressedSize,
u64 uncompressedSize>`` followed by the streams (positions, alphas, colours, scales,
rotations, sh; empty ones are omitted), each one zstd frame.

Axes: SPZ stores RUB (y up, z back); gscomp and the INRIA PLY use RDF. `read_spz` converts
to RDF and `write_spz` converts back (negate y and z, see `common.flip_yz`) unless
``convert=False``. SH degree 4 files are read as degree 3 (the first 15 coefficients), with a note.
The header's antialiased flag (flags & 1) is `Splats.antialiased`, read and written.
"""
from __future__ import annotations

import gzip
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataWarning, FormatError, GscompError
from ..memory import check_decode_memory
from ..splats import Splats
from .common import (LossySaveWarning, atomic_write_bytes, build_splats, clamped_rows, flip_yz, logit, normalize_quats,
                     note_degree4, read_bytes, sigmoid, splats_numpy, to_u8)

MAGIC = 0x5053474E
COLOR_SCALE = 0.15  # SPZ's scale for the DC colour (smaller than C0 so out-of-range colours fit)
SH_DIM = (0, 3, 8, 15, 24)
FLAG_ANTIALIASED = 0x1
FLAG_EXTENSIONS = 0x2
SQRT1_2 = np.float64(0.7071067811865476)
STREAMS = ("positions", "alphas", "colors", "scales", "rotations", "sh")


def _sizes(n: int, version: int, sh_dim: int) -> list[int]:
    """Byte size of each attribute array, in file order."""
    pos = n * 3 * (2 if version == 1 else 3)
    rot = n * (4 if version >= 3 else 3)
    return [pos, n, n * 3, n * 3, rot, n * sh_dim * 3]


# ---------------------------------------------------------------------------- reading
def read_spz(path: str | os.PathLike, *, convert: bool = True) -> Splats:
    return decode_spz(read_bytes(path), path, convert=convert)


def decode_spz(data: bytes, name="<spz>", *, convert: bool = True) -> Splats:
    """Decode the bytes of an .spz file (any version) into Splats (RDF axes if ``convert``)."""
    if data[:2] == b"\x1f\x8b":
        arrays, header = _parse_legacy(_gunzip(data, name), name)
    elif data[:4] == b"NGSP" and len(data) >= 8 and struct.unpack_from("<I", data, 4)[0] < 4:
        # Not in the spec, but some tools wrote the legacy stream without the gzip wrapper.
        arrays, header = _parse_legacy(data, name)
    elif data[:4] == b"NGSP":
        arrays, header = _parse_v4(data, name)
    else:
        raise FormatError(f"{name}: not an SPZ file (expected gzip or 'NGSP' magic)")
    return _unpack(arrays, header, name, convert)


MAX_FRAC = 30  # fractional position bits: the reference reader scales by 1 / (1 << bits) in 32 bits
# a position step over this fraction of the median Gaussian's size gets a note (biker: 0.02 at the
# origin; 0.24 at x = 2e5, scaled x10, where SPZ's positions cost 14 dB of render PSNR)
SPZ_STEP_NOTE = 0.1
EXTENSION_SLACK = 1 << 24  # bytes of extension records allowed before the arrays (flag 0x2)


def _gunzip(data: bytes, name) -> bytes:
    """The legacy gzip stream, inflated no further than its 16-byte header says it holds (a
    small file cannot inflate to gigabytes); the CRC is checked at the end of the stream."""
    d = zlib.decompressobj(31)  # gzip wrapper
    try:
        out = [d.decompress(data, 16)]
        head = out[0]
        if len(head) == 16:
            magic, version, n, deg, _, flags, _ = struct.unpack_from("<IIIBBBB", head, 0)
            _check_header(name, magic, version, n, deg, 1, 3)
            arrays = sum(_sizes(n, version, SH_DIM[deg]))
            # (inflated piece by piece below, so memory follows the data: only deflate's own limit applies;
            # 64x refused gscomp's own SPZ of 100k identical Gaussians, 543x)
            _check_ratio(name, n, arrays, len(data), DEFLATE_MAX_RATIO)
            check_decode_memory(n, deg, name)  # (before inflating; after the ratio: a bomb is a bomb on any machine)
            limit = 16 + arrays + (EXTENSION_SLACK if flags & FLAG_EXTENSIONS else 0)
            got, tail = 16, d.unconsumed_tail
            while not d.eof:  # (zlib may hold output back with all input consumed: call until eof)
                chunk = d.decompress(tail, limit + 1 - got)
                if not chunk and not tail:
                    break  # no input left and nothing more comes out: truncated
                got += len(chunk)
                out.append(chunk)
                if got > limit:
                    raise FormatError(f"{name}: the gzip stream holds more data than its header declares")
                tail = d.unconsumed_tail
        if not d.eof:
            raise EOFError("the stream ends early")
    except (zlib.error, EOFError) as e:
        raise FormatError(f"{name}: corrupt or truncated gzip stream ({e})") from None
    extra = max(len(d.unused_data), len(d.unconsumed_tail))  # (after the end, zlib keeps what follows in both)
    if extra:  # (a second gzip member, or bytes appended: read as before, but not in silence)
        warnings.warn(f"{name}: {extra:,} bytes after the SPZ's gzip stream are ignored", DataWarning, stacklevel=4)
    return b"".join(out)


# Real SPZ files inflate 1.2-3x. Version 4's zstd streams are inflated into buffers of their
# declared size, so a file that claims far more is refused as a decompression bomb; the gzip of
# versions 1-3 cannot inflate past deflate's 1032:1, whatever the data.
MAX_RATIO = 64
DEFLATE_MAX_RATIO = 1032


def _check_ratio(name, n: int, arrays: int, file_size: int, ratio: int = MAX_RATIO) -> None:
    if arrays > ratio * file_size + (1 << 20):
        raise FormatError(f"{name}: {n:,} points ({arrays:,} bytes of arrays) cannot come from a {file_size:,}-byte "
                          f"file (over {ratio}x compression: corrupt, or a decompression bomb)")


def _check_header(name, magic, version, n, deg, lo, hi):
    if magic != MAGIC:
        raise FormatError(f"{name}: not an SPZ file (bad magic 0x{magic:08x})")
    if not lo <= version <= hi:
        raise FormatError(f"{name}: unsupported SPZ version {version}")
    if deg >= len(SH_DIM):
        raise FormatError(f"{name}: unsupported SH degree {deg}")
    if n > 100_000_000:
        raise FormatError(f"{name}: implausible point count {n:,}")


def _parse_legacy(raw: bytes, name):
    if len(raw) < 16:
        raise FormatError(f"{name}: truncated SPZ header ({len(raw)} bytes)")
    magic, version, n, deg, frac, flags, _ = struct.unpack_from("<IIIBBBB", raw, 0)
    _check_header(name, magic, version, n, deg, 1, 3)
    sizes = _sizes(n, version, SH_DIM[deg])
    total = sum(sizes)
    if flags & FLAG_EXTENSIONS:
        # Extension records sit between the header and the arrays; the arrays end the stream,
        # so skip the records by size (their layout changed between library releases).
        start = len(raw) - total
        if start < 16:
            raise FormatError(f"{name}: truncated SPZ data ({len(raw)} bytes, need {16 + total})")
    else:
        start = 16
        if len(raw) < 16 + total:
            raise FormatError(f"{name}: truncated SPZ data ({len(raw)} bytes, need {16 + total})")
        if len(raw) > 16 + total:  # (the gzip path stops inflating there; a raw stream must end there)
            raise FormatError(f"{name}: SPZ data holds {len(raw) - 16 - total} bytes more than its header declares "
                              "(a wrong version or point count)")
    arrays, o = {}, start
    for key, size in zip(STREAMS, sizes):
        arrays[key] = np.frombuffer(raw, np.uint8, size, o)
        o += size
    return arrays, dict(version=version, n=n, deg=deg, frac=frac, flags=flags)


def _parse_v4(data: bytes, name):
    import zstandard

    if len(data) < 32:
        raise FormatError(f"{name}: truncated SPZ header ({len(data)} bytes)")
    magic, version, n, deg, frac, flags, n_streams, toc = struct.unpack_from("<IIIBBBBI", data, 0)
    _check_header(name, magic, version, n, deg, 4, 4)
    sizes = _sizes(n, version, SH_DIM[deg])
    _check_ratio(name, n, sum(sizes), len(data))
    check_decode_memory(n, deg, name)
    keys = [k for k, s in zip(STREAMS, sizes) if s > 0]
    sizes = [s for s in sizes if s > 0]
    if n_streams != len(sizes):
        raise FormatError(f"{name}: {n_streams} streams, expected {len(sizes)}")
    if toc < 32 or toc + 16 * n_streams > len(data):
        raise FormatError(f"{name}: table of contents out of bounds (truncated file?)")
    arrays = {k: np.zeros(0, np.uint8) for k in STREAMS}
    o = toc + 16 * n_streams
    dctx = zstandard.ZstdDecompressor()
    for i, (key, size) in enumerate(zip(keys, sizes)):
        csize, usize = struct.unpack_from("<QQ", data, toc + 16 * i)
        if usize != size:
            raise FormatError(f"{name}: {key} stream holds {usize} bytes, expected {size}")
        if o + csize > len(data):
            raise FormatError(f"{name}: {key} stream extends past the end of the file (truncated?)")
        try:
            out = dctx.decompress(data[o:o + csize], max_output_size=size)
        except zstandard.ZstdError as e:
            raise FormatError(f"{name}: corrupt zstd data in the {key} stream ({e})") from None
        if len(out) != size:
            raise FormatError(f"{name}: {key} stream decompressed to {len(out)} bytes, expected {size}")
        arrays[key] = np.frombuffer(out, np.uint8)
        o += csize
    if o < len(data):  # (as after a gzip stream: read, but named)
        warnings.warn(f"{name}: {len(data) - o:,} bytes after the SPZ's last stream are ignored", DataWarning, stacklevel=4)
    return arrays, dict(version=version, n=n, deg=deg, frac=frac, flags=flags)


def _unpack_smallest_three(r: np.ndarray) -> np.ndarray:
    """(N,) uint32 -> (N, 4) xyzw."""
    n = len(r)
    largest = (r >> np.uint32(30)).astype(np.int64)
    q = np.zeros((n, 4), np.float64)
    comp = r.copy()
    stored = np.ones((n, 4), bool)
    stored[np.arange(n), largest] = False
    for i in (3, 2, 1, 0):  # the highest index is in the lowest bits
        s = stored[:, i]
        mag = (comp & np.uint32(511)).astype(np.float64) * (SQRT1_2 / 511.0)
        neg = (comp >> np.uint32(9)) & np.uint32(1)
        q[:, i] = np.where(s, np.where(neg == 1, -mag, mag), 0.0)
        comp = np.where(s, comp >> np.uint32(10), comp)
    q[np.arange(n), largest] = np.sqrt(np.maximum(0.0, 1.0 - (q ** 2).sum(1)))
    return q


def _unpack(a: dict, h: dict, name, convert: bool) -> Splats:
    n, version, deg = h["n"], h["version"], h["deg"]
    if version == 1:
        means = a["positions"].view("<f2").reshape(n, 3).astype(np.float64)
    else:
        if h["frac"] > MAX_FRAC:
            raise FormatError(f"{name}: {h['frac']} fractional bits of position (at most {MAX_FRAC})")
        b = a["positions"].reshape(n, 3, 3).astype(np.int32)
        fixed = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
        fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
        means = fixed.astype(np.float32) / np.float32(1 << h["frac"])  # exact: |fixed| < 2^23
    opac = logit(a["alphas"].astype(np.float64) / 255.0)
    sh0 = (a["colors"].reshape(n, 3).astype(np.float64) / 255.0 - 0.5) / COLOR_SCALE
    scales = a["scales"].reshape(n, 3).astype(np.float64) / 16.0 - 10.0
    if version >= 3:
        xyzw = _unpack_smallest_three(a["rotations"].view("<u4").astype(np.uint32))
    else:
        xyz = a["rotations"].reshape(n, 3).astype(np.float64) / 127.5 - 1.0
        w = np.sqrt(np.maximum(0.0, 1.0 - (xyz ** 2).sum(1)))
        xyzw = np.concatenate([xyz, w[:, None]], 1)
    quats = xyzw[:, [3, 0, 1, 2]]
    dim = SH_DIM[deg]
    shN = (a["sh"].reshape(n, dim, 3).astype(np.float32) - 128) / np.float32(128)  # exact
    if deg == 4:
        note_degree4(name)
        shN = shN[:, :15]
    if convert:
        means, quats, shN = flip_yz(means, quats, shN)
    return build_splats(name, means, quats, scales, opac, sh0, shN, antialiased=bool(h["flags"] & FLAG_ANTIALIASED))


# ---------------------------------------------------------------------------- writing
def _pack_smallest_three(xyzw: np.ndarray) -> np.ndarray:
    """(N, 4) unit xyzw -> (N,) uint32, bit-compatible with the reference encoder."""
    n = len(xyzw)
    largest = np.argmax(np.abs(xyzw), 1)
    sign = np.where(xyzw[np.arange(n), largest] < 0, -1.0, 1.0)
    q = xyzw * sign[:, None]  # make the largest component positive (q and -q are one rotation)
    comp = largest.astype(np.uint32)
    for i in range(4):
        s = largest != i
        mag = np.minimum(np.floor(511.0 * np.abs(q[:, i]) / SQRT1_2 + 0.5), 511).astype(np.uint32)
        neg = (q[:, i] < 0).astype(np.uint32)
        comp = np.where(s, (comp << np.uint32(10)) | (neg << np.uint32(9)) | mag, comp)
    return comp.astype("<u4")


def _quantize_sh(x: np.ndarray, bits: int) -> np.ndarray:
    """round(x*128) + 128 snapped to multiples of 2^(8-bits), as the reference encoder. In place
    on one temporary (SH rest is the bulk of a scene: 45 values per Gaussian at degree 3)."""
    bucket = 1 << (8 - bits)
    y = x * np.float32(128)
    y += np.copysign(np.float32(0.5), y)
    np.trunc(y, out=y)  # std::round: halves away from zero
    np.clip(y, -1024, 1024, out=y)
    q = y.astype(np.int16)
    q += 128 + bucket // 2
    q //= bucket
    q *= bucket
    np.clip(q, 0, 255, out=q)
    return q.astype(np.uint8)


# Deflate of large payloads runs on both cores in pieces of at least this many bytes (see _gzip).
GZIP_PIECE = 4 << 20


def _gzip(data: bytes, level: int = 6) -> bytes:
    """One gzip member (what SPZ readers inflate), deflated pigz-style on two threads: each piece is
    raw deflate primed with the 32 KB before it (so matches still reach back as far as in one
    stream), ending in a sync flush, the last one in the final block; the CRC is of the whole.
    Bytes depend only on the data and the level (the pieces are fixed by its length). Small data:
    plain `gzip.compress`."""
    if len(data) < 2 * GZIP_PIECE:
        return gzip.compress(data, compresslevel=level, mtime=0)
    from concurrent.futures import ThreadPoolExecutor

    view = memoryview(data)
    pieces = min(16, len(data) // GZIP_PIECE)  # >= 2
    cuts = [len(data) * i // pieces for i in range(pieces + 1)]

    def deflate(i: int) -> bytes:
        a, b = cuts[i], cuts[i + 1]
        kw = {"zdict": view[max(0, a - 32768):a]} if a else {}
        co = zlib.compressobj(level, zlib.DEFLATED, -15, 8, **kw)
        return co.compress(view[a:b]) + co.flush(zlib.Z_FINISH if i == pieces - 1 else zlib.Z_SYNC_FLUSH)

    with ThreadPoolExecutor(max_workers=2) as ex:  # zlib releases the GIL while it deflates
        body = b"".join(ex.map(deflate, range(pieces)))
    head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # gzip, deflate, no flags, mtime 0, OS unknown
    return head + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def encode_spz(splats: Splats, *, version: int = 3, convert: bool = True,
               sh_bits: tuple[int, int] = (5, 4), antialiased: bool | None = None,
               notes: list[str] | None = None) -> bytes:
    """Encode Splats as SPZ bytes. ``sh_bits`` are the precisions kept for SH band 1 and for
    higher bands (the reference encoder's defaults 5 and 4; 8 keeps everything). ``notes``, a
    list, receives a line on what SPZ's fixed ranges clamped, if anything. ``antialiased``
    (default: the splats' flag) sets the header's antialiased flag."""
    if version not in (2, 3, 4):
        raise GscompError(f"SPZ version {version} cannot be written (use 2, 3 or 4)")
    if not all(1 <= b <= 8 for b in sh_bits):
        raise GscompError(f"SPZ sh_bits must be in 1..8, got {sh_bits}")
    a = splats_numpy(splats)
    n, deg = len(splats), splats.sh_degree
    means = a["means"].astype(np.float64)
    quats = normalize_quats(a["quats"])
    shN = a["shN"]
    if convert:
        means, quats, shN = flip_yz(means, quats, shN)

    # Largest fractional-bit count (<= 12, the reference's 0.25 mm) that fits the 24-bit range.
    limit = float(np.abs(means).max()) if n else 0.0
    frac = 12
    while frac > 0 and round(limit * (1 << frac)) > (1 << 23) - 1:
        frac -= 1
    if round(limit * (1 << frac)) > (1 << 23) - 1:
        raise GscompError(f"SPZ cannot store positions beyond +-{(1 << 23) - 1} (found {limit:g})")
    if notes is not None and n:
        # far from the origin (map coordinates) the 24 bits leave few for the fraction, and a tiny
        # scene gets no more than 12: positions then move by a good part of the Gaussians' size
        step = 1.0 / (1 << frac)
        every = max(1, n // 65536)  # (a median needs no more, as posthoc.coarse_grid_warning's)
        with np.errstate(over="ignore"):  # (a log-scale past 709: an infinite size, which the median copes with)
            size = float(np.median(np.exp(a["scales"][::every].max(1).astype(np.float64))))
        if step > SPZ_STEP_NOTE * size:
            notes.append(f"SPZ's 24-bit fixed-point positions have a step of {step:g} here, {step / size:.2g}x the "
                         f"median Gaussian's size (a scene far from the origin, or a tiny one): .ply or .gsz keep them")
    fixed = (np.sign(means) * np.floor(np.abs(means) * (1 << frac) + 0.5)).astype(np.int64)
    fixed &= 0xFFFFFF
    positions = np.stack([fixed & 0xFF, (fixed >> 8) & 0xFF, (fixed >> 16) & 0xFF], -1).astype(np.uint8)

    alphas = to_u8(sigmoid(a["opacities"]) * 255.0)
    raw_colors = a["sh0"][:, 0].astype(np.float64) * (COLOR_SCALE * 255.0) + 127.5
    raw_scales = (a["scales"].astype(np.float64) + 10.0) * 16.0
    if notes is not None and n:
        cut = {"DC colour past +-3.35": clamped_rows(raw_colors), "log-scale outside [-10.03, 5.97]": clamped_rows(raw_scales),
               "SH rest outside [-1.004, 0.996]": clamped_rows(shN * 128.0 + 128.0)}
        if any(c.any() for c in cut.values()):
            what = ", ".join(f"{k} {int(c.sum()):,}" for k, c in cut.items() if c.any())
            notes.append(f"SPZ's 8-bit ranges clamp values of {int(np.logical_or.reduce(list(cut.values())).sum()):,} "
                         f"of {n:,} Gaussians ({what})")
    colors = to_u8(raw_colors)
    scales = to_u8(raw_scales)
    xyzw = quats[:, [1, 2, 3, 0]]
    if version >= 3:
        rotations = _pack_smallest_three(xyzw)
    else:
        xyzw = xyzw * np.where(xyzw[:, 3:] < 0, -1.0, 1.0)  # w >= 0 so it can be recomputed
        rotations = to_u8(xyzw[:, :3] * 127.5 + 127.5)
    sh = np.empty((n, shN.shape[1], 3), np.uint8)
    sh[:, :3] = _quantize_sh(shN[:, :3], sh_bits[0])
    sh[:, 3:] = _quantize_sh(shN[:, 3:], sh_bits[1])

    streams = [positions, alphas, colors, scales, rotations, sh]
    blobs = [np.ascontiguousarray(s).tobytes() for s in streams]
    flags = FLAG_ANTIALIASED if (splats.antialiased if antialiased is None else antialiased) else 0
    if version < 4:
        header = struct.pack("<IIIBBBB", MAGIC, version, n, deg, frac, flags, 0)
        return _gzip(header + b"".join(blobs))
    import zstandard

    cctx = zstandard.ZstdCompressor(level=12)
    blobs = [b for b in blobs if b]
    packed = [cctx.compress(b) for b in blobs]
    header = struct.pack("<IIIBBBBI12x", MAGIC, version, n, deg, frac, flags, len(packed), 32)
    toc = b"".join(struct.pack("<QQ", len(p), len(b)) for p, b in zip(packed, blobs))
    return header + toc + b"".join(packed)


def write_spz(path: str | os.PathLike, splats: Splats, *, version: int = 3, convert: bool = True,
              sh_bits: tuple[int, int] = (5, 4)) -> None:
    notes: list[str] = []
    atomic_write_bytes(path, encode_spz(splats, version=version, convert=convert, sh_bits=sh_bits, notes=notes))
    for note in notes:
        warnings.warn(f"{Path(path).name}: {note}", LossySaveWarning, stacklevel=3)


__all__ = ["read_spz", "write_spz", "decode_spz", "encode_spz"]
