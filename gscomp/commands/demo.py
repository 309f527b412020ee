"""`gscomp demo`: train the embedded procedural scene (``data=synthetic``, ``train=fast``) and print
a report. Everything is a Hydra override: ``gscomp demo train.steps=300 out=/tmp/demo``.

The report is a list of rows (one per model: trained .ply, and later compressed .gsz / decoded), so
adding a compression step is a few lines in `task`.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..hydra_app import output_dir, run_hydra


def report_row(name: str, metrics: dict, path: Path, seconds: float) -> dict:
    return {"model": name, "psnr": metrics["psnr"], "ssim": metrics["ssim"], "n_gaussians": metrics["n_gaussians"],
            "seconds": seconds, "bytes": path.stat().st_size if path.exists() else None}


def print_report(rows: list[dict], title: str = "gscomp demo") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("model", "PSNR (dB)", "SSIM", "#Gaussians", "time (s)", "file size"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        size = "-" if r["bytes"] is None else f"{r['bytes'] / 1e6:.2f} MB"
        table.add_row(r["model"], f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", str(r["n_gaussians"]),
                      f"{r['seconds']:.1f}", size)
    Console(file=sys.stdout).print(table)


def task(cfg) -> int:
    from ..train import train

    out = output_dir(cfg)
    t0 = time.perf_counter()
    _, metrics = train(cfg, out_dir=out)
    rows = [report_row("trained (point_cloud.ply)", metrics, out / "point_cloud.ply", time.perf_counter() - t0)]
    # Compression and decoding rows are appended here (encode_gsz -> decode_gsz -> evaluate).
    print_report(rows)
    print(f"outputs in {out}")
    return 0


def run(argv: list[str]) -> int:
    from ..train import TrainInterrupted

    try:
        return run_hydra("demo", task, argv)
    except TrainInterrupted as e:
        print(f"interrupted at step {e.step}; checkpoint saved to {e.path}", file=sys.stderr)
        return 130
