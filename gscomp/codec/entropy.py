"""Entropy-coding layer: rANS with constriction's stack-coder conventions (32-bit words, 64-bit
state, 24-bit precision), on a native C++ coder or on `constriction` itself (same bytes).

Every model here is an *integer* probability table that we build ourselves and store (histograms)
or recompute from a documented formula (Gaussian scale table), so the bytes are reproducible on any
machine and any decoder (not only constriction) can read them; see docs/gsz-format.md.

How a table reaches constriction exactly: a table is a list of integer weights ``W_i >= 1`` with
``sum(W) == 2**24``. constriction's ``Categorical(p, perfect=False)`` builds its CDF as
``cdf_i = floor(cumsum(p)_i * (2**24 - A) / sum(p)) + i``; passing ``p_i = W_i - 1`` (exact integers
in float64) makes the scale exactly 1.0, so constriction uses our ``W_i`` unchanged.

rANS back ends: the native C++ coder (cuda/rans_cpu.cpp, via gscomp.native.load("rans")) and
constriction produce and accept the same bytes; the native one is used when it builds (it codes
many streams at once on all cores), constriction otherwise (`set_backend`, GSCOMP_RANS).

Public API (numpy in, bytes out; torch tensors are accepted and converted):
    encode_symbols(x) -> bytes            / decode_symbols(buf, n) -> int64 array
    encode_symbols_many(arrays or (n, k)) / decode_symbols_many(bufs, n[, scales=, out=])
                                            (batched: the way to code the columns of an attribute)
    ans_encode(groups) / ans_encode_many  / ans_decoder + ans_decode_group + ans_finish, ans_decode_many
    encode_gaussian(x, means, scales)     / decode_gaussian(buf, means, scales) -> int64 array
    encode_categorical(x, probs)          / decode_categorical(buf, probs, n)
    encode_bernoulli(bits, p1)            / decode_bernoulli(buf, p1, n)
Determinism rule for conditional models (`*_gaussian`, `*_categorical`, `*_bernoulli`): the decoder
must be given *bit-identical* parameter arrays to the encoder's; compute them in the decoder's code
path (float32, CPU, fixed order) at encode time. The parameters are then snapped to a fixed grid
(means to 1/16, scales to a 64-entry table, probabilities to 16-bit integers) before any table is
built, which also makes tiny cross-platform differences harmless unless they straddle a grid edge.
"""
from __future__ import annotations

import math
import os
import struct
import sys
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from ..errors import FormatError, GscompError

PRECISION = 24  # constriction's default ANS precision (bits); every table sums to 2**PRECISION
TABLE_BITS = 16  # stored / computed tables are 16-bit fixed point, scaled by 2**8 to 24 bits
MAX_ALPHABET = 1 << 14  # wider symbol ranges are split into coded high bits + raw low bits
MAX_COUNT = 1 << 28  # sanity cap on element counts read from a file
MAX_ABS = 1 << 40  # largest |symbol| accepted by encode_symbols

# stream modes (first byte of an encode_symbols stream)
M_EMPTY, M_CONST, M_ANS, M_DELTA_ANS, M_ZSTD, M_DELTA_ZSTD, M_VARINT, M_CTX_ANS = range(8)
CTX_MAX_B = 6  # context streams: at most 2 * 6 + 1 tables (see ctx_index)
CTX_TABLE_BITS = 12  # context tables and M_ANS kind 2: coarser weights (mostly 1-byte varints)

try:  # constriction is a hard dependency, but keep import errors readable
    import constriction
except ImportError as e:  # pragma: no cover
    raise GscompError(f"constriction is required for .gsz coding: {e}") from None


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# ----------------------------------------------------------------------------- byte helpers
TRUNCATED, TOO_LONG = -1, -2  # `_varint_at`'s faults


def _varint_at(buf: memoryview, pos: int, max_shift: int) -> tuple[int, int]:
    """The LEB128 value at buf[pos] and the position after it, byte by byte (it runs thousands
    of times per file: numpy's per-call costs were more than the work); the value is TRUNCATED
    (position: the end) or TOO_LONG (a byte beyond ``max_shift`` bits) for a fault."""
    value, shift, end = 0, 0, len(buf)
    while True:
        if pos >= end:
            return TRUNCATED, pos
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > max_shift:
            return TOO_LONG, pos


class Reader:
    """Bounds-checked cursor over a payload; every failure is a one-line FormatError."""

    def __init__(self, data: bytes | memoryview, what: str = "stream"):
        self.buf = memoryview(data)
        self.pos = 0
        self.what = what

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> memoryview:
        if n < 0 or n > self.remaining():
            raise FormatError(f"{self.what}: truncated (needs {n} bytes, {self.remaining()} left)")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        if self.pos >= len(self.buf):
            self.take(1)  # (raises: truncated)
        self.pos += 1
        return self.buf[self.pos - 1]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def varint(self, limit: int = 1 << 62) -> int:
        value, self.pos = _varint_at(self.buf, self.pos, 63)
        if value == TRUNCATED:
            self.take(1)  # (raises: truncated)
        if value == TOO_LONG:
            raise FormatError(f"{self.what}: varint too long")
        if value > limit:
            raise FormatError(f"{self.what}: value {value} exceeds the limit {limit}")
        return value

    def svarint(self) -> int:
        return unzigzag_int(self.varint())

    def blob(self, limit: int | None = None) -> memoryview:
        n = self.varint(self.remaining() if limit is None else min(limit, self.remaining()))
        return self.take(n)

    def done(self) -> None:
        if self.remaining():
            raise FormatError(f"{self.what}: {self.remaining()} unexpected trailing bytes")


def varint(v: int) -> bytes:
    if v < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag_int(v: int) -> int:
    return (v << 1) if v >= 0 else ((-v << 1) - 1)


def unzigzag_int(u: int) -> int:
    return (u >> 1) if not (u & 1) else -((u + 1) >> 1)


def blob(b: bytes) -> bytes:
    return varint(len(b)) + bytes(b)


def _varint_sizes(v: np.ndarray) -> np.ndarray:
    """LEB128 byte count of each value of a uint64 array."""
    nbytes = np.ones(v.shape, np.int64)
    for k in range(1, 10):
        top = np.uint64(1) << np.uint64(7 * k)
        if not (v >= top).any():
            break
        nbytes += v >= top
    return nbytes


def varints_len(values: np.ndarray) -> int:
    """len(varints(values)), without building the bytes (table-size estimates)."""
    v = np.asarray(values, dtype=np.uint64)
    return int(_varint_sizes(v).sum()) if v.size else 0


def varints(values: np.ndarray) -> bytes:
    """Vectorised LEB128 of a non-negative integer array (< 2**63)."""
    v = np.ascontiguousarray(values, dtype=np.uint64)
    if v.size == 0:
        return b""
    nbytes = _varint_sizes(v)
    ends = np.cumsum(nbytes)
    out = np.zeros(int(ends[-1]), np.uint8)
    starts = ends - nbytes
    for k in range(int(nbytes.max())):
        sel = nbytes > k
        chunk = (v[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (nbytes[sel] > k + 1).astype(np.uint8) << 7
        out[starts[sel] + k] = chunk.astype(np.uint8) | more
    return out.tobytes()


SHORT_VARINTS = 512  # lists up to this long are read by `_short_varints`


def _short_varints(buf: memoryview, pos: int, count: int) -> list[int] | None:
    """``count`` LEB128 values from buf[pos:], then the position after them; None when the list
    is truncated or a value is over 9 bytes (`read_varints` then names the fault)."""
    out = []
    for _ in range(count):
        value, pos = _varint_at(buf, pos, 56)
        if value < 0:
            return None
        out.append(value)
    out.append(pos)
    return out


def read_varints(r: Reader, count: int) -> np.ndarray:
    """Read ``count`` LEB128 values (each < 2**63) from ``r``; vectorised (a short list, such as
    a histogram table, in a plain loop: numpy's per-call costs were most of a small scene's decode)."""
    if count == 0:
        return np.zeros(0, np.uint64)
    if count <= SHORT_VARINTS:
        vals = _short_varints(r.buf, r.pos, count)
        if vals is not None:
            r.pos = vals.pop()
            return np.array(vals, np.uint64)
    buf = np.frombuffer(r.buf, np.uint8, offset=r.pos)[: 10 * count]  # a varint has <= 10 bytes
    ends = np.flatnonzero(buf < 0x80)
    if ends.size < count:
        raise FormatError(f"{r.what}: truncated varint list")
    ends = ends[:count]
    starts = np.concatenate([[0], ends[:-1] + 1])
    lens = ends - starts + 1
    if lens.max() > 9:
        raise FormatError(f"{r.what}: varint too long")
    total = int(ends[-1]) + 1
    b = buf[:total].astype(np.uint64) & np.uint64(0x7F)
    which = np.repeat(np.arange(count), lens)
    shift = (np.arange(total) - np.repeat(starts, lens)).astype(np.uint64) * np.uint64(7)
    if lens.max() == 1:
        vals = b
    else:
        vals = np.zeros(count, np.uint64)
        np.bitwise_or.at(vals, which, b << shift)
    r.pos += total
    return vals


def zigzag(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.int64)
    return ((x << 1) ^ (x >> 63)).astype(np.uint64)


def unzigzag(u: np.ndarray) -> np.ndarray:
    u = u.astype(np.uint64)
    return ((u >> np.uint64(1)).astype(np.int64)) ^ (-(u & np.uint64(1)).astype(np.int64))


def pack_bits(values: np.ndarray, widths) -> bytes:
    """Concatenate ``values[i]`` as ``widths[i]``-bit big-endian fields (MSB first), widths 0..56;
    every value must fit its width (a wider one is an error, not silently cut to its low bits)."""
    a = np.asarray(values)
    if a.dtype.kind not in "ui" and a.size:
        raise ValueError(f"pack_bits: values must be integers, got {a.dtype}")
    if a.dtype.kind == "i" and a.size and a.min() < 0:
        raise ValueError("pack_bits: values must be non-negative")
    v = np.ascontiguousarray(a, dtype=np.uint64)
    w = np.broadcast_to(np.asarray(widths, dtype=np.int64), v.shape)
    if v.size == 0:
        return b""
    if w.max() > 56 or w.min() < 0:
        raise ValueError("pack_bits: widths must be 0..56")
    if ((v >> w.astype(np.uint64)) != 0).any():
        raise ValueError("pack_bits: a value does not fit its width")
    mod = _rans()
    if mod is not None:
        return mod.pack_bits(v.ravel(), np.ascontiguousarray(w).ravel())
    ends = np.cumsum(w)
    total_bits = int(ends[-1])
    starts = ends - w
    nbytes = (total_bits + 7) // 8
    # left-align each field in a 64-bit window starting at its first byte, then split into bytes
    shift = (64 - (starts % 8) - w).astype(np.uint64)
    mask = (np.uint64(1) << w.astype(np.uint64)) - np.uint64(1)
    window = (v & mask) << shift
    first = starts // 8
    acc = np.zeros(nbytes + 8, np.float64)
    for k in range(8):
        byte = ((window >> np.uint64(56 - 8 * k)) & np.uint64(0xFF)).astype(np.float64)
        nz = byte != 0
        if nz.any():  # fields never overlap in bits, so summing contributions == OR-ing them
            acc += np.bincount(first[nz] + k, weights=byte[nz], minlength=nbytes + 8)
    return acc[:nbytes].astype(np.uint8).tobytes()


def unpack_bits(data: bytes | memoryview, widths, count: int) -> np.ndarray:
    w = np.broadcast_to(np.asarray(widths, dtype=np.int64), (count,))
    if count == 0:
        return np.zeros(0, np.uint64)
    ends = np.cumsum(w)
    need = (int(ends[-1]) + 7) // 8
    if len(data) != need:
        raise FormatError(f"raw bit field has {len(data)} bytes, expected {need}")
    if w.min() < 0 or w.max() > 56:
        raise FormatError("raw bit field: width outside 0..56")
    mod = _rans()
    if mod is not None:
        return mod.unpack_bits(bytes(data), np.ascontiguousarray(w))
    buf = np.zeros(need + 8, np.uint8)
    buf[:need] = np.frombuffer(data, np.uint8)
    starts = ends - w
    first = starts // 8
    window = np.zeros(count, np.uint64)
    for k in range(8):
        window = (window << np.uint64(8)) | buf[first + k].astype(np.uint64)
    shift = (64 - (starts % 8) - w).astype(np.uint64)
    mask = (np.uint64(1) << w.astype(np.uint64)) - np.uint64(1)
    return (window >> shift) & mask


# ----------------------------------------------------------------------------- ANS core
# Two interchangeable rANS back ends that produce and accept the SAME bytes: the native C++ coder
# (cuda/rans_cpu.cpp: codes many streams at once on all cores, GIL released) and constriction
# (single core, holds the GIL), which is the fallback when the extension cannot be built and the
# reference the native coder is tested against. GSCOMP_RANS=native|constriction|auto (default).
_BACKEND = os.environ.get("GSCOMP_RANS", "auto")
if _BACKEND not in ("auto", "native", "constriction"):
    warnings.warn(f"GSCOMP_RANS={_BACKEND!r} is none of auto, native, constriction: auto is used", stacklevel=1)
    _BACKEND = "auto"
_native_state: dict = {}


def set_backend(name: str) -> str:
    """Select the rANS back end ("auto", "native" or "constriction"); returns the previous one."""
    global _BACKEND
    if name not in ("auto", "native", "constriction"):
        raise GscompError(f"unknown rANS back end {name!r} (auto, native or constriction)")
    prev, _BACKEND = _BACKEND, name
    return prev


def _rans():
    """The native rANS module, or None when constriction is to be used."""
    if _BACKEND == "constriction":
        return None
    mod = _native_state.get("mod")
    if mod is not None:
        return mod
    if _BACKEND == "auto" and "error" in _native_state:
        return None
    try:
        from .. import native

        mod = native.load("rans")
    except Exception as e:
        if _BACKEND == "native":
            raise
        _native_state["error"] = str(e)
        why = getattr(e, "reason", e)  # native.NativeBuildError: the compiler's line, or the cache's error
        fix = getattr(e, "fix", "install a C++ compiler with OpenMP")
        print(f"gscomp: native rANS coder unavailable ({why}); using constriction (same bytes, slower); "
              f"to build it, {fix}", file=sys.stderr)
        return None
    _native_state["mod"] = mod
    return mod


def rans_backend() -> str:
    """Name of the back end in use: "native" or "constriction"."""
    return "native" if _rans() is not None else "constriction"


def _model(weights24: np.ndarray):
    """constriction categorical that uses exactly the given 24-bit integer weights (see docstring)."""
    p = weights24.astype(np.float64) - 1.0
    return constriction.stream.model.Categorical(p, perfect=False)


def _words(words: np.ndarray) -> bytes:
    return words.astype("<u4", copy=False).tobytes()


def ans_encode_many(streams: list[list[tuple[np.ndarray, np.ndarray]]]) -> list[bytes]:
    """`ans_encode` over independent streams (each a list of (indices, weights24) groups)."""
    mod = _rans()
    if mod is None:
        return [_ans_encode_constriction(g) for g in streams]
    jobs = [[(np.asarray(i), np.asarray(w, np.uint32)) for i, w in groups if len(i) and len(w) >= 2] for groups in streams]
    try:
        return [_words(w) for w in mod.encode_many(jobs)]
    except ValueError as e:
        raise GscompError(f"rANS encode: {e}") from None


def ans_encode(groups: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Encode several (indices, weights24) groups into ONE rANS stream, decoded in list order."""
    return ans_encode_many([groups])[0]


def _ans_encode_constriction(groups) -> bytes:
    coder = constriction.stream.stack.AnsCoder()
    for idx, w in reversed(groups):
        if len(idx) == 0 or len(w) < 2:
            continue  # single-symbol alphabets cost nothing
        coder.encode_reverse(np.ascontiguousarray(idx, dtype=np.int32), _model(w))
    return _words(coder.get_compressed())


def _word_array(words: bytes | memoryview) -> np.ndarray:
    if len(words) % 4:
        raise FormatError("rANS stream length is not a multiple of 4")
    arr = np.frombuffer(words, dtype="<u4").astype(np.uint32)
    if arr.size and arr[-1] == 0:
        raise FormatError("rANS stream ends in a zero word")
    return arr


def ans_decoder(words: bytes | memoryview):
    """A decoder over one stream; pull groups with `ans_decode_group`, then call `ans_finish`."""
    arr = _word_array(words)
    mod = _rans()
    try:
        return mod.StreamDecoder(arr) if mod is not None else constriction.stream.stack.AnsCoder(arr)
    except Exception as e:  # malformed streams
        raise FormatError(f"bad rANS stream: {e}") from None


def ans_decode_group(coder, w: np.ndarray, n: int) -> np.ndarray:
    if n == 0:
        return np.zeros(0, np.int64)
    if len(w) < 2:
        return np.zeros(n, np.int64)
    try:
        if isinstance(coder, constriction.stream.stack.AnsCoder):
            return coder.decode(_model(w), n).astype(np.int64)
        return coder.decode(np.asarray(w, np.uint32), n).astype(np.int64)
    except Exception as e:
        raise FormatError(f"bad rANS stream: {e}") from None


def ans_finish(coder) -> None:
    """A well-formed stream is consumed exactly; leftover state means corruption."""
    done = coder.is_empty() if isinstance(coder, constriction.stream.stack.AnsCoder) else coder.finished()
    if not done:
        raise FormatError("rANS stream has trailing data (corrupt)")


def _native_err(err: str) -> str:
    return err if err.startswith("rANS") else f"bad rANS stream: {err}"


def ans_decode_many(jobs: list[tuple[bytes | memoryview, list[tuple[np.ndarray, int]]]]) -> list[list[np.ndarray]]:
    """Decode independent multi-group streams: jobs are (words, [(weights24, count), ...]); returns
    per job the int64 symbols of each group (groups decoded in list order, like `ans_encode`)."""
    mod = _rans()
    if mod is None:
        out = []
        for words, groups in jobs:
            coder = ans_decoder(words)
            out.append([ans_decode_group(coder, w, c) for w, c in groups])
            ans_finish(coder)
        return out
    native_jobs, bufs = [], []
    for words, groups in jobs:
        counts = [int(c) for _, c in groups]
        if min(counts, default=0) < 0 or sum(counts) > MAX_COUNT:
            raise FormatError("rANS stream: symbol count out of range")
        buf = np.empty(sum(counts), np.int32)
        bufs.append((buf, counts))
        native_jobs.append((_word_array(words), [(np.asarray(w, np.uint32), c) for w, c in zip((w for w, _ in groups), counts)], buf))
    try:
        errs = mod.decode_many(native_jobs)
    except ValueError as e:
        raise FormatError(f"bad rANS stream: {e}") from None
    out = []
    for err, (buf, counts) in zip(errs, bufs):
        if err:
            raise FormatError(_native_err(err))
        ends = np.cumsum(counts)
        out.append([buf[e - c : e].astype(np.int64) for e, c in zip(ends, counts)])
    return out


# ----------------------------------------------------------------------------- tables
def quantize_pmf(counts: np.ndarray, bits: int = TABLE_BITS) -> np.ndarray:
    """Integer weights summing to 2**bits, >= 1 wherever counts > 0, 0 elsewhere (encoder only:
    the decoder reads the weights, so this rounding need not be reproduced by other decoders)."""
    counts = np.asarray(counts, np.float64)
    total = 1 << bits
    nz = counts > 0
    if nz.sum() > total:
        raise ValueError("too many symbols for the table precision")
    w = np.zeros(counts.shape, np.int64)
    w[nz] = np.maximum(1, np.floor(counts[nz] * total / counts.sum())).astype(np.int64)
    diff = total - int(w.sum())
    order = np.argsort(-w, kind="stable")
    i = 0
    while diff != 0:  # give/take the remainder on the largest weights, deterministically
        j = order[i % len(order)]
        if diff > 0:
            w[j] += diff
            diff = 0
        elif w[j] > 1:
            step = min(-diff, int(w[j]) - 1)
            w[j] -= step
            diff += step
        i += 1
    return w


def to24(w16: np.ndarray) -> np.ndarray:
    return w16.astype(np.int64) << (PRECISION - TABLE_BITS)


# ----------------------------------------------------------------------------- histogram streams
class _Pending:
    """A stream whose bytes wait for its rANS words: ``build(words) -> bytes``. Lets
    `encode_symbols_many` collect the rANS work of many arrays and code it in one parallel batch."""

    __slots__ = ("build", "groups")

    def __init__(self, groups, build):
        self.groups = groups
        self.build = build


class _HistJob:
    """Native histogram stream: symbols rank[v - lo] with v = x (or its first differences)."""

    __slots__ = ("delta", "lo", "rank", "w24", "x")

    def __init__(self, x, delta, lo, rank, w24):
        self.x, self.delta, self.lo, self.rank, self.w24 = x, delta, lo, rank, w24


def _hist_encode(v: np.ndarray | None, lo: int, hi: int, counts: np.ndarray | None = None, source=None,
                 bits: int = TABLE_BITS) -> _Pending:
    """Histogram model + rANS (mode payload of M_ANS): zigzag(min), A, A weights, words.
    ``v`` spans [lo, hi]; with ``counts`` (its histogram) and ``source`` = (x, delta) the symbols
    are formed by the native coder from x, without building v or the rank array here. ``bits``:
    the table precision (16, or 12 for the small-table kind)."""
    a = hi - lo + 1
    if counts is None:
        counts = np.bincount(v - lo, minlength=a)
    w16 = quantize_pmf(counts, bits)
    nzsym = np.flatnonzero(w16)
    head = varint(zigzag_int(lo)) + varint(a) + varints(w16)
    if nzsym.size < 2:  # one symbol: no rANS words at all
        return _Pending([], lambda words: head + blob(words))
    rank = np.full(a, -1, np.int32)
    rank[nzsym] = np.arange(nzsym.size, dtype=np.int32)
    w24 = w16[nzsym].astype(np.int64) << (PRECISION - bits)
    if source is not None:
        groups = _HistJob(source[0], source[1], lo, rank, w24)
    else:
        groups = [(rank[v - lo], w24)]
    return _Pending(groups, lambda words: head + blob(words))


def _hist_parse(r: Reader, bits: int = TABLE_BITS) -> tuple[np.ndarray, np.ndarray, memoryview]:
    """Read a histogram stream's model: (rank -> value table, 24-bit weights, rANS words); its
    weights sum to 2^bits."""
    lo = r.svarint()
    a = r.varint(MAX_ALPHABET)
    if a < 1:
        raise FormatError(f"{r.what}: empty alphabet")
    w16 = read_varints(r, a)
    if int(w16.sum()) != 1 << bits or (w16 > 1 << bits).any():
        raise FormatError(f"{r.what}: histogram does not sum to 2^{bits}")
    nzsym = np.flatnonzero(w16)
    values = nzsym.astype(np.int64) + lo  # rank -> value table (small); decoding is one gather
    return values, w16[nzsym].astype(np.int64) << (PRECISION - bits), r.blob()


HIST_KIND_BITS = {0: TABLE_BITS, 2: CTX_TABLE_BITS}  # M_ANS sub-kinds that are one histogram table


def _hist_run(jobs: list, n: int | list[int], targets: list | None = None) -> list[np.ndarray]:
    """Decode parsed histogram streams (values, weights24, words, delta) of ``n`` values each,
    all at once on the native coder (prefix-summing the delta ones), else one by one. With
    ``targets`` (per job None or (float32 column, scale)) a job's values are dequantized straight
    into the column as float32(value * scale) (float64 product, like `quant.dequantize`)."""
    out: list = [None] * len(jobs)
    targets = targets or [None] * len(jobs)
    counts = [n] * len(jobs) if isinstance(n, int) else n  # values per job
    native_jobs, where = [], []
    mod = _rans()
    for i, ((values, w24, words, delta), tgt, n) in enumerate(zip(jobs, targets, counts)):
        if values.size < 2 or mod is None:
            coder = ans_decoder(words)
            if values.size < 2:
                v = np.full(n, values[0], np.int64)
            else:
                try:
                    v = values[coder.decode(_model(w24), n)]
                except Exception as e:
                    raise FormatError(f"bad rANS stream: {e}") from None
            ans_finish(coder)
            out[i] = np.cumsum(v) if delta else v
            if tgt is not None:
                tgt[0][:] = out[i].astype(np.float64) * float(tgt[1])
                out[i] = tgt[0]
        else:
            if tgt is None:
                buf, scale = np.empty(n, np.int64), None
            else:
                buf, scale = tgt[0], float(tgt[1])
            native_jobs.append((_word_array(words), w24.astype(np.uint32), values, bool(delta), buf, scale))
            where.append(i)
    if native_jobs:
        try:
            errs = mod.decode_hist_many(native_jobs)
        except ValueError as e:
            raise FormatError(f"bad rANS stream: {e}") from None
        for i, job, err in zip(where, native_jobs, errs):
            if err:
                raise FormatError(_native_err(err))
            out[i] = job[4]
    return out


def _hist_decode(r: Reader, n: int, bits: int = TABLE_BITS) -> np.ndarray:
    values, w24, words = _hist_parse(r, bits)
    return _hist_run([(values, w24, words, False)], n)[0]


_LOG2_TABLE: list = []


def log2_counts(x) -> np.ndarray:
    """log2 of positive integers (float64 array), the same bits on every machine: numpy's log2 is
    a vectorised approximation on some CPUs (SVML on AVX-512) whose last bit differs from the C
    library's, and the encoder's rate estimates must not make different choices on different
    machines. Values below 2^16 come from a table built with `math.log2`, larger ones one by one."""
    if not _LOG2_TABLE:
        _LOG2_TABLE.append(np.array([-np.inf] + [math.log2(i) for i in range(1, 1 << 16)]))
    table = _LOG2_TABLE[0]
    xi = np.asarray(x).astype(np.int64)
    small = xi < len(table)
    out = table[np.where(small, xi, 0)]
    if not small.all():
        out[~small] = [math.log2(v) for v in xi[~small].tolist()]
    return out


def _entropy_bits(x: np.ndarray | None, lo: int | None = None, hi: int | None = None, counts=None) -> float:
    """Rough coded size of x in bits (histogram entropy + table cost); ``counts`` = bincount(x - lo)
    when the caller already has it (the native analysis)."""
    if lo is None:
        lo, hi = int(x.min()), int(x.max())
    if counts is not None:
        c = counts
    elif hi - lo < (1 << 20):
        c = np.bincount((x - lo).astype(np.int64))
    else:  # wide (split-coded) ranges: distinct values are what matters for the estimate
        c = np.unique(x >> max(0, (hi - lo).bit_length() - 12), return_counts=True)[1]
    c = c[c > 0].astype(np.int64)
    total = int(c.sum())  # -sum c log2(c / total), with exact integer logarithms
    return float((c * (math.log2(total) - log2_counts(c))).sum()) + 24 * c.size  # + rough table cost


def encode_symbols(x, *, allow_delta: bool = True, allow_zstd: bool = False, zstd_level: int = 19,
                   allow_ctx: bool = False) -> bytes:
    """Code an integer array (|x| < 2**40) with the best of: constant, histogram-rANS on x or on
    its first differences, split high/low bits for wide ranges, zstd (when allowed; it releases
    the GIL and decodes faster, useful for bulk SH data) or, with ``allow_ctx``, histogram-rANS
    with one table per context of the previous value (`ctx_index`; for spatially ordered data
    whose neighbours correlate). Returns a self-describing stream."""
    return encode_symbols_many([x], allow_delta=allow_delta, allow_zstd=allow_zstd, zstd_level=zstd_level,
                               allow_ctx=allow_ctx)[0]


def ctx_index(prev: np.ndarray, m: int, b: int) -> np.ndarray:
    """Context of each value from the previous value ``prev`` of its stream (the centre ``m`` before
    the first one): b + sgn(prev - m) * min(bitlen(|prev - m|), b), in 0..2b. Integer-only (the
    native coder computes the same), so every decoder agrees."""
    d = np.asarray(prev, np.int64) - np.int64(m)
    u = np.abs(d)
    bl = np.zeros(d.shape, np.int64)
    for j in range(b):  # min(bitlen(u), b) = #{j < b : u >= 2^j}
        bl += (u >> j) != 0
    return np.where(d < 0, b - bl, b + bl)


class _CtxJob:
    """Native context stream: x, centre m, radius b, per context (lo, rank int32, weights24)."""

    __slots__ = ("b", "m", "tables", "x")

    def __init__(self, x, m, b, tables):
        self.x, self.m, self.b, self.tables = x, m, b, tables


def _table_cost(c: np.ndarray, bits: int) -> tuple[float, np.ndarray]:
    """Coded size in bits of a histogram table (counts c over its value range) and of the values
    it codes: varint weights + cross-entropy under the quantized weights; and those weights."""
    w = quantize_pmf(c, bits)
    nz = c > 0
    return 8 * varints_len(w) + 24 + float((c[nz] * (bits - log2_counts(w[nz]))).sum()), w


def _table_costs(counts: np.ndarray, bits: int) -> list:
    """`_table_cost` of the non-empty part (first to last non-zero count) of each row of the int64
    (rows, a) ``counts``, batched: per row None (no counts) or (cost, first non-zero index, w).
    Same numbers as row-by-row calls: the same elementwise float operations, each row's
    cross-entropy summed by its own numpy sum over the same values, and `quantize_pmf` itself
    for the rows whose rounding overshoots (its remainder loop)."""
    total = 1 << bits
    nzc = counts > 0
    nnz = nzc.sum(1)
    if (nnz > total).any():
        raise ValueError("too many symbols for the table precision")
    cf = counts.astype(np.float64)
    rsum = cf.sum(1, keepdims=True)  # whole numbers below 2^53: exact in any order
    w = np.where(nzc, np.maximum(1, np.floor(cf * total / np.where(rsum > 0, rsum, 1.0))), 0).astype(np.int64)
    diff = total - w.sum(1)
    first = np.argmax(nzc, 1)
    last = counts.shape[1] - 1 - np.argmax(nzc[:, ::-1], 1)
    grow = np.flatnonzero((diff > 0) & (nnz > 0))
    w[grow, np.argmax(w[grow], 1)] += diff[grow]  # quantize_pmf: the remainder to the first largest weight
    # LEB128 size of each weight (the table's varints), 1..3 bytes for weights <= 2^16
    vsize = _varint_sizes(w.astype(np.uint64))
    idx = np.flatnonzero(nzc)  # row-major: each row's non-zero counts in order, as c[c > 0]
    ent = counts.ravel()[idx] * (bits - log2_counts(w.ravel()[idx]))
    ends = np.cumsum(nnz)
    out = []
    for r in range(len(counts)):
        if not nnz[r]:
            out.append(None)
            continue
        f, t = int(first[r]), int(last[r]) + 1
        if diff[r] < 0:  # rare: quantize_pmf takes the excess from the largest weights, one by one
            cost, wr = _table_cost(counts[r, f:t], bits)
            out.append((cost, f, wr))
            continue
        vlen = int(vsize[r, f:t].sum())
        out.append((8 * vlen + 24 + float(ent[ends[r] - nnz[r]:ends[r]].sum()), f, w[r, f:t]))
    return out


def _table_bits(counts: np.ndarray) -> int:
    """Table precision of a histogram stream: 12 bits (kind 2: weights mostly 1-byte varints) when
    that makes it smaller, else 16."""
    if np.count_nonzero(counts) > (1 << CTX_TABLE_BITS):
        return TABLE_BITS
    return CTX_TABLE_BITS if _table_cost(counts, CTX_TABLE_BITS)[0] < _table_cost(counts, TABLE_BITS)[0] else TABLE_BITS


def _ctx_plan(x: np.ndarray, lo: int, hi: int, base_counts: np.ndarray) -> _Pending | None:
    """The context stream of x (mode M_CTX_ANS) when it is smaller than the plain histogram stream
    whose counts are ``base_counts``: centre m = the median, radius b = the best of 1..5, sizes
    counted exactly (tables included); else None."""
    n, a = x.size, hi - lo + 1
    nzb = np.flatnonzero(base_counts)
    bc = base_counts[nzb[0]:nzb[-1] + 1]
    if np.count_nonzero(bc) > (1 << CTX_TABLE_BITS):
        return None
    m = int(np.partition(x, n // 2)[n // 2])
    # counts by (context at the largest radius tried, value), in one pass (native, or numpy); the
    # context at radius b < B is b + sgn(s) min(|s|, b) for the context B + s at radius B
    B = CTX_MAX_B - 1
    mod = _rans()
    if mod is not None:
        joint = mod.ctx_hist(x, m, lo, a, B)
    else:
        prev = np.concatenate([[m], x[:-1]]).astype(np.int64)
        joint = np.bincount(ctx_index(prev, m, B) * a + (x - lo), minlength=(2 * B + 1) * a).reshape(2 * B + 1, a)
    # The tables of radius b: contexts b + o (|o| < b) have the counts of joint row B + o, the same
    # for every b, and the outer two merge the joint rows beyond them. So 9 inner rows and two
    # outer rows per radius are costed, in one batch, instead of 35 rows one by one (this search
    # was most of the entropy coder's time); each radius adds the same costs in the same order.
    inner = joint[1:2 * B]  # offsets -(B - 1)..B - 1
    outer = [r for b in range(1, CTX_MAX_B) for r in (joint[:B - b + 1].sum(0), joint[B + b:].sum(0))]
    rows = np.concatenate([inner, np.stack(outer)])
    if np.count_nonzero(rows, axis=1).max() > (1 << CTX_TABLE_BITS):
        return None  # a context would need more distinct values than its table holds (base_counts,
        # the chosen stream's, may be of the deltas, which have fewer)
    costs = _table_costs(rows, CTX_TABLE_BITS)
    best = (_table_cost(bc, TABLE_BITS)[0], 0, None)
    for b in range(1, CTX_MAX_B):
        rows = [costs[2 * B - 1 + 2 * (b - 1)]] + costs[B - b:B + b - 1] + [costs[2 * B + 2 * (b - 1)]]
        bits, tabs = 0.0, []
        for t in rows:
            if t is None:
                bits += 8
                tabs.append(None)
                continue
            cost, nz0, w = t
            bits += cost
            tabs.append((lo + nz0, w))
        if bits < best[0]:
            best = (bits, b, tabs)
    _, b, tabs = best
    if not b:
        return None
    head, tables = bytes([M_CTX_ANS]) + varint(zigzag_int(m)) + bytes([b]), []
    for t in tabs:
        if t is None:
            head += varint(0)
            tables.append((0, np.full(1, -1, np.int32), np.zeros(0, np.uint32)))
            continue
        tlo, w = t
        head += varint(len(w)) + varint(zigzag_int(tlo)) + varints(w)
        present = np.flatnonzero(w)
        rank = np.full(len(w), -1, np.int32)
        rank[present] = np.arange(present.size, dtype=np.int32)
        tables.append((tlo, rank, (w[present].astype(np.int64) << (PRECISION - CTX_TABLE_BITS)).astype(np.uint32)))
    return _Pending(_CtxJob(x, m, b, tables), lambda words: head + blob(words))


def _ctx_encode_py(job: _CtxJob) -> bytes:
    """Pure-Python twin of the native `encode_ctx_many` (same words; used without the extension)."""
    x = job.x
    prev = np.concatenate([[job.m], x[:-1]]).astype(np.int64)
    ctx = ctx_index(prev, job.m, job.b)
    models = []
    for lo, rank, w in job.tables:
        w = [int(v) for v in w]
        models.append((lo, rank, w, [sum(w[:i]) for i in range(len(w))]))
    state, words = 0, []
    for i in range(x.size - 1, -1, -1):
        lo, rank, w, cdf = models[int(ctx[i])]
        k = int(x[i]) - lo
        s = int(rank[k]) if 0 <= k < len(rank) else -1
        if s < 0 or s >= max(len(w), 1):
            raise GscompError("rANS encode: value outside its context table")
        if len(w) < 2:
            continue
        f = w[s]
        if (state >> (64 - PRECISION)) >= f:
            words.append(state & 0xFFFFFFFF)
            state >>= 32
        state = ((state // f) << PRECISION) | (cdf[s] + state % f)
    if state:
        words.append(state & 0xFFFFFFFF)
        if state >> 32:
            words.append(state >> 32)
    return _words(np.asarray(words, np.uint32))


def _ctx_parse(r: Reader) -> tuple[int, int, list, memoryview]:
    """Read a context stream after its mode byte: (m, b, [(values, weights24)] per context, words)."""
    m = r.svarint()
    b = r.u8()
    if not 1 <= b <= CTX_MAX_B or abs(m) >= MAX_ABS:
        raise FormatError(f"{r.what}: bad context stream header")
    tables = []
    for _ in range(2 * b + 1):
        a = r.varint(MAX_ALPHABET)
        if a == 0:
            tables.append((np.zeros(0, np.int64), np.zeros(0, np.uint32)))
            continue
        lo = r.svarint()
        w16 = read_varints(r, a)
        if abs(lo) >= MAX_ABS or int(w16.sum()) != 1 << CTX_TABLE_BITS or (w16 > 1 << CTX_TABLE_BITS).any():
            raise FormatError(f"{r.what}: bad context table")
        nz = np.flatnonzero(w16)
        tables.append((nz.astype(np.int64) + lo, (w16[nz].astype(np.int64) << (PRECISION - CTX_TABLE_BITS)).astype(np.uint32)))
    return m, b, tables, r.blob()


def _ctx_decode_py(words, m: int, b: int, tables: list, n: int) -> np.ndarray:
    """Pure-Python twin of the native `decode_ctx_many`."""
    import bisect

    arr = _word_array(words)
    models = []
    for values, w in tables:
        w = [int(v) for v in w]
        models.append(([int(v) for v in values], w, [sum(w[:i]) for i in range(len(w))]))
    out = np.empty(n, np.int64)
    pos = arr.size
    state = 0
    if pos:
        pos -= 1
        state = int(arr[pos])
        if pos:
            pos -= 1
            state = (state << 32) | int(arr[pos])
    prev = m
    for i in range(n):
        dd = prev - m  # ctx_index, in Python ints
        bl = min(abs(dd).bit_length(), b)
        values, w, cdf = models[b - bl if dd < 0 else b + bl]
        if not values:
            raise FormatError("context stream reaches a context it has no table for (corrupt)")
        s = 0
        if len(values) >= 2:
            q = state & ((1 << PRECISION) - 1)
            s = bisect.bisect_right(cdf, q) - 1
            state = (state >> PRECISION) * w[s] + q - cdf[s]
            if state < (1 << 32) and pos:
                pos -= 1
                state = (state << 32) | int(arr[pos])
        prev = values[s]
        out[i] = prev
    if state or pos:
        raise FormatError("rANS stream has trailing data (corrupt)")
    return out


def _ctx_run(blocks: list, counts: list[int], what: str = "symbol stream") -> list[np.ndarray]:
    """Decode context blocks (stream bytes after the mode byte) of counts[i] values: the native
    coder parses and decodes them in parallel; else `_ctx_parse` + the Python decoder."""
    mod = _rans()
    if mod is None:
        out = []
        for blk, n in zip(blocks, counts):
            r = Reader(blk, what)
            m, b, tables, words = _ctx_parse(r)
            r.done()
            out.append(_ctx_decode_py(words, m, b, tables, n))
        return out
    outs = [np.empty(n, np.int64) for n in counts]
    try:
        errs = mod.decode_ctx_many([(np.frombuffer(blk, np.uint8), o) for blk, o in zip(blocks, outs)])
    except ValueError as e:
        raise FormatError(f"bad rANS stream: {e}") from None
    for err in errs:
        if err:
            raise FormatError(f"{what}: {_native_err(err)}")
    return outs


def _ints(x) -> np.ndarray:
    """x as a numpy array of integers: integer or bool arrays as they are, floats only when every
    value is a whole number (a cast would silently truncate 1.7 to 1, and NaN to garbage)."""
    a = _np(x)
    if a.dtype.kind in "iub":
        return a
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a) | (a != np.round(a))
        if not bad.any():
            return a
        raise GscompError(f"symbols must be whole numbers, got {float(a.ravel()[bad.ravel()][0])!r}")
    raise GscompError(f"symbols must be integers, got an array of {a.dtype}")


def _int64(x) -> np.ndarray:
    """Contiguous 1-D int64 copy of x, or x itself when it already is one."""
    return np.ascontiguousarray(_ints(x), dtype=np.int64).ravel()


def _columns(arrays) -> list[np.ndarray]:
    """The arrays to code as contiguous int64: a list of arrays, or the columns of an (n, k) array
    (transposed in cache-sized blocks natively, instead of k strided passes)."""
    if isinstance(arrays, np.ndarray) or hasattr(arrays, "detach"):
        a = _ints(arrays)
        if a.ndim != 2:
            raise GscompError("encode_symbols_many: pass a list of arrays or one (n, k) array of columns")
        mod = _rans()
        t = mod.transpose_i64(a) if mod is not None and a.size else np.ascontiguousarray(a.T, dtype=np.int64)
        return list(t)
    return [_int64(x) for x in arrays]


def _plan_symbols(x: np.ndarray, allow_delta: bool, allow_zstd: bool, zstd_level: int, stats=None,
                  allow_ctx: bool = False) -> bytes | _Pending:
    """`encode_symbols` up to (not including) the rANS coding: bytes, or a `_Pending` stream.
    ``stats`` = the native `analyze_many` result for x (ranges and histograms of x and of its
    differences); without it numpy computes the same numbers, so both paths give the same bytes."""
    n = x.size
    if n == 0:
        return bytes([M_EMPTY])
    if stats is not None:
        lo, hi, dlo, dhi, cx, cd = stats
    else:
        lo, hi = int(x.min()), int(x.max())
        cx = cd = None
    if max(-lo, hi) >= MAX_ABS:
        raise GscompError("a quantized attribute exceeds 2^40 steps; use a coarser quantization step")
    if lo == hi:
        return bytes([M_CONST]) + varint(zigzag_int(lo))
    mode, v, vlo, vhi, vc = M_ANS, x, lo, hi, cx
    if allow_delta and n > 1:
        d = None
        if stats is None or (cd is None and not allow_zstd):
            d = np.diff(x, prepend=np.int64(0))
            if stats is None:
                dlo, dhi = int(d.min()), int(d.max())
        if _entropy_bits(d, dlo, dhi, cd) < 0.97 * _entropy_bits(x, lo, hi, cx):
            mode, v, vlo, vhi, vc = M_DELTA_ANS, d, dlo, dhi, cd
    delta = mode == M_DELTA_ANS
    if allow_zstd:
        if v is None:
            v = np.diff(x, prepend=np.int64(0))
        return _zstd_stream(delta, v, zstd_level)
    if vhi - vlo + 1 > MAX_ALPHABET:
        if v is None:
            v = np.diff(x, prepend=np.int64(0))
        inner = _split_encode(v)
        prefix = bytes([mode])
    else:
        ctx = None
        if allow_ctx and n >= 64 and hi - lo + 1 <= MAX_ALPHABET:
            ctx = _ctx_plan(x, lo, hi, vc if vc is not None else np.bincount(v - vlo))
        if ctx is not None:
            inner, prefix = ctx, b""
        else:
            native = vc is not None and stats is not None
            if vc is None:
                vc = np.bincount(v - vlo, minlength=vhi - vlo + 1)
            bits = _table_bits(vc) if allow_ctx else TABLE_BITS
            inner = _hist_encode(v, vlo, vhi, vc, (x, delta) if native else None, bits)
            prefix = bytes([mode, 0 if bits == TABLE_BITS else 2])
    alt = bytes([M_VARINT]) + varints(zigzag(x)) if n <= 4096 else None  # short: a table may cost more

    def build(words: bytes) -> bytes:
        out = prefix + inner.build(words)
        return alt if alt is not None and len(alt) < len(out) else out

    return _Pending(inner.groups, build)


def _finish_plans(plans: list) -> list[bytes]:
    """Code the rANS streams of all pending plans in one (parallel) batch and assemble them."""
    out = list(plans)
    hist = [i for i, p in enumerate(plans) if isinstance(p, _Pending) and isinstance(p.groups, _HistJob)]
    ctx = [i for i, p in enumerate(plans) if isinstance(p, _Pending) and isinstance(p.groups, _CtxJob)]
    lists = [i for i, p in enumerate(plans) if isinstance(p, _Pending) and not isinstance(p.groups, (_HistJob, _CtxJob))]
    words = ans_encode_many([plans[i].groups for i in lists])
    if hist:
        jobs = [(j.x, j.delta, j.lo, j.rank, j.w24.astype(np.uint32)) for j in (plans[i].groups for i in hist)]
        try:
            words += [_words(w) for w in _rans().encode_hist_many(jobs)]
        except ValueError as e:
            raise GscompError(f"rANS encode: {e}") from None
    if ctx:
        jobs = [plans[i].groups for i in ctx]
        mod = _rans()
        try:
            words += ([_words(w) for w in mod.encode_ctx_many([(j.x, j.m, j.b, j.tables) for j in jobs])]
                      if mod is not None else [_ctx_encode_py(j) for j in jobs])
        except ValueError as e:
            raise GscompError(f"rANS encode: {e}") from None
    for i, w in zip(lists + hist + ctx, words):
        out[i] = plans[i].build(w)
    return out


def _split_encode(v: np.ndarray) -> _Pending:
    """Wide range: hist-code the high part, store k raw low bits (flag byte 1)."""
    lo = int(v.min())
    u = (v - lo).astype(np.uint64)
    k = max(0, int(u.max()).bit_length() - 12)
    hi = (u >> np.uint64(k)).astype(np.int64)
    raw = pack_bits(u & np.uint64((1 << k) - 1), k) if k else b""
    head = bytes([1]) + varint(zigzag_int(lo)) + bytes([k])
    inner = _hist_encode(hi, int(hi.min()), int(hi.max()))
    return _Pending(inner.groups, lambda words: head + blob(inner.build(words)) + blob(raw))


def _zstd_stream(delta: bool, v: np.ndarray, level: int) -> bytes:
    import zstandard

    u = zigzag(v)
    m = int(u.max())
    width = 1 if m < 1 << 8 else 2 if m < 1 << 16 else 4 if m < 1 << 32 else 8
    raw = u.astype({1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}[width]).tobytes()
    z = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)
    return bytes([M_DELTA_ZSTD if delta else M_ZSTD, width]) + z


def decode_symbols(data: bytes | memoryview, n: int, what: str = "symbol stream") -> np.ndarray:
    """Inverse of `encode_symbols`; ``n`` comes from the container (never from the stream)."""
    return decode_symbols_many([data], n, what)[0]


def _decode_one(data: bytes | memoryview, n: int, what: str) -> np.ndarray:
    r = Reader(data, what)
    mode = r.u8()
    if mode == M_EMPTY:
        r.done()
        if n:
            raise FormatError(f"{what}: empty stream for {n} values")
        return np.zeros(0, np.int64)
    if n == 0:
        raise FormatError(f"{what}: non-empty stream for 0 values")
    if mode == M_CONST:
        v = r.svarint()
        r.done()
        return np.full(n, v, np.int64)
    if mode == M_VARINT:
        out = unzigzag(read_varints(r, n))
    elif mode == M_CTX_ANS:
        return _ctx_run([r.take(r.remaining())], [n], what)[0]
    elif mode in (M_ZSTD, M_DELTA_ZSTD):
        out = _zstd_decode(r, n)
    elif mode in (M_ANS, M_DELTA_ANS):
        kind = r.u8()
        if kind in HIST_KIND_BITS:
            out = _hist_decode(r, n, HIST_KIND_BITS[kind])
        elif kind == 1:
            lo = r.svarint()
            k = r.u8()
            if k > 40:
                raise FormatError(f"{what}: bad split width {k}")
            hr = Reader(r.blob(), what)
            hi = _hist_decode(hr, n)
            hr.done()  # (the spec: nothing after the histogram block)
            if hi.min() < 0 or hi.max() >= 1 << 40:
                raise FormatError(f"{what}: split high part out of range")
            raw = r.blob()
            if not k and raw:
                raise FormatError(f"{what}: split low bits given for width 0")
            low = unpack_bits(raw, k, n).astype(np.int64) if k else 0
            out = (hi << k) + low + lo
        else:
            raise FormatError(f"{what}: unknown ANS sub-mode {kind}")
    else:
        raise FormatError(f"{what}: unknown stream mode {mode}")
    r.done()
    if mode in (M_DELTA_ANS, M_DELTA_ZSTD):
        out = np.cumsum(out)
    return out


def _zstd_decode(r: Reader, n: int) -> np.ndarray:
    import zstandard

    width = r.u8()
    if width not in (1, 2, 4, 8):
        raise FormatError(f"{r.what}: bad zstd element width {width}")
    z = bytes(r.take(r.remaining()))
    try:
        size = zstandard.frame_content_size(z)
        if size != n * width:
            raise FormatError(f"{r.what}: zstd frame holds {size} bytes, expected {n * width}")
        raw = zstandard.ZstdDecompressor().decompress(z, max_output_size=n * width)
    except zstandard.ZstdError as e:
        raise FormatError(f"{r.what}: bad zstd data: {e}") from None
    if len(raw) != n * width:
        raise FormatError(f"{r.what}: zstd data has the wrong size")
    u = np.frombuffer(raw, {1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}[width])
    return unzigzag(u)


def _pool_map(fn, items: list, work: int) -> list:
    """Map over 2 threads when there is enough numpy/zstd work (both release the GIL)."""
    if len(items) < 2 or work < (1 << 16):
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=2) as ex:
        return list(ex.map(fn, items))


def encode_symbols_many(arrays: list, *, allow_delta: bool = True, allow_zstd: bool = False, zstd_level: int = 19,
                        allow_ctx: bool = False) -> list[bytes]:
    """`encode_symbols` over independent arrays (e.g. the columns of an attribute), same bytes.
    With the native coder the per-array passes (ranges, histograms of values and differences,
    symbol mapping, rANS) run in C++ over all arrays at once on all cores; only table-sized work
    stays in Python. Otherwise (constriction) the arrays are analysed on two threads. ``arrays``:
    a list of integer arrays, or an (n, k) array whose k columns are the arrays (fastest)."""
    xs = _columns(arrays)
    mod = _rans()
    if mod is not None and not allow_zstd:
        stats = mod.analyze_many(xs, bool(allow_delta), 1 << 20)
        plans = _pool_map(lambda a: _plan_symbols(a[0], allow_delta, False, zstd_level, a[1], allow_ctx),
                          list(zip(xs, stats)), sum(x.size for x in xs) if allow_ctx else 0)
    else:
        work = sum(x.size for x in xs)
        plans = _pool_map(lambda x: _plan_symbols(x, allow_delta, allow_zstd, zstd_level, None, allow_ctx), xs, work)
    return _finish_plans(plans)


def decode_symbols_many(streams: list, n, what: str = "symbol stream", *, scales=None, out: np.ndarray | None = None):
    """Inverse of `encode_symbols_many`; every stream holds ``n`` values (or ``n[i]``: a list of
    counts, one per stream, without ``scales``). Histogram-rANS streams
    (the common case) are decoded together by the native coder on all cores; the others (zstd,
    varint, split) go through the generic decoder on two threads. Returns int64 arrays, or, with
    ``scales`` (one step per stream), dequantizes into the float32 array ``out`` (n, len(streams))
    as float32(value * step) - bit-identical to `quant.dequantize` - and returns ``out``."""
    counts = [n] * len(streams) if isinstance(n, (int, np.integer)) else [int(c) for c in n]
    if len(counts) != len(streams) or not all(0 <= c <= MAX_COUNT for c in counts):
        raise FormatError(f"{what}: count {n} out of range")
    if scales is not None:
        if len(set(counts)) > 1:
            raise GscompError("decode_symbols_many: scales need one count for all streams")
        n = counts[0] if counts else 0
        scales = np.broadcast_to(np.asarray(scales, np.float64), (len(streams),))
        if out is None:
            out = np.empty((n, len(streams)), np.float32)
        if out.dtype != np.float32 or out.shape != (n, len(streams)):
            raise GscompError("decode_symbols_many: out must be float32 of shape (n, number of streams)")
    res: list = [None] * len(streams)
    hist, where, rest, targets, ctx, cwhere, const = [], [], [], [], [], [], []
    for i, (data, n) in enumerate(zip(streams, counts)):
        r = Reader(data, what)
        if n and r.remaining() >= 1 and r.buf[0] == M_CTX_ANS:
            ctx.append(r.buf[1:])
            cwhere.append(i)
        elif n and r.remaining() >= 2 and r.buf[0] in (M_ANS, M_DELTA_ANS) and r.buf[1] in HIST_KIND_BITS:
            delta = r.buf[0] == M_DELTA_ANS
            bits = HIST_KIND_BITS[r.buf[1]]
            r.take(2)
            values, w24, words = _hist_parse(r, bits)
            r.done()
            hist.append((values, w24, words, delta))
            where.append(i)
            targets.append(None if scales is None else (out[:, i], scales[i]))
        elif r.remaining() >= 1 and r.buf[0] in (M_EMPTY, M_CONST):
            const.append(i)  # nothing to decode: not worth a thread (often half the streams of SH rest)
        else:
            rest.append(i)

    def other(i):
        v = _decode_one(streams[i], counts[i], what)
        if scales is not None:
            with np.errstate(over="ignore"):  # (a crafted step can overflow float32: refused after decoding)
                out[:, i] = v.astype(np.float64) * scales[i]
        return v

    for i in const:
        res[i] = other(i)
    for i, v in zip(rest, _pool_map(other, rest, sum(counts[i] for i in rest))):
        res[i] = v
    for i, v in zip(where, _hist_run(hist, [counts[i] for i in where], targets)):
        res[i] = v
    for i, v in zip(cwhere, _ctx_run(ctx, [counts[i] for i in cwhere], what) if ctx else []):
        res[i] = v
        if scales is not None:
            out[:, i] = v.astype(np.float64) * scales[i]
    return out if scales is not None else res


# ----------------------------------------------------------------------------- categorical / Bernoulli
def prob_table(probs) -> np.ndarray:
    """Snap probabilities (..., A) to 16-bit integer weights (each >= 1, rows summing to 2**16).
    Uses only +,*,floor on float64, so it is exactly reproducible from identical inputs."""
    p = np.asarray(_np(probs), np.float64)
    if p.ndim == 1:
        p = p[None]
    a = p.shape[-1]
    if a < 2 or a > MAX_ALPHABET or not np.isfinite(p).all() or (p < 0).any():
        raise GscompError("categorical probabilities must be finite, >= 0, with 2..16384 symbols")
    s = p.sum(-1, keepdims=True)
    s[s <= 0] = 1.0
    free = (1 << TABLE_BITS) - a
    w = np.floor(p / s * free).astype(np.int64) + 1
    w[np.arange(len(w)), np.argmax(w, -1)] += (1 << TABLE_BITS) - w.sum(-1)
    return w


def encode_categorical(x, probs) -> bytes:
    """Symbols x[i] in [0, A) with one probability row (A,) for all, or a row per symbol (n, A)."""
    x = _int64(x)
    w = prob_table(probs)
    if w.shape[0] != 1 and w.shape[0] != x.size:
        raise GscompError(f"encode_categorical: {w.shape[0]} probability rows for {x.size} symbols "
                          "(one row for all, or one per symbol)")
    if x.size and (x.min() < 0 or x.max() >= w.shape[1]):
        raise GscompError("categorical symbol outside the alphabet")
    if w.shape[0] == 1:
        return ans_encode([(x, to24(w[0]))])
    keys, inv = np.unique(w, axis=0, return_inverse=True)  # identical rows share one model
    order = np.argsort(inv, kind="stable")
    groups, counts = [], np.bincount(inv, minlength=len(keys))
    pos = 0
    for g in range(len(keys)):
        idx = order[pos : pos + counts[g]]
        groups.append((x[idx], to24(keys[g])))
        pos += counts[g]
    return ans_encode(groups)


def decode_categorical(data, probs, n: int) -> np.ndarray:
    w = prob_table(probs)
    coder = ans_decoder(data)
    if w.shape[0] == 1:
        out = ans_decode_group(coder, to24(w[0]), n)
    else:
        if w.shape[0] != n:
            raise GscompError("decode_categorical: need one probability row per symbol")
        keys, inv = np.unique(w, axis=0, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        counts = np.bincount(inv, minlength=len(keys))
        out = np.zeros(n, np.int64)
        pos = 0
        for g in range(len(keys)):
            idx = order[pos : pos + counts[g]]
            out[idx] = ans_decode_group(coder, to24(keys[g]), len(idx))
            pos += counts[g]
    ans_finish(coder)
    return out


def _bern_probs(p1) -> np.ndarray:
    p1 = np.clip(np.asarray(_np(p1), np.float64).ravel(), 0.0, 1.0)
    return np.stack([1.0 - p1, p1], -1)


def encode_bernoulli(bits, p1) -> bytes:
    """Binary symbols with P(1) = p1 (a scalar or one per symbol)."""
    return encode_categorical(bits, _bern_probs(p1))


def decode_bernoulli(data, p1, n: int) -> np.ndarray:
    return decode_categorical(data, _bern_probs(p1), n).astype(bool)


# ----------------------------------------------------------------------------- Gaussian conditional
SCALE_LEVELS = 64  # log-spaced from 0.11 to 64 (_LOG_SCALE_MIN/_MAX below)
MEAN_FRAC = 16  # means snapped to multiples of 1/16 (coarser costs rate at small scales)
TAIL = 8.0  # residual support is [-R, R] with R = ceil(TAIL * scale) + 1; beyond: escape


def _scale_edges() -> np.ndarray:
    """Upper edges between consecutive table scales, float32 (so libm jitter cannot move them)."""
    s = scale_table()
    return np.sqrt(s[:-1] * s[1:]).astype(np.float32)


@lru_cache(maxsize=None)
def scale_table() -> np.ndarray:
    """64 log-spaced scales 0.11..64, rounded to float32 (CompressAI-style scale table)."""
    k = np.arange(SCALE_LEVELS, dtype=np.float64)
    s = _exp(_LOG_SCALE_MIN + k * (_LOG_SCALE_MAX - _LOG_SCALE_MIN) / (SCALE_LEVELS - 1))
    return s.astype(np.float32).astype(np.float64)


@lru_cache(maxsize=None)
def gaussian_table(scale_idx: int, frac_idx: int) -> np.ndarray:
    """16-bit weights over residuals r in [-R, R] plus one escape entry (last).

    P(r) = Phi((r + 0.5 - f) / s) - Phi((r - 0.5 - f) / s) with f = frac_idx / 16, s = table scale;
    the escape entry takes the remaining tail mass. Weights = floor(P * (2**16 - A)) + 1 (so every
    entry >= 1), and the rounding remainder is added to the largest entry (lowest index on ties)."""
    s = float(scale_table()[scale_idx])
    f = frac_idx / MEAN_FRAC
    R = int(math.ceil(TAIL * s)) + 1
    edges = np.arange(-R, R + 2, dtype=np.float64) - 0.5  # bin edges r - 1/2 .. R + 1/2
    cdf = 0.5 * _erfc(-((edges - f) / s) / math.sqrt(2.0))
    p = np.maximum(cdf[1:] - cdf[:-1], 0.0)
    p = np.append(p, max(0.0, 1.0 - p.sum()))
    a = p.size
    w = np.floor(p * ((1 << TABLE_BITS) - a)).astype(np.int64) + 1
    w[int(np.argmax(w))] += (1 << TABLE_BITS) - int(w.sum())
    return w


# The probability tables must be identical on every machine, so they are computed with IEEE basic
# operations only (+ - * / sqrt and exact power-of-two scaling, all correctly rounded), never with
# libm/scipy exp or erfc, whose last bits differ between platforms and library versions.
_LOG_SCALE_MIN = -2.2072749131897207  # ln(0.11)
_LOG_SCALE_MAX = 4.1588830833596715  # ln(64)
_LN2 = 0.6931471805599453


def _exp(x) -> np.ndarray:
    """exp(x) from basic operations: x = k ln2 + r, |r| <= ln2/2, Taylor series of e^r, times 2^k."""
    x = np.asarray(x, dtype=np.float64)
    k = np.floor(x / _LN2 + 0.5)
    r = x - k * _LN2
    term = np.ones_like(r)
    acc = np.ones_like(r)
    for i in range(1, 19):  # |r|^19/19! < 1e-19: converged in float64
        term = term * r / i
        acc = acc + term
    return np.ldexp(acc, k.astype(np.int64))


def _erfc(x) -> np.ndarray:
    """Complementary error function, fractional error < 1.2e-7 everywhere (Chebyshev fit of
    t exp(-x^2 + P(t)), t = 1/(1 + |x|/2)), evaluated with `_exp` so it is reproducible bit for bit."""
    x = np.asarray(x, dtype=np.float64)
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    coeffs = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807,
              -0.18628806, 0.09678418, 0.37409196, 1.00002368, -1.26551223)
    poly = np.zeros_like(t)
    for c in coeffs:
        poly = poly * t + c
    ans = t * _exp(-z * z + poly)
    return np.where(x >= 0, ans, 2.0 - ans)


def quantize_gaussian_params(means, scales) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base, frac_idx, scale_idx): means snapped to 1/16 (base = floor), scales to the table."""
    m = _np(means).astype(np.float32).astype(np.float64).ravel()
    s = _np(scales).astype(np.float32).ravel()
    if not (np.isfinite(m).all() and np.isfinite(s).all()):
        raise GscompError("Gaussian model parameters must be finite")
    mq = np.floor(m * MEAN_FRAC + 0.5)
    base = np.floor(mq / MEAN_FRAC)
    frac = (mq - base * MEAN_FRAC).astype(np.int64)
    sidx = np.searchsorted(_scale_edges(), s, side="left").astype(np.int64)
    if np.abs(base).max(initial=0) >= MAX_ABS:
        raise GscompError("Gaussian model means out of range")
    return base.astype(np.int64), frac, sidx


def table_crc(keys) -> int:
    """CRC32 of the tables a stream uses (in key order): stored in the stream, a last line of defence
    so a decoder whose tables differ (e.g. another implementation) fails loudly instead of decoding
    garbage."""
    crc = 0
    for key in keys:
        crc = zlib.crc32(gaussian_table(int(key // MEAN_FRAC), int(key % MEAN_FRAC)).astype("<u4").tobytes(), crc)
    return crc


def _gauss_groups(frac: np.ndarray, sidx: np.ndarray):
    key = sidx * MEAN_FRAC + frac
    order = np.argsort(key, kind="stable")
    counts = np.bincount(key, minlength=SCALE_LEVELS * MEAN_FRAC)
    return order, counts


def _iter_groups(order: np.ndarray, counts: np.ndarray):
    """Yield (symbol indices, 16-bit table, R) per non-empty (scale, mean fraction) group, in the
    fixed key order both encoder and decoder use."""
    pos = 0
    for key in np.flatnonzero(counts):
        idx = order[pos : pos + counts[key]]
        pos += counts[key]
        w = gaussian_table(int(key // MEAN_FRAC), int(key % MEAN_FRAC))
        yield idx, w, (len(w) - 2) // 2


def encode_gaussian(x, means, scales) -> bytes:
    """Integer symbols x with a per-symbol quantized Gaussian N(mean, scale) model (same units as x).

    Symbols are grouped by (scale index, mean fraction) - a fixed, decoder-computable order - and
    each group is coded with its table; residuals outside [-R, R] take the escape entry and their
    values go to a histogram-coded escape stream."""
    x = _int64(x)
    base, frac, sidx = quantize_gaussian_params(means, scales)
    if not (x.size == base.size == sidx.size):
        raise GscompError("encode_gaussian: symbols, means and scales must have the same length")
    res = x - base
    order, counts = _gauss_groups(frac, sidx)
    groups, esc_pos = [], []
    for idx, w, R in _iter_groups(order, counts):
        r = res[idx]
        out = np.abs(r) > R
        sym = np.where(out, 2 * R + 1, r + R)
        esc_pos.append(idx[out])
        groups.append((sym, to24(w)))
    esc_idx = np.sort(np.concatenate(esc_pos)) if esc_pos else np.zeros(0, np.int64)
    esc = encode_symbols(res[esc_idx], allow_delta=False)
    return struct.pack("<I", table_crc(np.flatnonzero(counts))) + varint(esc_idx.size) + blob(esc) + ans_encode(groups)


def decode_gaussian(data, means, scales) -> np.ndarray:
    base, frac, sidx = quantize_gaussian_params(means, scales)
    n = base.size
    r = Reader(data, "Gaussian stream")
    crc = r.u32()
    order, counts = _gauss_groups(frac, sidx)
    if crc != table_crc(np.flatnonzero(counts)):
        raise FormatError("Gaussian stream: table CRC mismatch (different model parameters or probability tables)")
    n_esc = r.varint(n)
    esc_vals = decode_symbols(r.blob(), n_esc, "Gaussian escape stream")
    coder = ans_decoder(r.take(r.remaining()))
    res = np.zeros(n, np.int64)
    is_esc = np.zeros(n, bool)
    for idx, w, R in _iter_groups(order, counts):
        sym = ans_decode_group(coder, to24(w), len(idx))
        res[idx] = sym - R
        is_esc[idx] = sym == 2 * R + 1
    ans_finish(coder)
    if int(is_esc.sum()) != n_esc:
        raise FormatError("Gaussian stream: escape count mismatch")
    res[is_esc] = esc_vals
    return res + base


__all__ = [
    "encode_symbols",
    "decode_symbols",
    "encode_symbols_many",
    "decode_symbols_many",
    "ans_encode",
    "ans_encode_many",
    "ans_decode_many",
    "set_backend",
    "rans_backend",
    "encode_gaussian",
    "decode_gaussian",
    "encode_categorical",
    "decode_categorical",
    "encode_bernoulli",
    "decode_bernoulli",
    "quantize_gaussian_params",
    "scale_table",
    "gaussian_table",
    "pack_bits",
    "unpack_bits",
    "Reader",
]
