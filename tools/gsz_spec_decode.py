#!/usr/bin/env python3
"""An independent `.gsz` decoder (format 1.1), written from docs/gsz-format.md alone.

It was written clean-room: by someone who read only the specification (never gscomp's code) and
used `gscomp compress` / `gscomp decode` as a black box to check the result. It shares no code with
gscomp (numpy and, for zstd streams, zstandard only) and is slow (pure-Python rANS). gscomp does not
use it: `tests/test_spec_decoder.py` decodes files of every preset (post-hoc and `c3dgs`) with both
decoders and requires bit-identical fields, so the specification cannot drift from the implementation.

Supported: container + CRC checks, integer streams (modes 0-7, rANS kinds 0/1/2),
packed bit fields, stages `importance`, `positions` (morton-delta/v1 and v2,
morton-delta-classed/v1 and v2), `attributes` (quat-s3/v1, symbols/v1, symbols-gdiff/v1,
symbols-dedup/v1, f32-planes/v1, symbols-classed/v1 (shN too) incl. sort_scales, size_levels and
dependent (trellis) quantization, axes-classed/v1 (quat_axes: rotations as the free axis and the
angle of the next axis, from the decoded scales)), and the trained-pipeline stages `masking` (no section),
`rvq` (float16 codebooks + per-stage index streams, optional importance `depths`) and
`colorfield` (hash-grid + MLP evaluated at the decoded means in float32, one rounding per op).
Not supported: section 6 entropy models (no stage of format 1.x writes them).

decode(path) -> dict with float32 arrays:
  means (N,3), quats (N,4) wxyz, scales (N,3) log, opacities (N,) logit,
  sh0 (N,1,3), shN (N,K,3)
"""
import json
import math
import struct
import sys
import zlib

import numpy as np

MAGIC = b"\x89GSZ\r\n\x1a\n"

STATS = {}  # (mode, rANS kind) -> count of integer streams decoded (diagnostics)


class FormatError(ValueError):
    pass


def need(cond, msg):
    if not cond:
        raise FormatError(msg)


# --------------------------------------------------------------------------------
# byte reader
class Reader:
    def __init__(self, buf, pos=0, end=None):
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def remaining(self):
        return self.end - self.pos

    def bytes(self, n):
        need(n >= 0 and self.pos + n <= self.end, "truncated data")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self):
        return self.bytes(1)[0]

    def unpack(self, fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.bytes(size))

    def varint(self):
        v = 0
        for i in range(9):
            b = self.u8()
            v |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                return v
        raise FormatError("varint longer than 9 bytes")

    def svarint(self):
        u = self.varint()
        return (u >> 1) if not (u & 1) else -((u + 1) >> 1)

    def blob(self):
        n = self.varint()
        return self.bytes(n)

    def rest(self):
        return self.bytes(self.remaining())


# --------------------------------------------------------------------------------
# section 3: rANS stream
class RansDecoder:
    """constriction-compatible AnsCoder decoder: 32-bit words, 64-bit state, precision 24."""

    def __init__(self, words_bytes):
        need(len(words_bytes) % 4 == 0, "rANS words blob length not a multiple of 4")
        self.words = list(struct.unpack("<%dI" % (len(words_bytes) // 4), words_bytes))
        if not self.words:
            self.x = 0
        else:
            x = self.words.pop()
            need(x != 0, "rANS: top word is zero")
            while x < (1 << 32) and self.words:
                x = (x << 32) | self.words.pop()
            self.x = x

    def finish(self):
        need(self.x == 0 and not self.words, "rANS: stream not fully consumed")


class Table:
    """A table of integer weights w (quantum `unit`) such that sum(w)*unit = 2^24.
    Weights are multiples of `unit`, so a LUT over q >> log2(unit) finds the rank."""

    def __init__(self, weights, unit):
        self.unit_shift = unit.bit_length() - 1
        nz = [i for i, w in enumerate(weights) if w > 0]
        self.sym_idx = nz                      # s_r
        self.W = [weights[i] * unit for i in nz]
        C = [0]
        for w in self.W:
            C.append(C[-1] + w)
        need(C[-1] == 1 << 24, "weights do not sum to the table total")
        self.C = C
        lut = np.empty(1 << (24 - self.unit_shift), dtype=np.int32)
        for r in range(len(nz)):
            lut[C[r] >> self.unit_shift:C[r + 1] >> self.unit_shift] = r
        self.lut = lut.tolist()
        self.m = len(nz)

    def pop(self, dec):
        x = dec.x
        q = x & 0xFFFFFF
        r = self.lut[q >> self.unit_shift]
        x = self.W[r] * (x >> 24) + (q - self.C[r])
        if x < (1 << 32) and dec.words:
            x = (x << 32) | dec.words.pop()
        dec.x = x
        return r


def read_histogram(rd, n, wbits):
    """Histogram block; returns n int values. wbits = 16 (x256) or 12 (x4096)."""
    lo = rd.svarint()
    A = rd.varint()
    need(1 <= A <= 16384, "histogram: bad alphabet size")
    w = [rd.varint() for _ in range(A)]
    need(sum(w) == (1 << wbits), "histogram: weights do not sum to 2^%d" % wbits)
    words = rd.blob()
    tab = Table(w, 1 << (24 - wbits))
    if tab.m == 1:
        need(len(words) == 0, "histogram: single symbol but words present")
        return np.full(n, lo + tab.sym_idx[0], dtype=np.int64)
    dec = RansDecoder(words)
    pop = tab.pop
    ranks = [pop(dec) for _ in range(n)]
    dec.finish()
    sym = np.asarray(tab.sym_idx, dtype=np.int64)
    return lo + sym[np.asarray(ranks, dtype=np.int64)] if n else np.zeros(0, np.int64)


def read_context_block(rd, n):
    m = rd.svarint()
    need(abs(m) < (1 << 40), "context block: |m| too large")
    B = rd.u8()
    need(1 <= B <= 6, "context block: bad B")
    tables = []
    for _ in range(2 * B + 1):
        A = rd.varint()
        need(0 <= A <= 16384, "context block: bad A")
        if A == 0:
            tables.append(None)
            continue
        lo = rd.svarint()
        w = [rd.varint() for _ in range(A)]
        need(sum(w) == 4096, "context block: weights do not sum to 4096")
        t = Table(w, 4096)
        t.lo = lo
        tables.append(t)
    words = rd.blob()
    dec = RansDecoder(words)
    out = [0] * n
    p = m
    for i in range(n):
        dlt = p - m
        if dlt == 0:
            t = B
        elif dlt > 0:
            t = B + min(dlt.bit_length(), B)
        else:
            t = B - min((-dlt).bit_length(), B)
        tab = tables[t]
        need(tab is not None, "context block: value in a context that never occurs")
        if tab.m == 1:
            v = tab.lo + tab.sym_idx[0]
        else:
            v = tab.lo + tab.sym_idx[tab.pop(dec)]
        out[i] = v
        p = v
    dec.finish()
    return np.asarray(out, dtype=np.int64)


def unzigzag_np(u):
    u = u.astype(np.uint64)
    return ((u >> np.uint64(1)).astype(np.int64)) ^ (-(u & np.uint64(1)).astype(np.int64))


def read_int_stream(data, n):
    """Section 2: decode an integer stream occupying exactly `data`; returns int64[n]."""
    rd = Reader(data)
    mode = rd.u8()
    key = (mode, data[1] if mode in (2, 3) and len(data) > 1 else None)
    STATS[key] = STATS.get(key, 0) + 1
    if mode == 0:
        need(n == 0, "empty stream for n > 0")
        out = np.zeros(0, np.int64)
    elif mode == 1:
        out = np.full(n, rd.svarint(), dtype=np.int64)
    elif mode in (2, 3):
        kind = rd.u8()
        if kind == 0:
            out = read_histogram(rd, n, 16)
        elif kind == 2:
            out = read_histogram(rd, n, 12)
        elif kind == 1:
            lo = rd.svarint()
            k = rd.u8()
            need(k <= 40, "split block: k > 40")
            hi = rd.blob()
            raw = rd.blob()
            hrd = Reader(hi)
            h = read_histogram(hrd, n, 16)
            need(hrd.remaining() == 0, "split block: trailing bytes in hi")
            r = unpack_bits(raw, np.full(n, k, dtype=np.int64))
            out = lo + (h << k) + r.astype(np.int64)
        else:
            raise FormatError("unknown rANS kind %d" % kind)
        if mode == 3:
            out = np.cumsum(out)
    elif mode in (4, 5):
        w = rd.u8()
        need(w in (1, 2, 4, 8), "zstd stream: bad width")
        raw = zstd_exact(rd.rest(), n * w, "zstd stream")
        u = np.frombuffer(raw, dtype={1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}[w])
        out = unzigzag_np(u)
        if mode == 5:
            out = np.cumsum(out)
    elif mode == 6:
        out = np.asarray([rd.svarint() for _ in range(n)], dtype=np.int64)
    elif mode == 7:
        out = read_context_block(rd, n)
    else:
        raise FormatError("unknown integer stream mode %d" % mode)
    need(rd.remaining() == 0, "trailing bytes after integer stream (mode %d)" % mode)
    need(len(out) == n, "stream length mismatch")
    return out


# --------------------------------------------------------------------------------
# section 4: packed bit fields (MSB first)
def unpack_bits(data, widths):
    widths = np.asarray(widths, dtype=np.int64)
    need(np.all((widths >= 0) & (widths <= 56)), "bit field width out of range")
    total = int(widths.sum())
    need(len(data) == (total + 7) // 8, "packed bit fields: wrong byte length")
    n = len(widths)
    if n == 0:
        return np.zeros(0, np.uint64)
    offs = np.concatenate([[0], np.cumsum(widths)[:-1]])
    buf = np.frombuffer(bytes(data) + b"\0" * 8, dtype=np.uint8)
    byte = offs >> 3
    # gather 8 bytes big-endian starting at `byte`
    v = np.zeros(n, np.uint64)
    for j in range(8):
        v = (v << np.uint64(8)) | buf[byte + j].astype(np.uint64)
    sh = (offs & 7).astype(np.uint64)
    v = v << sh  # drop leading bits (uint64 wraps)
    w = widths.astype(np.uint64)
    res = np.where(widths > 0, v >> (np.uint64(64) - np.maximum(w, 1)), np.uint64(0))
    return res.astype(np.uint64)


# --------------------------------------------------------------------------------
# stage: positions
def deinterleave(M, bits):
    M = M.astype(np.uint64)
    q = np.zeros((len(M), 3), dtype=np.uint64)
    for j in range(bits):
        for a in range(3):
            q[:, a] |= ((M >> np.uint64(3 * j + a)) & np.uint64(1)) << np.uint64(j)
    return q


def morton_from_classes(classes, raw_bytes, bits):
    need(np.all((classes >= 0) & (classes <= 3 * bits)), "morton class out of range")
    widths = np.maximum(classes - 1, 0)
    raw = unpack_bits(raw_bytes, widths).astype(np.int64) if len(classes) else np.zeros(0, np.int64)
    d = np.where(classes == 0, 0, np.left_shift(1, np.maximum(classes - 1, 0)) + raw)
    M = np.cumsum(d.astype(np.int64))
    need(len(M) == 0 or (M[-1] < (1 << (3 * bits)) and np.all(M >= 0)), "morton code too large")
    return M


def positions_coords(q, bounds_f32, bits):
    lo = bounds_f32[:3].astype(np.float64)
    hi = bounds_f32[3:].astype(np.float64)
    step = (hi - lo) / float((1 << bits) - 1)
    return (lo[None, :] + q * step[None, :]).astype(np.float32)


# exp for the log tails, exactly as the spec writes it
EXP_LN2_HI = 6.93147180369123816490e-01
EXP_LN2_LO = 1.90821492927058770002e-10
EXP_INV_LN2 = 1.44269504088896338700e+00


def spec_exp(y):
    k = np.floor(y * EXP_INV_LN2 + 0.5)
    r = (y - k * EXP_LN2_HI) - k * EXP_LN2_LO
    p = np.full_like(r, 1.0 / math.factorial(13))
    for i in range(12, -1, -1):
        p = p * r + 1.0 / math.factorial(i)
    return np.ldexp(p, k.astype(np.int64))


def read_tailed_grid(rd, bits):
    """v2 grid block: core box (6 float32) and tail lengths (6 uint32); returns (core, tails, B)."""
    core = np.frombuffer(rd.bytes(24), dtype="<f4").astype(np.float32)
    tails = np.frombuffer(rd.bytes(24), dtype="<u4").astype(np.int64)
    need(np.all(np.isfinite(core)) and np.all(core[:3] <= core[3:]), "positions: bad core box")
    need(np.all(tails <= (1 << 19)), "positions: tail too long")
    sizes = tails[:3] + (1 << bits) + tails[3:]
    B = max(bits, max(int(s - 1).bit_length() for s in sizes))
    need(B <= 19, "positions: grid too large")
    return core, tails, sizes, B


def tailed_coords(q, core, tails, bits):
    """Grid coordinates (float64, indices or cell centres) -> float32 positions, per the v2 rule."""
    J = float((1 << bits) - 1)
    out = np.empty(q.shape, np.float64)
    for a in range(3):
        lo, hi = float(core[a]), float(core[3 + a])
        h, w = (hi - lo) / J, (hi - lo) / 2.0
        j = q[:, a] - float(tails[a])
        x = lo + j * h
        up, dn = j > J, j < 0
        need(not (up.any() or dn.any()) or w > 0, "positions: tails on an empty core")
        x[up] = hi + w * (spec_exp(((j[up] - J) * h) / w) - 1.0)
        x[dn] = lo - w * (spec_exp(((-j[dn]) * h) / w) - 1.0)
        out[:, a] = x
    with np.errstate(over="ignore", invalid="ignore"):
        res = out.astype(np.float32)
    need(np.all(np.isfinite(res)), "positions: position past the float32 range")
    return res


def check_bits(bits, stage, codec):
    """Payload bits: the parameter's (v1); for v2, 1 up to the parameter's (a core may get fewer)."""
    if codec.endswith("/v2"):
        need(1 <= bits <= stage["bits"], "positions: bad bits")
    else:
        need(bits == stage["bits"] and 1 <= bits <= 19, "positions: bad bits")


def decode_positions(stage, sections, n, ctx):
    if stage.get("adaptive"):
        payload, codec = sections["means"]
        need(codec in ("morton-delta-classed/v1", "morton-delta-classed/v2"), "positions: unexpected codec " + codec)
        rd = Reader(payload)
        bits = rd.u8()
        check_bits(bits, stage, codec)
        cmax = rd.u8()
        need(cmax < bits, "positions: cmax >= bits")
        if codec.endswith("/v2"):
            core, tails, sizes, B = read_tailed_grid(rd, bits)
        else:
            bounds = np.frombuffer(rd.bytes(24), dtype="<f4")
            B = bits
        cls_d = read_int_stream(rd.blob(), n)
        raw = rd.blob()
        cb = B - cmax
        M = morton_from_classes(cls_d, raw, cb)
        X = deinterleave(M, cb).astype(np.int64)
        c = ctx["classes"]
        e = np.minimum(c, cmax).astype(np.int64)
        rw = cmax - e
        widths = np.repeat(rw, 3)  # x, y, z of Gaussian 0, then of Gaussian 1, ...
        ref = unpack_bits(rd.rest(), widths).astype(np.int64).reshape(n, 3)
        u = (X << rw[:, None]) | ref
        q = u.astype(np.float64) * np.exp2(e)[:, None] + (np.exp2(e)[:, None] - 1.0) / 2.0
        if codec.endswith("/v2"):
            need(np.all((u << e[:, None]) < sizes[None, :]), "positions: grid index out of range")
            return {"means": tailed_coords(q, core, tails, bits)}
        return {"means": positions_coords(q, bounds, bits)}
    payload, codec = sections["means"]
    need(codec in ("morton-delta/v1", "morton-delta/v2"), "positions: unexpected codec " + codec)
    rd = Reader(payload)
    bits = rd.u8()
    check_bits(bits, stage, codec)
    if codec.endswith("/v2"):
        core, tails, sizes, B = read_tailed_grid(rd, bits)
    else:
        bounds = np.frombuffer(rd.bytes(24), dtype="<f4")
        B = bits
    cls_d = read_int_stream(rd.blob(), n)
    M = morton_from_classes(cls_d, rd.rest(), B)
    q = deinterleave(M, B).astype(np.int64)
    if codec.endswith("/v2"):
        need(np.all(q < sizes[None, :]), "positions: grid index out of range")
        return {"means": tailed_coords(q.astype(np.float64), core, tails, bits)}
    return {"means": positions_coords(q.astype(np.float64), bounds, bits)}


# --------------------------------------------------------------------------------
# stage: attributes
def read_stream_list(rd):
    C = rd.varint()
    return [rd.blob() for _ in range(C)]


def zstd_exact(blob, size, what):
    """The zstd frame ``blob`` decompressed, which must declare and give exactly ``size`` bytes
    (the spec's frames declare their content size): checked before anything is allocated."""
    import zstandard
    try:
        declared = zstandard.frame_content_size(blob)
        need(declared == size, "%s: wrong content size" % what)
        raw = zstandard.ZstdDecompressor().decompress(blob, max_output_size=size)
    except zstandard.ZstdError as e:
        raise FormatError("%s: %s" % (what, e))
    need(len(raw) == size, "%s: wrong content size" % what)
    return raw


def f32_planes(blob, n):
    raw = zstd_exact(blob, 4 * n, "f32-planes")
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(4, n)
    return np.ascontiguousarray(planes.T).view("<f4").reshape(n).astype(np.float32)


def deq(q, step):
    return (q.astype(np.float64) * step).astype(np.float32)


def quats_from_cols(k, cols_f64):
    """k: int array (N,), cols_f64: three float64 (already-dequantized) arrays."""
    n = len(k)
    need(np.all((k >= 0) & (k <= 3)), "quat: largest index out of range")
    a, b, c = [np.asarray(v, np.float64) for v in cols_f64]
    af, bf, cf = a.astype(np.float32), b.astype(np.float32), c.astype(np.float32)
    # the largest component from the unrounded float64 a, b, c (not from af, bf, cf)
    big = np.sqrt(np.maximum(0.0, 1.0 - ((a * a + b * b) + c * c))).astype(np.float32)
    out = np.zeros((n, 4), np.float32)
    others = [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]
    for kk in range(4):
        sel = k == kk
        o = others[kk]
        out[sel, kk] = big[sel]
        out[sel, o[0]] = af[sel]
        out[sel, o[1]] = bf[sel]
        out[sel, o[2]] = cf[sel]
    return out


def shn_steps(K, shN_step, g):
    st = []
    for j in range(1, K + 1):
        l = int(math.isqrt(j))
        st.append(float(shN_step) * float(g) ** (l - 1))
    return st


def dq_reconstruct(k):
    """Trellis (dependent) quantization: coded levels -> reconstruction indices."""
    k = np.asarray(k, np.int64)
    pl = (k & 1).tolist()
    # h_j = (k_{j-1} + k_{j-3} + ...) mod 2, i.e. h_j = parity(k_{j-1}) xor h_{j-2}
    hl = [0] * len(pl)
    for j in range(1, len(pl)):
        hl[j] = pl[j - 1] ^ (hl[j - 2] if j >= 2 else 0)
    h = np.asarray(hl, np.int64)
    return 2 * k - h * np.sign(k)


def decode_classed(payload, field, n, cls, step, stage, ctx, dq, shn_cols=None):
    """symbols-classed/v1. Returns the float32 field array. shn_cols: shN's per-column steps."""
    rd = Reader(payload)
    flag = rd.u8()
    W = {"quats": 4, "opacities": 1, "shN": len(shn_cols) if shn_cols is not None else 0}.get(field, 3)
    size_levels = stage.get("size_levels") or {}
    grid = float(step) / 2.0 if dq else float(step)
    e = np.zeros(n, np.int64)
    thresholds = None
    if flag == 2:
        need(field == "scales", "flag 2 only for scales")
    elif flag == 1:
        need(field in ("sh0", "scales"), "flag 1 only for sh0 and scales")
    else:
        need(flag == 0, "bad flag")
    if field in size_levels or flag == 2:
        L = rd.u8()
        need(L == size_levels.get(field, 0), "size levels L differ from the header")
        thresholds = np.asarray(struct.unpack("<%di" % L, rd.bytes(4 * L)), np.int64)
        if field != "scales":
            m = ctx["scale_m"]
            e = (m[:, None] <= thresholds[None, :]).sum(axis=1) if L else np.zeros(n, np.int64)
    streams = read_stream_list(rd)
    need(rd.remaining() == 0, "trailing bytes in classed payload")

    def gather(level, ncols, blobs, trellis_cols):
        """class/level-major stream list -> (n, ncols) integer array"""
        K = int(level.max()) + 1 if n else 1
        need(len(blobs) == K * ncols, "classed: wrong stream count")
        out = np.zeros((n, ncols), np.int64)
        for kk in range(K):
            idx = np.nonzero(level == kk)[0]
            for j in range(ncols):
                v = read_int_stream(blobs[kk * ncols + j], len(idx))
                if dq and j in trellis_cols:
                    v = dq_reconstruct(v)
                out[idx, j] = v
        return out

    if flag == 2:
        # scales, sorted, with levels
        K = int(cls.max()) + 1 if n else 1
        S0 = gather(cls, 1, streams[:K], {0})[:, 0]
        m = S0 * (np.int64(1) << cls)
        ctx["scale_m"] = m
        L = len(thresholds)
        e = (m[:, None] <= thresholds[None, :]).sum(axis=1) if L else np.zeros(n, np.int64)
        lev = cls + e
        Kp = int(lev.max()) + 1 if n else 1
        need(len(streams) == K + 2 * Kp, "flag-2 scales: wrong stream count")
        G1 = gather(lev, 1, streams[K:K + Kp], {0})[:, 0]
        G2 = gather(lev, 1, streams[K + Kp:], {0})[:, 0]
        st = grid * np.exp2(cls)
        pe = np.exp2(e)
        sx = S0.astype(np.float64) * st
        sy = sx - G1.astype(np.float64) * st * pe
        sz = sy - G2.astype(np.float64) * st * pe
        return np.stack([sx, sy, sz], axis=1).astype(np.float32)

    level = cls + e
    trellis = set(range(1, 4)) if field == "quats" else set(range(W))
    ints = gather(level, W, streams, trellis)
    mult = grid * np.exp2(level)  # per-Gaussian step (float64, exact power-of-two scaling)
    if field == "quats":
        cols = [ints[:, j].astype(np.float64) * mult for j in (1, 2, 3)]
        return quats_from_cols(ints[:, 0], cols)
    if field == "scales":
        if flag == 1:
            S0, S1, S2 = ints[:, 0], ints[:, 1], ints[:, 2]
            sy = S0 - S1
            ints = np.stack([S0, sy, sy - S2], axis=1)
        ctx["scale_m"] = ints[:, 0] * (np.int64(1) << cls)
        return (ints.astype(np.float64) * mult[:, None]).astype(np.float32)
    if field == "opacities":
        return (ints[:, 0].astype(np.float64) * mult).astype(np.float32)
    if field == "sh0":
        if flag == 1:
            G = ints[:, 0]
            ints = np.stack([ints[:, 1] + G, G, ints[:, 2] + G], axis=1)
        return (ints.astype(np.float64) * mult[:, None]).astype(np.float32).reshape(n, 1, 3)
    if field == "shN":  # column j: its band's step (halved with dq), times 2^level
        cols = np.asarray(shn_cols, np.float64) / (2.0 if dq else 1.0)
        vals = ints.astype(np.float64) * (cols[None, :] * np.exp2(level)[:, None])
        return vals.astype(np.float32).reshape(n, W // 3, 3)
    raise FormatError("classed codec for unexpected field " + field)


# axes-classed/v1 (quat_axes): constants, each the double nearest its value (int / int in Python
# is correctly rounded; 23! itself is not a double, so 1.0 / float(23!) would round twice)
AXES_PI = 3.141592653589793
AXES_HALF_PI = 1.5707963267948966
AXES_SIN = [(-1) ** j / math.factorial(2 * j + 1) for j in range(12)]   # s_0..s_11
AXES_COS = [(-1) ** j / math.factorial(2 * j) for j in range(12)]       # c_0..c_11


def axes_free_axis(scales):
    """Free axis (True = e1, the largest scale's; False = e3) and level m_i from the decoded float32
    log-scales l1 >= l2 >= l3 (columns 0, 1, 2), in float64."""
    l = np.asarray(scales, np.float32).astype(np.float64)
    a = np.maximum(np.minimum(l[:, 0] - l[:, 2], 60.0), 0.0)
    b = np.maximum(np.minimum(l[:, 1] - l[:, 2], 60.0), 0.0)
    A, B = spec_exp(a), spec_exp(b)
    g23 = B - 1.0
    g12 = A - B
    e1 = g23 <= g12
    big = np.where(e1, g12, g23)
    small = np.where(e1, g23, g12)
    den = small * small
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(den == 0, np.inf, (big * big) / np.where(den == 0, 1.0, den))
    m = np.zeros(len(l), np.int64)
    for k in range(1, 5):
        m += r2 >= 2.0 ** (2 * k - 1)
    return e1, m


def decode_axes(payload, n, cls, quat_step, dq, scales):
    """axes-classed/v1: the quaternion from the free axis (U, V per class) and the angle index κ
    (per level c + m) of the next axis about it. Returns (n, 4) float32 wxyz."""
    rd = Reader(payload)
    streams = read_stream_list(rd)
    need(rd.remaining() == 0, "trailing bytes in axes payload")
    need(scales is not None and len(scales) == n, "axes: scales not decoded before quats")
    e1, m = axes_free_axis(scales)
    K = int(cls.max()) + 1 if n else 1
    lev = cls + m
    Kp = int(lev.max()) + 1 if n else 1
    need(len(streams) == 2 * K + Kp, "axes: wrong stream count")
    U = np.zeros(n, np.int64)
    V = np.zeros(n, np.int64)
    for k in range(K):
        idx = np.nonzero(cls == k)[0]
        for dst, blob in ((U, streams[2 * k]), (V, streams[2 * k + 1])):
            v = read_int_stream(blob, len(idx))
            dst[idx] = dq_reconstruct(v) if dq else v
    kap = np.zeros(n, np.int64)
    for L in range(Kp):
        idx = np.nonzero(lev == L)[0]
        kap[idx] = read_int_stream(streams[2 * K + L], len(idx))
    qs = float(quat_step)
    st = (qs / 2.0 if dq else qs) * np.exp2(cls)
    u = U.astype(np.float64) * st
    v = V.astype(np.float64) * st
    need(np.all((np.abs(u) <= 2.0) & (np.abs(v) <= 2.0)), "axes: |u| or |v| over 2")
    z = np.maximum(0.0, (1.0 - np.abs(u)) - np.abs(v))
    ln = np.sqrt((u * u + v * v) + z * z)
    dx, dy, dz = u / ln, v / ln, z / ln
    p = -1.0 / (1.0 + dz)
    q = (dx * dy) * p
    t1 = (1.0 + (dx * dx) * p, q, -dx)
    t2 = (q, 1.0 + (dy * dy) * p, -dy)
    with np.errstate(divide="ignore"):
        N = np.maximum(1.0, np.floor(AXES_PI / (qs * np.exp2(lev)) + 0.5))
    need(np.all((kap >= 0) & (kap < N)), "axes: angle index out of range")
    x = kap.astype(np.float64) * (AXES_PI / N) - AXES_HALF_PI
    x2 = x * x
    S = np.full(n, AXES_SIN[11])
    C = np.full(n, AXES_COS[11])
    for j in range(10, -1, -1):
        S = S * x2 + AXES_SIN[j]
        C = C * x2 + AXES_COS[j]
    sin_t = C
    cos_t = -(S * x)
    e = [cos_t * t1[i] + sin_t * t2[i] for i in range(3)]
    d = [dx, dy, dz]
    t = [d[1] * e[2] - d[2] * e[1], d[2] * e[0] - d[0] * e[2], d[0] * e[1] - d[1] * e[0]]
    cols1, cols3 = (d, e, t), (e, t, d)
    R = [[np.where(e1, cols1[j][i], cols3[j][i]) for j in range(3)] for i in range(3)]  # R[row][col]
    tr = (R[0][0] + R[1][1]) + R[2][2]
    # Shepperd: the largest of (tr, R00, R11, R22), the first on ties
    cand = np.stack([tr, R[0][0], R[1][1], R[2][2]], axis=1)
    pick = np.argmax(cand, axis=1)  # (argmax returns the first of equal maxima)
    out = np.zeros((n, 4), np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        D = 2.0 * np.sqrt(np.maximum(1.0 + tr, 1e-300))
        sel = pick == 0
        out[sel, 0] = (D / 4.0)[sel]
        out[sel, 1] = ((R[2][1] - R[1][2]) / D)[sel]
        out[sel, 2] = ((R[0][2] - R[2][0]) / D)[sel]
        out[sel, 3] = ((R[1][0] - R[0][1]) / D)[sel]
        for a_ in range(3):
            b_, g_ = (a_ + 1) % 3, (a_ + 2) % 3
            D = 2.0 * np.sqrt(np.maximum(((1.0 + R[a_][a_]) - R[b_][b_]) - R[g_][g_], 1e-300))
            sel = pick == a_ + 1
            out[sel, 0] = ((R[g_][b_] - R[b_][g_]) / D)[sel]
            out[sel, 1 + a_] = (D / 4.0)[sel]
            out[sel, 1 + b_] = ((R[b_][a_] + R[a_][b_]) / D)[sel]
            out[sel, 1 + g_] = ((R[g_][a_] + R[a_][g_]) / D)[sel]
    return out.astype(np.float32)


def decode_attributes(stage, sections, n, ctx, sh_degree):
    out = {}
    fields = stage["fields"]
    K = (sh_degree + 1) ** 2 - 1
    adaptive = bool(stage.get("adaptive"))
    dq = bool(stage.get("dependent_quant"))
    need(not dq or adaptive, "dependent_quant needs adaptive")
    quat_axes = bool(stage.get("quat_axes"))
    need(not quat_axes or (adaptive and stage.get("sort_scales")), "quat_axes needs sort_scales")
    need(not quat_axes or not (stage.get("size_levels") or {}).get("quats"), "quat_axes: quats in size_levels")
    steps = {f: stage.get(f + "_step", 0) for f in ("quat", "scale", "opacity", "sh0", "shN")}
    fstep = {"quats": steps["quat"], "scales": steps["scale"], "opacities": steps["opacity"],
             "sh0": steps["sh0"], "shN": steps["shN"]}
    shn_step = np.repeat(shn_steps(K, fstep["shN"], stage.get("shN_band_gain", 1.0)), 3)

    def shn_dequant(ints):  # (n, 3K) integers, coefficient-major -> (n, K, 3) float32
        return (ints.astype(np.float64) * shn_step[None, :]).astype(np.float32).reshape(n, K, 3)

    # scales first (size levels of the other fields depend on them)
    order = sorted(fields, key=lambda f: 0 if f == "scales" else 1)
    for f in order:
        if f == "shN" and K == 0:
            need("shN" not in sections, "shN section for degree 0")
            out["shN"] = np.zeros((n, 0, 3), np.float32)
            continue
        payload, codec = sections[f]
        if codec == "f32-planes/v1":
            rd = Reader(payload)
            blobs = read_stream_list(rd)
            need(rd.remaining() == 0, "trailing bytes")
            ch = [f32_planes(b, n) for b in blobs]
            if f in ("quats", "scales"):
                out[f] = np.stack(ch, 1)
            elif f == "opacities":
                out[f] = ch[0]
            elif f == "sh0":
                out[f] = np.stack(ch, 1).reshape(n, 1, 3)
            else:  # shN coefficient-major like symbols/v1
                out[f] = np.stack(ch, 1).reshape(n, K, 3)
            continue
        if codec == "axes-classed/v1":
            need(f == "quats" and quat_axes, "axes-classed/v1 without quat_axes (or not for quats)")
            need(fstep["quats"] and fstep["scales"], "axes-classed/v1 with exact quats or scales (a step of 0)")
            scales = out["scales"] if "scales" in out else ctx.get("scales")
            out[f] = decode_axes(payload, n, ctx["classes"], fstep[f], dq, scales)
            continue
        # (gscomp writes, and expects, quaternions when the scales are exact floats (scale_step 0):
        # the spec does not say so, it only says that quat_axes gives axes-classed/v1)
        need(not (quat_axes and f == "quats" and codec == "symbols-classed/v1" and fstep["scales"]),
             "quat_axes: quats must use axes-classed/v1")
        if codec == "symbols-classed/v1":
            need(adaptive, "classed codec without adaptive")
            out[f] = decode_classed(payload, f, n, ctx["classes"], fstep[f], stage, ctx, dq, shn_step)
            continue
        rd = Reader(payload)
        if codec == "symbols-dedup/v1":
            need(f == "shN", "dedup only for shN")
            U = rd.varint()
            need(1 <= U <= max(n, 1), "dedup: bad U")
            blobs = read_stream_list(rd)
            need(len(blobs) == 3 * K, "dedup: wrong stream count")
            book = np.stack([read_int_stream(b, U) for b in blobs], axis=1)
            idx = read_int_stream(rd.blob(), n)
            need(rd.remaining() == 0, "trailing bytes")
            need(np.all((idx >= 0) & (idx < U)), "dedup: index out of range")
            ints = book[idx] if n else np.zeros((0, 3 * K), np.int64)
            out[f] = shn_dequant(ints)
            continue
        blobs = read_stream_list(rd)
        need(rd.remaining() == 0, "trailing bytes")
        cols = [read_int_stream(b, n) for b in blobs]
        if codec == "quat-s3/v1":
            need(f == "quats" and len(cols) == 4, "quat-s3: bad")
            st = float(fstep[f])
            out[f] = quats_from_cols(cols[0], [c.astype(np.float64) * st for c in cols[1:]])
        elif codec == "symbols-gdiff/v1":
            need(f == "sh0" and len(cols) == 3, "gdiff: bad")
            G = cols[0]
            ints = np.stack([cols[1] + G, G, cols[2] + G], 1)
            out[f] = deq(ints, fstep[f]).reshape(n, 1, 3)
        elif codec == "symbols/v1":
            if f == "scales":
                need(len(cols) == 3, "scales: 3 streams")
                out[f] = deq(np.stack(cols, 1), fstep[f])
            elif f == "opacities":
                need(len(cols) == 1, "opacities: 1 stream")
                out[f] = deq(cols[0], fstep[f])
            elif f == "sh0":
                need(len(cols) == 3, "sh0: 3 streams")
                out[f] = deq(np.stack(cols, 1), fstep[f]).reshape(n, 1, 3)
            elif f == "shN":
                need(len(cols) == 3 * K, "shN: wrong stream count")
                ints = np.stack(cols, 1) if n else np.zeros((0, 3 * K), np.int64)
                out[f] = shn_dequant(ints)
            else:
                raise FormatError("symbols/v1 for " + f)
        else:
            raise FormatError("unknown codec %s for %s" % (codec, f))
    return out


def decode_importance(stage, sections, n, ctx):
    payload, codec = sections["classes"]
    need(codec == "symbols/v1", "importance: unexpected codec")
    L = stage["levels"]
    need(1 <= L <= 6, "importance: bad levels")
    c = read_int_stream(payload, n)
    need(np.all((c >= 0) & (c < L)), "importance: class out of range")
    ctx["classes"] = c
    return {}


# --------------------------------------------------------------------------------
# stage: rvq (owns scales and quats)
def read_f16(data, count, what):
    need(len(data) == 2 * count, "%s: expected %d float16 values, got %d bytes" % (what, count, len(data)))
    return np.frombuffer(data, dtype="<f2").astype(np.float32)


def decode_rvq(stage, sections, n, ctx):
    R = int(stage["n_stages"])
    K = int(stage["codebook_size"])
    need(1 <= R <= 16 and 1 <= K <= 4096, "rvq: bad n_stages / codebook_size")
    payload, codec = sections["rvq.codebooks"]
    need(codec == "float16", "rvq: unexpected codebook codec " + codec)
    cb = read_f16(payload, R * K * 3 + R * K * 4, "rvq.codebooks")
    cb_scale = cb[:R * K * 3].reshape(R, K, 3)
    cb_rot = cb[R * K * 3:].reshape(R, K, 4)
    payload, codec = sections["rvq.indices"]
    need(codec == "symbols", "rvq: unexpected indices codec " + codec)
    rd = Reader(payload)
    (count,) = rd.unpack("<I")
    need(count == 2 * R, "rvq: stream count != 2R")
    blobs = []
    for _ in range(count):
        (length,) = rd.unpack("<I")
        blobs.append(rd.bytes(length))
    need(rd.remaining() == 0, "rvq: trailing bytes in indices")
    depths = stage.get("depths")
    if depths is not None:
        need("classes" in ctx, "rvq.depths without an importance stage before rvq")
        D = len(depths)
        need(D >= 1 and all(1 <= int(x) <= R for x in depths), "rvq: bad depths")
        c = ctx["classes"]
        d = np.asarray(depths, np.int64)[np.minimum(c, D - 1)]
    else:
        d = np.full(n, R, np.int64)
    scales = np.zeros((n, 3), np.float32)
    quats = np.zeros((n, 4), np.float32)
    for which, book, acc in ((0, cb_scale, scales), (1, cb_rot, quats)):
        for r in range(R):
            sel = np.nonzero(d > r)[0]
            idx = read_int_stream(blobs[which * R + r], len(sel))
            need(np.all((idx >= 0) & (idx < K)), "rvq: index out of range")
            acc[sel] = acc[sel] + book[r][idx]   # float32 add, stage order
    return {"scales": scales, "quats": quats}


# --------------------------------------------------------------------------------
# stage: colorfield (owns shN, or sh0 and shN)
def colorfield_geometry(L, T, b, M):
    g = math.exp(math.log(M / b) / max(1, L - 1))
    s = math.log2(g)
    levels = []
    off = 0
    for l in range(L):
        scale = np.float32(2.0 ** (l * s) * b - 1.0)
        res = int(math.ceil(float(scale))) + 1
        size = min(res ** 3, 1 << T)
        size = (size + 7) // 8 * 8
        dense = res ** 3 <= size
        levels.append((scale, res, size, dense, off))
        off += size
    return levels, off


MLP_WORK_FREE = 2 ** 32  # (spec section 5: the colour field's bound on n x MLP parameters)


def decode_colorfield(stage, sections, n, ctx, sh_degree):
    f32 = np.float32
    targets = list(stage.get("targets", ["sh0", "shN"]))  # (absent in older files: the full colour)
    need(set(targets) in ({"shN"}, {"sh0", "shN"}), "colorfield: bad targets")
    dsh0 = 1 if "sh0" in targets else 0
    L = int(stage["n_levels"])
    F = int(stage["n_features_per_level"])
    T = int(stage["log2_hashmap_size"])
    b = float(stage["base_resolution"])
    M = float(stage["max_resolution"])
    H = int(stage["mlp_width"])
    D = int(stage["mlp_layers"])
    need(1 <= L <= 32 and 1 <= F <= 8 and 4 <= T <= 24 and L * F * 2**T <= 2**26 and 1 <= b <= 65536
         and b <= M <= 2**20 and 1 <= H <= 1024 and 0 <= D <= 16, "colorfield: params out of range")
    need("means" in ctx, "colorfield before positions")
    means = ctx["means"]
    # meta
    payload, codec = sections["colorfield.meta"]
    need(codec == "raw", "colorfield: unexpected meta codec " + codec)
    need(len(payload) == 28 + 8 * L, "colorfield.meta: wrong length")
    rd = Reader(payload)
    c = np.frombuffer(rd.bytes(12), "<f4").astype(np.float32)
    h = np.frombuffer(rd.bytes(12), "<f4").astype(np.float32)
    (O,) = rd.unpack("<I")
    lostep = np.frombuffer(rd.bytes(8 * L), "<f4").astype(np.float32).reshape(L, 2)
    need(O % 3 == 0 and O // 3 - dsh0 in (0, 3, 8, 15), "colorfield: bad output width")
    # mlp
    dims = [L * F] + [H] * D + [O]
    payload, codec = sections["colorfield.mlp"]
    need(codec == "float16", "colorfield: unexpected mlp codec " + codec)
    nparam = sum(dims[i] * dims[i + 1] + dims[i + 1] for i in range(len(dims) - 1))
    allp = read_f16(payload, nparam, "colorfield.mlp")
    need(n * nparam <= MLP_WORK_FREE + 2048 * ctx["payload"],
         "colorfield: n x MLP parameters over 2^32 + 2048 x the payload bytes")
    layers = []
    p = 0
    for i in range(len(dims) - 1):
        fi, fo = dims[i], dims[i + 1]
        W = allp[p:p + fi * fo].reshape(fo, fi)
        p += fi * fo
        bias = allp[p:p + fo]
        p += fo
        layers.append((W, bias))
    # geometry
    geo, total_rows = colorfield_geometry(L, T, b, M)
    # 1. contraction (float32, one op at a time)
    x = (means.astype(np.float32) - c[None, :]) / h[None, :]
    m = np.max(np.abs(x), axis=1)
    big = m > f32(1)
    if np.any(big):
        mb = m[big][:, None]
        q = x[big] / mb
        fac = f32(2) - f32(1) / mb
        x[big] = fac * q
    u = x * f32(0.25) + f32(0.5)
    # 2. corners per level
    rows = np.zeros((L, 8, n), np.int64)
    wts = np.zeros((L, 8, n), np.float32)
    for l, (scale, res, size, dense, off) in enumerate(geo):
        pos = u * scale
        pos = pos + f32(0.5)
        base = np.floor(pos)
        fr = pos - base
        basei = base.astype(np.int64)
        for k in range(8):
            i, j, k2 = k & 1, (k >> 1) & 1, k >> 2
            wx = fr[:, 0] if i else f32(1) - fr[:, 0]
            wy = fr[:, 1] if j else f32(1) - fr[:, 1]
            wz = fr[:, 2] if k2 else f32(1) - fr[:, 2]
            wts[l, k] = (wx * wy) * wz
            cx = (basei[:, 0] + i).astype(np.uint64)
            cy = (basei[:, 1] + j).astype(np.uint64)
            cz = (basei[:, 2] + k2).astype(np.uint64)
            if dense:
                r = (cx + cy * np.uint64(res) + cz * np.uint64(res * res)) % np.uint64(size)
            else:
                hsh = (cx * np.uint64(1)) ^ (cy * np.uint64(2654435761)) ^ (cz * np.uint64(805459861))
                r = (hsh & np.uint64(0xFFFFFFFF)) % np.uint64(size)
            rows[l, k] = r.astype(np.int64) + off
    # grid: used rows only, level by level, increasing row index
    used = np.unique(rows.reshape(-1)) if n else np.zeros(0, np.int64)
    payload, codec = sections["colorfield.grid"]
    need(codec == "symbols", "colorfield: unexpected grid codec " + codec)
    qv = read_int_stream(payload, len(used) * F).reshape(len(used), F)
    need(not qv.size or (qv.min() >= -(1 << 31) and qv.max() < 1 << 31), "colorfield: grid value beyond int32")
    table = np.zeros((total_rows, F), np.float32)
    offs = [g_[4] for g_ in geo] + [total_rows]
    for l in range(L):
        sel = (used >= offs[l]) & (used < offs[l + 1])
        lo, st = lostep[l]
        table[used[sel]] = (qv[sel].astype(np.float32) * st) + lo
    # features, level-major
    feats = np.zeros((n, L * F), np.float32)
    for l in range(L):
        for fi in range(F):
            acc = table[rows[l, 0], fi] * wts[l, 0]
            for k in range(1, 8):
                acc = acc + table[rows[l, k], fi] * wts[l, k]
            feats[:, l * F + fi] = acc
    # 3. MLP
    hcur = feats
    for li, (W, bias) in enumerate(layers):
        fo, fi = W.shape
        out = np.repeat(bias[None, :], n, axis=0).astype(np.float32)
        for k in range(fi):
            out = out + hcur[:, k:k + 1] * W[None, :, k]
        if li < len(layers) - 1:
            out = np.maximum(out, f32(0))
        hcur = out
    # 4. outputs
    coefs = hcur.reshape(n, O // 3, 3)
    res_ = {}
    if dsh0:
        res_["sh0"] = np.ascontiguousarray(coefs[:, :1, :])
        coefs = coefs[:, 1:, :]
    Kf = (sh_degree + 1) ** 2 - 1
    shN = np.zeros((n, Kf, 3), np.float32)
    kk = min(Kf, coefs.shape[1])
    shN[:, :kk] = coefs[:, :kk]
    res_["shN"] = shN
    return res_


# --------------------------------------------------------------------------------
# container
def read_container(buf):
    need(len(buf) >= 24, "file too short")
    need(buf[:8] == MAGIC, "bad magic")
    major, minor, H, S, crc = struct.unpack_from("<HHIII", buf, 8)
    need(major == 1, "unsupported major version %d" % major)
    need(H <= 16 << 20, "header too large")
    need(S <= 4096, "too many sections")
    need(24 + H <= len(buf), "header outside the file")
    rd = Reader(buf, 24 + H)
    table = []
    names = set()
    import re
    alpha = re.compile(r"^[A-Za-z0-9_.\-/]{1,255}$")
    for _ in range(S):
        name = rd.bytes(rd.u8()).decode("ascii")
        codec = rd.bytes(rd.u8()).decode("ascii")
        need(alpha.match(name) and alpha.match(codec), "bad section name/codec")
        need(name not in names, "duplicate section name")
        names.add(name)
        off, length, scrc = rd.unpack("<QQI")
        table.append((name, codec, off, length, scrc))
    tend = rd.pos
    need(zlib.crc32(bytes(buf[0:20]) + bytes(buf[24:tend])) == crc, "header CRC mismatch")
    try:
        header = json.loads(bytes(buf[24:24 + H]).decode("utf-8"), parse_constant=_no_constant)
    except ValueError as e:
        raise FormatError("header is not valid UTF-8 JSON: %s" % e)
    need(isinstance(header, dict), "header is not a JSON object")
    pos = tend
    sections = {}
    for name, codec, off, length, scrc in table:
        need(off == pos and off + length <= len(buf), "section not contiguous / outside file")
        data = buf[off:off + length]
        need(zlib.crc32(data) == scrc, "CRC mismatch in section " + name)
        sections[name] = (data, codec)
        pos = off + length
    need(pos == len(buf), "trailing bytes after the last payload")
    return header, sections, minor



def _no_constant(token):
    raise ValueError("%s is not JSON" % token)

def decode(path):
    with open(path, "rb") as fh:
        buf = fh.read()
    header, sections, _minor = read_container(buf)
    n = header["n"]
    need(isinstance(n, int) and 0 <= n <= (1 << 28), "bad n")
    need(n <= 4096 + 8 * sum(len(d) for d, _ in sections.values()), "n fails the sanity rule")
    sh_degree = header["sh_degree"]
    need(sh_degree in (0, 1, 2, 3), "bad sh_degree")
    need(isinstance(header.get("antialiased", False), bool), "bad antialiased")  # (1.1: a flag for the renderer; it changes no decoded value)
    stages = header["pipeline"]["stages"]
    ctx = {"payload": sum(len(d) for d, _ in sections.values())}
    out = {}
    seen_importance = False
    for st in stages:
        name, typ = st["name"], st["type"]
        prefix = name + "/"
        secs = {k[len(prefix):]: v for k, v in sections.items() if k.startswith(prefix)}
        if typ == "importance":
            need("positions" not in [s["type"] for s in stages[:stages.index(st)]],
                 "importance after positions")
            res = decode_importance(st, secs, n, ctx)
            seen_importance = True
        elif typ == "positions":
            need(not st.get("adaptive") or seen_importance, "adaptive without importance")
            res = decode_positions(st, secs, n, ctx)
        elif typ == "attributes":
            need(not st.get("adaptive") or seen_importance, "adaptive without importance")
            res = decode_attributes(st, secs, n, ctx, sh_degree)
        elif typ == "masking":
            need(not secs, "masking stage with sections")
            res = {}
        elif typ == "rvq":
            need(st.get("depths") is None or seen_importance, "rvq.depths without importance")
            res = decode_rvq(st, secs, n, ctx)
        elif typ == "colorfield":
            ctx["means"] = out.get("means")
            need(ctx["means"] is not None, "colorfield before positions")
            res = decode_colorfield(st, secs, n, ctx, sh_degree)
        else:
            raise NotImplementedError("stage type %r not supported by this decoder" % typ)
        for k, v in res.items():
            need(k not in out, "field %s produced twice" % k)
            out[k] = v
        if "scales" in res:  # (for a later stage's quat_axes)
            ctx["scales"] = res["scales"]
    if "shN" not in out:
        need(sh_degree == 0, "shN missing")
        out["shN"] = np.zeros((n, 0, 3), np.float32)
    for f in ("means", "quats", "scales", "opacities", "sh0"):
        need(f in out, "field %s not produced" % f)
    for f, v in out.items():  # (spec section 1: every decoded value is a finite float32)
        with np.errstate(over="ignore", invalid="ignore"):
            need(bool(np.isfinite(np.asarray(v, np.float32)).all()), "decoded %s has non-finite values" % f)
    return out


def main(argv):
    if len(argv) == 2 and argv[1] in ("-h", "--help"):
        print("usage: gsz_spec_decode.py IN.gsz  (decodes with numpy alone, from docs/gsz-format.md)")
        return 0
    if len(argv) != 2:
        print("usage: gsz_spec_decode.py IN.gsz", file=sys.stderr)
        return 2
    import time
    t = time.time()
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # (a crafted file's overflow: refused below)
            out = decode(argv[1])
    # (ValueError, AttributeError: a header value of the wrong type or range, which gscomp refuses
    # with its own words; this decoder reads the spec's fields and need not name each check)
    except (FormatError, OSError, KeyError, TypeError, ValueError, AttributeError, NotImplementedError,
            MemoryError) as e:
        print("error: %s: %s" % (argv[1], e), file=sys.stderr)
        return 2
    dt = time.time() - t
    n = len(out["means"])
    print("%s: n=%d, decoded in %.2f s" % (argv[1], n, dt))
    for k, v in out.items():
        if v.size:
            print("  %-10s %-14s min %-12.6g max %-12.6g mean %.6g" % (k, str(v.shape), v.min(), v.max(), v.mean()))
        else:
            print("  %-10s %-14s (empty)" % (k, str(v.shape)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
