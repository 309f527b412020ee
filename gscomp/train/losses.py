"""Training losses: L1 and a fast differentiable SSIM (separable Gaussian window).

The SSIM here is the loss used inside the training loop (valid region); reported metrics
(`gscomp.metrics.ssim`) use it over the whole, zero-padded image in float64, as the 3DGS
reference's evaluation does, so numbers compare with published ones.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

_WINDOWS: dict[tuple, torch.Tensor] = {}
C1, C2 = 0.01**2, 0.03**2  # Wang et al.'s constants for images in [0, 1]


def _gauss_1d(size: int, sigma: float, dtype, device) -> torch.Tensor:
    key = (size, sigma, dtype, str(device))
    w = _WINDOWS.get(key)
    if w is None:
        x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        g = torch.exp(-(x * x) / (2 * sigma * sigma))
        w = (g / g.sum()).to(dtype=dtype, device=device)
        _WINDOWS[key] = w
    return w


def _blur(x: torch.Tensor, w: torch.Tensor, same: bool = False) -> torch.Tensor:
    """Separable Gaussian filter on (B, C, H, W): two 1D depthwise convolutions instead of one
    11x11 one (about 5x fewer multiply-adds). 'valid' output, or with ``same`` zero-padded to the
    input's size (separable zero padding equals the 2D filter's)."""
    c = x.shape[1]
    k = w.numel()
    p = k // 2 if same else 0
    x = F.conv2d(x, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c, padding=(0, p))
    return F.conv2d(x, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c, padding=(p, 0))


def _native():
    """The native extension, or None where it cannot be built (torch's operations then)."""
    from .. import native

    try:
        return native.load("raster")
    except native.NativeBuildError:
        return None


class _NativeSSIM(torch.autograd.Function):
    """Mean SSIM of (P, H, W) planes ``x`` against ``y`` (no gradient) by the native extension,
    value and gradient in one pass (`ssim_loss` in cuda/rasterize_cpu.cpp): torch's depthwise
    convolutions and elementwise passes over 15 planes took most of a training step at 1600 px."""

    @staticmethod
    def forward(ctx, x, y, w, pad: int):
        total, grad = _native().ssim_loss(x.contiguous(), y.contiguous(), w.contiguous(), pad, C1, C2,
                                          bool(ctx.needs_input_grad[0]))
        k = w.numel()
        n = x.shape[0] * (x.shape[1] + 2 * pad - k + 1) * (x.shape[2] + 2 * pad - k + 1)
        ctx.save_for_backward(grad)
        return (total / n).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return g * grad, None, None, None


def ssim(img: torch.Tensor, gt: torch.Tensor, window: int = 11, sigma: float = 1.5,
         same: bool = False) -> torch.Tensor:
    """Mean SSIM of images shaped (H, W, 3) or (B, H, W, 3) in [0, 1] (Wang et al. 2004 constants,
    11x11 Gaussian window with sigma 1.5). Over the valid region only (as scikit-image with
    gaussian_weights; the training loss), or with ``same`` over the whole image with zero padding
    (the 3DGS reference's evaluation, which published 3DGS and compression results use)."""
    if img.ndim == 3:
        img, gt = img[None], gt[None]
    h, wd = img.shape[1:3]
    if not same:
        window = min(window, h, wd)
        window -= 1 - window % 2  # odd and no larger than the image
    w = _gauss_1d(window, sigma, img.dtype, img.device)
    if (img.device.type == "cpu" and img.dtype in (torch.float32, torch.float64) and not gt.requires_grad
            and _native() is not None):
        def planes(t):  # (B * 3, H, W)
            return t.permute(0, 3, 1, 2).reshape(-1, h, wd)

        return _NativeSSIM.apply(planes(img), planes(gt.to(img.dtype)), w, window // 2 if same else 0)
    x = img.permute(0, 3, 1, 2)
    y = gt.permute(0, 3, 1, 2)
    # One batched blur over the five moment images keeps the op count low.
    stack = torch.cat([x, y, x * x, y * y, x * y], 1)
    mu_x, mu_y, xx, yy, xy = _blur(stack, w, same).chunk(5, 1)
    mx2, my2, mxy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sx, sy, sxy = xx - mx2, yy - my2, xy - mxy
    s = ((2 * mxy + C1) * (2 * sxy + C2)) / ((mx2 + my2 + C1) * (sx + sy + C2))
    return s.mean()


def l1(img: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    return (img - gt).abs().mean()


def photometric_loss(img: torch.Tensor, gt: torch.Tensor, ssim_lambda: float = 0.2) -> torch.Tensor:
    """The 3DGS loss: (1 - lambda) L1 + lambda (1 - SSIM)."""
    loss = (1.0 - ssim_lambda) * l1(img, gt)
    if ssim_lambda > 0:
        loss = loss + ssim_lambda * (1.0 - ssim(img, gt))
    return loss


__all__ = ["ssim", "l1", "photometric_loss"]
