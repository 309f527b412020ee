"""A procedural scene made by gscomp itself, so everything runs on a fresh machine without data.

Ground truth is a `Splats` scene of about 3,000 Gaussians (`synthetic_gt`): a checkered ground
plane and four textured objects (a striped sphere, a checkered cube, a cylinder with vertical
stripes and a cone with rings), all made of flat, surface-aligned Gaussians with view-dependent
colour (non-zero SH of degrees 1 to 3). It is rendered with `gscomp.render.render` from an orbit
of cameras whose elevation oscillates between 15 and 45 degrees. Textures are coarse compared to
the 128-pixel default resolution, so 3DGS training recovers it well in a couple thousand steps.

The initial point cloud imitates SfM: a random 25 % of the GT means with 2 cm noise and noisy
colours. Everything is seeded, hence deterministic for a given backend.
"""
from __future__ import annotations

import math

import torch

from ..camera import Camera
from ..errors import check_int
from ..splats import SH_C0, Splats

SCENE_CENTER = (0.0, 0.0, 0.35)  # cameras look here; world z is up


def _quat_from_normals(n: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (wxyz) rotating +z onto each normal, so flat Gaussians lie on the surface."""
    n = n / n.norm(dim=1, keepdim=True)
    z = torch.tensor([0.0, 0.0, 1.0]).expand_as(n)
    axis = torch.linalg.cross(z, n)
    w = 1.0 + (z * n).sum(1, keepdim=True)
    q = torch.cat([w, axis], 1)
    flip = w[:, 0] < 1e-6  # normal = -z: rotate 180 degrees about x
    q[flip] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    return q / q.norm(dim=1, keepdim=True)


def _part(means, normals, colors, tangent_scale: float, sh1_dir, thick: float = 0.004) -> dict:
    n = means.shape[0]
    scales = torch.tensor([tangent_scale, tangent_scale, thick]).log().expand(n, 3).clone()
    return {"means": means, "quats": _quat_from_normals(normals), "scales": scales, "colors": colors,
            "sh1": torch.as_tensor(sh1_dir, dtype=torch.float32).expand(n, 3)}


def _ground(half: float = 2.0, n: int = 36) -> dict:
    t = (torch.arange(n) + 0.5) / n * 2 * half - half
    x, y = torch.meshgrid(t, t, indexing="xy")
    means = torch.stack([x.flatten(), y.flatten(), torch.zeros(n * n)], 1)
    check = ((torch.floor(x / 0.5) + torch.floor(y / 0.5)) % 2).flatten()
    c0, c1 = torch.tensor([0.85, 0.78, 0.62]), torch.tensor([0.25, 0.45, 0.50])
    colors = c0 + (c1 - c0) * check[:, None]
    normals = torch.tensor([0.0, 0.0, 1.0]).expand(n * n, 3)
    return _part(means, normals, colors, 0.75 * 2 * half / n, (0.15, 0.1, 0.0))


def _sphere(center, r: float, n: int = 700) -> dict:
    i = torch.arange(n, dtype=torch.float32) + 0.5
    z = 1 - 2 * i / n  # Fibonacci sphere: even coverage
    phi = i * math.pi * (3 - math.sqrt(5))
    rr = (1 - z * z).sqrt()
    normals = torch.stack([rr * torch.cos(phi), rr * torch.sin(phi), z], 1)
    bands = (torch.floor((z + 1) * 3.5) % 2)[:, None]
    colors = torch.tensor([0.9, 0.2, 0.15]) * (1 - bands) + torch.tensor([0.95, 0.95, 0.9]) * bands
    spacing = math.sqrt(4 * math.pi * r * r / n)
    return _part(torch.tensor(center) + r * normals, normals, colors, 0.8 * spacing, (0.0, 0.2, 0.1))


def _cube(center, side: float, m: int = 12) -> dict:
    t = (torch.arange(m) + 0.5) / m - 0.5
    u, v = torch.meshgrid(t, t, indexing="xy")
    u, v = u.flatten(), v.flatten()
    check = ((torch.floor((u + 0.5) * 3) + torch.floor((v + 0.5) * 3)) % 2)[:, None]  # 4x4 discs a check
    means, normals, colors = [], [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            p = torch.zeros(m * m, 3)
            a, b = [k for k in range(3) if k != axis]
            p[:, axis], p[:, a], p[:, b] = 0.5 * sign, u, v
            nrm = torch.zeros(m * m, 3)
            nrm[:, axis] = sign
            means.append(torch.tensor(center) + side * p)
            normals.append(nrm)
            colors.append(torch.tensor([0.2, 0.3, 0.85]) * (1 - check) + torch.tensor([0.95, 0.8, 0.1]) * check)
    return _part(torch.cat(means), torch.cat(normals), torch.cat(colors), 0.8 * side / m, (-0.1, 0.0, 0.2))


def _cylinder(center, r: float, height: float, around: int = 28, rows: int = 12) -> dict:
    th = (torch.arange(around) + 0.5) / around * 2 * math.pi
    zz = (torch.arange(rows) + 0.5) / rows * height - height / 2
    T, Z = torch.meshgrid(th, zz, indexing="xy")
    T, Z = T.flatten(), Z.flatten()
    normals = torch.stack([torch.cos(T), torch.sin(T), torch.zeros_like(T)], 1)
    means = torch.tensor(center) + torch.stack([r * torch.cos(T), r * torch.sin(T), Z], 1)
    stripes = (torch.floor(T / (2 * math.pi) * 8) % 2)[:, None]
    colors = torch.tensor([0.15, 0.7, 0.3]) * (1 - stripes) + torch.tensor([0.6, 0.25, 0.7]) * stripes
    # top cap: concentric rings of discs
    cap_m, cap_n, cap_c = [], [], []
    for ring in range(4):
        rad = (ring + 0.5) / 4 * r
        k = max(4, int(2 * math.pi * rad / (r / 4)))
        a = torch.arange(k) / k * 2 * math.pi
        cap_m.append(torch.stack([rad * torch.cos(a), rad * torch.sin(a), torch.full((k,), height / 2)], 1))
        cap_n.append(torch.tensor([0.0, 0.0, 1.0]).expand(k, 3))
        cap_c.append(torch.tensor([0.9, 0.9, 0.85]).expand(k, 3))
    means = torch.cat([means, torch.tensor(center) + torch.cat(cap_m)])
    normals = torch.cat([normals, torch.cat(cap_n)])
    colors = torch.cat([colors, torch.cat(cap_c)])
    spacing = max(2 * math.pi * r / around, height / rows)
    return _part(means, normals, colors, 0.8 * spacing, (0.1, -0.15, 0.05))


def _cone(base_center, r: float, height: float, n: int = 500) -> dict:
    # Even sampling of the lateral surface: radius from the apex grows like sqrt(uniform).
    i = torch.arange(n, dtype=torch.float32) + 0.5
    s = (i / n).sqrt()  # fraction of the slant from the apex
    phi = i * math.pi * (3 - math.sqrt(5))
    rad = s * r
    means = torch.stack([rad * torch.cos(phi), rad * torch.sin(phi), height * (1 - s)], 1)
    slope = r / height
    normals = torch.stack([torch.cos(phi), torch.sin(phi), torch.full_like(phi, slope)], 1)
    rings = (torch.floor(s * 5) % 2)[:, None]
    colors = torch.tensor([0.95, 0.55, 0.1]) * (1 - rings) + torch.tensor([0.3, 0.15, 0.1]) * rings
    area = math.pi * r * math.hypot(r, height)
    return _part(torch.tensor(base_center) + means, normals, colors, 0.8 * math.sqrt(area / n), (0.0, -0.1, -0.2))


def synthetic_gt(seed: int = 0) -> Splats:
    """The ground-truth scene (SH degree 3). Geometry is fixed; ``seed`` jitters positions slightly
    and draws the higher-order SH, so different seeds give different but equally easy scenes."""
    g = torch.Generator().manual_seed(int(seed))
    parts = [
        _ground(),
        _sphere((0.75, 0.45, 0.5), 0.5),
        _cube((-0.75, -0.35, 0.35), 0.7),
        _cylinder((-0.35, 0.95, 0.45), 0.3, 0.9),
        _cone((0.65, -0.85, 0.0), 0.35, 0.8),
    ]
    # Higher-order SH: degree 1 is a per-object tint that changes with the viewing direction (a
    # soft highlight); degrees 2-3 are drawn once per object (smooth, hence learnable from ~40
    # views) plus a little per-Gaussian variation, so every SH band is exercised.
    for p in parts:
        k = p["means"].shape[0]
        sh = torch.zeros(k, 15, 3)
        sh[:, 0:3, :] = p["sh1"][:, :, None] * torch.tensor([1.0, 0.9, 0.8])
        sh[:, 3:8, :] = 0.06 * torch.randn(1, 5, 3, generator=g) + 0.01 * torch.randn(k, 5, 3, generator=g)
        sh[:, 8:15, :] = 0.04 * torch.randn(1, 7, 3, generator=g) + 0.01 * torch.randn(k, 7, 3, generator=g)
        p["shN"] = sh
    cat = {k: torch.cat([p[k] for p in parts]).float() for k in parts[0]}
    n = cat["means"].shape[0]
    means = cat["means"] + 0.003 * torch.randn(n, 3, generator=g)
    sh0 = ((cat["colors"] - 0.5) / SH_C0).unsqueeze(1)
    shN = cat["shN"]
    return Splats(
        means=means.contiguous(),
        quats=cat["quats"].contiguous(),
        scales=cat["scales"].contiguous(),
        opacities=torch.full((n,), 4.0),
        sh0=sh0.contiguous(),
        shN=shN.contiguous(),
    ).validate("synthetic scene")


def orbit_cameras(n_views: int, resolution: int, fov_x_deg: float = 50.0, radius: float = 4.6) -> list[Camera]:
    """Cameras on a circle around the scene, elevation oscillating between 15 and 45 degrees so the
    set sees the objects from above and from the side."""
    cams = []
    for i in range(n_views):
        az = 2 * math.pi * i / n_views
        el = math.radians(30 + 15 * math.sin(3 * az))
        eye = (SCENE_CENTER[0] + radius * math.cos(el) * math.cos(az),
               SCENE_CENTER[1] + radius * math.cos(el) * math.sin(az),
               SCENE_CENTER[2] + radius * math.sin(el))
        cams.append(Camera.look_at(eye, SCENE_CENTER, (0, 0, 1), fov_x_deg, resolution, resolution,
                                   name=f"view_{i:03d}"))
    return cams


def load_synthetic(*, n_views: int = 48, resolution: int = 128, seed: int = 0, downscale: float = 1,
                   background=(1.0, 1.0, 1.0), max_images: int | None = None, backend: str = "auto"):
    """Render the GT from an orbit; return (cameras with images, init points, colours, meta)."""
    from ..render import render
    from . import subsample

    n_views = check_int("synthetic: n_views", n_views, 1, 1000, floats=True)
    resolution = check_int("synthetic: resolution", resolution, 8, 4096, floats=True)
    seed = check_int("synthetic: seed", seed, 0, 2**63 - 1, floats=True)
    gt = synthetic_gt(seed)
    cams = orbit_cameras(n_views, resolution)
    if downscale != 1:
        cams = [c.scaled(1.0 / downscale) for c in cams]
    cams = subsample(cams, max_images)
    bg = torch.tensor(background if background is not None else (0.0, 0.0, 0.0), dtype=torch.float32)
    with torch.no_grad():
        for c in cams:  # one at a time: cameras may differ in size after downscaling
            out = render(gt, c, background=bg, backend=backend)
            c.image = out.colors[0].clamp(0, 1).contiguous()
            c.alpha = out.alphas[0].clamp(0, 1).contiguous()

    g = torch.Generator().manual_seed(int(seed) + 1)
    keep = torch.randperm(len(gt), generator=g)[: max(1, len(gt) // 4)]
    points = gt.means[keep] + 0.02 * torch.randn(len(keep), 3, generator=g)
    colors = (gt.colors_dc()[keep] + 0.05 * torch.randn(len(keep), 3, generator=g)).clamp(0, 1)
    meta = {"source": "synthetic", "seed": int(seed), "n_views": int(n_views),
            "resolution": int(resolution), "num_gaussians": len(gt)}
    return cams, points, colors, meta
