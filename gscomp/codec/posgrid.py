"""Position grids of the `positions` stage.

A uniform grid over the bounding box (codecs ``morton-delta/v1``, ``morton-delta-classed/v1``)
fails on unbounded captures: a few background Gaussians hundreds of units away stretch the box,
and the scene's centre, where the cameras are, gets steps far coarser than its Gaussians. So when
the box reaches far past ``core`` times the median distance from the median point (TAIL_RATIO), the
grid is uniform only over that core box, and each axis goes on beyond it with logarithmic tails (``.../v2``):
the step grows in proportion to the distance from the core's centre plane (constant relative
precision, as the background's angular size from inside the core), continuous with the core's
step at its edge and never coarser than the bounding-box grid's step would have been there (when
the Morton codes' 19 bits per axis leave the core all of ``bits``; else, as for lossless-ish, the
core gets fewer, see `PosGrid.fit`).

Decoding is bit-exact on every machine: the tails' exponential is `exp_det`, a fixed sequence of
IEEE double operations (no libm, no vectorised transcendental), specified in docs/gsz-format.md.
The encoder picks each index by comparing decoded values, so its bytes do not depend on the CPU's
log either.
"""
from __future__ import annotations

import math
import struct

import numpy as np

from ..errors import FormatError, GscompError
from . import quant as Q

CORE_DEFAULT = 3.0  # core half-width, in median distances from the median point
# Tails only when the box is this many times the core on some axis (the box grid would then be 3+
# bits coarser in the core). Below it the box grid is kept: on sodacan (a real capture whose box is
# 2.9x its core) tails cost 3.3 bits/Gaussian more for the same PSNR from its own cameras.
TAIL_RATIO = 8.0

# exp(y) = 2^k exp(r), k = floor(y / ln 2 + 1/2), r = (y - k LN2_HI) - k LN2_LO (Cody-Waite: LN2_HI
# has 32 significant bits, so k LN2_HI is exact for |k| < 2^20), exp(r) by its Taylor series to
# r^13 / 13! in Horner form (|r| <= 0.35: truncation < 1e-17, far below a float32 ulp).
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e+00
EXP_TERMS = 13
_INV_FACT = [1.0 / math.factorial(i) for i in range(EXP_TERMS + 1)]


def exp_det(y: np.ndarray) -> np.ndarray:
    """exp of float64 values in [0, 700], the same bits on every IEEE machine."""
    y = np.minimum(np.asarray(y, np.float64), 800.0)  # past float range anyway: inf, not an int overflow
    k = np.floor(y * INV_LN2 + 0.5)
    r = (y - k * LN2_HI) - k * LN2_LO
    p = np.full_like(r, _INV_FACT[EXP_TERMS])
    for i in range(EXP_TERMS - 1, -1, -1):
        p = p * r + _INV_FACT[i]
    with np.errstate(over="ignore"):
        return np.ldexp(p, k.astype(np.int64))


def box_bounds(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (min, max) per axis of (n, 3) float32 positions, from contiguous columns (numpy's
    axis-0 reductions over 3-wide rows are slow: 26 ms each on 500k)."""
    cols = np.ascontiguousarray(m.T)
    return cols.min(1), cols.max(1)


def in_box(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Which of the (n, 3) positions lie within [lo, hi] on every axis."""
    return ((x >= lo) & (x <= hi)).all(1)


def check_core(name: str, v) -> float:
    """A `core` setting checked: 0 (always the box grid) or a number of median distances in
    0.5..1000, else a one-line error naming ``name``."""
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and (v == 0 or 0.5 <= v <= 1000)):
        raise GscompError(f"{name} must be 0 (a grid over the bounding box) or a number in 0.5..1000, got {v!r}")
    return float(v)


def core_bounds(means: np.ndarray, core: float = CORE_DEFAULT) -> tuple[np.ndarray, np.ndarray] | None:
    """float32 (lo, hi) of the core box of an unbounded scene: the median point +- ``core`` times
    the median distance from it, clipped to the bounding box (an axis where that is empty keeps
    the box); None for a bounded scene (the box is not over TAIL_RATIO times the core on any axis,
    or ``core`` is 0). The same on every machine and for every order of the Gaussians (reorder
    and encode fit it before and after sorting): float64 sums in a fixed order, medians."""
    m = np.asarray(means, np.float32)
    if len(m) < 2 or not core:
        return None
    lo, hi = box_bounds(m)
    cols = np.ascontiguousarray(m.T, np.float64)  # all of them: the grid must not depend on the order
    c = np.array([np.median(v) for v in cols])
    d = cols - c[:, None]
    r = float(np.median(np.sqrt((d[0] * d[0] + d[1] * d[1]) + d[2] * d[2]))) * float(core)
    with np.errstate(over="ignore"):  # beyond float32 (a scene over 1e38) is +-inf, clipped to the box here
        clo = np.maximum(lo, (c - r).astype(np.float32))
        chi = np.minimum(hi, (c + r).astype(np.float32))
    flat = ~(clo < chi)
    clo, chi = np.where(flat, lo, clo), np.where(flat, hi, chi)
    span = chi.astype(np.float64) - clo.astype(np.float64)
    if not ((hi.astype(np.float64) - lo.astype(np.float64)) > TAIL_RATIO * span).any():
        return None
    return clo, chi


class PosGrid:
    """Per axis: grid index j in [0, T) -> position. Core: ``2^bits`` indices uniformly over
    [lo, hi] (the v1 grid when there are no tails); ``tail_lo`` / ``tail_hi`` more indices below
    and above it, where (with J = 2^bits - 1, h = (hi - lo) / J, w = (hi - lo) / 2, t = the index
    distance past the core's end times h) x = hi + w expm1(t / w) (mirrored below)."""

    def __init__(self, bits: int, lo, hi, tail_lo=(0, 0, 0), tail_hi=(0, 0, 0)):
        self.bits = bits
        self.lo = np.asarray(lo, np.float32).reshape(3)
        self.hi = np.asarray(hi, np.float32).reshape(3)
        self.tail_lo = np.asarray(tail_lo, np.int64).reshape(3)
        self.tail_hi = np.asarray(tail_hi, np.int64).reshape(3)
        self.J = float((1 << bits) - 1)
        lo64, hi64 = self.lo.astype(np.float64), self.hi.astype(np.float64)
        self.h = (hi64 - lo64) / self.J
        self.w = (hi64 - lo64) / 2.0
        self.size = self.tail_lo + (1 << bits) + self.tail_hi  # indices per axis

    @property
    def tails(self) -> bool:
        return bool(self.tail_lo.any() or self.tail_hi.any())

    def in_core(self, x: np.ndarray) -> np.ndarray:
        """Which positions lie in the core box (all of them on the box grid)."""
        x = np.asarray(x, np.float32)
        if not self.tails:
            return np.ones(len(x), bool)
        return in_box(x, self.lo, self.hi)

    @property
    def index_bits(self) -> int:
        """Bits per axis of the Morton codes: enough for the largest axis."""
        return max(self.bits, (int(self.size.max()) - 1).bit_length())

    # -- fitting (encoder)
    @classmethod
    def fit(cls, means: np.ndarray, bits: int, core: float = CORE_DEFAULT) -> "PosGrid":
        """The grid for these positions: the v1 box grid unless the box is over TAIL_RATIO times
        the core box (``core`` median distances around the median point) on some axis (``core``
        0: always the box)."""
        m = np.asarray(means, np.float32)
        if len(m) == 0:
            return cls(bits, np.zeros(3), np.zeros(3))
        lo, hi = box_bounds(m)
        box = cls(bits, lo, hi)
        bounds = core_bounds(m, core)
        if bounds is None:
            return box
        clo, chi = bounds
        # The tails take up to a few bits per axis beyond the core's: where bits + those pass the
        # Morton codes' limit (19 per axis: lossless-ish), the core gets fewer bits, as long as its
        # cells stay smaller than the box grid's (the product of the per-axis step ratios below 1)
        for b in range(bits, 0, -1):
            core = cls(b, clo, chi)
            tl = [core._tail_count(a, float(lo[a]), -1) for a in range(3)]
            th = [core._tail_count(a, float(hi[a]), +1) for a in range(3)]
            grid = cls(b, clo, chi, tl, th)
            if grid.index_bits <= Q.MAX_POS_BITS:
                return grid if grid._finer_than(box) else box
        return box

    def _finer_than(self, other: "PosGrid") -> bool:
        """Whether this grid's core cells are smaller than ``other``'s cells: the product of the
        per-axis step ratios, over the axes where both have an extent, is below 1."""
        ratio = 1.0
        for a, b in zip(self.h.tolist(), other.h.tolist()):
            if a > 0 and b > 0:
                ratio *= a / b  # Python floats, no library log: the same choice on every machine
        return ratio < 1.0

    def _tail(self, a: int, t: np.ndarray, side: int) -> np.ndarray:
        """float64 positions at index distances t >= 0 past the core's end on axis a."""
        w = self.w[a]
        e = exp_det((np.asarray(t, np.float64) * self.h[a]) / w) - 1.0
        return self.hi[a] + w * e if side > 0 else self.lo[a] - w * e

    def _tail_count(self, a: int, end: float, side: int) -> int:
        """Fewest tail indices whose last one reaches ``end`` (the box's end on axis a)."""
        edge = float(self.hi[a] if side > 0 else self.lo[a])
        if (end - edge) * side <= 0:
            return 0
        w, h = self.w[a], self.h[a]
        n = max(1, int(math.ceil(w / h * math.log1p(abs(end - edge) / w))))
        reach = lambda k: (float(self._tail(a, np.array([k]), side)[0]) - end) * side >= 0  # noqa: E731
        while n > 1 and reach(n - 1):
            n -= 1
        while not reach(n):
            n += 1
        return n

    # -- coding
    def quantize(self, x: np.ndarray) -> np.ndarray:
        """(n, 3) int64 indices of the nearest grid positions (ties: the lower index)."""
        x = np.asarray(x, np.float32)
        if not self.tails:
            return Q.quantize_positions(x, self.lo, self.hi, self.bits)
        x64 = x.astype(np.float64)
        q = np.empty(x.shape, np.int64)
        for a in range(3):
            v = x64[:, a]
            safe = self.h[a] if self.h[a] > 0 else 1.0
            j = np.clip(np.rint((v - float(self.lo[a])) / safe), 0, self.J).astype(np.int64)
            for side, n_t in ((1, int(self.tail_hi[a])), (-1, int(self.tail_lo[a]))):
                out = (v > self.hi[a]) if side > 0 else (v < self.lo[a])
                if not n_t or not out.any():
                    continue
                dist = np.abs(v[out] - float(self.hi[a] if side > 0 else self.lo[a]))
                guess = np.rint(self.w[a] / self.h[a] * np.log1p(dist / self.w[a]))
                cand = np.clip(guess[:, None] + np.array([-1.0, 0.0, 1.0]), 0, n_t)  # t = 0 is the core's end
                err = np.abs(self._tail(a, cand, side) - v[out][:, None])
                t = cand[np.arange(len(cand)), np.argmin(err, 1)].astype(np.int64)  # first minimum: lower t
                j[out] = self.J + t if side > 0 else -t
            q[:, a] = j + self.tail_lo[a]
        return q

    def to_world(self, q: np.ndarray) -> np.ndarray:
        """float32 (n, 3) positions of float64 grid coordinates (indices, or cell centres)."""
        q = np.asarray(q, np.float64)
        if not self.tails:
            origin, step = Q.grid_params(self.lo, self.hi, self.bits)
            return (origin + q * step).astype(np.float32)
        out = np.empty(q.shape, np.float64)
        for a in range(3):
            j = q[:, a] - float(self.tail_lo[a])
            out[:, a] = float(self.lo[a]) + j * self.h[a]
            up, down = j > self.J, j < 0
            if up.any():
                out[up, a] = self._tail(a, j[up] - self.J, 1)
            if down.any():
                out[down, a] = self._tail(a, -j[down], -1)
        with np.errstate(over="ignore", invalid="ignore"):
            out = out.astype(np.float32)
        if not np.isfinite(out).all():
            raise FormatError("positions: a position past the float32 range")
        return out

    def world_step(self, x: np.ndarray) -> np.ndarray:
        """(n, 3) float64 grid step at each position (what one index is worth there)."""
        x64 = np.asarray(x, np.float32).astype(np.float64)
        s = np.broadcast_to(self.h, x64.shape).copy()
        if self.tails:
            past = np.maximum(np.maximum(x64 - self.hi.astype(np.float64), self.lo.astype(np.float64) - x64), 0.0)
            s *= 1.0 + past / np.where(self.w > 0, self.w, 1.0)
        return s

    # -- serialization (the v2 payload's grid block)
    def pack(self) -> bytes:
        return (struct.pack("<6f", *self.lo.tolist(), *self.hi.tolist())
                + struct.pack("<6I", *self.tail_lo.tolist(), *self.tail_hi.tolist()))

    @classmethod
    def unpack(cls, r, bits: int) -> "PosGrid":
        bounds = np.frombuffer(bytes(r.take(24)), "<f4").astype(np.float32)
        tails = np.frombuffer(bytes(r.take(24)), "<u4").astype(np.int64)
        if not np.isfinite(bounds).all() or not (bounds[:3] <= bounds[3:]).all():
            raise FormatError("positions: bad core box")
        if (tails > (1 << Q.MAX_POS_BITS)).any():
            raise FormatError("positions: tail too long")
        grid = cls(bits, bounds[:3], bounds[3:], tails[:3], tails[3:])
        if ((tails[:3] + tails[3:] > 0) & ~(bounds[:3] < bounds[3:])).any():
            raise FormatError("positions: tails on an empty core")
        if grid.index_bits > Q.MAX_POS_BITS:
            raise FormatError("positions: grid too large")
        return grid

    def check_indices(self, q: np.ndarray) -> None:
        if q.size and (q >= self.size[None, :]).any():
            raise FormatError("positions: grid index out of range")


def morton_order(grid: PosGrid, means: np.ndarray) -> np.ndarray:
    """Rows of ``means`` in the Morton order of their cells on ``grid`` (stable: ties keep their
    order): the order the `positions` stage codes them in, on its grid."""
    return np.argsort(Q.morton_encode(grid.quantize(means)), kind="stable")


__all__ = ["CORE_DEFAULT", "TAIL_RATIO", "PosGrid", "core_bounds", "check_core", "exp_det", "morton_order"]
