"""`gsplat` backend: gsplat's CUDA rasterizer behind the same API (CUDA only, imported lazily).

Our conventions already are gsplat's (wxyz quaternions, log scales, logit opacities, OpenCV
world-to-camera, SH in (N, K, 3)), so the mapping is: exp the scales, sigmoid the opacities, stack
the poses and intrinsics. ``render_mode="RGB+ED"`` gives colour plus expected depth (accumulated
depth / alpha, as ours); gsplat itself pads the background with 0 for the depth channel.
"""
from __future__ import annotations

import torch

from ..camera import Camera
from ..errors import GscompError
from ..splats import Splats


def render_gsplat(splats: Splats, cameras: list[Camera], sh_degree: int, background: torch.Tensor,
                  antialiased: bool = False):
    if not torch.cuda.is_available():
        raise GscompError("the gsplat render backend needs a CUDA GPU; use backend='cpu'")
    try:
        from gsplat import rasterization
    except Exception as e:
        raise GscompError(f"the gsplat render backend needs the gsplat package ({e})") from e
    W, H = cameras[0].width, cameras[0].height  # (one size for all: checked by render())
    dev = splats.means.device
    if dev.type != "cuda":
        raise GscompError("the gsplat render backend needs the splats on a CUDA device (splats.to('cuda'))")
    dtype = splats.means.dtype
    viewmats = torch.stack([c.world_to_camera for c in cameras]).to(device=dev, dtype=dtype)
    Ks = torch.stack([c.K for c in cameras]).to(device=dev, dtype=dtype)
    k = (sh_degree + 1) ** 2
    coeffs = torch.cat([splats.sh0, splats.shN[:, : k - 1]], 1)
    C = len(cameras)
    colors, alphas, meta = rasterization(
        means=splats.means,
        quats=splats.quats,  # gsplat normalises them itself
        scales=torch.exp(splats.scales),
        opacities=torch.sigmoid(splats.opacities),
        colors=coeffs,
        viewmats=viewmats,
        Ks=Ks,
        width=W,
        height=H,
        near_plane=0.01,
        eps2d=0.3,
        sh_degree=sh_degree,
        packed=False,  # keep means2d/radii as dense (C, N, ...) tensors
        tile_size=16,
        backgrounds=background.to(device=dev, dtype=dtype).reshape(1, 3).expand(C, 3),
        render_mode="RGB+ED",
        rasterize_mode="antialiased" if antialiased else "classic",
    )
    radii = meta["radii"]
    if radii.dim() == 3:  # gsplat >= 1.5 returns per-axis radii (C, N, 2)
        radii = radii.max(-1).values
    return colors[..., :3], alphas[..., 0], colors[..., 3], {"means2d": meta["means2d"], "radii": radii.long()}


__all__ = ["render_gsplat"]
