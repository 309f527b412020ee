"""Image-quality metrics for evaluation: PSNR, SSIM (as the 3DGS reference evaluates it, so the
numbers compare with published ones), LPIPS (VGG by default, as the 3DGS reference) only when the
`lpips` package and its weights are already on this machine (never downloaded), and side-by-side
renders. Scores are taken on the float renders clamped to [0, 1] (the 3DGS reference scores the
8-bit PNGs it saved: 0.002-0.01 dB apart on the scenes measured).
"""
from __future__ import annotations

import json
import math
import resource
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .errors import DataWarning
from .fileio import atomic_open
from .ticker import Ticker

UNAVAILABLE = "unavailable"
LPIPS_NETS = {"vgg": "vgg16", "alex": "alexnet"}  # lpips' backbone -> torchvision's weight file prefix
EMPTY_ALPHA = 1.0 / 255.0  # a view whose render nowhere reaches this opacity shows nothing of the model


def psnr(img: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> float:
    a, b = _np(img), _np(gt)
    mse = float(np.mean((np.clip(a, 0, 1) - b) ** 2, dtype=np.float64))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def ssim(img: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> float:
    """SSIM as the 3DGS reference evaluates it (and with it the papers that report 3DGS and
    compression results): 11x11 Gaussian window, sigma 1.5, Wang et al. constants, zero-padded
    'same' filtering, averaged over every pixel and channel. (scikit-image averages over the
    valid region only, which gives lower values on small images.) In float64, filtered with
    scipy's 1D correlations: 10x faster than torch's float64 convolutions (5.5-9 s for one 1600x1200
    view), the same value to 1e-15."""
    from scipy.ndimage import correlate1d

    from .train.losses import C1, C2, _gauss_1d

    w = _gauss_1d(11, 1.5, torch.float64, "cpu").numpy()

    def blur(x):  # (H, W, C): along the rows, then the columns; zero padding
        return correlate1d(correlate1d(x, w, axis=1, mode="constant"), w, axis=0, mode="constant")

    a = np.clip(_np(img), 0, 1).astype(np.float64)
    b = _np(gt).astype(np.float64)
    mu_a, mu_b = blur(a), blur(b)
    ma2, mb2, mab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    va, vb, cov = blur(a * a) - ma2, blur(b * b) - mb2, blur(a * b) - mab
    return float((((2 * mab + C1) * (2 * cov + C2)) / ((ma2 + mb2 + C1) * (va + vb + C2))).mean())


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def lpips_model(net: str = "vgg"):
    """(an LPIPS network with the ``net`` backbone, None) if the `lpips` package and the backbone's
    torchvision weights are present locally, else (None, why not). Never downloads (torch hub is
    pointed at the existing cache only). VGG is what the 3DGS reference's metrics.py reports
    (AlexNet's values are lower: the two do not compare)."""
    from .errors import GscompError, one_line

    if net not in LPIPS_NETS:
        raise GscompError(f"lpips_net must be one of {', '.join(LPIPS_NETS)}, got {net!r}")
    try:
        import lpips
    except ModuleNotFoundError as e:
        if e.name == "lpips":
            return None, "the lpips package is not installed"
        return None, f"importing lpips failed ({one_line(e)})"
    except Exception as e:  # a broken torchvision next to it, typically
        return None, f"importing lpips failed ({one_line(e)})"
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    prefix = LPIPS_NETS[net]
    if not any(hub.glob(f"{prefix}-*.pth")):
        return None, f"no {net} weights ({prefix}-*.pth) in {hub}; gscomp never downloads them"
    try:
        return lpips.LPIPS(net=net, verbose=False).eval(), None
    except Exception as e:
        return None, f"LPIPS({net}) could not be built ({one_line(e)})"


def finite(o):
    """``o`` with every non-finite float as None, through dicts, lists and tuples: JSON has no
    Infinity (the PSNR of a render identical to its image) and many readers refuse it."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    return o


def json_text(metrics: dict) -> str:
    """``metrics`` as indented JSON that every parser reads (`finite`)."""
    return json.dumps(finite(metrics), indent=2, allow_nan=False) + "\n"


def is_report(path: Path) -> bool:
    """Whether ``path`` is the report.json of a gscomp train-and-compress run (not a user's own
    file of that name)."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and {"gsz_bytes", "pipeline"} <= report.keys()


def view_sizes(cameras: Sequence) -> dict:
    """``resolution`` [w, h] of the views (the commonest size when they differ) and, only when they
    differ, ``resolutions``: {"WxH": number of views} (captures with mixed image sizes)."""
    counts: dict[str, int] = {}
    for c in cameras:
        key = f"{c.width}x{c.height}"
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return {"resolution": None}
    common = max(counts, key=counts.get)  # (first seen wins a tie)
    out = {"resolution": [int(v) for v in common.split("x")]}
    if len(counts) > 1:
        out["resolutions"] = counts
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def save_side_by_side(path: Path, img: torch.Tensor, gt: torch.Tensor) -> None:
    """Write render | ground truth as one PNG (atomically)."""
    from PIL import Image

    both = torch.cat([img.detach().cpu().clamp(0, 1), gt.detach().cpu().clamp(0, 1)], 1)
    arr = (both.numpy() * 255.0 + 0.5).astype(np.uint8)
    with atomic_open(path, make_parents=True) as f:
        Image.fromarray(arr).save(f, format="PNG")


@torch.no_grad()
def evaluate(splats, cameras: Sequence, *, sh_degree: int | None = None, background=(0.0, 0.0, 0.0),
             backend: str = "auto", device: torch.device | str = "cpu", out_dir: Path | None = None,
             n_renders: int = 4, use_lpips: bool = True, lpips_net: str = "vgg", progress: bool = False) -> dict:
    """Render ``splats`` from every camera that has an image and average PSNR / SSIM (/ LPIPS)
    over the views (``per_view``: each view's). Writes ``out_dir/NAME.png`` (render | ground
    truth) for the first ``n_renders``. Warns when views show nothing of the model (a model of
    another scene, or of another frame: the scores would read as a very bad model). ``progress``:
    a line on stderr for a scoring that takes more than a few seconds (large models or images), every
    10 s on a terminal, 30 s in a log."""
    from .errors import GscompError
    from .render import render

    cams = [c for c in cameras if c.has_image]
    if not cams:
        raise GscompError("no evaluation views with images")
    splats = splats.to(device)
    sh = splats.sh_degree if sh_degree is None else min(int(sh_degree), splats.sh_degree)
    bg = torch.as_tensor(background, dtype=torch.float32, device=device)
    net, why = lpips_model(lpips_net) if use_lpips else (None, "not asked for")
    if out_dir is not None:  # an earlier run's renders (other views, more of them) would read as this one's
        for old in Path(out_dir).glob("[0-9][0-9][0-9]_*.png"):
            old.unlink(missing_ok=True)
    ps, ss, ls, views, empty = [], [], [], [], []
    tick = Ticker(first=5.0, every=10.0 if sys.stderr.isatty() else 30.0) if progress else None
    for i, cam in enumerate(cams):
        if tick is not None and tick.due():
            print(f"evaluating: view {i + 1} of {len(cams)} ({tick.elapsed():.0f} s)", file=sys.stderr, flush=True)
        out = render(splats, cam, sh_degree=sh, background=bg, backend=backend)
        img = out.colors[0].clamp(0, 1).cpu()
        gt = cam.image.cpu()
        name = Path(cam.name).stem if cam.name else f"view_{i:03d}"
        ps.append(psnr(img, gt))
        ss.append(ssim(img, gt))
        views.append({"view": name, "psnr": round(ps[-1], 4), "ssim": round(ss[-1], 5)})
        if net is not None:
            to = lambda x: x.permute(2, 0, 1)[None] * 2 - 1  # noqa: E731  (LPIPS wants [-1, 1] NCHW)
            ls.append(float(net(to(img), to(gt))))
            views[-1]["lpips"] = round(ls[-1], 5)
        if not float(out.alphas.max()) >= EMPTY_ALPHA:
            empty.append(name)
        if out_dir is not None and i < n_renders:
            save_side_by_side(Path(out_dir) / f"{i:03d}_{name}.png", img, gt)
    if empty:
        shown = ", ".join(empty[:4]) + (f" and {len(empty) - 4} more" if len(empty) > 4 else "")
        warnings.warn(f"{len(empty)} of {len(cams)} views show nothing of the model ({shown}): is it a model of this "
                      "scene, in its frame (the data.* settings it was trained with)?", DataWarning, stacklevel=2)
    return {
        "psnr": round(float(np.mean(ps)), 4),
        "ssim": round(float(np.mean(ss)), 5),
        "lpips": round(float(np.mean(ls)), 5) if ls else UNAVAILABLE,
        **({} if ls else {"lpips_note": why}),
        "lpips_net": lpips_net,
        "n_views": len(cams),
        **({"empty_views": len(empty)} if empty else {}),
        "render_mode": "antialiased" if splats.antialiased else "classic",  # (the scores depend on it)
        "per_view": views,
    }


__all__ = ["psnr", "ssim", "evaluate", "finite", "is_report", "json_text", "lpips_model", "save_side_by_side", "peak_rss_mb", "UNAVAILABLE"]
