"""Helpers shared by the splat file readers and writers: atomic output, numpy <-> Splats,
quantisation helpers and the axis flip between SPZ's RUB and the PLY's RDF convention."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import FormatError, GscompError, Note
from ..fileio import atomic_open, atomic_write_bytes, check_regular  # noqa: F401  (re-exported for the format modules)
from ..splats import OPACITY_LOGIT_MAX, Splats, sh_degree_from_rest


class LossySaveWarning(Note):
    """save_splats dropped data the output format cannot hold."""


# Opacities stored as 8-bit sigmoid values include 0 and 255, whose logits are infinite.
# Clamp the probability so every decoded Splats is finite (logit(1e-6) ~ -13.8).
PROB_EPS = 1e-6


def read_error(path: str | os.PathLike, e: OSError) -> GscompError:
    """One-line error for an input file that cannot be opened or read."""
    if isinstance(e, FileNotFoundError):
        return GscompError(f"{path}: no such file")
    if isinstance(e, IsADirectoryError):
        return GscompError(f"{path}: is a directory, expected a file")
    return GscompError(f"{path}: cannot read ({e.strerror or e})")


def read_bytes(path: str | os.PathLike) -> bytes:
    check_regular(Path(path))
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise read_error(path, e) from None


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def logit(p: np.ndarray) -> np.ndarray:
    """Inverse sigmoid with the probability clamped to [PROB_EPS, 1-PROB_EPS] (finite output)."""
    p = np.clip(p.astype(np.float64), PROB_EPS, 1.0 - PROB_EPS)
    return np.log(p / (1.0 - p))


def to_u8(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (like C's std::round) and clamp to 0..255."""
    r = np.sign(x) * np.floor(np.abs(x) + 0.5)
    return np.clip(r, 0, 255).astype(np.uint8)


def clamped_rows(raw: np.ndarray) -> np.ndarray:
    """(N,) bool: rows with a value of an 8-bit field (0..255 before rounding) more than half a step
    past its ends, so that `to_u8` clamping it loses more than rounding does."""
    return ((raw < -0.5) | (raw > 255.5)).reshape(len(raw), -1).any(1)


def build_splats(
    path,
    means: np.ndarray,
    quats: np.ndarray,
    scales: np.ndarray,
    opacities: np.ndarray,
    sh0: np.ndarray,
    shN: np.ndarray,
    antialiased: bool = False,
) -> Splats:
    """Assemble float32 tensors into a Splats and validate it; any problem (NaN, inf, bad
    shape) becomes a one-line FormatError naming the file."""
    def t(a: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(a, dtype=np.float32)
        # Tensors own their memory: a view of a file's bytes is read-only, and a column viewing a
        # reader's matrix of all columns kept the whole matrix alive (the INRIA reader's opacity
        # column held its 59 columns: +0.67 GB with a 3M-Gaussian SH-3 scene). A reshaped view of
        # the whole of an array that owns its data keeps nothing more alive.
        whole = a.flags.owndata or (isinstance(a.base, np.ndarray) and a.base.flags.owndata and a.base.nbytes == a.nbytes)
        return torch.from_numpy(a if whole and a.flags.writeable else a.copy())

    opacities = np.asarray(opacities)
    if (inf := np.isinf(opacities)).any():  # (NaN stays an error below)
        k = int(inf.sum())
        warnings.warn(f"{path}: {k:,} opacity logit{' is' if k == 1 else 's are'} infinite (alpha exactly 0 or 1, as some "
                      f"converters write them): read as +-{OPACITY_LOGIT_MAX:g}", Note, stacklevel=3)
        opacities = np.where(inf, np.copysign(OPACITY_LOGIT_MAX, opacities), opacities)
    s = Splats(
        means=t(means).reshape(-1, 3),
        quats=t(quats).reshape(-1, 4),
        scales=t(scales).reshape(-1, 3),
        opacities=t(opacities).reshape(-1),
        sh0=t(sh0).reshape(-1, 1, 3),
        shN=t(shN),  # already (N, K, 3): K cannot be inferred by reshape when N == 0
        antialiased=bool(antialiased),
    )
    try:
        s.validate(str(path))
    except GscompError as e:
        raise FormatError(str(e)) from None
    return s


def splats_numpy(splats: Splats, what: str = "splats") -> dict[str, np.ndarray]:
    """Validated float32 numpy copies of every field (CPU, detached)."""
    if not isinstance(splats, Splats):
        raise GscompError(f"{what}: expected a Splats, got {type(splats).__name__}")
    splats.validate(what)
    return {k: v.detach().to("cpu", torch.float32).numpy() for k, v in splats.items()}


# ---------------------------------------------------------------- axis convention
# SPZ stores scenes in RUB (x right, y up, z back); the INRIA PLY (and gscomp) use RDF
# (x right, y down, z forward). The two differ by negating y and z, i.e. a 180 degree
# rotation about x (det = +1), so it maps rotations to rotations:
#   positions (x, y, z) -> (x, -y, -z); quaternion (w, x, y, z) -> (w, x, -y, -z);
#   each SH basis function is a polynomial in the view direction and just changes sign
#   according to its parity in y and z (3DGS basis order, per band):
#   band 1: y, z, x                                  -> -, -, +
#   band 2: xy, yz, 2z^2-x^2-y^2, xz, x^2-y^2         -> -, +, +, -, +
#   band 3: y(3x^2-y^2), xyz, y(4z^2-x^2-y^2), z(2z^2-3x^2-3y^2), x(4z^2-x^2-y^2),
#           z(x^2-y^2), x(x^2-3y^2)                   -> -, +, -, -, +, -, +
# The flip is its own inverse, so the same function converts in both directions.
SH_FLIP_YZ = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], dtype=np.float32)


def flip_yz(means: np.ndarray, quats_wxyz: np.ndarray, shN: np.ndarray):
    """Apply the RUB <-> RDF flip to numpy arrays (returns new arrays, inputs untouched)."""
    means = means.copy()
    means[:, 1:] *= -1
    quats_wxyz = quats_wxyz.copy()
    quats_wxyz[:, 2:] *= -1
    k = shN.shape[1]
    shN = shN * SH_FLIP_YZ[:k].reshape(1, k, 1).astype(shN.dtype)
    return means, quats_wxyz, shN


def normalize_quats(q: np.ndarray) -> np.ndarray:
    """Unit quaternions; all-zero rows become the identity (w=1)."""
    q = q.astype(np.float64)
    n = np.linalg.norm(q, axis=1, keepdims=True)
    out = np.where(n > 0, q / np.where(n > 0, n, 1.0), 0.0)
    out[n[:, 0] == 0, 0] = 1.0
    return out


def note_degree4(path) -> None:
    """SPZ and INRIA PLYs may hold SH degree 4; gscomp's scenes go up to 3. The bands are nested,
    so the first 15 coefficients are the degree-3 part: readers keep those, and say so."""
    warnings.warn(f"{path}: SH degree 4 is read as degree 3 (its band-4 coefficients are dropped)", Note, stacklevel=3)


def degree_for_rest(path, n_rest_per_channel: int) -> int:
    try:
        return sh_degree_from_rest(n_rest_per_channel)
    except GscompError as e:
        raise FormatError(f"{path}: {e}") from None
