"""Rotations as body axes (the `attributes` stage's ``quat_axes``, codec ``axes-classed/v1``).

A quaternion's three components share one step, so every rotation error costs the same bits
whichever way it turns the Gaussian. But turning a Gaussian about one of its own axes changes its
render by the spread of the other two scales: about the longest axis of an elongated one, or
about the normal of a round flat one, it barely shows (biker, 8 orbit views of 512 px, random
turns of +-0.02 rad: 72.5 dB about the longest axis, 62.5 and 64.1 dB about the others). So this
codes, per Gaussian:

- its *free axis*: of the sorted scales s1 >= s2 >= s3, the axis about which turning shows least,
  e1 when s2 - s3 <= s1 - s2 (an elongated Gaussian), else e3 (a flat one); its direction, made
  to point up (z >= 0: an axis has no sign), as the octahedral coordinates (u, v) of the upper
  hemisphere, on the quaternion step's grid (importance classes, trellis, as the quaternion's);
- the angle psi in [0, pi) of the next axis (e2 for e1, e1 for e3) about it, on a grid of
  N = round(pi / (step 2^(c + m))) angles (an axis has no sign: pi is a full turn for it), where
  m in 0..MAX_LEVEL is log2 of the ratio of the larger to the smaller of the two scale gaps,
  rounded: how much less turning about the free axis shows than turning about the others.
  (An angle grid up to 64x coarser saved 0.45% more on biker at the same step, and lost 0.13-0.14
  dB more from half the scene's radius and with a 10° field of view: README.)

The free axis and m come from the *decoded* log-scales (the scales are decoded first), with
`gscomp.codec.posgrid.exp_det` and products compared against exact powers of two; the angle's
sine and cosine from fixed Taylor polynomials: decoding is bit-exact on every IEEE machine
(docs/gsz-format.md gives every operation). The encoder picks each angle index by comparing the
decoded axes, so its bytes do not depend on the CPU's atan2 either.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import FormatError
from .entropy import _rans
from .posgrid import _INV_FACT, INV_LN2, LN2_HI, LN2_LO, exp_det

MAX_LEVEL = 4  # the angle's step is at most 2^4 times the direction's
GAP_CLAMP = 60.0  # log-scale differences past this are clamped (e^60: every level is reached long before)
PI = 3.141592653589793  # float64 nearest pi
HALF_PI = 1.5707963267948966
SIN_TERMS = 12  # sin x = sum_{i < 12} (-1)^i x^(2i+1) / (2i+1)!, cos x likewise to x^22 (|x| <= pi/2)
# int / int: the double nearest each (1/23! as 1.0 / float(23!) would be an ulp off: 23! is no double)
_SIN_C = [(-1) ** i / math.factorial(2 * i + 1) for i in range(SIN_TERMS)]
_COS_C = [(-1) ** i / math.factorial(2 * i) for i in range(SIN_TERMS)]


def free_axis_levels(log_scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(free axis index per Gaussian, 0 for e1 or 2 for e3; level m in 0..MAX_LEVEL) of (n, 3)
    decoded log-scales sorted largest first. With A = exp(l1 - l3), B = exp(l2 - l3) (each
    difference clamped to [0, GAP_CLAMP]): the gaps over s3 are g23 = B - 1 and g12 = A - B; the
    free axis is e1 when g23 <= g12, else e3; with r2 = big^2 / small^2 (big, small: the larger
    and smaller gap; inf when small is 0), m counts the k in 1..MAX_LEVEL with r2 >= 2^(2k - 1),
    so equal scales get MAX_LEVEL. The native codec module runs the same operations in one pass."""
    ls = np.ascontiguousarray(log_scales, np.float32)
    mod = _rans()
    if mod is not None:
        return mod.axes_levels(ls, _INV_FACT, LN2_HI, LN2_LO, INV_LN2, GAP_CLAMP, MAX_LEVEL)
    ls = ls.astype(np.float64)
    a = np.maximum(np.minimum(ls[:, 0] - ls[:, 2], GAP_CLAMP), 0.0)
    b = np.maximum(np.minimum(ls[:, 1] - ls[:, 2], GAP_CLAMP), 0.0)
    ea, eb = exp_det(a), exp_det(b)
    g23, g12 = eb - 1.0, ea - eb
    first = g23 <= g12
    big, small = np.where(first, g12, g23), np.where(first, g23, g12)
    big2, small2 = big * big, small * small
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(small2 > 0, big2 / small2, np.inf)
    m = np.searchsorted(np.ldexp(1.0, np.arange(1, 2 * MAX_LEVEL, 2)), r2, side="right").astype(np.int64)
    return np.where(first, 0, 2).astype(np.int64), m


def octahedral(d: np.ndarray) -> np.ndarray:
    """(n, 2) (u, v) of (n, 3) unit vectors with z >= 0 (encoder)."""
    l1 = (np.abs(d[:, 0]) + np.abs(d[:, 1])) + np.abs(d[:, 2])
    return np.stack([d[:, 0] / l1, d[:, 1] / l1], 1)


def direction(uv: np.ndarray) -> np.ndarray:
    """(n, 3) unit vectors of decoded (u, v): (u, v, max(0, 1 - |u| - |v|)) over its length."""
    u, v = uv[:, 0], uv[:, 1]
    z = np.maximum(0.0, (1.0 - np.abs(u)) - np.abs(v))
    n = np.sqrt((u * u + v * v) + z * z)
    return np.stack([u / n, v / n, z / n], 1)


def basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors t1, t2 with (t1, t2, d) orthonormal, of (n, 3) unit d with z >= 0 (Duff
    et al. 2017, "Building an orthonormal basis, revisited", its z >= 0 branch)."""
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    a = -1.0 / (1.0 + z)
    b = (x * y) * a
    return (np.stack([1.0 + (x * x) * a, b, -x], 1), np.stack([b, 1.0 + (y * y) * a, -y], 1))


def sincos(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sin, cos) of float64 angles in [0, pi], the same bits on every IEEE machine: with
    x = theta - pi/2, sin theta = cos x and cos theta = -sin x, each a Horner polynomial in x^2."""
    x = np.asarray(theta, np.float64) - HALF_PI
    x2 = x * x
    s = np.full_like(x, _SIN_C[-1])
    c = np.full_like(x, _COS_C[-1])
    for i in range(SIN_TERMS - 2, -1, -1):
        s = s * x2 + _SIN_C[i]
        c = c * x2 + _COS_C[i]
    return c, -(s * x)


def level_counts(step: float, levels: int) -> np.ndarray:
    """(levels,) int64 N_L = max(1, floor(pi / (step 2^L) + 1/2)) for L = 0..levels-1: the angles on
    psi's grid at each level."""
    per_level = np.ldexp(float(step), np.arange(levels, dtype=np.int32))
    return np.maximum(1.0, np.floor(PI / per_level + 0.5)).astype(np.int64)


def second_axis(t1: np.ndarray, t2: np.ndarray, k: np.ndarray, count: np.ndarray) -> np.ndarray:
    """(n, 3) axis at angle theta = k (pi / N) from t1 towards t2."""
    s, c = sincos(k.astype(np.float64) * (PI / count.astype(np.float64)))
    return c[:, None] * t1 + s[:, None] * t2


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1], a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                     a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]], 1)


def rotation(free: np.ndarray, d: np.ndarray, e: np.ndarray) -> np.ndarray:
    """(n, 3, 3) rotations whose columns are the body axes: (d, e, d x e) where the free axis is e1,
    (e, d x e, d) where it is e3 (right-handed either way)."""
    t = cross(d, e)
    first = (free == 0)[:, None]
    return np.stack([np.where(first, d, e), np.where(first, e, t), np.where(first, t, d)], 2)


def rotmat(q: np.ndarray) -> np.ndarray:
    """(n, 3, 3) float64 rotation matrices of (n, 4) unit wxyz quaternions."""
    w, x, y, z = np.asarray(q, np.float64).T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], 1)


def rotmat_to_quat(r: np.ndarray) -> np.ndarray:
    """wxyz quaternions of rotation matrices (Shepperd: divide by the largest of 4|w|, 4|x|, ...)."""
    tr = r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2]
    diag = np.stack([tr, r[:, 0, 0], r[:, 1, 1], r[:, 2, 2]], 1)
    k = np.argmax(diag, 1)
    q = np.zeros((len(r), 4))
    for i in range(4):
        m = k == i
        a = r[m]
        if i == 0:
            d = 2 * np.sqrt(np.maximum(1 + tr[m], 1e-300))
            q[m] = np.stack([d / 4, (a[:, 2, 1] - a[:, 1, 2]) / d, (a[:, 0, 2] - a[:, 2, 0]) / d, (a[:, 1, 0] - a[:, 0, 1]) / d], 1)
        else:
            j, l = i % 3, (i + 1) % 3  # the other two axes (0-based x=0, y=1, z=2 for i = 1, 2, 3)
            ii = i - 1
            d = 2 * np.sqrt(np.maximum(1 + a[:, ii, ii] - a[:, j, j] - a[:, l, l], 1e-300))
            v = np.zeros((m.sum(), 4))
            v[:, 0] = (a[:, l, j] - a[:, j, l]) / d
            v[:, 1 + ii] = d / 4
            v[:, 1 + j] = (a[:, j, ii] + a[:, ii, j]) / d
            v[:, 1 + l] = (a[:, l, ii] + a[:, ii, l]) / d
            q[m] = v
    return q


def to_quats(sym: np.ndarray, step: np.ndarray, k: np.ndarray, level: np.ndarray, counts: np.ndarray,
             free: np.ndarray) -> np.ndarray:
    """Decode: float32 (n, 4) wxyz quaternions of the direction symbols ``sym`` (n, 2) times each
    row's ``step`` (float64; |u|, |v| must be <= 2), angle indices ``k`` on grids of
    ``counts[level]`` angles (0 <= k < N), and free axes (`free_axis_levels`); a one-line
    FormatError for values out of range. The native codec module runs the same float64 operations
    in one pass."""
    mod = _rans()
    if mod is not None:
        out, err = mod.axes_to_quats(sym, step, k, level, counts, free, _SIN_C, _COS_C, PI, HALF_PI)
    else:
        out, err = None, 0
        uv = sym * np.asarray(step, np.float64)[:, None]
        if uv.size and not np.abs(uv).max() <= 2.0:
            err = 1
        elif level.size and (level.min() < 0 or level.max() >= len(counts) or ((k < 0) | (k >= counts[level])).any()):
            err = 2
        if not err:
            count = counts[level]
            d = direction(uv)
            t1, t2 = basis(d)
            out = rotmat_to_quat(rotation(free, d, second_axis(t1, t2, k, count))).astype(np.float32)
    if err:  # (the encoder's directions are within 1 + a step)
        raise FormatError("quats: axis direction out of range" if err == 1 else "quats: angle index out of range")
    return out


def pick_angles(t1: np.ndarray, t2: np.ndarray, target: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Encoder: per row the index k in [0, N) whose decoded axis is nearest ``target`` (a unit
    axis, either sign): the best of three around atan2's guess, by the decoded axes' |cos| to it."""
    p1, p2 = (target * t1).sum(1), (target * t2).sum(1)
    step = PI / count.astype(np.float64)
    guess = np.rint(np.mod(np.arctan2(p2, p1), PI) / step).astype(np.int64)
    best, score = np.zeros_like(guess), np.full(len(guess), -1.0)
    for off in (-1, 0, 1):
        k = np.mod(guess + off, count)
        s = np.abs((second_axis(t1, t2, k, count) * target).sum(1))
        better = s > score  # (ties: the first candidate)
        best, score = np.where(better, k, best), np.where(better, s, score)
    return best


__all__ = ["MAX_LEVEL", "level_counts", "basis", "direction", "free_axis_levels", "octahedral", "pick_angles",
           "rotation", "rotmat", "rotmat_to_quat", "second_axis", "sincos", "to_quats"]
