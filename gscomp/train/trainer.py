"""The 3DGS training loop: `train(cfg, stages=[...]) -> (state, metrics)`.

One image per step; per-parameter Adam learning rates as in the 3DGS reference (means scaled by the
scene extent with exponential decay); SH degree raised every ``sh_degree_interval`` steps (fewer
when the run would not reach ``sh_degree`` otherwise);
(1 - lambda) L1 + lambda D-SSIM; adaptive density control delegated to a strategy object
(`gscomp.train.strategy`). Compression stages plug in through `Stage` hooks; progress, evaluation
or logging through ``callbacks`` (callables ``cb(state, logs)`` run after every step).

Outputs in the run folder: ``config.yaml`` (resolved), ``checkpoints/ckpt_STEP.pt`` (every
``train.ckpt_every`` steps, the last one included, and on Ctrl-C), ``point_cloud.ply``, ``metrics.json``, ``renders/*.png``.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import re
import signal
import sys
import warnings
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import GscompError, Note, check_bool, check_int, check_number, check_schedule, one_line
from ..fileio import atomic_open
from ..fileio import atomic_write_text
from ..splats import FIELDS, Splats, num_sh_rest, rgb_to_sh0
from ..signals import raise_stop, stop_signals
from ..metrics import psnr
from .losses import photometric_loss
from .state import TrainState
from .strategy import build_strategy

CKPT_DIR = "checkpoints"
# what train-and-compress writes after training (gscomp.commands.train_compress)
CODED_OUTPUTS = ("scene.gsz", "scene.ply", "report.json")


class TrainInterrupted(KeyboardInterrupt):
    """Ctrl-C during training. ``saved``: a checkpoint of step ``step`` was written to ``path``;
    else (a second Ctrl-C inside a step, whose state is half updated) nothing was, and ``path``
    is the newest earlier checkpoint, if any."""

    def __init__(self, step: int, path: Path | None, saved: bool = True, signum: int = signal.SIGINT):
        super().__init__(f"interrupted at step {step}; checkpoint saved to {path}" if saved else
                         "interrupted inside a training step: nothing saved (its state was half updated)")
        self.step, self.path, self.saved = step, path, saved
        self.signum = signum  # what stopped it (SIGINT, or SIGTERM/SIGHUP): the exit status is 128 + it

    def line(self, resume_hint: bool = True) -> str:
        """What the CLI prints."""
        if self.saved:
            return f"{self}" + (f" (resume with resume={self.path})" if resume_hint else "")
        if self.path is None:
            return f"{self}; no checkpoint was written before"
        return f"{self}; the last checkpoint is {self.path}" + (f" (resume with resume={self.path})" if resume_hint else "")


# ---------------------------------------------------------------------------- helpers
def resolve_device(name: str, backend: str = "auto") -> torch.device:
    """``auto`` is CUDA when it is available and the render backend can use it: not with
    ``render.backend=cpu`` (the native CPU rasterizer takes CPU tensors only), and with
    ``render.backend=auto`` only when gsplat is installed (else the native CPU kernels beat the
    PyTorch reference on the GPU)."""
    from ..render import _has_gsplat

    if name == "auto":
        if backend == "cpu":
            usable = False
        elif backend == "auto":
            usable = _has_gsplat()
        else:  # gsplat, or the PyTorch reference on the GPU
            usable = True
        return torch.device("cuda" if usable and torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise GscompError(f"unknown device {name!r} (use auto, cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GscompError("device=cuda requested but CUDA is not available")
    return dev


def resolve_render_backend(name: str, device: torch.device) -> str:
    from ..render import resolve_backend

    if name == "auto":  # the render API's rule for data on `device` (gsplat, torch or cpu)
        return resolve_backend(name, device)
    resolve_backend(name)  # validates the name
    if name == "gsplat" and device.type != "cuda":
        raise GscompError("render.backend=gsplat needs device=cuda")
    if name == "cpu" and device.type != "cpu":
        raise GscompError(f"render.backend=cpu needs device=cpu (or auto), got device={device}")
    return name


def as_config(cfg: Any) -> DictConfig:
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)


def load_scene_from_config(cfg: DictConfig):
    """`gscomp.data.load_scene` with the ``data`` config group: known keys by name, any other key
    in ``data`` is passed to the loader as a keyword argument (e.g. ``data.max_images``)."""
    from ..data import load_scene

    d = OmegaConf.to_container(cfg.data, resolve=True)
    kind = d.pop("kind", None)
    if not kind:
        raise GscompError("data.kind is not set; choose a dataset with data=colmap|blender|ngp|synthetic")
    path = d.pop("path", None)
    if kind != "synthetic" and not path:
        raise GscompError(f"data.path is required for data={kind} (e.g. data.path=/path/to/scene)")
    if path and kind != "synthetic" and not Path(str(path)).expanduser().exists():
        raise GscompError(f"data.path {path} does not exist")
    bg = d.pop("background", None)
    kw = {k: v for k, v in d.items() if v is not None}
    try:
        return load_scene(kind, str(Path(str(path)).expanduser()) if path else None,
                          background=tuple(bg) if bg is not None else None, **kw)
    except TypeError as e:
        raise GscompError(f"bad data option for data={kind}: {e}") from None


def init_splats(scene, sh_degree: int, *, opacity: float = 0.1, max_points: int | None = None,
                random_points: int = 100_000, seed: int = 0) -> Splats:
    """Gaussians at the scene's initial points (3DGS init): isotropic scale = RMS distance to the
    3 nearest neighbours, identity rotation, opacity ``opacity``, DC colour from the point colour."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.as_tensor(scene.points, dtype=torch.float32).reshape(-1, 3)
    cols = torch.as_tensor(scene.colors, dtype=torch.float32).reshape(-1, 3)
    if len(pts) == 0:  # no SfM points: random points in a cube around the cameras
        pts = (torch.rand(random_points, 3, generator=g) * 2 - 1) * scene.extent
        cols = torch.rand(random_points, 3, generator=g)
    if max_points and len(pts) > max_points:
        idx = torch.randperm(len(pts), generator=g)[:max_points]
        pts, cols = pts[idx], cols[idx]
    n = len(pts)
    d2 = knn_mean_sq_dist(pts, 3).clamp_min(1e-7)
    scales = torch.log(torch.sqrt(d2)).unsqueeze(1).repeat(1, 3)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    logit = math.log(opacity / (1 - opacity))
    return Splats(
        means=pts.clone(), quats=quats, scales=scales, opacities=torch.full((n,), logit),
        sh0=rgb_to_sh0(cols.clamp(0, 1)), shN=torch.zeros(n, num_sh_rest(sh_degree), 3),
    )


def knn_mean_sq_dist(pts: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Mean squared distance of every point to its k nearest other points."""
    n = len(pts)
    if n <= 1:
        return torch.ones(n)
    k = min(k, n - 1)
    try:
        from scipy.spatial import cKDTree

        d, _ = cKDTree(pts.numpy()).query(pts.numpy(), k=k + 1)
        return torch.from_numpy((d[:, 1:] ** 2).mean(1)).float()
    except ImportError:  # chunked brute force
        out = []
        for s in range(0, n, 1024):
            d = torch.cdist(pts[s:s + 1024], pts)
            out.append((d.topk(k + 1, largest=False).values[:, 1:] ** 2).mean(1))
        return torch.cat(out)


BIG = 10**9
# (key under train., lowest, highest, null allowed): integers; an integral float (1e3) counts as one
_INT_KEYS = (("steps", 1, BIG, False), ("sh_degree", 0, 3, False), ("sh_degree_interval", 0, BIG, False),
             ("ckpt_every", 0, BIG, False), ("ckpt_keep", 0, BIG, False), ("log_every", 0, BIG, False),
             ("eval_every", 0, BIG, False), ("n_renders", 0, 10_000, False), ("init.random_points", 1, BIG, False),
             ("init.max_points", 1, BIG, True), ("strategy.refine_every", 1, BIG, False),
             ("strategy.pause_after_reset", 0, BIG, False), ("strategy.max_gaussians", 1, BIG, True))
_FLOAT_KEYS = (("ssim_lambda", 0, 1), ("strategy.prune_opa", 0, 1), ("strategy.grow_grad2d", 0, BIG),
               ("strategy.grow_scale3d", 0, BIG), ("strategy.prune_scale3d", 0, BIG))
_SCHEDULE_KEYS = ("strategy.refine_start", "strategy.refine_stop", "strategy.reset_every")


def validate_train_config(t: DictConfig) -> None:
    """Type- and range-check the ``train.*`` keys so a bad override is one clear line before any
    work, not a traceback (or a silent misreading such as ``refine_every=-1``) later."""
    absent = object()  # a key a custom config leaves out keeps the code's default
    for key, lo, hi, nullable in _INT_KEYS:
        v = OmegaConf.select(t, key, default=absent)
        if v is absent or (v is None and nullable):
            continue
        check_int(f"train.{key}", v, lo, hi, floats=True)
    for key, lo, hi in _FLOAT_KEYS:
        if (v := OmegaConf.select(t, key, default=absent)) is not absent:
            check_number(f"train.{key}", v, lo, hi)
    for key in _SCHEDULE_KEYS:
        if (v := OmegaConf.select(t, key, default=absent)) is not absent:
            check_schedule(f"train.{key}", v)
    lr = t.get("lr")
    if not isinstance(lr, DictConfig):
        raise GscompError(f"train.lr must be a mapping of learning rates per field, got {lr!r}")
    for k in ("means", "quats", "scales", "opacities", "sh0", "shN", *lr):
        check_number(f"train.lr.{k}", lr.get(k), 0, lo_open=True)
    check_number("train.init.opacity", t.init.opacity, 0, 1, lo_open=True, hi_open=True)


def read_checkpoint(path: Path) -> tuple[dict, Splats]:
    """A training checkpoint (`Trainer.save_checkpoint`) and its model, checked to be one (shapes,
    dtypes, finite values): anything else (another tool's .pth, a truncated file) is a one-line
    error, not a KeyError deep in a resume or an evaluation."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        params = ckpt["state"]["params"]
        if not all(isinstance(params[f], torch.Tensor) for f in FIELDS):
            raise TypeError("parameters are not tensors")
        splats = Splats(**{f: params[f].float() for f in FIELDS}, antialiased=bool(ckpt["state"].get("antialiased", False)))
    except Exception as e:
        raise GscompError(f"{path}: not a gscomp training checkpoint ({type(e).__name__}: {one_line(e, 200)})") from None
    return ckpt, splats.validate(str(path))


@torch.no_grad()
def rendered_splats(state: TrainState, stages: Sequence, step: int) -> Splats:
    """The model as training renders it at ``step``: the raw parameters with every stage's
    transform applied (mask, R-VQ, colour field), detached."""
    splats = state.splats()
    for stage in stages:
        splats = stage.transform(splats, step)
    return splats.detach()


def scheduled_sh_degree(t, step: int, steps: int) -> int:
    """The SH degree rendered at training step ``step`` of a ``steps``-step run with train config
    ``t`` (`sh_interval`)."""
    top = int(t.get("sh_degree", 3))
    return sh_schedule(step, sh_interval(int(t.get("sh_degree_interval", 0)), top, steps), top)


def checkpoint_model(path: Path) -> tuple[Splats, int]:
    """The model of a training checkpoint as it was rendered at its step, and its SH degree then:
    a pipeline run's stages (masking, R-VQ, colour field) applied to the raw parameters, as
    `Trainer.final_splats` does at the end. Without them a c3dgs checkpoint would be scored with
    no view-dependent colour at all (the colour field's SH live in its MLP, not in ``shN``)."""
    ckpt, splats = read_checkpoint(path)
    try:
        cfg = ckpt.get("cfg") or {}
        t = cfg.get("train") or {}
        step = int(ckpt.get("step", 0))
        t = {"sh_degree": splats.sh_degree, **t}
        degree = min(scheduled_sh_degree(t, max(step - 1, 0), int(t.get("steps", step))), splats.sh_degree)  # its last step's
        sd = ckpt["state"]
        if not (set(sd["params"]) - set(FIELDS) or sd.get("modules")):
            return splats, degree
        from ..stages.pipeline import Pipeline

        stages = Pipeline.from_config(cfg["pipeline"]).stages
        state = TrainState(splats, {f: 0.0 for f in FIELDS}, max_steps=int(t.get("steps", step)))
        for stage in stages:
            stage.attach(state)
        state.load_state_dict(sd)
        return rendered_splats(state, stages, step).clone(), degree
    except GscompError as e:
        raise GscompError(f"{path}: {e}") from None
    except Exception as e:
        raise GscompError(f"{path}: cannot rebuild the model of this checkpoint ({type(e).__name__}: {one_line(e, 200)})") from None


def sh_schedule(step: int, interval: int, max_degree: int) -> int:
    return max_degree if interval <= 0 else min(max_degree, step // interval)


def sh_interval(interval: int, max_degree: int, steps: int) -> int:
    """The steps between SH degree rises: ``interval``, or less when a run of ``steps`` would end
    before reaching ``max_degree`` (each degree then gets an equal share of the run; 0, every
    degree from the start, for a run of a few steps). A run always trains the degree it is
    evaluated and coded at: bands it never reached are zero in a plain model, but a stage that
    predicts SH (the colour field) would leave them untrained and still rendered and coded."""
    if interval <= 0 or interval * max_degree <= steps - 1:
        return interval
    return max(steps - 1, 0) // (max_degree + 1)


# Settings a resumed run may change without a note: the run's length, where it writes and how it
# reports, and resuming itself
_RESUME_FREE = ("train.steps", "out", "resume", "progress", "train.ckpt_every", "train.ckpt_keep", "train.log_every",
                "train.eval_every", "train.n_renders")


def _changed_settings(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key old -> new`` for each setting of ``new`` that differs from ``old`` (nested dicts of a
    checkpoint's config and this run's), outside `_RESUME_FREE`."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        key = f"{prefix}{k}"
        if key in _RESUME_FREE:
            continue
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_settings(a, b, key + ".")
        elif a != b:
            out.append(f"{key} {a!r} -> {b!r}"[:120])
    return out


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / CKPT_DIR).glob("ckpt_*.pt"))
    return ckpts[-1] if ckpts else None


def atomic_torch_save(obj, path: Path) -> None:
    with atomic_open(path, make_parents=True) as f:
        torch.save(obj, f)


def _image_on_background(cam, scene_bg, bg: torch.Tensor, device) -> torch.Tensor:
    """Ground truth recomposited on ``bg``: loaders composite RGBA images on the scene background and
    keep alpha, so the premultiplied colour is image - scene_bg (1 - alpha)."""
    img, alpha = cam.image.to(device), cam.alpha
    if alpha is None or scene_bg is None:
        return img
    a = alpha.to(device).unsqueeze(-1)
    sbg = torch.as_tensor(scene_bg, dtype=img.dtype, device=device)
    return img - sbg * (1 - a) + bg * (1 - a)


# ---------------------------------------------------------------------------- trainer
class Trainer:
    def __init__(self, cfg: Any, *, stages: Sequence | None = None, callbacks: Sequence[Callable] | None = None,
                 out_dir: str | Path | None = None, scene=None):
        self.cfg = as_config(cfg)
        self.stages = list(stages or [])
        self.callbacks = list(callbacks or [])
        out = out_dir if out_dir is not None else self.cfg.get("out") or "outputs/train"
        self.out = Path(str(out)).expanduser()
        self.device = resolve_device(str(self.cfg.get("device", "auto")), str(self.cfg.render.backend))
        self.backend = resolve_render_backend(str(self.cfg.render.backend), self.device)
        self.scene = scene
        self.state: TrainState | None = None
        self.strategy = None
        self._stop = 0  # the stop signal received, if any
        self._between_steps = True  # False while a step runs (`fit`): an interrupt then saves nothing
        self.seconds_before = 0.0  # training time of the runs a resume continues
        self._t0: float | None = None  # when this run's training loop started
        self._eval_time = 0.0

    # ------------------------------------------------------------------ setup
    def _lrs(self, extent: float) -> dict[str, float]:
        lr = self.cfg.train.lr
        return {"means": float(lr.means) * extent, "quats": float(lr.quats), "scales": float(lr.scales),
                "opacities": float(lr.opacities), "sh0": float(lr.sh0), "shN": float(lr.shN)}

    def setup(self) -> TrainState:
        t = self.cfg.train
        validate_train_config(t)
        check_bool("progress", self.cfg.get("progress", True))
        seed = check_int("seed", self.cfg.get("seed", 0), -(2**63), 2**64 - 1, floats=True)  # (torch.manual_seed's range)
        torch.manual_seed(seed)
        random.seed(seed)
        if self.scene is None:
            self.scene = load_scene_from_config(self.cfg)
        scene = self.scene
        if not scene.train:
            raise GscompError("the scene has no training views")
        steps = int(t.steps)
        resume = self._resume_path()
        ckpt = None
        if resume is not None:
            ckpt, splats = read_checkpoint(resume)
            self._check_resume(ckpt, resume, steps)
            print(f"resuming from {resume} (step {int(ckpt.get('step', 0))})", file=sys.stderr)
        else:
            # An earlier run's checkpoints in this out folder would outlive this fresh run (the
            # newest by step is kept) and be what resume=true picks later: they go now.
            stale = sorted((self.out / CKPT_DIR).glob("ckpt_*.pt"))
            for old in stale:
                old.unlink(missing_ok=True)
            if stale:
                warnings.warn(f"removed {len(stale)} checkpoint{'s' if len(stale) > 1 else ''} of an earlier run from "
                              f"{self.out / CKPT_DIR} (this run starts afresh; resume=true continues one)", Note)
            init = t.init
            mp = init.get("max_points")
            splats = init_splats(scene, int(t.sh_degree), opacity=float(init.opacity),
                                 max_points=None if mp is None else int(mp), random_points=int(init.random_points),
                                 seed=seed)
        splats = splats.replace(antialiased=bool(t.get("antialiased", False)))
        self._remove_earlier_coding()
        self.extent = float(scene.extent)
        state = TrainState(splats, self._lrs(self.extent), cfg=self.cfg, scene=scene, max_steps=steps,
                           device=self.device)
        self.state = state
        every = sh_interval(int(t.sh_degree_interval), int(t.sh_degree), steps)
        if every != int(t.sh_degree_interval):
            rises = f"rises every {every} steps" if every else "is trained from the first step"
            warnings.warn(f"the SH degree {rises}, not every train.sh_degree_interval={int(t.sh_degree_interval)}, "
                          f"so that {steps} steps reach train.sh_degree={int(t.sh_degree)}", Note)
        self.strategy = build_strategy(OmegaConf.to_container(t.strategy, resolve=True))
        self.strategy.initialize(state)
        if steps and not self.strategy.refine_steps():  # (refine_every is in steps, start/stop fractions)
            st = self.strategy
            warnings.warn(f"no densification in {steps} steps (train.strategy.refine_every={st.refine_every} steps, "
                          f"between refine_start={st.refine_start} and refine_stop={st.refine_stop}): the model keeps "
                          + (f"the {state.n:,} Gaussians of its checkpoint" if ckpt is not None
                             else f"its {state.n:,} initial Gaussians"), Note)
        for stage in self.stages:
            stage.attach(state)
        self._order_gen = torch.Generator().manual_seed(seed)
        self._order: list[int] = []
        if ckpt is not None:
            try:
                state.load_state_dict(ckpt["state"])
                self.strategy.load_state_dict(ckpt.get("strategy", {}))
                self._order_gen.set_state(ckpt["order_gen"])
                self._order = [int(i) for i in ckpt["order"]]
                torch.set_rng_state(ckpt["torch_rng"])
            except GscompError:
                raise
            except Exception as e:  # e.g. another pipeline's stage modules, of other shapes
                raise GscompError(f"{resume} does not match this run's config ({type(e).__name__}: "
                                  f"{one_line(e, 200)})") from None
            self.seconds_before = float(ckpt.get("train_seconds", 0.0))
            self.resumed_from = resume
        else:
            self.resumed_from = None
        self.gt = [None] * len(scene.train)
        return state

    def _remove_earlier_coding(self) -> None:
        """An earlier train-and-compress's result in this folder, beside the model this run makes
        (fresh or resumed), would read as its coding: it goes (train-and-compress writes it anew
        at its end; plain train never does). Only a folder whose report.json is a gscomp report:
        a user's own files of those names elsewhere are not ours to remove."""
        from ..metrics import is_report

        if not is_report(self.out / "report.json"):
            return
        coded = [self.out / n for n in CODED_OUTPUTS if (self.out / n).is_file()]
        for old in coded:
            old.unlink(missing_ok=True)
        names = [p.name for p in coded]
        renders = self.out / "renders_decoded"  # (its renders of the decoded scene: ours by their names)
        pngs = sorted(renders.glob("[0-9][0-9][0-9]_*.png")) if renders.is_dir() else []
        for old in pngs:
            old.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            renders.rmdir()  # (only when nothing else is in it)
        if pngs:
            names.append("renders_decoded/")
        warnings.warn(f"removed {', '.join(names)} of an earlier run from {self.out}", Note)

    def _check_resume(self, ckpt: dict, path: Path, steps: int) -> None:
        """A checkpoint continues only the scene it was trained on (its camera order indexes that
        scene's training views) and only towards a later ``train.steps``."""
        views = [c.name for c in self.scene.train]
        saved = ckpt.get("views")  # older checkpoints: only the order's indices can be checked
        order = ckpt.get("order") or []
        if (saved is not None and list(saved) != views) or any(not 0 <= int(i) < len(views) for i in order):
            src = ((ckpt.get("cfg") or {}).get("data") or {}).get("path")
            raise GscompError(f"{path} was trained on another scene{f' ({src})' if src else ''}: its training "
                              f"views are not this scene's {len(views)}")
        at = int(ckpt["state"].get("step", 0))
        if at > steps:
            raise GscompError(f"{path} is at step {at}, past train.steps={steps}: raise train.steps to go on from it")
        changed = _changed_settings(ckpt.get("cfg") or {}, OmegaConf.to_container(self.cfg, resolve=True))
        if changed:  # allowed (e.g. a lower learning rate from here on), but config.yaml records only the new ones
            shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
            warnings.warn(f"resuming {path.name} with settings that differ from its run's: {shown}", Note)

    def _resume_path(self) -> Path | None:
        r = self.cfg.get("resume")
        if r is None or r is False or r == "":
            return None
        if r is True or str(r).lower() == "true":
            p = latest_checkpoint(self.out)
            if p is None and (self.out / "point_cloud.ply").is_file():
                # a finished run that kept no checkpoint: starting afresh would replace its model
                raise GscompError(f"resume=true: {self.out} holds a finished run (point_cloud.ply) and no checkpoint to "
                                  f"continue (one is written every train.ckpt_every steps); without resume a new run "
                                  f"replaces it")
            if p is None:
                warnings.warn(f"resume=true: no checkpoint in {self.out / CKPT_DIR}; starting from scratch", Note)
            else:
                self._check_not_behind(p)
            return p
        p = Path(str(r)).expanduser()
        if p.is_dir():
            found = latest_checkpoint(p) or (sorted(p.glob("ckpt_*.pt")) or [None])[-1]
            if found is None:
                raise GscompError(f"no checkpoint found in {p}")
            return found
        if not p.exists():
            raise GscompError(f"resume checkpoint {p} does not exist")
        return p

    def _check_not_behind(self, p: Path) -> None:
        """resume=true from a checkpoint older than the model the folder holds (a run finished
        with train.ckpt_every=0 after an interrupted one) would silently drop the steps since.
        Only a model written after the checkpoint counts: a fresh run stopped early leaves the
        model of the run it replaces, whose steps are not this checkpoint's to catch up on."""
        m = re.fullmatch(r"ckpt_(\d+)\.pt", p.name)
        metrics = self.out / "metrics.json"
        try:
            done = int(json.loads(metrics.read_text())["steps"])
            later = metrics.stat().st_mtime_ns > p.stat().st_mtime_ns
        except (OSError, ValueError, KeyError, TypeError):
            return
        if m and later and done > int(m.group(1)):
            raise GscompError(f"resume=true: {self.out} holds a model trained to step {done}, and its latest checkpoint, "
                              f"{p.name}, is at step {int(m.group(1))}: resuming would drop the steps since; give "
                              f"resume={p} to go back to it, or train without resume")

    # ------------------------------------------------------------------ one step
    def _next_camera(self) -> int:
        if not self._order:
            self._order = torch.randperm(len(self.scene.train), generator=self._order_gen).tolist()
        return self._order.pop()

    def _background(self) -> torch.Tensor:
        t = self.cfg.train
        if t.get("random_background", False):
            return torch.rand(3, device=self.device)
        bg = self.scene.background
        return torch.tensor(bg if bg is not None else (0.0, 0.0, 0.0), dtype=torch.float32, device=self.device)

    def train_step(self, step: int) -> dict:
        from ..render import render

        state, t = self.state, self.cfg.train
        state.step = step
        frac = step / max(1, state.max_steps)
        lr0 = float(t.lr.means) * self.extent
        lr1 = float(t.lr.means_final) * self.extent
        state.set_lr("means", lr0 * (lr1 / lr0) ** frac)
        sh_degree = self.sh_degree_at(step)

        splats = state.splats()
        for stage in self.stages:
            splats = stage.transform(splats, step)
        i = self._next_camera()
        cam = self.scene.train[i]
        bg = self._background()
        if t.get("random_background", False):
            gt = _image_on_background(cam, self.scene.background, bg, self.device)
        elif self.device.type == "cpu":  # from the 8-bit photo each step: float32 copies of every
            gt = cam.image                  # view would take 4x the photos' memory
        else:  # the float32 copy on the device, made once (no transfer per step)
            if self.gt[i] is None:
                self.gt[i] = cam.image.to(self.device)
            gt = self.gt[i]
        out = render(splats, cam, sh_degree=sh_degree, background=bg, backend=self.backend)
        info = dict(out.info, width=cam.width, height=cam.height)
        self.strategy.step_pre_backward(state, info)
        img = out.colors[0]
        loss = photometric_loss(img, gt, float(t.ssim_lambda))
        for stage in self.stages:
            extra = stage.loss(splats, step, state)
            if extra is not None:
                loss = loss + extra
        loss.backward()
        state.optimizer_step()
        state.zero_grad()
        self.strategy.step_post_backward(state, step, info, self.extent)
        for stage in self.stages:
            stage.on_step_end(step, state)
        state.step = step + 1
        return {"step": step + 1, "loss": float(loss.detach()), "psnr": psnr(img, gt), "n": state.n, "sh_degree": sh_degree}

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        state = self.state
        path = self.out / CKPT_DIR / f"ckpt_{state.step:06d}.pt"
        atomic_torch_save({
            "state": state.state_dict(),
            "strategy": self.strategy.state_dict(),
            "order_gen": self._order_gen.get_state(),
            "order": list(self._order),
            "torch_rng": torch.get_rng_state(),
            "cfg": OmegaConf.to_container(self.cfg, resolve=True),
            "step": state.step,
            "views": [c.name for c in self.scene.train],
            "train_seconds": self._elapsed(),
        }, path)
        keep = int(self.cfg.train.get("ckpt_keep", 2))
        if keep > 0:
            for old in sorted((self.out / CKPT_DIR).glob("ckpt_*.pt"))[:-keep]:
                old.unlink(missing_ok=True)
        return path

    # ------------------------------------------------------------------ loop
    def _install_sigint(self) -> dict:
        """First Ctrl-C (or SIGTERM / SIGHUP: `gscomp.signals`) asks the loop to stop at the next
        step boundary (so the checkpoint is consistent); a second one interrupts immediately,
        and then nothing is saved unless the loop was between steps (`interrupted`).
        Returns the handlers to put back."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self._stop:
                raise_stop(signum, frame)
            self._stop = signum  # (the exit status says which signal stopped the run)

        return {sig: signal.signal(sig, handler) for sig in stop_signals()}

    def fit(self) -> TrainState:
        if self.state is None:
            self.setup()
        state, t = self.state, self.cfg.train
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "config.yaml", OmegaConf.to_yaml(self.cfg, resolve=True), make_parents=True)
        self._restart_log()
        ckpt_every = int(t.get("ckpt_every", 0) or 0)
        log_every = max(1, int(t.get("log_every", 10)))
        progress = _Progress(enabled=bool(self.cfg.get("progress", True)), total=state.max_steps, start=state.step,
                             n=state.n)
        old_handlers = self._install_sigint()
        eval_every = int(t.get("eval_every", 0) or 0)
        if self.backend == "cpu":  # a first build (or a wait on another process's) is not training time
            from .. import native

            native.warm("raster", *(["hashgrid"] if any(st.type == "colorfield" for st in self.stages) else []))
        self._eval_time = 0.0  # excluded from train_seconds
        self._t0 = time.perf_counter()
        done_before = state.step
        try:
            with progress:
                while state.step < state.max_steps:
                    self._between_steps = True
                    if self._stop:
                        raise_stop(self._stop, None)  # KeyboardInterrupt, or signals.Stopped
                    self._between_steps = False  # (until the step, its callbacks and checkpoint are done)
                    logs = self.train_step(state.step)
                    if state.step % log_every == 0 or state.step == state.max_steps:
                        progress.update(state.step, logs)
                    if eval_every and (state.step % eval_every == 0 or state.step == state.max_steps):
                        te = time.perf_counter()
                        logs["test_psnr"] = self.quick_eval()
                        self._eval_time += time.perf_counter() - te
                        self._log_line({"step": state.step, "seconds": round(self._elapsed(), 2),
                                        "n": state.n, "train_psnr": round(logs["psnr"], 3),
                                        "test_psnr": round(logs["test_psnr"], 3)})
                    for cb in self.callbacks:
                        cb(state, logs)
                    # (the last step too: `resume` then trains a finished run further, train.steps=MORE)
                    if ckpt_every and (state.step % ckpt_every == 0 or state.step == state.max_steps):
                        self.save_checkpoint()
        except KeyboardInterrupt:
            raise self.interrupted() from None
        finally:
            self._between_steps = True
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        self.run_seconds = self._elapsed() - self.seconds_before
        self.train_seconds = self._elapsed()
        self.steps_run = state.step - done_before
        return state

    def interrupted(self) -> TrainInterrupted:
        """Ctrl-C: a checkpoint of the state now (also after the last step, while the model is
        evaluated or coded: `resume` then only redoes that), as the error to raise. Not inside a
        step (a second Ctrl-C): its parameters, optimizer or Gaussian count may be half updated,
        and resuming from them would redo the step on top of itself, or fail; the checkpoints
        saved before are kept as they are."""
        signum = getattr(sys.exc_info()[1], "signum", signal.SIGINT)  # (called handling it: a signals.Stopped has one)
        if not self._between_steps:
            return TrainInterrupted(self.state.step, latest_checkpoint(self.out), saved=False, signum=signum)
        return TrainInterrupted(self.state.step, self.save_checkpoint(), signum=signum)

    def _elapsed(self) -> float:
        """Training seconds so far, over this run and the runs it resumed (quick evals excluded)."""
        if self._t0 is None:
            return self.seconds_before
        return self.seconds_before + time.perf_counter() - self._t0 - self._eval_time

    def sh_degree_at(self, step: int) -> int:
        """The SH degree rendered at training step ``step``."""
        return scheduled_sh_degree(self.cfg.train, step, self.state.max_steps)

    @torch.no_grad()
    def quick_eval(self) -> float:
        """Mean PSNR on the test views (train views if none) of the current model; cheap enough to
        run during training (``train.eval_every``), progress goes to ``OUT/progress.jsonl``."""
        from ..render import render

        splats = rendered_splats(self.state, self.stages, self.state.step)
        bg = self.scene.background if self.scene.background is not None else (0.0, 0.0, 0.0)
        sh = self.sh_degree_at(self.state.step)
        vals = [psnr(render(splats, c, sh_degree=sh, background=bg, backend=self.backend).colors[0], c.image)
                for c in (self.scene.test or self.scene.train)]
        return float(sum(vals) / len(vals))

    def _restart_log(self) -> None:
        """``progress.jsonl`` describes this training only: a fresh run drops an older run's lines, a
        resumed one starts from its checkpoint run's lines up to the checkpoint (the steps past it
        are trained again)."""
        log = self.out / "progress.jsonl"
        if self.resumed_from is None:
            log.unlink(missing_ok=True)
            return
        ckpt = Path(self.resumed_from)  # its run's log (the checkpoint may come from another out)
        src = (ckpt.parent.parent if ckpt.parent.name == CKPT_DIR else ckpt.parent) / "progress.jsonl"
        if not src.exists():
            return
        keep = []
        for line in src.read_text().splitlines():
            try:
                if int(json.loads(line)["step"]) <= self.state.step:
                    keep.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                pass
        atomic_write_text(log, "".join(keep), make_parents=True)

    def _log_line(self, rec: dict) -> None:
        with open(self.out / "progress.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")

    def final_splats(self) -> Splats:
        """The model as rendered at the end of training (stage transforms applied), detached."""
        return rendered_splats(self.state, self.stages, self.state.max_steps).to("cpu").clone()

    def finish(self) -> dict:
        """Write point_cloud.ply, evaluate on the test views, write renders and metrics.json."""
        from ..data.cameras import save_cameras_json
        from ..io import save_splats
        from ..metrics import evaluate, json_text, view_sizes

        t = self.cfg.train
        splats = self.final_splats()
        ply = self.out / "point_cloud.ply"
        save_splats(ply, splats)
        # the views it was trained on, as INRIA's cameras.json: `gscomp compress` scores from them
        save_cameras_json(self.out / "cameras.json", list(self.scene.train) + list(self.scene.test))
        cams = self.scene.test or self.scene.train
        bg = self.scene.background if self.scene.background is not None else (0.0, 0.0, 0.0)
        metrics = evaluate(splats, cams, sh_degree=int(t.sh_degree), background=bg, backend=self.backend,
                           device=self.device, out_dir=self.out / "renders", n_renders=int(t.get("n_renders", 4)),
                           progress=bool(self.cfg.get("progress", True)))
        metrics.update({
            "split": "test" if self.scene.test else "train",
            "sh_degree": int(t.sh_degree),  # (always reached: `sh_interval`)
            "n_gaussians": len(splats),
            "train_seconds": round(self.train_seconds, 3),  # all of it, over resumes too
            "steps": int(self.state.max_steps),
            # of this run (a run resumed at its last step trained none)
            "steps_per_second": round(self.steps_run / max(self.run_seconds, 1e-9), 3) if self.steps_run else None,
            "ply_bytes": ply.stat().st_size,
            **view_sizes(self.scene.train),
            "n_train_views": len(self.scene.train),
            "backend": self.backend,
            "device": str(self.device),
            "threads": torch.get_num_threads(),  # (times on a shared 2-core machine depend on it)
        })
        from ..metrics import peak_rss_mb

        metrics["peak_rss_mb"] = peak_rss_mb()
        if self.resumed_from is not None:
            metrics["resumed_from"] = str(self.resumed_from)
        atomic_write_text(self.out / "metrics.json", json_text(metrics), make_parents=True)
        return metrics


def train(cfg: Any, stages: Sequence | None = None, callbacks: Sequence[Callable] | None = None, *,
          out_dir: str | Path | None = None, scene=None) -> tuple[TrainState, dict]:
    """Train a scene from a config (the composed ``train`` Hydra config or an equivalent dict).

    ``stages``: compression stages (see `gscomp.stages.base.Stage`); ``callbacks``: callables
    ``cb(state, logs)`` run after each step. Returns the final `TrainState` and the metrics dict
    (also written to ``OUT/metrics.json``). Like the reference trainers, it seeds torch's and
    Python's global random generators with ``cfg.seed`` (densification draws from them), so a
    caller's own random streams restart there."""
    trainer = Trainer(cfg, stages=stages, callbacks=callbacks, out_dir=out_dir, scene=scene)
    trainer.setup()
    trainer.fit()
    try:
        metrics = trainer.finish()
    except KeyboardInterrupt:
        raise trainer.interrupted() from None
    state = trainer.state
    state.trainer = trainer  # so callers (compress) can reach the scene, backend and out folder
    return state, metrics


class _Progress:
    """A rich progress bar (step, loss, PSNR, #Gaussians, it/s) that is silent when disabled; on
    a stdout that is no terminal (a log file), a plain line every 30 s (`gscomp.ticker`)."""

    def __init__(self, enabled: bool, total: int, start: int, n: int = 0):
        self.enabled, self.total, self.start, self.n = enabled, total, start, n
        self._p = self._tick = None

    def __enter__(self):
        self._t0, self._s0 = time.perf_counter(), self.start
        if self.enabled and not sys.stdout.isatty():
            from ..ticker import Ticker

            self._tick = Ticker(first=10.0, every=30.0)
        elif self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._p = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[figures]}"),
                               TimeRemainingColumn(), transient=False)
            self._p.__enter__()
            # until the first logged step there is no loss or PSNR to show, only the model's size
            self._task = self._p.add_task("train", total=self.total, completed=self.start, figures=f"N {self.n}")
        return self

    def update(self, step: int, logs: dict) -> None:
        if self._p is None and not (self._tick is not None and self._tick.due()):
            return
        its = (step - self._s0) / max(1e-9, time.perf_counter() - self._t0)
        figures = f"loss {logs['loss']:.4f}  PSNR {logs['psnr']:.2f}  N {logs['n']}  {its:.1f} it/s"
        if self._p is not None:
            self._p.update(self._task, completed=step, figures=figures)
        else:
            left = (self.total - step) / its if its > 0 else 0.0
            print(f"train {step}/{self.total}  {figures}  ({self._tick.elapsed():.0f} s, about {left:.0f} s left)",
                  flush=True)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)
        return False


__all__ = ["Trainer", "train", "TrainInterrupted", "init_splats", "resolve_device", "load_scene_from_config",
           "latest_checkpoint"]
