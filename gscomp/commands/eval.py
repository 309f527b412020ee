"""`gscomp eval MODEL data=... data.path=...`: image metrics of a model on a scene's held-out views.

MODEL is a splat file gscomp reads (.ply, .gsz, .spz, ...) or a training checkpoint (.pt).
Writes ``metrics.json`` and side-by-side renders (render | ground truth) to ``out`` (default: a
folder ``eval_<model name>`` next to MODEL).
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import GscompError, check_int
from ..fileio import check_regular, run_folder
from ..hydra_app import quote_value, run_hydra
from .common import split_args

USAGE = "usage: gscomp eval MODEL data=KIND data.path=DIR [key=value ...]"


def load_model(path: Path):
    """(Splats, SH degree to render at) from a splat file (its own degree) or a training
    checkpoint (the model as rendered at its step: `checkpoint_model`)."""
    if not path.exists():
        raise GscompError(f"model {path} does not exist")
    check_regular(path)
    if path.suffix == ".pt":
        from ..train.trainer import checkpoint_model

        return checkpoint_model(path)
    from ..io import load_splats

    splats = load_splats(path)
    return splats, splats.sh_degree


# the data settings that decide which views are test views and what their images look like
VIEW_KEYS = ("kind", "path", "downscale", "max_width", "test_every", "max_images", "background", "n_views", "resolution",
             "seed")


def training_mismatch(model: Path, data) -> str | None:
    """A warning when ``model`` sits in a training run's folder (its config.yaml has ``train`` and
    ``data``) whose data settings differ from ``data``: the test views are then not that run's
    (e.g. without its data.max_images, views it trained on become test views). None otherwise.
    Paths compare only when both are absolute (a relative one was relative to that run's folder)."""
    from omegaconf import OmegaConf

    try:
        run = OmegaConf.to_container(OmegaConf.load(model.parent / "config.yaml"))
        here = OmegaConf.to_container(data, resolve=True)
    except Exception:  # no run config (or not one we can read): nothing to compare with
        return None
    if not (isinstance(run, dict) and isinstance(run.get("train"), dict) and isinstance(run.get("data"), dict)):
        return None
    then = run["data"]
    diff = []
    for k in VIEW_KEYS:
        if k not in then or k not in here:
            continue
        a, b = then[k], here[k]
        if k == "path":
            if not (a and b and Path(str(a)).is_absolute() and Path(str(b)).is_absolute()):
                continue
            a, b = str(Path(str(a)).resolve()), str(Path(str(b)).resolve())
        if a != b:
            diff.append(f"data.{k}={b} here, {then[k]} there")
    if not diff:
        return None
    return (f"the run that trained this model ({model.parent / 'config.yaml'}) had other data settings "
            f"({'; '.join(diff)}): these test views are not that run's; give its data.* settings to compare")


def task(cfg) -> int:
    from omegaconf import OmegaConf

    from ..io import stored_size
    from ..metrics import LPIPS_NETS, evaluate, json_text, peak_rss_mb, view_sizes
    from ..fileio import atomic_write_text
    from ..train.trainer import load_scene_from_config, resolve_device, resolve_render_backend
    from .train import print_metrics

    if not cfg.get("model"):
        raise GscompError(USAGE)
    sh = cfg.get("sh_degree")
    if sh is not None:
        check_int("sh_degree", sh, 0, 3)
    check_int("n_renders", cfg.n_renders, 0, 10_000)
    model = Path(str(cfg.model)).expanduser()
    splats, degree = load_model(model)
    lpips_net = str(cfg.get("lpips_net", "vgg"))
    if lpips_net not in LPIPS_NETS:
        raise GscompError(f"lpips_net must be one of {', '.join(LPIPS_NETS)}, got {lpips_net!r}")
    sh = degree if sh is None else min(int(sh), splats.sh_degree)
    device = resolve_device(str(cfg.device), str(cfg.render.backend))
    backend = resolve_render_backend(str(cfg.render.backend), device)
    scene = load_scene_from_config(cfg)
    split = str(cfg.get("split", "test"))
    cams = {"test": scene.test, "train": scene.train, "all": scene.train + scene.test}.get(split)
    if cams is None:
        raise GscompError(f"split must be test, train or all, got {split!r}")
    if not cams:
        raise GscompError(f"the scene has no {split} views (set data.test_every or split=train)")
    mismatch = training_mismatch(model, cfg.data)  # (once the data is known to load: an error says it alone)
    if mismatch:
        print(f"warning: {mismatch}", file=sys.stderr)
    out = Path(str(cfg.out)).expanduser() if cfg.get("out") else model.parent / f"eval_{model.stem}"
    bg = scene.background if scene.background is not None else (0.0, 0.0, 0.0)
    with run_folder(out):  # (not a folder a training run is writing: its config.yaml was overwritten)
        # an earlier eval's metrics beside this one's renders would read as this model's if it stops
        (out / "metrics.json").unlink(missing_ok=True)
        metrics = evaluate(splats, cams, sh_degree=sh, background=bg,
                           backend=backend, device=device, out_dir=out / "renders", n_renders=int(cfg.n_renders),
                           lpips_net=lpips_net, progress=True)
        metrics.update({"model": str(model), "split": split, "sh_degree": sh, **view_sizes(cams),
                        "n_gaussians": len(splats),
                        "model_bytes": stored_size(model),
                        "peak_rss_mb": peak_rss_mb()})
        atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True), make_parents=True)
        atomic_write_text(out / "metrics.json", json_text(metrics), make_parents=True)
    print_metrics(metrics, f"gscomp eval {model.name}", out)
    return 0


def run(argv: list[str]) -> int:
    pos, opts, overrides = split_args(argv)
    if len(pos) > 1:
        raise GscompError(f"eval takes one MODEL, got {len(pos)}: {' '.join(pos)}")
    if pos:
        overrides.append(f"model={quote_value(str(Path(pos[0]).expanduser().resolve()))}")
    elif not opts and not any(a.startswith("model=") for a in overrides):
        raise GscompError(USAGE)
    return run_hydra("eval", task, opts + overrides)
