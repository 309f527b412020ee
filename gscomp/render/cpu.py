"""`cpu` backend: the native C++/OpenMP rasterizer behind two autograd Functions, like gsplat:

- `_Project`: Splats tensors -> per-camera means2d, conics, colours, depths, radii (C, N, ...);
- `_Rasterize`: those -> images, with a hand-written backward.

Splitting at means2d gives the trainer a real (C, N, 2) tensor on the graph (``info["means2d"]``)
whose ``.grad`` is the screen-space positional gradient used for densification.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ..camera import Camera
from ..errors import GscompError
from ..splats import Splats
from .. import native


def _cam_arrays(cameras: list[Camera], dtype):
    # Same casts as the reference (float64 pose matrices cast to the splats' dtype).
    viewmats = [c.world_to_camera.to(dtype).contiguous() for c in cameras]
    campos = [c.camera_to_world.to(dtype)[:3, 3].contiguous() for c in cameras]
    intr = [(c.fx, c.fy, c.cx, c.cy, c.width, c.height) for c in cameras]
    return viewmats, campos, intr


def _stack(ts: list[torch.Tensor]) -> torch.Tensor:
    # One camera (the common case in training) needs no copy.
    return ts[0].unsqueeze(0) if len(ts) == 1 else torch.stack(ts)


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, sh0, shN, sh_degree, viewmats, campos, intr, antialiased):
        ext = native.load()
        means, quats, scales, sh0, shN = (t.contiguous() for t in (means, quats, scales, sh0, shN))
        outs = [ext.project_forward(means, quats, scales, sh0, shN, sh_degree, v, p, *k, antialiased)
                for v, p, k in zip(viewmats, campos, intr)]
        means2d, conics, colors, depths, radii, aa = (_stack([o[i] for o in outs]) for i in range(6))
        ctx.save_for_backward(means, quats, scales, sh0, shN, conics, radii)
        ctx.sh_degree, ctx.viewmats, ctx.campos, ctx.intr = sh_degree, viewmats, campos, intr
        ctx.mark_non_differentiable(radii, aa)  # (aa's gradient goes through the conics: _AAFactor)
        return means2d, conics, colors, depths, radii, aa

    @staticmethod
    @once_differentiable  # (native kernels: no graph for second derivatives; says so if asked)
    def backward(ctx, v_means2d, v_conics, v_colors, v_depths, _v_radii, _v_aa):
        ext = native.load()
        means, quats, scales, sh0, shN, conics, radii = ctx.saved_tensors
        # Uninitialised: the first camera's kernel call writes every entry, later ones add.
        grads = [torch.empty_like(t) for t in (means, quats, scales, sh0, shN)]
        N = means.shape[0]

        def pick(v, c, *shape):  # autograd passes None for outputs that got no gradient
            return v[c].contiguous() if v is not None else means.new_zeros(N, *shape)

        for c, (v, p, k) in enumerate(zip(ctx.viewmats, ctx.campos, ctx.intr)):
            ext.project_backward(
                means, quats, scales, sh0, shN, ctx.sh_degree, v, p, *k, radii[c], conics[c],
                pick(v_means2d, c, 2), pick(v_conics, c, 3), pick(v_colors, c, 3), pick(v_depths, c),
                c == 0, *grads,
            )
        return (*grads, None, None, None, None, None)


class _AAFactor(torch.autograd.Function):
    """The antialiased mode's opacity factor k = sqrt(det(cov2d) / det(cov2d + 0.3 I)) as the
    kernel computed it (from the undilated covariance), differentiable through the conics
    (a, b, c), the inverse of the dilated covariance, of which k^2 = 1 - 0.3 (a + c) + 0.09 (a c - b^2)
    exactly: dk = (d k^2) / 2k. Where the ratio hit its floor (1e-30) k is constant."""

    @staticmethod
    def forward(ctx, conics, k):
        ctx.save_for_backward(conics, k)
        return k.clone()

    @staticmethod
    def backward(ctx, v):
        conics, k = ctx.saved_tensors
        a, b, c = conics.unbind(-1)
        s = torch.where(k > 2e-15, v * 0.5 / k, torch.zeros_like(k))
        return torch.stack([s * (0.09 * c - 0.3), s * (-0.18 * b), s * (0.09 * a - 0.3)], -1), None


class _Rasterize(torch.autograd.Function):
    """``opac`` is (N,) shared by every camera, or (C, N) per camera (antialiased mode)."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opac, depths, background, radii, width, height):
        ext = native.load()
        bg = background.contiguous()
        opac = opac.contiguous()
        outs, aux = [], []
        for c in range(means2d.shape[0]):
            o = ext.rasterize_forward(means2d[c].contiguous(), conics[c].contiguous(), colors[c].contiguous(),
                                      opac[c] if opac.dim() == 2 else opac,
                                      depths[c].contiguous(), radii[c].contiguous(), bg, width, height)
            outs.append(o[:3])
            aux.append(o[2:])  # depth image, T_final, n_contrib, tile offsets, ids
        ctx.save_for_backward(means2d, conics, colors, opac, depths, bg, radii)
        ctx.aux, ctx.size = aux, (width, height)
        return tuple(_stack([o[i] for o in outs]) for i in range(3))

    @staticmethod
    @once_differentiable  # (native kernels: no graph for second derivatives; says so if asked)
    def backward(ctx, v_img, v_alpha, v_depth):
        ext = native.load()
        means2d, conics, colors, opac, depths, bg, radii = ctx.saved_tensors
        W, H = ctx.size
        rs = []
        for c in range(means2d.shape[0]):
            vi = v_img[c].contiguous() if v_img is not None else means2d.new_zeros(H, W, 3)
            va = v_alpha[c].contiguous() if v_alpha is not None else means2d.new_zeros(H, W)
            vd = v_depth[c].contiguous() if v_depth is not None else means2d.new_zeros(H, W)
            rs.append(ext.rasterize_backward(means2d[c].contiguous(), conics[c].contiguous(), colors[c].contiguous(),
                                             opac[c] if opac.dim() == 2 else opac, depths[c].contiguous(),
                                             radii[c].contiguous(), bg, W, H, *ctx.aux[c], vi, va, vd))
        # Per camera: means2d, conics, colours, depths (and per-camera opacities); summed over
        # cameras: shared opacities, background.
        v = [_stack([r[i] for r in rs]) for i in (0, 1, 2)]
        v_depths = _stack([r[4] for r in rs])
        v_opac, v_bg = rs[0][3], rs[0][5]
        for r in rs[1:]:
            v_opac, v_bg = v_opac + r[3], v_bg + r[5]
        if opac.dim() == 2:
            v_opac = _stack([r[3] for r in rs])
        return (*v, v_opac, v_depths, v_bg, None, None, None)


def render_cpu(splats: Splats, cameras: list[Camera], sh_degree: int, background: torch.Tensor,
               antialiased: bool = False):
    if splats.means.device.type != "cpu":
        raise GscompError(f"the cpu render backend needs CPU tensors, got {splats.means.device}")
    dtype = splats.means.dtype
    if dtype not in (torch.float32, torch.float64):
        raise GscompError(f"the cpu render backend supports float32 and float64 splats, got {dtype}")
    W, H = cameras[0].width, cameras[0].height  # (one size for all: checked by render())
    viewmats, campos, intr = _cam_arrays(cameras, dtype)
    # sh0 and shN go in separately (the kernel reads the first (sh_degree + 1)^2 coefficients), so
    # no concatenated copy is made and their gradients need no split afterwards.
    means2d, conics, colors, depths, radii, aa = _Project.apply(
        splats.means, splats.quats, splats.scales, splats.sh0, splats.shN, sh_degree, viewmats, campos, intr,
        antialiased,
    )
    opac = torch.sigmoid(splats.opacities)
    if antialiased:  # (C, N): the factor depends on each camera's footprint
        opac = opac * _AAFactor.apply(conics, aa)
    img, alpha, depth = _Rasterize.apply(means2d, conics, colors, opac, depths, background.to(dtype), radii, W, H)
    return img, alpha, depth, {"means2d": means2d, "radii": radii.to(torch.int64)}


# Intersections (Gaussian x tile) whose Fisher rows one pass holds at a time: 2^20 x 17 floats = 68 MB
# in float32 (the whole view's took GBs on scenes of large Gaussians); more passes, the same sums.
FISHER_MAX_ROWS = 1 << 20


def fisher_cpu(splats: Splats, camera: Camera, sh_degree: int, background: torch.Tensor,
               work: dict | None = None, sums: dict | None = None, antialiased: bool | None = None,
               ) -> dict[str, torch.Tensor]:
    """Diagonal of J^T J, J = d(rendered colours of ``camera``)/d(parameters), for the fields means,
    quats, scales, opacities (logits) and sh0, each shaped like the field: for every parameter the
    sum over pixels and channels of its squared derivative, in float64 (each value computed in the
    splats' dtype). Exact (no random probes) in one forward and one back-to-front pass per tile
    (`fisher_raster` in cuda/rasterize_cpu.cpp). Not included: a mean's effect on its colour
    through the SH view direction (zero at SH degree 0).
    ``sums``: float64 tensors shaped like the fields, which this camera's values are added into and
    which are returned (many views sum up with no extra pass); ``work``: a dict kept across the calls
    for many views of the same splats (it keeps their opacities and reuses scratch buffers).
    ``antialiased`` (default: the splats' flag): the view renders in that mode, and the opacity
    logits' values take its factor k into account (d alpha / d logit = k o (1 - o)); k's own
    dependence on the covariance is left out of the means', quats' and scales' values."""
    from . import view_frame
    from .sh import C0

    ext = native.load()
    splats, (camera,) = view_frame(splats, [camera])  # (as `render`)
    dtype = splats.means.dtype
    (viewmat,), (campos,), (intr,) = _cam_arrays([camera], dtype)
    W, H = camera.width, camera.height
    means, quats, scales, sh0, shN = (t.detach().contiguous() for t in
                                      (splats.means, splats.quats, splats.scales, splats.sh0, splats.shN))
    aa = bool(splats.antialiased if antialiased is None else antialiased)
    means2d, conics, colors, depths, radii, k = ext.project_forward(means, quats, scales, sh0, shN, sh_degree,
                                                                    viewmat, campos, *intr, aa)
    work = {} if work is None else work
    if "opac" not in work:  # not torch.sigmoid: its bits vary by CPU
        work["opac"] = ext.sigmoid_scalar(splats.opacities.detach().contiguous())
    opac = work["opac"]
    bg = background.to(dtype).contiguous()
    scratch, rows = (work.setdefault(k, torch.empty(0, dtype=dtype)) for k in ("scratch", "rows"))
    ext.fisher_raster(means2d, conics, colors, opac * k if aa else opac, depths, radii, bg, W, H, scratch, rows,
                      FISHER_MAX_ROWS)
    if aa:  # rows[:, 15] sums (d colour / d alpha)^2; d alpha / d logit gains the factor k
        rows[:, 15] *= k * k
    fields = ("means", "quats", "scales", "opacities", "sh0")
    if sums is None:
        sums = {f: torch.zeros(getattr(splats, f).shape, dtype=torch.float64) for f in fields}
    ext.fisher_project(means, quats, scales, viewmat, *intr, radii, conics, colors, opac, C0 ** 2, rows,
                       *(sums[f] for f in fields))
    return sums


__all__ = ["fisher_cpu", "render_cpu"]
