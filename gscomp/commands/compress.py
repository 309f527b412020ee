"""`gscomp compress IN OUT.gsz [pipeline=PRESET] [pipeline.key=value ...]` (post-hoc).

With no positional IN/OUT (only key=value overrides) this is train-and-compress from images and
is handed to `gscomp.commands.train_compress` (also the verb `gscomp train-and-compress`).
"""
from __future__ import annotations

import contextlib
import copy
import json
import sys
import time
from pathlib import Path

from ..errors import GscompError
from ..fileio import check_not_input, check_output, check_regular, missing_input, output_file
from .common import split_args, stdout_console, usage_error, wants_help

USAGE = ("usage: gscomp compress IN OUT.gsz [--cameras PATH] [--render-mode MODE] [--config-dir DIR] [--json] "
         "[pipeline=PRESET] [pipeline.KEY=VALUE ...]")
HELP = f"""{USAGE}
       gscomp compress data=KIND data.path=DIR pipeline=PRESET out=OUT [key=value ...]

The first form compresses a splat file IN: a .ply, .spz, .splat, .ksplat, PlayCanvas
compressed.ply or SOG (its folder, meta.json or .sog). PRESET: lossless-ish, high (default),
medium, low, compact (configs/pipeline/). --cameras PATH: the views `compact` ranks Gaussians
from (cameras.json, a COLMAP model or a capture folder). --render-mode antialiased|classic: the
mode the scene was made for, where IN cannot say (a .ply from gsplat's antialiased training); by
default IN's own (a .gsz's, SPZ's flag, gscomp's .ply comment; Mip-Splatting's .ply are
antialiased). --config-dir DIR: presets of your own, DIR/pipeline/NAME.yaml for pipeline=NAME (as
in every Hydra verb). --json: the summary as JSON on stdout (sizes per section, ratio, time).
The second form trains from images with the pipeline's stages, then compresses (the same as
`gscomp train-and-compress`); `gscomp compress data=KIND --help` lists its config."""


@contextlib.contextmanager
def encode_progress(enabled: bool = True):
    """A progress bar on stderr (stage, then views rendered by the importance stage) for
    ``encode_gsz(progress=...)``. When stderr is not a terminal: plain lines for an encode that
    takes more than a few seconds (`gscomp.ticker`); ``enabled=False``: nothing."""
    if not enabled:
        yield None
        return
    if not sys.stderr.isatty():
        from ..ticker import Ticker

        tick = Ticker(first=5.0, every=30.0)

        def line(what: str, done: int, total: int) -> None:
            if tick.due(what):
                print(f"{what} {done}/{max(total, 1)} ({tick.elapsed():.0f} s)", file=sys.stderr, flush=True)

        yield line
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("encoding", total=1)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=escape(what), completed=done, total=max(total, 1))  # (stage names from a config)

        yield update


def check_preset(name: str, config_dir: Path | None) -> None:
    """Refuse a ``pipeline=NAME`` that names no preset of configs/pipeline/ or of
    ``config_dir``/pipeline/, saying how to give a file of one's own when that was meant."""
    from ..hydra_app import CONFIG_DIR

    dirs = [CONFIG_DIR, *([config_dir] if config_dir is not None else [])]
    if any((d / "pipeline" / f"{name}.yaml").is_file() for d in dirs):
        return
    known = ", ".join(sorted({p.stem for d in dirs for p in (d / "pipeline").glob("*.yaml")}))
    hint = ""
    if "/" in name or name.endswith((".yaml", ".yml")):
        hint = ("; pipeline= takes a preset's name: for a file of your own, --config-dir DIR pipeline=NAME with the "
                "file at DIR/pipeline/NAME.yaml")
    elif config_dir is not None and (config_dir / f"{name}.yaml").is_file():
        hint = (f"; --config-dir takes the folder that holds pipeline/: --config-dir {config_dir.parent} "
                f"finds {config_dir.name}/{name}.yaml" if config_dir.name == "pipeline" else
                f"; --config-dir takes the folder that holds pipeline/{name}.yaml, not {name}.yaml itself")
    raise GscompError(f"unknown pipeline preset {name!r} (available: {known}){hint}")


def compose_pipeline(overrides: list[str], config_dir: Path | None = None) -> dict:
    """Compose ``pipeline`` from configs/pipeline/*.yaml (and ``config_dir``/pipeline/*.yaml, a
    checked `take_config_dir` folder of one's own) with Hydra; returns a plain dict."""
    from hydra import compose
    from omegaconf import OmegaConf

    from ..hydra_app import own_hydra, searchpath_override

    ov = []
    chosen = False
    for o in overrides:
        if "=" not in o and not o.startswith("~"):
            raise GscompError(f"bad override {o!r}: expected key=value or ~key")
        key = o.split("=", 1)[0].lstrip("+~")
        if not (key == "pipeline" or key.startswith("pipeline.")):
            raise GscompError(f"unknown override {o!r}: post-hoc compress only takes pipeline=... and pipeline.KEY=VALUE")
        if key == "pipeline":  # no primary config, so selecting the group is an append
            name = o.split("=", 1)[1]
            check_preset(name, config_dir)
            o = "+pipeline=" + name
            chosen = True
        ov.append(o)
    if not chosen:
        ov.insert(0, "+pipeline=default")
    if config_dir is not None:
        ov.append(searchpath_override(config_dir))
    key = tuple(ov) if config_dir is None else None  # (one's own folder may change between calls)
    if key in _COMPOSED:
        return copy.deepcopy(_COMPOSED[key])
    try:
        with own_hydra(version_base=None):
            cfg = compose(overrides=ov)
        out = OmegaConf.to_container(cfg.get("pipeline"), resolve=True)  # (resolving can fail too)
    except Exception as e:  # Hydra/OmegaConf errors
        from ..hydra_app import config_error

        raise config_error(e, "bad pipeline config: ") from None
    if not isinstance(out, dict):
        raise GscompError("bad pipeline config: `pipeline` is not a mapping")
    if key is not None:
        _COMPOSED[key] = copy.deepcopy(out)
    return out


# gscomp's own presets as composed, by their overrides: composing takes ~55 ms (most of an
# encode_bytes of a small scene) and Hydra's process-wide state (`own_hydra`)
_COMPOSED: dict[tuple, dict] = {}


def run(argv: list[str]) -> int:
    from ..hydra_app import take_config_dir, take_option

    hydra_argv = argv  # train-and-compress: run_hydra takes --config-dir itself
    argv, cameras = take_option(argv, ("--cameras",), "a path: cameras.json, a COLMAP model or a capture folder")
    argv, mode = take_option(argv, ("--render-mode",), "antialiased or classic")
    if mode not in (None, "antialiased", "classic"):
        raise GscompError(f"--render-mode {mode!r}: expected antialiased or classic")
    argv, config_dir = take_config_dir(argv)
    pos, opts, overrides = split_args(argv)
    if pos:
        # post-hoc: OUT need not exist yet, so a `.gsz` argument is OUT even when it has `=` in
        # it (`sweep/lr=0.01/scene.gsz`); real overrides never end in .gsz here
        pos += [o for o in overrides if o.lower().endswith(".gsz")]
        overrides = [o for o in overrides if not o.lower().endswith(".gsz")]
    elif overrides:
        if cameras is not None:
            raise GscompError("--cameras is for compressing a splat file: gscomp compress IN OUT.gsz --cameras PATH")
        if mode is not None:
            raise GscompError("--render-mode is for compressing a splat file (training takes train.antialiased=true)")
        try:  # lazily: train-and-compress pulls in the trainer
            from . import train_compress
        except ModuleNotFoundError as e:
            if e.name != "gscomp.commands.train_compress":
                raise
            raise GscompError("train-and-compress (gscomp compress data=... out=...) is not available in this build") from None
        return train_compress.run(hydra_argv, prog="gscomp compress")
    if wants_help(opts):
        print(HELP)
        return 0
    as_json = "--json" in opts
    opts = [o for o in opts if o != "--json"]
    if opts or len(pos) != 2:
        raise usage_error(USAGE, opts)
    src, dst = Path(pos[0]), output_file(pos[1])
    if not src.exists():
        raise missing_input(src)
    check_regular(src)
    if dst.suffix.lower() != ".gsz":
        raise GscompError(f"output must end in .gsz, got {dst.name!r}")
    check_not_input(src, dst)
    check_output(dst)  # (now, not after a long encode)
    cfg = compose_pipeline(overrides, config_dir)
    from ..codec import encode_gsz
    from ..io import load_splats, stored_size
    from ..stages.pipeline import Pipeline

    pipe = Pipeline.from_config(cfg)  # validate the config before the (slow) load
    for name, st in zip(pipe.names, pipe.stages):
        if st.posthoc_note:
            print(f"note: {name} {st.posthoc_note}", file=sys.stderr)
    state = _cameras_state(pipe, src, cameras)
    splats = load_splats(src)
    if mode is not None:
        splats = splats.replace(antialiased=mode == "antialiased")
    src_bytes = stored_size(src)  # (of what was read: not re-measured after a long encode)
    if not len(splats):  # a valid, empty scene: its .gsz decodes to an empty one
        print(f"note: {src.name} holds no Gaussians", file=sys.stderr)
    from .. import native

    native.warm("rans", *(["raster"] if any(st.type == "importance" for st in pipe.stages) else []))
    n_in = len(splats)  # (importance.prune may keep fewer)
    t0 = time.perf_counter()
    with encode_progress() as progress:
        stats = encode_gsz(splats, dst, pipe, state=state, progress=progress, consume=True)
    dt = time.perf_counter() - t0
    if as_json:
        n, total = stats["n"], stats["total_bytes"]
        print(json.dumps({**stats, "input": str(src), "input_bytes": src_bytes, "input_gaussians": n_in, "output": str(dst),
                          "ratio": round(src_bytes / total, 4) if n and total else None, "seconds": round(dt, 4),
                          "gaussians_per_second": round(n_in / dt) if n and dt > 0 else None}, indent=2))
        return 0
    print_stats(stats, src, src_bytes, dt, n_in)
    return 0


def _cameras_state(pipe, src: Path, cameras: str | None):
    """The views the importance stage scores from: ``--cameras``, else the cameras.json of a
    trained model (next to IN, or INRIA's MODEL/point_cloud/iteration_N/ layout); None without
    an importance stage (the cameras are then not needed) or without cameras (sphere views)."""
    from types import SimpleNamespace

    from ..codec import importance_cameras
    from ..data.cameras import find_cameras_json

    imp = [s for s in pipe.stages if s.type == "importance"]
    if not imp:
        if cameras is not None:
            print("note: --cameras is ignored: this pipeline has no importance stage", file=sys.stderr)
        return None
    if cameras is None:
        found = find_cameras_json(src)
        if found is None:
            return None
        cameras = str(found)
    cams = importance_cameras(cameras, pipe)
    print(f"importance: scoring from {len(cams)} views of {cameras}", file=sys.stderr)
    return SimpleNamespace(cameras=cams)


def print_stats(stats: dict, src: Path, in_bytes: int, seconds: float, n_in: int) -> None:
    """The summary table; ``n_in``: the input's Gaussians (the file may keep fewer: importance.prune)."""
    from rich.markup import escape
    from rich.table import Table

    n = stats["n"]
    count = f"{n:,} Gaussians" if n == n_in else f"{n:,} of {n_in:,} Gaussians kept"
    t = Table(title=escape(f"{src.name} -> .gsz ({stats['pipeline']}, {count}, SH {stats['sh_degree']})"))
    t.add_column("section")
    t.add_column("bytes", justify="right")
    t.add_column("bits/Gaussian", justify="right")
    for name, b in stats["sections"].items():
        t.add_row(escape(name), f"{b:,}", f"{8 * b / n:.2f}" if n else "-")
    t.add_row("header+table", f"{stats['header_bytes']:,}", f"{8 * stats['header_bytes'] / n:.2f}" if n else "-")
    total = stats["total_bytes"]
    t.add_row("[b]total", f"[b]{total:,}", f"[b]{stats['bits_per_gaussian']:.2f}" if n else "-")
    c = stdout_console()
    c.print(t)
    if not n:  # (an empty scene: no ratio or rate to speak of)
        c.print(f"input {in_bytes:,} bytes -> {total:,} bytes, encoded in {seconds:.2f} s")
        return
    ratio = in_bytes / total if total else 0.0
    rate = n_in / seconds if seconds > 0 else 0.0  # (input Gaussians: what the user gave)
    c.print(f"input {in_bytes:,} bytes -> {total:,} bytes (ratio {ratio:.2f}x), encoded in {seconds:.2f} s ({rate:,.0f} Gaussians/s)")
