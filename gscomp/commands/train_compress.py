"""`gscomp compress data=... pipeline=PRESET out=OUT`: train with the pipeline's stages active, then
write the `.gsz`, decode it back from disk and evaluate the *decoded* scene.

Outputs in OUT: ``scene.gsz``, ``scene.ply`` (the decoded scene as a standard INRIA .ply),
``report.json`` (gsz_bytes = size of the file on disk, n_gaussians, psnr/ssim of the decoded scene on
the test views, bytes per section, the trainer's own metrics) and the trainer's outputs
(config.yaml, point_cloud.ply = the model before coding, metrics.json, renders/).
`gscomp decode OUT/scene.gsz x.ply` reproduces ``scene.ply`` exactly, so its PSNR is the reported one.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from ..errors import GscompError, Note, check_int
from ..fileio import atomic_write_text, run_folder
from ..hydra_app import config_error, output_dir, run_hydra
from .common import split_args, stdout_console


def compress_trained(cfg, out: Path) -> dict:
    """Train with the configured pipeline, encode, decode from disk, evaluate. Returns the report."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..stages.pipeline import Pipeline
    from ..train import train

    if not cfg.get("pipeline"):
        raise GscompError("train-and-compress needs a pipeline: add pipeline=PRESET (e.g. pipeline=c3dgs)")
    try:
        pipe_cfg = OmegaConf.to_container(cfg.pipeline, resolve=True)
    except OmegaConfBaseException as e:  # e.g. a key copied from a removed stage
        raise config_error(e, "bad pipeline config: ") from None
    pipe = Pipeline.from_config(pipe_cfg)
    # what the pipeline cannot code is refused before training, not after
    trained = check_int("train.sh_degree", cfg.train.get("sh_degree", 3), 0, 3, floats=True)
    pipe.check_input(trained, "train.sh_degree is")
    pipe.coding_notes()
    if pipe.sh_degree is not None and pipe.sh_degree < trained:
        warnings.warn(f"pipeline.sh_degree={pipe.sh_degree} codes SH degree {pipe.sh_degree}, but training goes to "
                      f"train.sh_degree={trained}: the higher bands are trained and then dropped (train.sh_degree="
                      f"{pipe.sh_degree} trains what is kept)", Note)
    state, train_metrics = train(cfg, stages=pipe.stages, out_dir=out)
    trainer = state.trainer
    try:
        return _code_and_report(cfg, out, pipe, state, train_metrics)
    except KeyboardInterrupt:  # the training is kept: resume=true goes straight to coding
        raise trainer.interrupted() from None


def _code_and_report(cfg, out: Path, pipe, state, train_metrics: dict) -> dict:
    from ..codec import decode_gsz, encode_gsz
    from ..io import save_splats
    from ..metrics import evaluate, json_text, view_sizes
    from .compress import encode_progress

    trainer = state.trainer
    gsz = out / "scene.gsz"
    t1 = time.perf_counter()
    # raw parameters (not the rendered transform): each stage's bake/encode applies its own coding
    with encode_progress(bool(cfg.get("progress", True))) as progress:
        stats = encode_gsz(state.splats().detach().to("cpu"), gsz, pipe, state=state, progress=progress)
    t_enc = time.perf_counter() - t1
    t2 = time.perf_counter()
    decoded = decode_gsz(gsz)  # from disk, exactly what `gscomp decode` will produce
    t_dec = time.perf_counter() - t2
    save_splats(out / "scene.ply", decoded)
    scene = trainer.scene
    cams = scene.test or scene.train
    bg = scene.background if scene.background is not None else (0.0, 0.0, 0.0)
    m = evaluate(decoded, cams, sh_degree=decoded.sh_degree, background=bg, backend=trainer.backend,
                 device=trainer.device, out_dir=out / "renders_decoded", n_renders=int(cfg.train.get("n_renders", 4)),
                 progress=bool(cfg.get("progress", True)))
    report = {
        "pipeline": pipe.name,
        "gsz_bytes": gsz.stat().st_size,
        "n_gaussians": len(decoded),
        "psnr": m["psnr"],
        "ssim": m["ssim"],
        **{k: m[k] for k in ("lpips", "lpips_note", "lpips_net", "n_views", "empty_views") if k in m},
        "split": "test" if scene.test else "train",
        "sh_degree": decoded.sh_degree,  # what PSNR/SSIM were rendered at (as the trained model's)
        "render_mode": m["render_mode"],
        **view_sizes(cams),
        "sections": stats.get("sections", {}),
        "header_bytes": stats.get("header_bytes"),  # (the sections plus this are the file)
        "bits_per_gaussian": stats.get("bits_per_gaussian"),
        "decoded_ply_bytes": (out / "scene.ply").stat().st_size,
        "train_seconds": train_metrics["train_seconds"],  # training only, over resumes too (as metrics.json)
        "encode_seconds": round(t_enc, 3),
        "decode_seconds": round(t_dec, 3),
        "trained": {k: train_metrics.get(k) for k in ("psnr", "ssim", "n_gaussians", "ply_bytes")},
        "per_view": m["per_view"],  # (of the decoded scene; renders_decoded/ holds the first n_renders)
    }
    atomic_write_text(out / "report.json", json_text(report))
    return report


def print_report(report: dict, out: Path | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"gscomp compress ({report['pipeline']})"))
    table.add_column("section")
    table.add_column("bytes", justify="right")
    table.add_column("share", justify="right")
    total = report["gsz_bytes"]
    rows = sorted(report["sections"].items(), key=lambda kv: -kv[1])
    if report.get("header_bytes") is not None:
        rows.append(("header+table", report["header_bytes"]))
    for name, b in rows:
        table.add_row(escape(name), f"{b:,}", f"{100.0 * b / max(total, 1):.1f}%")
    table.add_row(f"[b]total (file, {total / 1e6:.3f} MB)", f"[b]{total:,}", "100.0%")
    table.add_row("Gaussians", f"{report['n_gaussians']:,}", f"{report['bits_per_gaussian']:.1f} bit/G" if report["n_gaussians"] else "-")
    sh = f", SH {report['sh_degree']}" if report.get("sh_degree") is not None else ""
    table.add_row(f"PSNR / SSIM ({report['split']}, decoded{sh})", f"{report['psnr']:.2f} dB", f"{report['ssim']:.4f}")
    tr = report["trained"]
    if tr.get("psnr") is not None:
        table.add_row("PSNR before coding", f"{tr['psnr']:.2f} dB", "")
    stdout_console().print(table)
    if out is not None:
        print(f"outputs in {out}")


def task(cfg) -> int:
    with run_folder(output_dir(cfg)) as out:
        report = compress_trained(cfg, out)
    print_report(report, out)
    return 0


def run(argv: list[str], prog: str = "gscomp train-and-compress") -> int:
    pos = split_args(argv)[0]
    if pos:  # `gscomp train-and-compress IN OUT`: the post-hoc form is the verb compress
        raise GscompError(f"train-and-compress trains from images and takes only key=value overrides "
                          f"(data=KIND data.path=DIR pipeline=PRESET out=OUT); to compress a splat file: "
                          f"gscomp compress {pos[0]} OUT.gsz")
    from ..hydra_app import take_config_dir
    from ..train import TrainInterrupted
    from .compress import check_preset

    config_dir = take_config_dir(argv)[1]
    for o in argv:  # (Hydra would say "Could not find 'pipeline/NAME'"; a sweep's list is Hydra's)
        key, eq, value = o.partition("=")
        if eq and key.lstrip("+") == "pipeline" and value not in ("", "null") and not any(c in value for c in ",[]()"):
            check_preset(value, config_dir)
    try:
        return run_hydra("train", task, argv, prog=prog)
    except TrainInterrupted as e:
        print(e.line(), file=sys.stderr)
        return 128 + e.signum
