"""`Splats`: the one scene type used everywhere (loaders, renderer, trainer, stages, codecs).

Conventions are those of the INRIA 3DGS `.ply` and of gsplat, so no conversion is needed at
either edge:

- ``means``     (N, 3) float32 world positions
- ``quats``     (N, 4) float32 rotation quaternions, **wxyz**, not necessarily unit length
- ``scales``    (N, 3) float32 **log** scales
- ``opacities`` (N,)   float32 opacity **logits** (opacity = sigmoid(logit))
- ``sh0``       (N, 1, 3) float32 degree-0 SH coefficients (the ``f_dc_*`` of the PLY)
- ``shN``       (N, K, 3) float32 higher-order SH, K = (d+1)^2 - 1 for degree d in 0..3

and one flag, ``antialiased``: the scene was made for gsplat's "antialiased" render mode (each
Gaussian's opacity scaled by how much of its screen footprint is its own rather than the 0.3 px^2
low-pass filter; gsplat's form of Mip-Splatting's 2D filter, SPZ's antialiased flag). `gscomp.render`
honours it; `.gsz`, SPZ and gscomp's `.ply` (a header comment) keep it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch

from .errors import GscompError

SH_C0 = 0.28209479177387814
FIELDS = ("means", "quats", "scales", "opacities", "sh0", "shN")
# An opacity logit past +-30 renders as one at +-30 (alpha within 1e-13 of 0 or 1). Readers take
# an infinite logit (alpha exactly 0 or 1) as this, and encoders clamp larger ones to it: the
# codecs' quantizers would need one level per step up to the value.
OPACITY_LOGIT_MAX = 30.0


def num_sh_rest(degree: int) -> int:
    """Number of non-DC SH coefficients per colour channel for an SH degree."""
    return (degree + 1) ** 2 - 1


def sh_degree_from_rest(k: int) -> int:
    for d in range(4):
        if num_sh_rest(d) == k:
            return d
    raise GscompError(f"{k} higher-order SH coefficients per channel is not a valid SH degree (0, 3, 8 or 15)")


def take_rows(t: torch.Tensor, index) -> torch.Tensor:
    """``t[index]``; a permutation/gather of plain CPU data by an int64 index goes through
    numpy's take, several times faster than torch's advanced indexing (the codec reorders
    millions of rows). Same values, same errors for out-of-range indices (IndexError)."""
    if (isinstance(index, torch.Tensor) and index.dtype == torch.int64 and index.ndim == 1
            and index.device.type == "cpu" and t.device.type == "cpu" and not t.requires_grad
            and t.dtype in (torch.float32, torch.float64, torch.int64) and t.ndim >= 1):
        return torch.from_numpy(np.take(t.numpy(), index.numpy(), axis=0))
    return t[index]


def all_finite(t: torch.Tensor) -> bool:
    """Fast finiteness test: a finite sum proves every element finite (NaN/inf propagate); only a
    non-finite sum (or an overflowing one) needs the element-wise check. On CPU this is one numpy
    pass, which also avoids torch's intra-op thread start-up on a busy machine."""
    if t.device.type == "cpu":
        a = t.detach().numpy() if t.dtype in (torch.float32, torch.float64) else t.detach().float().numpy()
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(a.sum()):
                return True
        return bool(np.isfinite(a).all())
    return bool(torch.isfinite(t).all())


def first_nonfinite_row(t: torch.Tensor) -> int | None:
    """The first row (Gaussian) of ``t`` holding an inf or NaN, or None when all are finite."""
    if not t.numel() or all_finite(t):
        return None
    return int((~torch.isfinite(t.reshape(len(t), -1))).any(1).nonzero()[0, 0])


@dataclass(eq=False)  # (== of tensors is elementwise: compare scenes with same_as)
class Splats:
    """A scene of N Gaussians: six tensor fields in the INRIA 3DGS conventions and the render
    mode flag, as listed in this module's docstring (``help(gscomp.splats)``). Every loader,
    the renderer, the trainer and the codecs take and give this type. Compare two with
    `same_as`, change fields with `replace`, check them with `validate`."""

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    sh0: torch.Tensor
    shN: torch.Tensor
    antialiased: bool = False

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_rest(int(self.shN.shape[1]))

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        for f in FIELDS:
            yield f, getattr(self, f)

    def to_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.items())

    def map(self, fn) -> "Splats":
        """Apply ``fn`` to every tensor (e.g. ``lambda t: t.detach()``)."""
        return replace(self, **{k: fn(v) for k, v in self.items()})

    def to(self, *args, **kwargs) -> "Splats":
        return self.map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "Splats":
        return self.map(lambda t: t.detach())

    def clone(self) -> "Splats":
        return self.map(lambda t: t.clone())

    def __getitem__(self, index) -> "Splats":
        """Select Gaussians by index tensor, slice or boolean mask; an integer i selects [i:i+1]
        (a Splats of one Gaussian: every field keeps its leading N dimension)."""
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"Gaussian {index} is out of range for {n}")
            index = slice(int(index) % n, int(index) % n + 1)
        return self.map(lambda t: take_rows(t, index))

    def replace(self, **changes) -> "Splats":
        return replace(self, **changes)

    def same_as(self, other: "Splats") -> bool:
        """The same Gaussians bit for bit (every field's shape, dtype and values; the render mode)."""
        return self.antialiased == other.antialiased and all(
            a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b) for (_, a), (_, b) in zip(self.items(), other.items()))

    @property
    def device(self) -> torch.device:
        return self.means.device

    # ------------------------------------------------------------------ constructors
    @staticmethod
    def empty(sh_degree: int = 3, n: int = 0, dtype=torch.float32) -> "Splats":
        """``n`` Gaussians at the origin (identity rotation, zeros elsewhere) of degree ``sh_degree``."""
        if isinstance(sh_degree, bool) or not isinstance(sh_degree, (int, np.integer)) or not 0 <= sh_degree <= 3:
            raise GscompError(f"sh_degree must be an integer in 0..3, got {sh_degree!r} (Splats.empty(sh_degree, n))")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise GscompError(f"n must be an integer >= 0, got {n!r} (Splats.empty(sh_degree, n))")
        k = num_sh_rest(sh_degree)
        return Splats(
            means=torch.zeros(n, 3, dtype=dtype),
            quats=torch.tensor([1.0, 0, 0, 0], dtype=dtype).repeat(n, 1),
            scales=torch.zeros(n, 3, dtype=dtype),
            opacities=torch.zeros(n, dtype=dtype),
            sh0=torch.zeros(n, 1, 3, dtype=dtype),
            shN=torch.zeros(n, k, 3, dtype=dtype),
        )

    @staticmethod
    def cat(parts: list["Splats"]) -> "Splats":
        """Concatenate scenes; they must agree on `antialiased` (one render mode per scene), SH
        degree (`with_sh_degree` brings one to another's) and dtype."""
        parts = list(parts)
        if not parts or not all(isinstance(p, Splats) for p in parts):
            raise GscompError("Splats.cat takes a non-empty list of Splats")
        modes = {bool(p.antialiased) for p in parts}
        if len(modes) > 1:
            raise GscompError("Splats.cat: the parts mix antialiased and classic scenes (one render mode per scene)")
        if len(degrees := {p.sh_degree for p in parts}) > 1:
            raise GscompError(f"Splats.cat: the parts have SH degrees {sorted(degrees)}; bring them to one with "
                              "with_sh_degree(d) first")
        if len(dtypes := {p.means.dtype for p in parts}) > 1:
            raise GscompError(f"Splats.cat: the parts mix dtypes {sorted(map(str, dtypes))}")
        return Splats(**{f: torch.cat([getattr(p, f) for p in parts], 0) for f in FIELDS},
                      antialiased=modes.pop() if modes else False)

    def with_sh_degree(self, degree: int) -> "Splats":
        """Drop (or zero-pad) higher-order SH to reach ``degree`` (0..3)."""
        if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or not 0 <= degree <= 3:
            raise GscompError(f"SH degree must be an integer in 0..3, got {degree!r}")
        k = num_sh_rest(int(degree))
        cur = self.shN.shape[1]
        if k <= cur:
            return self.replace(shN=self.shN[:, :k].contiguous())
        pad = self.shN.new_zeros(len(self), k - cur, 3)
        return self.replace(shN=torch.cat([self.shN, pad], 1))

    # ------------------------------------------------------------------ validation
    def validate(self, what: str = "splats", values: bool = True) -> "Splats":
        """Check shapes, dtypes and (``values``) finiteness; raise one clear `GscompError` on the
        first problem. ``values=False`` reads no data (no pass over the tensors, no device sync)."""
        n = self.means.shape[0] if self.means.ndim >= 1 else -1
        expect = {
            "means": (n, 3),
            "quats": (n, 4),
            "scales": (n, 3),
            "opacities": (n,),
            "sh0": (n, 1, 3),
        }
        for name, shape in expect.items():
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor):
                raise GscompError(f"{what}: {name} is {type(t).__name__}, expected a torch.Tensor")
            if tuple(t.shape) != shape:
                raise GscompError(f"{what}: {name} has shape {tuple(t.shape)}, expected {shape}")
        if self.shN.ndim != 3 or self.shN.shape[0] != n or self.shN.shape[2] != 3:
            raise GscompError(f"{what}: shN has shape {tuple(self.shN.shape)}, expected ({n}, K, 3)")
        sh_degree_from_rest(int(self.shN.shape[1]))
        if not isinstance(self.antialiased, (bool, np.bool_)):
            raise GscompError(f"{what}: antialiased is {self.antialiased!r}, expected True or False")
        dtype = self.means.dtype
        for name, t in self.items():
            if not t.is_floating_point():
                raise GscompError(f"{what}: {name} has dtype {t.dtype}, expected a floating-point tensor")
            if t.dtype != dtype:
                raise GscompError(f"{what}: {name} has dtype {t.dtype} but means has {dtype}")
            if t.device != self.means.device:
                raise GscompError(f"{what}: {name} is on {t.device} but means is on {self.means.device}")
            if t.is_meta:  # (shapes only, no data: every use would fail deep inside torch)
                raise GscompError(f"{what}: {name} is a meta tensor (no data)")
            if values and (bad := first_nonfinite_row(t)) is not None:
                raise GscompError(f"{what}: {name} has non-finite values (first at Gaussian {bad})")
        return self

    # ------------------------------------------------------------------ derived quantities
    def colors_dc(self) -> torch.Tensor:
        """RGB of the degree-0 term (what a DC-only viewer shows), (N, 3), unclamped."""
        return self.sh0[:, 0] * SH_C0 + 0.5

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self) == 0:
            z = self.means.new_zeros(3)
            return z, z
        return self.means.min(0).values, self.means.max(0).values


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """(N, 4) wxyz -> (N, 3, 3) rotation matrices; the quaternion is normalised with a clamp, so a
    zero quaternion maps to the identity (the convention of every render backend)."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(-1, 3, 3)


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """Inverse of `Splats.colors_dc` for initialisation: (N,3) colours -> (N,1,3) SH DC."""
    return ((rgb - 0.5) / SH_C0).unsqueeze(1)


__all__ = ["Splats", "SH_C0", "FIELDS", "take_rows", "num_sh_rest", "sh_degree_from_rest", "rgb_to_sh0", "quat_to_rotmat"]
