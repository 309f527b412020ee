"""Quantizers used by the post-hoc stages (uniform steps, Morton order, smallest-three quaternions).

Dequantization uses only IEEE-754 +, *, sqrt in float64 followed by one rounding to float32, so
every platform reproduces it bit for bit (no exp/log/libm in any decoder path).

The hot functions use the native codec module (cuda/rans_cpu.cpp: one pass, all cores) when it is
available; the numpy code below is the fallback and the reference (identical results, tested).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import FormatError, GscompError
from .entropy import _rans, log2_counts

MAX_POS_BITS = 19  # 3 x 19 = 57-bit Morton codes; delta raw bits stay <= 56 (see entropy.pack_bits)
INV_SQRT2 = 0.7071067811865476


# ----------------------------------------------------------------------------- uniform
def _steps_str(step) -> str:
    """A step (scalar or array) for a one-line message: the value, or its range."""
    a = np.asarray(step, np.float64)
    return f"{float(a):g}" if a.ndim == 0 else f"{a.min():g}..{a.max():g}" if a.size else "[]"


def quantize(x: np.ndarray, step, columns: bool = False, what: str = "values") -> np.ndarray:
    """Round x / step (step: a scalar or an array broadcasting against x). ``columns``: x is
    (n, k) and the result comes transposed, (k, n) C-contiguous: one array per column, as the
    per-column entropy coder reads them (the native path writes it directly, no transpose)."""
    if not np.all(np.asarray(step) > 0):
        raise GscompError(f"quantization step must be > 0, got {_steps_str(step)}")
    mod = _rans()
    xa = np.asarray(x)
    if mod is not None and xa.dtype == np.float32 and xa.ndim in (1, 2) and xa.size and np.ndim(step) <= 2:
        x2 = xa.reshape(len(xa), -1)
        try:  # native path for one step per column (a scalar, (C,) or (1, C)); others use numpy
            steps = np.ascontiguousarray(np.broadcast_to(np.asarray(step, np.float64), (1, x2.shape[1]))[0])
        except ValueError:
            steps = None
        if steps is not None:
            try:
                out = mod.quantize(x2, steps, columns)
            except ValueError:
                raise GscompError(f"{what} too large (or not finite) for quantization step {_steps_str(step)}") from None
            return out if columns else out.reshape(xa.shape)
    q = np.rint(np.asarray(x, np.float64) / step)
    if q.size and not np.abs(q).max() < 2**40:  # (NaN fails this too)
        raise GscompError(f"{what} too large (or not finite) for quantization step {_steps_str(step)}")
    q = q.astype(np.int64)
    return np.ascontiguousarray(q.reshape(len(xa), -1 if xa.size else xa.shape[-1]).T) if columns else q


def dequantize(q: np.ndarray, step) -> np.ndarray:
    return (q.astype(np.float64) * np.asarray(step, np.float64)).astype(np.float32)


def class_steps(step: float, cls: np.ndarray) -> np.ndarray:
    """step * 2^cls per row, float64 (exact: a power-of-two scaling, no libm)."""
    return np.ldexp(float(step), np.asarray(cls).astype(np.int32))


def dequantize_classed(q: np.ndarray, cls: np.ndarray, step) -> np.ndarray:
    """`dequantize` of an (n, w) array whose entry (i, j) has the step step_j * 2^cls[i] (``step``:
    one for all columns, or one per column)."""
    mod = _rans()
    steps = np.asarray(step, np.float64).reshape(-1)
    if mod is not None and q.ndim == 2:
        return mod.dequantize_classed(q, cls, steps)
    return dequantize(q, np.ldexp(steps[None], np.asarray(cls).astype(np.int32)[:, None]))


# ----------------------------------------------------------------------------- positions
# ----------------------------------------------------------------------------- dependent (trellis)
# Dependent quantization (the 4-state trellis of H.266/VVC), see docs/gsz-format.md: values are
# reconstructed on a grid of step d as r * d, where each r must belong to the quantizer picked by
# the state: Q0 = even r (r = 2k), Q1 = odd r or 0 (r = 2k - sgn k). The coded level is k; the state
# bit h_i that picks Q1 is the XOR of the parities of k_{i-1}, k_{i-3}, k_{i-5}, ... The encoder picks
# the k sequence with the least squared error by a Viterbi search (native code); at the same level
# entropy as a plain quantizer of step 2d it has ~0.8x its squared error (~1 dB).
# The state is (h, l); after level k it becomes (l ^ parity(k), h).


def dq_unpack(k: np.ndarray) -> np.ndarray:
    """Coded levels of one sequence -> reconstruction indices r (vectorized; the decoder side)."""
    k = np.asarray(k, np.int64)
    p = k & 1
    x = np.empty_like(p)  # x_j = p_j ^ x_{j-2}: prefix XOR along even and along odd positions
    x[0::2] = np.cumsum(p[0::2]) & 1
    x[1::2] = np.cumsum(p[1::2]) & 1
    h = np.zeros_like(p)
    h[1:] = x[:-1]
    return 2 * k - h * np.sign(k)


def dq_unpack_many(ks: list[np.ndarray], inplace: bool = False) -> list[np.ndarray]:
    """`dq_unpack` of many sequences (native: on all cores). ``inplace``: the caller's int64
    arrays may be overwritten (no copy; the decoder's own fresh streams)."""
    mod = _rans()
    if mod is None:
        return [dq_unpack(k) for k in ks]
    out = [np.array(k, np.int64, copy=not (inplace and k.dtype == np.int64 and k.flags.c_contiguous and k.flags.writeable),
                    order="C").ravel() for k in ks]
    mod.dq_unpack_many(out)
    return out


def _dq_trellis(t: np.ndarray, nonneg: bool, lam: float = 0.0, rate=None, wt=None) -> tuple[np.ndarray, np.ndarray]:
    """Reference Viterbi search (numpy fallback of the native dq_quantize_many; same choices)."""
    n = len(t)
    inf = float("inf")
    cost = [0.0, inf, inf, inf]
    back = np.zeros((n, 4), np.int64)
    lev = np.zeros((n, 4), np.int64)
    for i in range(n):
        x = float(t[i])
        wi = 1.0 if wt is None else float(wt[i])
        nc = [inf] * 4
        for s in range(4):
            if cost[s] == inf:
                continue
            h, l = s >> 1, s & 1
            if h == 0:
                e = 2 * int(np.floor(x / 2))
                cand = (e, e + 2)
            else:
                o = 2 * int(np.floor((x - 1) / 2)) + 1
                cand = (o, o + 2, 0)
            for r in cand:
                r = max(r, 0) if nonneg else r
                k = r // 2 if h == 0 else (r + (r > 0) - (r < 0)) // 2
                v = cost[s] + wi * ((x - r) * (x - r))
                if lam > 0:
                    lo, bits, far = rate
                    v += lam * (bits[k - lo] if lo <= k < lo + len(bits) else far)
                ns = ((l ^ (k & 1)) << 1) | h
                if v < nc[ns]:
                    nc[ns], back[i, ns], lev[i, ns] = v, s, k
        cost = nc
    s = int(np.argmin(cost))
    k = np.zeros(n, np.int64)
    for i in range(n - 1, -1, -1):
        k[i] = lev[i, s]
        s = int(back[i, s])
    return k, dq_unpack(k)


DQ_LAMBDA = 0.4  # error (grid steps^2) per bit: ~ -dD/dR of the trellis quantizer at high rate
DQ_RATE_SPAN = 1 << 16  # most levels the rate search's table spans (encoder only: no format change)


def dq_quantize(targets: list[np.ndarray], nonneg: bool = False, lam: float | None = None,
                weights: list[np.ndarray] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Dependent quantization of independent sequences (targets in units of the grid step d):
    a list of (coded levels k, reconstruction indices r) per sequence. With ``lam`` > 0 a second
    search minimises error + lam * bits, the bits of each level from the first pass's histogram
    (what the entropy coder will see): low-rate streams then prefer cheap levels. ``weights``
    (one array per sequence, >= 0) scale each value's squared error, e.g. by how much it shows in
    renders: an encoder-only choice (the decoder does not need them)."""
    ts = [np.ascontiguousarray(t, np.float64).ravel() for t in targets]
    for t in ts:
        if t.size and not np.abs(t).max() < 2**40:
            raise GscompError("values too large (or not finite) for the quantization step")
    ws = [] if weights is None else [np.ascontiguousarray(w, np.float64).ravel() for w in weights]
    if ws and (len(ws) != len(ts) or any(w.shape != t.shape or not (w >= 0).all() for w, t in zip(ws, ts))):
        raise GscompError("dq_quantize: one weight >= 0 per target")
    mod = _rans()
    lam = DQ_LAMBDA if lam is None else lam

    def run(lam, rates):
        if mod is not None:
            return [(k, r) for k, r in mod.dq_quantize_many(ts, bool(nonneg), lam, rates, ws)]
        return [_dq_trellis(t, nonneg, lam, rt, w) for t, rt, w in
                zip(ts, rates or [None] * len(ts), ws or [None] * len(ts))]

    first = run(0.0, [])
    if lam <= 0:
        return first
    rates = []
    for k, _ in first:
        lo = int(k.min(initial=0))
        if k.size and int(k.max()) - lo >= DQ_RATE_SPAN:
            # a table over the whole range would be as big as the range (one logit of 1e8 took
            # 11 GB): a window around the median level, the rare levels outside cost `far`
            mid = int(np.partition(k, k.size // 2)[k.size // 2])
            lo = max(lo, mid - DQ_RATE_SPAN // 2)
            k = k[(k >= lo) & (k < lo + DQ_RATE_SPAN)]
        c2 = 2 * np.bincount(k - lo) + 1 if k.size else np.full(1, 2)  # twice (counts + 1/2)
        bits = math.log2(int(c2.sum())) - log2_counts(c2)  # -log2(c / sum c), the same on every CPU
        rates.append((lo - 2, np.concatenate([[bits.max() + 2] * 2, bits, [bits.max() + 2] * 2]), float(bits.max() + 4)))
    return run(float(lam), rates)


def grid_params(lo: np.ndarray, hi: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(origin, step) in float64 from float32 bounds: step = (hi - lo) / (2^bits - 1) per axis."""
    lo64 = np.asarray(lo, np.float32).astype(np.float64)
    hi64 = np.asarray(hi, np.float32).astype(np.float64)
    step = (hi64 - lo64) / float((1 << bits) - 1)
    return lo64, step


def quantize_positions(x: np.ndarray, lo, hi, bits: int) -> np.ndarray:
    origin, step = grid_params(lo, hi, bits)
    safe = np.where(step > 0, step, 1.0)
    q = np.rint((np.asarray(x, np.float64) - origin) / safe)
    return np.clip(q, 0, (1 << bits) - 1).astype(np.int64)


def dequantize_positions(q: np.ndarray, lo, hi, bits: int) -> np.ndarray:
    origin, step = grid_params(lo, hi, bits)
    mod = _rans()
    if mod is not None and q.ndim == 2 and q.shape[1] == 3:
        return mod.dequantize_positions(q, origin, step)
    return (origin + q.astype(np.float64) * step).astype(np.float32)


def morton_delta_codes(cls: np.ndarray, raw, bits: int) -> np.ndarray:
    """Sorted Morton codes (3 * bits wide) from their delta classes and raw bits: delta = 0 for
    class 0, else 2^(c-1) plus the c - 1 raw bits below it (MSB first); codes = prefix sums."""
    from .entropy import unpack_bits

    if cls.size and (cls.min() < 0 or cls.max() > 3 * bits):
        raise FormatError("positions: Morton delta class out of range")
    mod = _rans()
    if mod is not None:
        try:
            return mod.morton_delta_codes(np.ascontiguousarray(cls, np.int64), bytes(raw), min(3 * bits, 57), 3 * bits)
        except ValueError as e:
            raise FormatError(f"positions: {e}") from None
    width = np.maximum(cls - 1, 0)
    low = unpack_bits(raw, width, len(cls)).astype(np.int64)
    codes = np.cumsum(np.where(cls > 0, (np.int64(1) << width) | low, 0))
    if codes.size and codes[-1] >= (1 << (3 * bits)):
        raise FormatError("positions: Morton code out of range")
    return codes


def classed_means(codes: np.ndarray, cls: np.ndarray, ref, cmax: int, lo, hi, bits: int) -> np.ndarray:
    """Adaptive positions: Gaussian i of class c has the coarse Morton code codes[i] (grid of
    bits - cmax bits) and cmax - c raw refinement bits per axis (x, y, z, MSB first); it goes to
    the centre of its 2^c-wide cell of the full grid. float32 (n, 3)."""
    origin, step = grid_params(lo, hi, bits)
    mod = _rans()
    if mod is not None:
        try:
            return mod.classed_means(np.ascontiguousarray(codes, np.int64), np.ascontiguousarray(cls, np.int64),
                                     bytes(ref), cmax, origin, step)
        except ValueError as e:
            raise FormatError(f"positions: {e}") from None
    _, qf = classed_cells(codes, cls, ref, cmax)
    return (origin + qf * step).astype(np.float32)


def classed_cells(codes: np.ndarray, cls: np.ndarray, ref, cmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(cell, grid coordinate) of adaptive positions (`classed_means`): each Gaussian's cell on the
    grid of bits - c bits (int64 (n, 3)) and the centre of that 2^c-wide cell on the full grid
    (float64 (n, 3), exact)."""
    from .entropy import unpack_bits

    n = len(codes)
    coarse = morton_decode(codes.astype(np.uint64))
    fine = unpack_bits(ref, np.repeat(cmax - cls, 3), 3 * n).astype(np.int64).reshape(n, 3)
    cell = (coarse << (cmax - cls)[:, None]) | fine
    half = ((np.int64(1) << cls) - 1).astype(np.float64)[:, None] / 2
    return cell, cell.astype(np.float64) * (np.int64(1) << cls).astype(np.float64)[:, None] + half


def _spread3(v: np.ndarray) -> np.ndarray:
    """Insert two zero bits between the low 21 bits of v (standard 3D Morton bit trick)."""
    x = v.astype(np.uint64) & np.uint64(0x1FFFFF)
    x = (x | (x << np.uint64(32))) & np.uint64(0x1F00000000FFFF)
    x = (x | (x << np.uint64(16))) & np.uint64(0x1F0000FF0000FF)
    x = (x | (x << np.uint64(8))) & np.uint64(0x100F00F00F00F00F)
    x = (x | (x << np.uint64(4))) & np.uint64(0x10C30C30C30C30C3)
    x = (x | (x << np.uint64(2))) & np.uint64(0x1249249249249249)
    return x


def _compact3(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64) & np.uint64(0x1249249249249249)
    x = (x | (x >> np.uint64(2))) & np.uint64(0x10C30C30C30C30C3)
    x = (x | (x >> np.uint64(4))) & np.uint64(0x100F00F00F00F00F)
    x = (x | (x >> np.uint64(8))) & np.uint64(0x1F0000FF0000FF)
    x = (x | (x >> np.uint64(16))) & np.uint64(0x1F00000000FFFF)
    x = (x | (x >> np.uint64(32))) & np.uint64(0x1FFFFF)
    return x.astype(np.int64)


def morton_encode(q: np.ndarray) -> np.ndarray:
    """(N,3) non-negative ints -> uint64 codes, bit 3i = x_i, 3i+1 = y_i, 3i+2 = z_i."""
    mod = _rans()
    if mod is not None and q.ndim == 2 and q.shape[1] == 3:
        return mod.morton_encode(q)
    return _spread3(q[:, 0]) | (_spread3(q[:, 1]) << np.uint64(1)) | (_spread3(q[:, 2]) << np.uint64(2))


def morton_decode(code: np.ndarray) -> np.ndarray:
    mod = _rans()
    if mod is not None:
        return mod.morton_decode(np.ravel(code))
    c = code.astype(np.uint64)
    return np.stack([_compact3(c), _compact3(c >> np.uint64(1)), _compact3(c >> np.uint64(2))], 1)


# ----------------------------------------------------------------------------- quaternions
def quats_to_s3(quats: np.ndarray, step) -> np.ndarray:
    """wxyz quaternions -> (N,4) ints: [index of largest |component|, three others quantized].

    The quaternion is normalised (zero -> identity) and its sign flipped so the largest component
    is positive (q and -q are the same rotation); the other three lie in [-1/sqrt2, 1/sqrt2]."""
    mod = _rans()
    if mod is not None and np.ndim(step) == 0 and float(step) > 0 and np.ndim(quats) == 2 and np.shape(quats)[1] == 4:
        out = mod.quats_to_s3(quats, float(step))
        if out is not None:  # None: non-finite input or huge symbols, left to the code below
            return out
    big, rest = quats_rest(quats)
    return np.concatenate([big[:, None], quantize(rest, step)], 1)


def float_rows(a, width: int) -> bool:
    """``a`` is a float numpy array of rows of ``width`` values: what the native quaternion helpers
    take (as float64) with the same results as the numpy code."""
    return isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.ndim == 2 and a.shape[1] == width


def quats_rest(quats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest-three form before quantization: (index of the largest |component|, the other
    three in increasing index order, float64, clipped to +-1/sqrt2), of the normalised quaternion
    with the sign that makes the largest component positive."""
    mod = _rans()
    if mod is not None and float_rows(quats, 4):
        out = mod.quats_rest(quats)  # the same operations in one pass
        if out is not None:  # (None: a non-finite input)
            return out
    q = np.asarray(quats, np.float64)
    norm = np.sqrt((q * q).sum(1, keepdims=True))
    zero = norm[:, 0] == 0
    q = np.where(zero[:, None], np.array([1.0, 0, 0, 0]), q / np.where(norm > 0, norm, 1.0))
    big = np.argmax(np.abs(q), 1)
    sign = np.where(q[np.arange(len(q)), big] < 0, -1.0, 1.0)
    q = q * sign[:, None]
    rest = np.take_along_axis(q, _rest_index()[big], 1)  # (N,3) the three other components
    return big.astype(np.int64), np.clip(rest, -INV_SQRT2, INV_SQRT2)


def s3_to_quats(s3: np.ndarray, step) -> np.ndarray:
    mod = _rans()
    row = np.ndim(step) == 2 and np.shape(step) == (len(s3), 1)  # one step per row, (N, 1)
    if mod is not None and (np.ndim(step) == 0 or row) and s3.ndim == 2 and s3.shape[1] == 4:
        out = mod.s3_to_quats(s3, 0.0, np.ascontiguousarray(np.asarray(step, np.float64)[:, 0])) if row \
            else mod.s3_to_quats(s3, float(step))
        if out is None:
            raise FormatError("quaternion: largest-component index out of range")
        return out
    big = s3[:, 0]
    if big.size and (big.min() < 0 or big.max() > 3):
        raise FormatError("quaternion: largest-component index out of range")
    rest = s3[:, 1:].astype(np.float64) * np.asarray(step, np.float64)
    a, b, c = rest[:, 0], rest[:, 1], rest[:, 2]
    w = np.sqrt(np.maximum(0.0, 1.0 - ((a * a + b * b) + c * c)))
    out = np.zeros((len(s3), 4), np.float64)
    out[np.arange(len(s3)), big] = w
    np.put_along_axis(out, _rest_index()[big], rest, 1)
    return out.astype(np.float32)


def _rest_index() -> np.ndarray:
    return np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
