"""Turn `Splats` into what viser's Gaussian-splat node draws, and place the initial camera.

Everything here is pure numpy/torch (no viser import) so it is unit-testable without a browser.

viser's splat node takes per-Gaussian centres, full 3x3 covariances (sent as float16), one RGB
colour and one opacity. It has no SH, so colour is either the degree-0 (DC) term, which is what
the viewer shows by default, or the full SH evaluated for one camera position ("baked" for the
current view; re-baked when the camera stops moving).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..render.sh import eval_sh
from ..splats import Splats, quat_to_rotmat

# viser stores the 6 covariance terms as float16: normal range ~6e-5 .. 65504. We rescale the
# scene (and undo it with the node's scale) so a typical scene's variances land well inside it.
TARGET_RADIUS = 10.0
F16_MAX_VAR = 6.0e4

UP_AXES = {
    "+x": (1.0, 0.0, 0.0), "-x": (-1.0, 0.0, 0.0),
    "+y": (0.0, 1.0, 0.0), "-y": (0.0, -1.0, 0.0),
    "+z": (0.0, 0.0, 1.0), "-z": (0.0, 0.0, -1.0),
}


def covariances(splats: Splats) -> np.ndarray:
    """World-space 3x3 covariances R diag(exp(s))^2 R^T, (N,3,3) float32."""
    # float32 is plenty: the browser receives float16.
    m = quat_to_rotmat(splats.quats.float()) * torch.exp(splats.scales.float()).unsqueeze(-2)
    return (m @ m.transpose(-1, -2)).numpy()


def colors_dc(splats: Splats) -> np.ndarray:
    """Degree-0 colour in [0,1], (N,3) float32: what a viewer without SH shows."""
    return splats.colors_dc().clamp(0.0, 1.0).float().numpy()


def colors_view(splats: Splats, eye, sh_degree: int | None = None) -> np.ndarray:
    """Full-SH colour seen from camera position ``eye`` (world), in [0,1], (N,3) float32.

    Same formula as `gscomp.render` (direction camera-centre -> mean, +0.5, clamp at 0); the
    renderer does not clamp at 1, but a display colour must, so we do.
    """
    degree = splats.sh_degree if sh_degree is None else min(int(sh_degree), splats.sh_degree)
    if degree == 0:
        return colors_dc(splats)
    # (the difference in float64: a scene far from the origin, georeferenced, keeps its directions)
    eye_t = torch.as_tensor(np.asarray(eye, dtype=np.float64)).reshape(1, 3)
    d = (splats.means.double() - eye_t).float()
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    coeffs = torch.cat([splats.sh0, splats.shN], 1).float()
    rgb = eval_sh(coeffs, d, degree) + 0.5
    return rgb.clamp(0.0, 1.0).numpy()


def opacities(splats: Splats) -> np.ndarray:
    """sigmoid(logit), (N,1) float32 as viser wants it."""
    return torch.sigmoid(splats.opacities.float()).reshape(-1, 1).numpy()


def scene_center_radius(splats: Splats) -> tuple[np.ndarray, float]:
    """Robust centre and radius of the Gaussians' positions.

    Uses the 2nd..98th percentile box so a few far-away background splats (common in real
    captures) do not push the initial camera out to where the subject is a dot.
    """
    if len(splats) == 0:
        return np.zeros(3), 1.0
    p = splats.means.detach().double().numpy()
    if len(p) > 200_000:  # percentiles of a sample are as good and much faster
        p = p[np.random.default_rng(0).choice(len(p), 200_000, replace=False)]
    lo, hi = np.percentile(p, 2, axis=0), np.percentile(p, 98, axis=0)
    center = 0.5 * (lo + hi)
    radius = 0.5 * float(np.linalg.norm(hi - lo))
    if not math.isfinite(radius) or radius <= 1e-9:
        radius = 1.0
    return center, radius


def clip_planes(radius: float) -> tuple[float, float]:
    """(near, far) of the browser's camera: 1e-3 and 1e3 times the scene's radius, but never
    beyond 1 unit on either side: viser draws exact mode's image on a plane 1 unit in front of the
    camera, which near > 1 (a scene in millimetres) or far < 1 clipped away (a white canvas)."""
    return min(radius * 1e-3, 0.5), max(radius * 1e3, 2.0)


def exact_scale(radius: float) -> float:
    """Factor exact mode scales a small scene (radius below 1) and the camera by before rendering:
    the image is the same (projection is scale-free), but the renderer's fixed near plane (0.01
    units, as the 3DGS reference) no longer cuts into a scene of a few centimetres."""
    return 1.0 / radius if radius < 1.0 else 1.0


@dataclass
class SplatArrays:
    """Arrays ready for ``scene.add_gaussian_splats(..., scale=1/factor, position=origin)``:
    positions are taken relative to ``origin`` (float32 in the browser would blur a scene far from
    the world origin) and, with the covariances, multiplied by ``factor`` (and by factor^2) so
    float16 keeps their precision."""

    centers: np.ndarray  # (N,3) float32, (means - origin) * factor
    covariances: np.ndarray  # (N,3,3) float32, scaled by factor^2 and clamped to float16 range
    rgbs: np.ndarray  # (N,3) float32 in [0,1]
    opacities: np.ndarray  # (N,1) float32 in [0,1]
    factor: float
    origin: np.ndarray  # (3,) float64, world

    @property
    def node_scale(self) -> float:
        return 1.0 / self.factor


def normalisation_factor(splats: Splats) -> float:
    """Scale that maps the scene's robust radius to `TARGET_RADIUS`."""
    _, radius = scene_center_radius(splats)
    return TARGET_RADIUS / radius


def prepare(splats: Splats, *, factor: float | None = None, origin=None, eye=None,
            sh_degree: int | None = None) -> SplatArrays:
    """All viser arrays for ``splats``; DC colour, or SH baked for camera position ``eye``.
    ``factor`` and ``origin`` default to the scene's own (`normalisation_factor`, the centre of
    `scene_center_radius`)."""
    splats = splats.detach().to("cpu")
    if factor is None:
        factor = normalisation_factor(splats)
    origin = scene_center_radius(splats)[0] if origin is None else np.asarray(origin, np.float64).reshape(3)
    cov = covariances(splats) * np.float32(factor * factor)
    # A variance beyond float16's range would become inf and the client would draw garbage;
    # such a splat is hundreds of scene radii wide anyway, so shrinking it is invisible.
    big = np.abs(cov).reshape(len(cov), -1).max(1) > F16_MAX_VAR if len(cov) else np.zeros(0, bool)
    if big.any():
        s = F16_MAX_VAR / np.abs(cov[big]).reshape(int(big.sum()), -1).max(1)
        cov[big] *= s[:, None, None].astype(np.float32)
    rgbs = colors_dc(splats) if eye is None else colors_view(splats, eye, sh_degree)
    return SplatArrays(
        centers=((splats.means.double().numpy() - origin) * factor).astype(np.float32),
        covariances=cov.astype(np.float32),
        rgbs=rgbs.astype(np.float32),
        opacities=opacities(splats),
        factor=float(factor),
        origin=origin,
    )


def most_visible(splats: Splats, max_count: int) -> Splats:
    """At most ``max_count`` Gaussians, keeping the most visible ones (opacity times the area of
    the largest cross-section), in their original order. For slow clients (software WebGL,
    phones); ``max_count <= 0`` or a smaller scene returns ``splats`` unchanged."""
    if max_count <= 0 or len(splats) <= max_count:
        return splats
    top2 = torch.topk(splats.scales.float(), 2, dim=1).values.sum(1)
    score = torch.log(torch.sigmoid(splats.opacities.float()).clamp_min(1e-12)) + top2
    keep = torch.topk(score, max_count).indices.sort().values
    return splats[keep]


def up_vector(up: str) -> np.ndarray:
    from ..errors import GscompError

    if up not in UP_AXES:
        raise GscompError(f"--up must be one of {', '.join(UP_AXES)}, got {up!r}")
    return np.array(UP_AXES[up])


def initial_camera(splats: Splats, up: str = "-y", fov_deg: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """(eye, look_at) framing the scene's robust bounds, seen from the front and a bit above.

    "Front" is a fixed horizontal axis: -z for a y-up/-y-up scene (COLMAP cameras mostly look
    along +z), -y for z-up (Blender's front view), -z for x-up. The distance fits the robust
    radius into the vertical field of view with a 10% margin.
    """
    u = up_vector(up)
    center, radius = scene_center_radius(splats)
    axis = int(np.argmax(np.abs(u)))
    front = np.zeros(3)
    front[{0: 2, 1: 2, 2: 1}[axis]] = -1.0
    dist = 1.1 * radius / math.sin(math.radians(fov_deg) / 2)
    direction = front + 0.35 * u
    direction /= np.linalg.norm(direction)
    return center + dist * direction, center


def camera_from_viser(position, wxyz, fov_y: float, width: int, height: int):
    """A gscomp `Camera` (OpenCV) for viser's client camera.

    viser reports the camera-to-world rotation ``wxyz`` and position in the OpenCV convention
    (x right, y down, z forward) and the vertical field of view in radians.
    """
    from ..camera import Camera

    q = torch.tensor(np.asarray(wxyz, dtype=np.float64)).reshape(1, 4)
    r_c2w = quat_to_rotmat(q)[0]
    t = torch.tensor(np.asarray(position, dtype=np.float64))
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = r_c2w.T
    w2c[:3, 3] = -(r_c2w.T @ t)
    fy = 0.5 * height / math.tan(fov_y / 2)
    return Camera(fy, fy, width / 2.0, height / 2.0, width, height, w2c)


__all__ = [
    "SplatArrays", "prepare", "covariances", "colors_dc", "colors_view", "opacities",
    "scene_center_radius", "clip_planes", "exact_scale", "normalisation_factor", "initial_camera", "up_vector",
    "camera_from_viser", "most_visible", "UP_AXES",
]
