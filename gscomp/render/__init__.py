"""The one render API: `render(splats, cameras, *, sh_degree, background, backend, antialiased)`.

Semantics (standard 3DGS; every backend implements exactly these):

- Projection: p = R @ mean + t (world_to_camera); Gaussians with z <= 0.01 are culled. Every
  backend works in coordinates centred on the first camera (`view_frame`), so a scene far from
  the origin (georeferenced: 1e5-1e7 units out) renders as precisely as one near it.
  Covariance R_q diag(exp(s))^2 R_q^T with the quaternion normalised (zero quaternion = identity).
  EWA: cov2d = J W cov3 W^T J^T with the tangent clamped to 1.3x the field of view (per side, for an
  off-centre principal point), plus 0.3 px^2 low-pass dilation; det <= 0 culls. Pixel (i, j) has its
  centre at (i + 0.5, j + 0.5); mean2d = (fx x/z + cx, fy y/z + cy).
- Extent: radius = ceil(3 sqrt(lambda_max)), lambda_max = mid + sqrt(max(0.1, mid^2 - det)).
  A Gaussian touches 16x16 tiles [floor((m - r)/16), ceil((m + r)/16)) clamped to the image; none culls.
- Colour: SH up to ``sh_degree`` along the normalised direction camera-centre -> mean, +0.5,
  clamped at 0.
- Compositing: front to back by camera z; alpha = min(0.99, sigmoid(opacity) exp(power)), skipped when
  power > 0 or alpha < 1/255; stops before the Gaussian that would take transmittance below 1e-4.
  colour += T_final * background. Depth is the expected depth sum(w z) / alpha (0 where alpha = 0).
- Antialiased mode (``antialiased=True``, by default the splats' own flag; gsplat's
  ``rasterize_mode="antialiased"``): each Gaussian's opacity is multiplied by
  sqrt(det(cov2d) / det(cov2d + 0.3 I)) (the ratio floored at 1e-30), the share of its dilated
  footprint that is its own, so a Gaussian far smaller than a pixel fades instead of growing to the
  filter's size.

Returns ``RenderOutput(colors (C,H,W,3), alphas (C,H,W), depths (C,H,W), info)`` where
``info["means2d"]`` (C,N,2) is the differentiable screen position (retain its grad for
densification) and ``info["radii"]`` (C,N) the pixel radii (0 = not visible).

Backends: ``cpu`` (native C++/OpenMP, forward + hand-written backward), ``torch`` (reference),
``gsplat`` (CUDA), ``auto`` = gsplat for splats on a CUDA device when gsplat is installed, else cpu.
"""
from __future__ import annotations

import sys
import types
from typing import NamedTuple, Sequence

import torch

from ..camera import Camera
from ..errors import GscompError, check_int
from ..splats import Splats


class RenderOutput(NamedTuple):
    colors: torch.Tensor
    alphas: torch.Tensor
    depths: torch.Tensor
    info: dict


BACKENDS = ("auto", "cpu", "torch", "gsplat")


def resolve_backend(backend: str, device: torch.device | None = None) -> str:
    """``auto`` -> gsplat when CUDA and gsplat are available (and the data, if ``device`` is
    given, is on the GPU), else the native CPU kernels; data already on the GPU without gsplat
    renders with the PyTorch reference (the CPU kernels take CPU tensors only)."""
    if backend not in BACKENDS:
        raise GscompError(f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if device is not None and torch.device(device).type == "cuda":
            return "gsplat" if _has_gsplat() else "torch"
        return "gsplat" if device is None and torch.cuda.is_available() and _has_gsplat() else "cpu"
    return backend


def _has_gsplat() -> bool:
    try:
        import gsplat  # noqa: F401
    except Exception:
        return False
    return True


def render(
    splats: Splats,
    cameras: Camera | Sequence[Camera],
    *,
    sh_degree: int | None = None,
    background=None,
    backend: str = "auto",
    antialiased: bool | None = None,
) -> RenderOutput:
    """Render ``splats`` from one camera or a list of cameras of one image size (standard 3DGS;
    the exact semantics are in this module's docstring).

    Returns ``RenderOutput(colors (C,H,W,3), alphas (C,H,W), depths (C,H,W), info)`` in the
    splats' dtype (float32 or float64) and device; ``info["means2d"]`` (C,N,2) is the
    differentiable screen position, ``info["radii"]`` (C,N) int64 the pixel radii (0: not drawn).
    Gradients flow to every field of the splats and to ``background``.

    ``sh_degree``: at most the splats' own (default). ``background``: 3 RGB values (default
    black). ``backend``: ``auto`` (gsplat for splats on a CUDA device when installed, else
    ``cpu``), ``cpu`` (native kernels), ``torch`` (reference) or ``gsplat``. ``antialiased``:
    the Mip-Splatting-style mode, by default the splats' own flag. Values are not checked for
    NaN here (too slow per training step): a Gaussian whose geometry or opacity is NaN is not
    drawn, one whose colour is NaN gives NaN pixels; `Splats.validate` checks them."""
    splats.validate("render", values=False)  # (the native kernels trust the shapes)
    if splats.means.dtype not in (torch.float32, torch.float64):
        raise GscompError(f"render: splats must be float32 or float64, got {splats.means.dtype}")
    antialiased = bool(splats.antialiased if antialiased is None else antialiased)
    if isinstance(cameras, Camera):
        cameras = [cameras]
    if isinstance(cameras, (str, bytes)) or not isinstance(cameras, Sequence) and not hasattr(cameras, "__iter__"):
        raise GscompError(f"render: cameras must be a Camera or a list of them, got {type(cameras).__name__}")
    cameras = list(cameras)
    if not cameras:
        raise GscompError("render: no cameras given")
    if (bad := next((c for c in cameras if not isinstance(c, Camera)), None)) is not None:
        raise GscompError(f"render: cameras must be gscomp.Camera objects, got a {type(bad).__name__}")
    if any((c.width, c.height) != (cameras[0].width, cameras[0].height) for c in cameras):
        raise GscompError("render: all cameras in one call must have the same image size")  # (every backend)
    sh_degree = splats.sh_degree if sh_degree is None else check_int("render: sh_degree", sh_degree, 0, 3)
    if not 0 <= sh_degree <= splats.sh_degree:
        raise GscompError(f"render: sh_degree {sh_degree} is outside 0..{splats.sh_degree} (the splats' degree)")
    if background is None:
        background = torch.zeros(3, dtype=splats.means.dtype, device=splats.device)
    try:
        background = torch.as_tensor(background, dtype=splats.means.dtype, device=splats.device)
    except (TypeError, ValueError, RuntimeError):
        raise GscompError(f"render: background must be 3 numbers (RGB), got {background!r:.80}") from None
    if background.numel() != 3:
        raise GscompError(f"render: background must hold 3 values (RGB), got {background.numel()}")
    background = background.reshape(3)
    splats, cameras = view_frame(splats, cameras)
    backend = resolve_backend(backend, splats.device)  # auto: CPU data renders on the CPU
    if backend == "torch":
        from .torch_ref import render_torch

        return RenderOutput(*render_torch(splats, cameras, sh_degree, background, antialiased))
    if backend == "cpu":
        from .cpu import render_cpu

        return RenderOutput(*render_cpu(splats, cameras, sh_degree, background, antialiased))
    from .gsplat_backend import render_gsplat

    return RenderOutput(*render_gsplat(splats, cameras, sh_degree, background, antialiased))


def view_frame(splats: Splats, cameras: list[Camera]) -> tuple[Splats, list[Camera]]:
    """The splats and cameras moved so that the first camera's centre, as the splats' dtype holds
    it, is the origin. In world coordinates, p = R mean + t cancels two terms of the size of the
    distance to the origin: for a scene 5e6 units out float32 keeps 0.5 units of them, and the
    render falls apart. Relative to the camera, a visible Gaussian's mean - origin is exact (or
    nearly: both are floats of that dtype and close together) and t + R origin is computed in
    float64. The means' gradient passes through unchanged."""
    dtype = splats.means.dtype
    origin = cameras[0].center.to(dtype)
    if not bool(torch.isfinite(origin).all()) or not bool(origin.any()):  # (beyond the dtype: left as is)
        return splats, cameras
    means = splats.means - origin.to(splats.device)
    origin = origin.double()
    return splats.replace(means=means), [c.moved_origin(origin) for c in cameras]


class _CallableModule(types.ModuleType):
    """This subpackage, callable as `render` (so ``gscomp.render(splats, cameras)`` works)."""

    def __call__(self, splats: Splats, cameras: Camera | Sequence[Camera], *, sh_degree: int | None = None,
                 background=None, backend: str = "auto", antialiased: bool | None = None) -> RenderOutput:
        return render(splats, cameras, sh_degree=sh_degree, background=background, backend=backend,
                      antialiased=antialiased)

    __call__.__doc__ = render.__doc__


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["render", "RenderOutput", "BACKENDS", "resolve_backend", "view_frame"]
