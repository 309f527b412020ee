"""Pure-PyTorch reference rasterizer: short and obviously correct, used as the test oracle.

It implements exactly the semantics documented in `gscomp.render` (the native `cpu` backend must
match it), tile by tile, so its memory is O(intersections x 256) rather than O(N x pixels).
Autograd provides every gradient. It is slow; use it for small scenes and tests.
"""
from __future__ import annotations

import math

import torch

from ..camera import Camera
from ..splats import Splats, quat_to_rotmat
from .sh import eval_sh

TILE = 16
NEAR = 0.01
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4
EPS2D = 0.3  # px^2 low-pass dilation


def project(splats: Splats, cam: Camera, sh_degree: int):
    """Per-Gaussian screen-space quantities for one camera.

    Returns means2d (N,2), conics (N,3) = (a, b, c) of the inverse 2D covariance, colors (N,3),
    depths (N,), radii (N,) int (0 = culled), tile rectangles (N,4) int (x0, y0, x1, y1), half-open,
    and the antialiased mode's opacity factor sqrt(det(cov2d) / det(cov2d + 0.3 I)) (N,).
    """
    dtype = splats.means.dtype
    w2c = cam.world_to_camera.to(dtype)
    R, t = w2c[:3, :3], w2c[:3, 3]
    p = splats.means @ R.T + t
    x, y, z = p.unbind(-1)
    valid = z > NEAR
    zs = torch.where(valid, z, torch.ones_like(z))

    M = quat_to_rotmat(splats.quats) * torch.exp(splats.scales).unsqueeze(-2)  # R @ diag(s)
    cov3 = M @ M.transpose(-1, -2)

    fx, fy, cx, cy, W, H = cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height
    tan_x, tan_y = 0.5 * W / fx, 0.5 * H / fy
    lim_xp, lim_xn = (W - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_yp, lim_yn = (H - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    tx = zs * torch.clamp(x / zs, -lim_xn, lim_xp)
    ty = zs * torch.clamp(y / zs, -lim_yn, lim_yp)
    zero = torch.zeros_like(zs)
    J = torch.stack(
        [fx / zs, zero, -fx * tx / (zs * zs), zero, fy / zs, -fy * ty / (zs * zs)], -1
    ).reshape(-1, 2, 3)
    T = J @ R
    cov2 = T @ cov3 @ T.transpose(-1, -2)
    a = cov2[:, 0, 0] + EPS2D
    b = cov2[:, 0, 1]
    c = cov2[:, 1, 1] + EPS2D
    det = a * c - b * b
    valid = valid & (det > 0)
    det_s = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_s, -b / det_s, a / det_s], -1)
    det_raw = cov2[:, 0, 0] * cov2[:, 1, 1] - b * b
    comp = aa_factor(det_raw / det_s)

    mid = 0.5 * (a + c)
    lam = mid + torch.sqrt(torch.clamp(mid * mid - det, min=0.1))
    # (float: a covariance overflowed to inf has no finite footprint and is culled, as in the
    # native kernels; a finite radius past int32 is capped there, as below)
    reach = torch.ceil(3.0 * torch.sqrt(lam.detach()))
    valid = valid & torch.isfinite(reach)
    reach = torch.where(valid, reach, torch.zeros_like(reach))
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)

    mx, my = means2d[:, 0].detach(), means2d[:, 1].detach()
    tiles_x, tiles_y = math.ceil(W / TILE), math.ceil(H / TILE)
    rect = torch.stack(
        [
            torch.clamp(torch.floor((mx - reach) / TILE), 0, tiles_x),
            torch.clamp(torch.floor((my - reach) / TILE), 0, tiles_y),
            torch.clamp(torch.ceil((mx + reach) / TILE), 0, tiles_x),
            torch.clamp(torch.ceil((my + reach) / TILE), 0, tiles_y),
        ],
        -1,
    ).to(torch.int64)
    valid = valid & ((rect[:, 2] - rect[:, 0]) * (rect[:, 3] - rect[:, 1]) > 0)
    radii = torch.where(valid, reach.clamp(max=4e18).to(torch.int64).clamp(max=2**31 - 1), 0)

    dirs = splats.means - cam.camera_to_world.to(dtype)[:3, 3]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    coeffs = torch.cat([splats.sh0, splats.shN], 1)
    colors = torch.clamp_min(eval_sh(coeffs, dirs, sh_degree) + 0.5, 0.0)
    return means2d, conics, colors, z, radii, rect, comp


def aa_factor(ratio: torch.Tensor) -> torch.Tensor:
    """sqrt of det(cov2d) / det(cov2d + 0.3 I), floored at 1e-30 before the root (a footprint the
    filter swamps, or rounding below 0, gets ~0 and a finite gradient, as in every backend)."""
    return torch.sqrt(torch.clamp(ratio, min=1e-30))


def render_one(splats: Splats, cam: Camera, sh_degree: int, background: torch.Tensor, proj=None,
               antialiased: bool = False):
    """One camera; ``proj`` is this camera's `project` output when the caller already has it."""
    means2d, conics, colors, depths, radii, rect, comp = project(splats, cam, sh_degree) if proj is None else proj
    opac = torch.sigmoid(splats.opacities)
    if antialiased:
        opac = opac * comp
    W, H = cam.width, cam.height
    dtype = splats.means.dtype
    live = torch.nonzero(radii > 0).squeeze(1)
    live = live[torch.argsort(depths.detach()[live], stable=True)]
    # The image is assembled from 16x16 tiles; each tile sees only the Gaussians whose rectangle covers it.
    rows = []
    for ty in range(math.ceil(H / TILE)):
        row_c, row_a, row_d = [], [], []
        for tx in range(math.ceil(W / TILE)):
            x0, y0 = tx * TILE, ty * TILE
            x1, y1 = min(x0 + TILE, W), min(y0 + TILE, H)
            r = rect[live]
            hit = live[(r[:, 0] <= tx) & (tx < r[:, 2]) & (r[:, 1] <= ty) & (ty < r[:, 3])]
            py, px = torch.meshgrid(
                torch.arange(y0, y1, dtype=dtype) + 0.5, torch.arange(x0, x1, dtype=dtype) + 0.5, indexing="ij"
            )
            pix = torch.stack([px.reshape(-1), py.reshape(-1)], -1)  # (P, 2)
            if hit.numel() == 0:
                P = pix.shape[0]
                c = background.to(dtype).expand(P, 3)
                a = torch.zeros(P, dtype=dtype)
                d = torch.zeros(P, dtype=dtype)
            else:
                d2 = means2d[hit].unsqueeze(0) - pix.unsqueeze(1)  # (P, n, 2)
                co = conics[hit]
                power = (-0.5 * (co[:, 0] * d2[..., 0] ** 2 + co[:, 2] * d2[..., 1] ** 2)
                         - co[:, 1] * d2[..., 0] * d2[..., 1])
                alpha = torch.clamp_max(opac[hit] * torch.exp(power), ALPHA_MAX)
                keep = (power <= 0) & (alpha >= ALPHA_MIN)
                alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
                one_minus = 1.0 - alpha
                T_before = torch.cumprod(torch.cat([torch.ones_like(one_minus[:, :1]), one_minus[:, :-1]], 1), 1)
                # Early stop: a Gaussian whose inclusion would take T below T_MIN, and every later one,
                # is dropped (T only decreases, so this is a prefix condition).
                done = (T_before * one_minus).detach() < T_MIN
                done = torch.cumsum(done.to(torch.int32), 1) > 0
                w = torch.where(done, torch.zeros_like(alpha), alpha * T_before)
                # T after the last included Gaussian = product of (1 - alpha) over included ones.
                T_final = torch.prod(torch.where(done, torch.ones_like(one_minus), one_minus), 1)
                c = w @ colors[hit] + T_final.unsqueeze(-1) * background.to(dtype)
                a = 1.0 - T_final
                d = (w * depths[hit]).sum(1)
                d = torch.where(a > 0, d / a.clamp_min(1e-10), torch.zeros_like(d))
            row_c.append(c.reshape(y1 - y0, x1 - x0, 3))
            row_a.append(a.reshape(y1 - y0, x1 - x0))
            row_d.append(d.reshape(y1 - y0, x1 - x0))
        rows.append((torch.cat(row_c, 1), torch.cat(row_a, 1), torch.cat(row_d, 1)))
    out_c = torch.cat([r[0] for r in rows], 0)
    out_a = torch.cat([r[1] for r in rows], 0)
    out_d = torch.cat([r[2] for r in rows], 0)
    return out_c, out_a, out_d, means2d, radii


def render_torch(splats: Splats, cameras: list[Camera], sh_degree: int, background: torch.Tensor,
                 antialiased: bool = False):
    # info["means2d"] must be the tensor the compositing reads, or retain_grad() on it sees nothing.
    projs = [project(splats, cam, sh_degree) for cam in cameras]
    means2d = torch.stack([p[0] for p in projs])
    outs = [render_one(splats, cam, sh_degree, background, (means2d[i], *projs[i][1:]), antialiased)
            for i, cam in enumerate(cameras)]
    images = [torch.stack([o[k] for o in outs]) for k in range(3)]
    leaves = [t for _, t in splats.items() if t.requires_grad]
    if torch.is_grad_enabled() and leaves and not images[0].requires_grad:
        # nothing visible: the images are the background alone and would leave the graph, so
        # backward() fails; tie them to the splats with a zero (where() passes no gradient to
        # the branch it does not take, so a non-finite field cannot turn it into NaN)
        first = torch.stack([t.reshape(-1)[:1].sum() for t in leaves]).sum()
        zero = torch.where(torch.zeros((), dtype=torch.bool), first, torch.zeros((), dtype=first.dtype))
        images = [im + zero for im in images]
    return (*images, {"means2d": means2d, "radii": torch.stack([o[4] for o in outs])})
