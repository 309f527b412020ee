"""`gscomp demo`: the main job on the embedded procedural scene, no data needed.

Train-and-compress (``data=synthetic``, ``train=fast``, ``pipeline=c3dgs``) -> ``OUT/scene.gsz`` ->
decode it from disk to ``OUT/scene.ply`` -> report PSNR/SSIM of the decoded scene on the held-out
views, bytes per section and the size against the uncompressed ``.ply`` of the trained model.
Everything is a Hydra override: ``gscomp demo train.steps=300 out=/tmp/demo pipeline=c3dgs``.
"""
from __future__ import annotations

import sys

from ..fileio import run_folder
from ..hydra_app import output_dir, run_hydra


def task(cfg) -> int:
    from .common import own_command
    from .train_compress import compress_trained, print_report

    with run_folder(output_dir(cfg)) as out:
        report = compress_trained(cfg, out)
    print_report(report)
    ply_bytes = report["trained"].get("ply_bytes")
    if ply_bytes:
        print(f"trained model {ply_bytes / 1e6:.2f} MB (.ply) -> {report['gsz_bytes'] / 1e6:.3f} MB (.gsz): "
              f"{ply_bytes / report['gsz_bytes']:.1f}x smaller; decoded PSNR {report['psnr']:.2f} dB "
              f"(before coding {report['trained']['psnr']:.2f} dB)")
    print(f"outputs in {out}: scene.gsz, scene.ply (decoded), report.json  —  view with: {own_command()} view {out / 'scene.gsz'}")
    return 0


def run(argv: list[str]) -> int:
    from ..train import TrainInterrupted

    try:
        return run_hydra("demo", task, argv, prog="gscomp demo")
    except TrainInterrupted as e:
        print(e.line(resume_hint=False), file=sys.stderr)
        return 128 + e.signum
