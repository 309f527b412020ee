"""`gscomp train [key=value ...]`: vanilla 3DGS training as a Hydra app (config `configs/train.yaml`).

Examples:
    gscomp train data=colmap data.path=DIR out=OUT
    gscomp train data=blender data.path=scenes/lego data.downscale=4
    gscomp train -m train.steps=1000,3000 data=synthetic out=sweep   # multirun: sweep/0, sweep/1
    gscomp train --cfg job                                            # print the composed config
"""
from __future__ import annotations

import sys

from ..errors import GscompError
from ..fileio import run_folder
from ..hydra_app import output_dir, run_hydra
from .common import stdout_console


def print_metrics(metrics: dict, title: str = "result", out=None) -> None:
    """A short table of the headline numbers."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title))
    for key in ("psnr", "ssim", "lpips", "n_gaussians", "train_seconds", "ply_bytes", "split", "render_mode"):
        if key in metrics and not (key == "render_mode" and metrics[key] == "classic"):
            v = metrics[key]
            note = f" ({metrics['lpips_note']})" if key == "lpips" and metrics.get("lpips_note") else ""
            if key == "lpips" and metrics.get("lpips_net"):
                key = f"lpips ({metrics['lpips_net']})"
            table.add_row(key, escape((f"{v:.4f}" if isinstance(v, float) else str(v)) + note))
    if out is not None:
        table.add_row("output", escape(str(out)))
    stdout_console().print(table)


def task(cfg) -> int:
    from ..train import train

    if cfg.get("pipeline"):
        raise GscompError("pipeline=... trains and compresses: use `gscomp compress data=... pipeline=... out=OUT`")
    with run_folder(output_dir(cfg)) as out:
        _, metrics = train(cfg, out_dir=out)
    print_metrics(metrics, "gscomp train", out)
    return 0


def run(argv: list[str]) -> int:
    from ..train import TrainInterrupted

    try:
        return run_hydra("train", task, argv)
    except TrainInterrupted as e:
        print(e.line(), file=sys.stderr)
        return 128 + e.signum
