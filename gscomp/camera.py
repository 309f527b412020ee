"""`Camera` (pinhole intrinsics + world-to-camera pose, OpenCV convention) and `Scene`.

OpenCV convention: camera x right, y down, z forward (into the scene). Loaders convert every
source convention (COLMAP is already OpenCV; Blender/instant-ngp are OpenGL) at the edge.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import GscompError, check_number


class Photo:
    """A loaded picture kept as its 8-bit pixels, (H, W, 3) or (H, W, 4) uint8, until it is used: a
    quarter of the memory of float32 tensors (300 views of 1.6 MP: 1.4 GB rather than 5.8 GB).
    `rgb` and `alpha` give float32 in [0, 1] with the same operations on every call (the same bits
    every time); RGBA is composited over ``background`` (straight alpha: rgb a + bg (1 - a);
    ``None``: black, i.e. the premultiplied colour)."""

    __slots__ = ("pixels", "background")

    def __init__(self, pixels: np.ndarray, background=None):
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
            raise GscompError(f"a photo is (H, W, 3|4) uint8, got {pixels.dtype} {tuple(pixels.shape)}")
        self.pixels = pixels
        self.background = None if background is None else tuple(float(b) for b in background)

    def _channels(self, sl) -> torch.Tensor:
        return torch.from_numpy(self.pixels[..., sl].astype(np.float32)).div_(255.0)  # (astype copies)

    def rgb(self) -> torch.Tensor:
        """(H, W, 3) float32 in [0, 1], composited over the background when the photo has alpha."""
        rgb = self._channels(slice(0, 3))
        if self.pixels.shape[2] == 3:
            return rgb
        a = self._channels(3)[..., None]
        bg = torch.zeros(3) if self.background is None else torch.tensor(self.background, dtype=torch.float32)
        return (rgb * a + bg * (1.0 - a)).contiguous()

    def alpha(self) -> torch.Tensor | None:
        """(H, W) float32 in [0, 1], or None for a photo without alpha."""
        return self._channels(3) if self.pixels.shape[2] == 4 else None


class Camera:
    """A pinhole camera (intrinsics in pixels, a float64 world-to-camera pose) and, for a view of a
    capture, its picture: ``image`` (H, W, 3) float32 in [0, 1] and ``alpha`` (H, W) float32 when the
    source has one. Loaders give a `Photo` as the image: it is kept in 8 bits and ``image`` and
    ``alpha`` are computed from it on each read (ask ``has_image`` rather than ``image is None``)."""

    def __init__(self, fx: float, fy: float, cx: float, cy: float, width: int, height: int,
                 world_to_camera: torch.Tensor, image: torch.Tensor | Photo | None = None,
                 alpha: torch.Tensor | None = None, name: str = ""):
        self.name = name
        # a copy: a caller's float64 matrix reused for the next pose must not move this camera
        w2c = torch.as_tensor(world_to_camera, dtype=torch.float64).detach().clone()
        if tuple(w2c.shape) != (4, 4):
            raise GscompError(f"camera {self.name!r}: world_to_camera must be 4x4, got {tuple(w2c.shape)}")
        if not bool(torch.isfinite(w2c).all()):
            raise GscompError(f"camera {self.name!r}: world_to_camera has non-finite values")
        if not abs(float(torch.linalg.det(w2c[:3, :3].double()))) > 1e-12:  # (renders invert it)
            raise GscompError(f"camera {self.name!r}: world_to_camera is singular (its rotation part has determinant 0)")
        self.world_to_camera = w2c
        self.width, self.height = int(width), int(height)
        self.fx, self.fy, self.cx, self.cy = float(fx), float(fy), float(cx), float(cy)
        if self.width < 1 or self.height < 1:
            raise GscompError(f"camera {self.name!r}: image size {self.width}x{self.height} must be at least 1x1")
        if not (math.isfinite(self.cx) and math.isfinite(self.cy) and self.fx > 0 and self.fy > 0
                and math.isfinite(self.fx) and math.isfinite(self.fy)):
            raise GscompError(f"camera {self.name!r}: focal lengths must be finite and > 0 and the principal point "
                              f"finite, got fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        self._photo: Photo | None = None
        self._image: torch.Tensor | None = None
        self._alpha: torch.Tensor | None = None
        self.image = image
        if alpha is not None:
            self.alpha = alpha

    @property
    def image(self) -> torch.Tensor | None:
        return self._photo.rgb() if self._photo is not None else self._image

    @image.setter
    def image(self, value: torch.Tensor | Photo | None) -> None:
        if isinstance(value, Photo):
            self._photo, self._image, self._alpha = value, None, None
        else:
            self._photo, self._image = None, value

    @property
    def alpha(self) -> torch.Tensor | None:
        return self._photo.alpha() if self._photo is not None else self._alpha

    @alpha.setter
    def alpha(self, value: torch.Tensor | None) -> None:
        if self._photo is not None:  # an alpha of its own: the photo's floats become the image
            self._image, self._photo = self._photo.rgb(), None
        self._alpha = value

    @property
    def has_image(self) -> bool:
        return self._photo is not None or self._image is not None

    def _picture(self) -> tuple:
        """What `moved_origin` hands on: the photo, or the image and alpha tensors (shared)."""
        return (self._photo, None) if self._photo is not None else (self._image, self._alpha)

    def __repr__(self) -> str:
        return (f"Camera({self.name!r}, {self.width}x{self.height}, fx={self.fx:g}, fy={self.fy:g}, cx={self.cx:g}, "
                f"cy={self.cy:g}, image={'yes' if self.has_image else 'no'})")

    @property
    def K(self) -> torch.Tensor:
        return torch.tensor([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=torch.float32)

    @property
    def camera_to_world(self) -> torch.Tensor:
        """(4, 4) float64 inverse of the world-to-camera matrix (`affine_inverse`)."""
        return affine_inverse(self.world_to_camera)

    @property
    def center(self) -> torch.Tensor:
        """Camera position in world coordinates (float64)."""
        return self.camera_to_world[:3, 3]

    def moved_origin(self, origin: torch.Tensor) -> "Camera":
        """The same view in coordinates whose origin is the world point ``origin`` (3,): x' = x - origin,
        so the translation becomes t + R origin (in Python floats: the same bits on every CPU).
        The image and alpha are shared, not copied."""
        m = self.world_to_camera.tolist()
        o = [float(v) for v in origin]
        w2c = [row[:] for row in m]
        for i in range(3):
            w2c[i][3] = m[i][3] + (m[i][0] * o[0] + m[i][1] * o[1] + m[i][2] * o[2])
        return Camera(self.fx, self.fy, self.cx, self.cy, self.width, self.height,
                      torch.tensor(w2c, dtype=torch.float64), *self._picture(), self.name)

    def scaled(self, factor: float) -> "Camera":
        """Same camera with the image plane resized by ``factor`` (e.g. 0.5 halves the resolution).
        Images are not resampled here; loaders do that."""
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
            raise GscompError(f"camera scale factor must be finite and > 0, got {factor}")
        w, h = max(1, round(self.width * factor)), max(1, round(self.height * factor))
        sx, sy = w / self.width, h / self.height
        return Camera(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, w, h,
                      self.world_to_camera.clone(), None, None, self.name)

    @staticmethod
    def look_at(eye, target, up, fov_x_deg: float, width: int, height: int, name: str = "") -> "Camera":
        """A pinhole camera at ``eye`` looking at ``target``; ``up`` is the world up direction."""
        eye, target, up = (torch.as_tensor(v, dtype=torch.float64) for v in (eye, target, up))
        for what, v in (("eye", eye), ("target", target), ("up", up)):
            if tuple(v.shape) != (3,) or not bool(torch.isfinite(v).all()):
                raise GscompError(f"look_at: {what} must be 3 finite numbers, got {v.tolist()}")
        fov_x_deg = check_number("look_at: fov_x_deg", float(fov_x_deg) if hasattr(fov_x_deg, "__float__") else fov_x_deg,
                                 0, 180, lo_open=True, hi_open=True)
        z = target - eye
        if not float(z.norm()) > 0:
            raise GscompError("look_at: eye and target are the same point")
        z = z / z.norm()
        x = torch.linalg.cross(z, up)
        if float(x.norm()) < 1e-9:  # looking along up: any perpendicular (the axis least along z)
            axis = torch.zeros(3, dtype=torch.float64)
            axis[int(z.abs().argmin())] = 1.0
            x = torch.linalg.cross(z, axis)
        x = x / x.norm()
        y = torch.linalg.cross(z, x)  # y points down in the image
        R = torch.stack([x, y, z], 0)
        w2c = torch.eye(4, dtype=torch.float64)
        w2c[:3, :3] = R
        w2c[:3, 3] = -R @ eye
        fx = 0.5 * width / torch.tan(torch.deg2rad(torch.tensor(fov_x_deg / 2.0, dtype=torch.float64)))
        return Camera(float(fx), float(fx), width / 2.0, height / 2.0, width, height, w2c, name=name)


def affine_inverse(matrix) -> torch.Tensor:
    """(4, 4) float64 inverse of an affine 4x4 matrix from its 3x3 cofactors in Python floats (no
    fused multiply-adds) rather than LAPACK, whose last bits depend on the CPU: camera centres set
    the SH view directions that encoder decisions are made from. Not affine, or singular: LAPACK."""
    m = torch.as_tensor(matrix, dtype=torch.float64)
    rows = m.tolist()
    if rows[3] != [0.0, 0.0, 0.0, 1.0]:  # (never from our loaders)
        return torch.linalg.inv(m)
    r0, r1, r2 = (row[:3] for row in rows[:3])
    t = [row[3] for row in rows[:3]]

    def cross(a, b):
        return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]

    cols = [cross(r1, r2), cross(r2, r0), cross(r0, r1)]  # columns of adj(A)
    det = r0[0] * cols[0][0] + r0[1] * cols[0][1] + r0[2] * cols[0][2]
    if det == 0.0:
        return torch.linalg.inv(m)
    inv = [[cols[j][i] / det for j in range(3)] for i in range(3)]  # A^-1 = adj(A) / det
    c = [-(inv[i][0] * t[0] + inv[i][1] * t[1] + inv[i][2] * t[2]) for i in range(3)]
    return torch.tensor([inv[i] + [c[i]] for i in range(3)] + [[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)


@dataclass
class Scene:
    train: list[Camera]
    test: list[Camera]
    points: torch.Tensor  # (M, 3) float32 initial points
    colors: torch.Tensor  # (M, 3) float32 in [0, 1]
    extent: float  # radius of the camera centres around their mean, x1.1 (as in the 3DGS reference)
    background: tuple[float, float, float] | None = None  # compositing colour for RGBA data
    meta: dict = field(default_factory=dict)


def camera_extent(cameras: list[Camera]) -> float:
    """3DGS `getNerfppNorm` radius: max distance of camera centres from their mean, times 1.1."""
    if not cameras:
        return 1.0
    centers = torch.stack([c.center for c in cameras])
    r = (centers - centers.mean(0)).norm(dim=1).max()
    return float(r) * 1.1 if float(r) > 0 else 1.0
