"""The `importance` stage: a class 0..L-1 per Gaussian for the adaptive stages after it.

Encoder only: renders the scene (the training views in train-and-compress, `compress --cameras`,
or a trained model's cameras.json found next to it; else a sphere of outside views) and estimates
how much render error each Gaussian's quantization errors cause; the classes
go into the file (section ``classes``) and, through ``ctx.attrs``, to the stages that adapt to
them: `positions`/`attributes` with ``adaptive: true`` (2^c coarser steps, `gscomp.stages.posthoc`)
and `rvq` with ``depths`` (fewer residual stages). With ``prune`` it also leaves out, before
anything is coded, the Gaussians that barely show from sphere views (`Importance.bake`). Byte
layout: docs/gsz-format.md.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..codec import entropy as E
from ..codec import quant as Q
from ..codec.posgrid import CORE_DEFAULT, PosGrid, check_core, morton_order
from ..errors import DataWarning, FormatError, GscompError, Note, check_int, check_number
from .base import CodingContext, Section, Stage, as_np32, need_section, register


MAX_LEVELS = 6
# Sphere views guess an object seen from outside. Measured share of Gaussians scoring below 1e-3
# of the reference score (16 views of 1024 px): 7% on biker, 8% on lego (objects), 32% on sodacan
# (a can on a floor, captured from inside it: from its own cameras an earlier `compact` lost 2.2 dB
# to SPZ). Below 1e-4 it was 3%, 3% and 17%, too close to the line; from 128 px views, 9%, 4% and
# 34%, and 61% on an object inside a background shell. Above HIDDEN_WARN the encoder says to pass
# the cameras.
HIDDEN_BELOW, HIDDEN_WARN = 1e-3, 0.2
# Given cameras: share of Gaussians scoring exactly 0 (outside every view, or below alpha 1/255).
# Measured with 16 of a capture's own cameras: 2.0% sodacan, 0.9-1.1% lego; with another scene's
# cameras (wrong frame): 58-100%.
UNSEEN_WARN = 0.25
FLOAT32_MAX = float(np.finfo(np.float32).max)  # sphere views stand within it
# The views are rendered this many pixels wide (sphere views) or at most this (given cameras,
# `max_res`). Small Gaussians that are below a pixel in a small view show in a large one, or in a
# close-up: ranked from 128 px views, `compact` on biker was 1.1 dB above SPZ in 128 px renders
# but 1.0 dB below at 256 px and 6.5 dB below at 1024 px. With no size levels and opacity step
# 0.05, ranked from 512 px views it is 0.1 to 1.6 dB above SPZ from the bench orbit at 256-1024 px
# but 0.7-2.6 dB below in close-ups and zoomed views; from 1024 px views, -1.1 to +0.4 dB there,
# for 1-2.4% more bytes and 1.5-1.8x the encode time (biker, playbot; README).
VIEW_RES = 1024


def sphere_cameras(means: torch.Tensor, views: int, res: int = VIEW_RES):
    """``views`` pinhole cameras on a Fibonacci sphere around the median point, looking at it from
    2.2x the 90th-percentile radius (an object-centric guess: post-hoc input has no cameras)."""
    from ..camera import Camera

    m = means.double()
    center = m.median(0).values
    dist_c = (m - center).norm(dim=1)[:200_000]
    r = float(torch.quantile(dist_c.float(), 0.9))
    dist = 2.2 * max(r, 1e-3)
    reach = float(center.abs().max()) + dist  # the farthest coordinate of a camera
    if not reach < FLOAT32_MAX:  # (inf and NaN too)
        r = float(torch.quantile(dist_c, 0.9))  # (in float64 for the message: its float32 is inf)
        raise GscompError(f"the importance stage cannot place views around this scene: 90% of it lies within {r:.3g} "
                          f"of its median point, so cameras 2.2 times as far would be beyond float32 ({FLOAT32_MAX:.3g}); "
                          "rescale it, or use a preset without importance (high, medium, low)")
    golden = math.pi * (3 - math.sqrt(5))
    cams = []
    for i in range(views):
        y = 1 - 2 * (i + 0.5) / views
        rr = math.sqrt(max(0.0, 1 - y * y))
        d = torch.tensor([rr * math.cos(golden * i + 0.3), y, rr * math.sin(golden * i + 0.3)], dtype=torch.float64)
        up = (0.0, -1.0, 0.0) if abs(y) < 0.95 else (1.0, 0.0, 0.0)
        cams.append(Camera.look_at(center + dist * d, center, up, 50.0, res, res, name=f"sphere{i}"))
    return cams


def importance_scores(splats, views: int, steps: dict[str, float], pos_bits: int, res: int = VIEW_RES,
                      cams: list | None = None, progress=None, per_field: dict | None = None,
                      pos_core: float = CORE_DEFAULT) -> np.ndarray:
    """Expected squared render error of each Gaussian when its attributes get quantization errors
    of the given steps: sum over attributes a of step_a^2 * S_a, where S_a = sum over views, pixels
    and channels of (d pixel / d attribute)^2, the diagonal of J^T J (Fisher information), computed
    exactly per view by the native renderer (`gscomp.render.cpu.fisher_cpu`).
    steps: quats, scales, opacities, sh0 and optionally shN (with shN_band_gain: per SH band, as
    the `attributes` stage); positions use the step of the `positions` stage's grid of ``pos_bits``
    and ``pos_core`` at each Gaussian (`gscomp.codec.posgrid`).
    ``progress(done, total)`` is called after each view; ``per_field``, a dict, receives each
    field's S summed over its components (float64, (n,))."""
    from .. import native
    from ..render.cpu import fisher_cpu

    try:
        native.load("raster")
    except native.NativeBuildError as e:  # (its advice, backend='torch', is for the render API)
        raise GscompError(f"the importance stage (pipeline=compact) renders with the {e.what}, which could not be "
                          f"built ({e.reason}); {e.fix}, or use a preset without "
                          "importance (high, medium, low)") from None
    n = len(splats)
    means = as_np32(splats.means)
    pos_step = PosGrid.fit(means, pos_bits, pos_core).world_step(means)  # (n, 3) in world units
    weight = {"means": torch.from_numpy(pos_step ** 2)}
    for f in ("quats", "scales", "opacities", "sh0"):
        weight[f] = float(steps.get(f, 0.0)) ** 2
    acc = {f: torch.zeros(getattr(splats, f).shape, dtype=torch.float64) for f in weight}  # summed over views
    cams = cams if cams is not None else sphere_cameras(splats.means.detach(), views, res)
    bg = torch.zeros(3, dtype=splats.means.dtype)
    work: dict = {}
    for i, cam in enumerate(cams):
        fisher_cpu(splats, cam, splats.sh_degree, bg, work, sums=acc)
        if progress is not None:
            progress(i + 1, len(cams))
    tot = torch.zeros(n, dtype=torch.float64)
    for f, w in weight.items():
        tot += (acc[f].reshape(n, -1) * w).sum(1)
        if per_field is not None:
            per_field[f] = acc[f].reshape(n, -1).sum(1).numpy()
    # shN needs no pass of its own: d colour / d shN_j = Y_j(view direction) where d colour / d sh0
    # = C0, and the Y_j^2 of one band l sum to (2l + 1) C0^2 in every direction (the addition
    # theorem), so the S of a band's 2l + 1 coefficients is (2l + 1) times sh0's S, in every view
    k = splats.shN.shape[1] if splats.sh_degree > 0 else 0
    if k:
        s0 = acc["sh0"].reshape(n, -1).sum(1)
        tot += s0 * float((shN_steps(float(steps.get("shN", 0.0)), float(steps.get("shN_band_gain", 1.0)), k) ** 2).sum())
        if per_field is not None:
            per_field["shN"] = (s0 * k).numpy()
    return tot.numpy()


def shN_steps(step: float, gain: float, k: int) -> np.ndarray:
    """(k,) step of each SH-rest coefficient j = 1..k: step * gain^(l-1), band l = floor(sqrt(j))
    (the `attributes` stage's rule, docs/gsz-format.md)."""
    band = np.floor(np.sqrt(np.arange(1, k + 1))).astype(np.int64)
    return step * float(gain) ** (band - 1)


def importance_classes(splats, views: int, quantile: float, levels: int, steps: dict[str, float], pos_bits: int,
                       cams: list | None = None, progress=None, per_field: dict | None = None,
                       pos_core: float = CORE_DEFAULT, res: int = VIEW_RES) -> np.ndarray:
    """Class c = round(log2 sqrt(I_ref / I)) clipped to [0, levels): for a distortion weighted by I,
    the rate-optimal step goes as 1/sqrt(I) (reverse water-filling); I_ref = the given quantile of
    I. Scores are snapped to 8 significant bits first so tiny float differences in the renderer's
    parallel sums cannot flip a class (deterministic bytes)."""
    return classes_of_scores(snapped_scores(splats, views, steps, pos_bits, cams, progress, per_field, pos_core, res),
                             quantile, levels)


def snapped_scores(splats, views: int, steps: dict[str, float], pos_bits: int, cams: list | None = None,
                   progress=None, per_field: dict | None = None, pos_core: float = CORE_DEFAULT,
                   res: int = VIEW_RES) -> np.ndarray:
    """`importance_scores` (and ``per_field``, the sensitivities the trellis weighs errors by)
    snapped to 8 significant bits."""
    imp = _snap(importance_scores(splats, views, steps, pos_bits, res, cams=cams, progress=progress,
                                  per_field=per_field, pos_core=pos_core))
    if per_field is not None:
        per_field.update({f: _snap(v) for f, v in per_field.items()})
    return imp


def reference_score(imp: np.ndarray, quantile: float) -> float:
    """I_ref of `classes_of_scores`: the given quantile of the scores (of the positive ones when
    that is 0: mostly invisible Gaussians, e.g. an early model, or cameras that miss the scene)."""
    ref = float(np.quantile(imp, quantile)) if imp.size else 0.0
    if ref <= 0 and (imp > 0).any():
        ref = float(np.quantile(imp[imp > 0], quantile))
    return ref


def classes_of_scores(imp: np.ndarray, quantile: float, levels: int, ref: float | None = None) -> np.ndarray:
    """The classes of snapped scores (`importance_classes`); ``ref``: I_ref when it was taken
    before some Gaussians were pruned (the classes of the others stay as they were)."""
    ref = reference_score(imp, quantile) if ref is None else ref
    if ref <= 0:
        return np.zeros(len(imp), np.int64)
    # round(0.5 log2(ref / I)) >= c  <=>  I <= ref 2^(1 - 2c): compared against exact powers of two
    # (numpy's vectorised log2 differs in the last bit between CPUs; the classes must not).
    # A score exactly on a threshold (snapped scores often are) takes the coarser class.
    cls = np.zeros(len(imp), np.int64)
    for c in range(1, levels):
        cls += imp <= ref * 2.0 ** (1 - 2 * c)
    return cls


SNAP_MAX = 2.0 ** 600  # scores are capped here: sums and means of many stay finite in float64


def _snap(x: np.ndarray) -> np.ndarray:
    """Non-negative values rounded to 8 significant bits (negatives and NaN to 0, above SNAP_MAX
    and inf to SNAP_MAX: a colour of 1e30 renders inf, and an inf score made NaN weights and
    classes in the stages after this one)."""
    x = np.where(x > 0, np.minimum(x, SNAP_MAX), 0.0)
    mant, ex = np.frexp(x)
    return np.ldexp(np.round(mant * 256) / 256, ex)


def scoring_warning(imp: np.ndarray, quantile: float, given_views: int,
                    drawable: np.ndarray | None = None) -> str | None:
    """What looks wrong with the views the scores came from, or None. Sphere views: many Gaussians
    barely show (a scene seen from inside). Given cameras: many Gaussians score exactly 0, outside
    every view (cameras of another scene or coordinate frame, or too few views of a large one).
    ``given_views``: the number of given cameras scored from, 0 for the sphere. ``drawable``: the
    Gaussians opaque enough to be drawn at all; the others score 0 from any view, and are no sign
    of wrong cameras (a briefly trained model holds many)."""
    if drawable is not None:
        imp = imp[drawable]
    if not imp.size:
        return None
    if not given_views and not (imp > 0).any():  # (given views that see nothing: the next message)
        return ("the views around the scene see none of its Gaussians, so every one keeps the finest step; the "
                "renderer culls what is nearer than 0.01 units to a camera, so a scene this small (a few "
                "hundredths of a unit) needs scaling up first")
    if given_views:
        unseen = float((imp == 0).mean())
        if unseen > UNSEEN_WARN:
            return (f"{100 * unseen:.0f}% of the drawable Gaussians are not seen from any of the {given_views} given views; check that the "
                    "cameras belong to this scene (same coordinate frame), or use more of them "
                    "(pipeline.stages.importance.views=N)")
        return None
    hidden = float((imp < HIDDEN_BELOW * reference_score(imp, quantile)).mean())
    if hidden > HIDDEN_WARN:
        return (f"{100 * hidden:.0f}% of the Gaussians barely show from outside the scene; if it is seen from "
                "inside (a room, an unbounded capture), pass its cameras: gscomp compress IN OUT --cameras "
                "cameras.json|COLMAP model|capture folder")
    return None


CLASS_KEY = "importance_class"  # ctx.attrs key the importance stage hands to later stages
NEEDS_IMPORTANCE = "{} needs an importance stage before it in the pipeline"  # (a stage's needs())
SENSITIVITY_KEY = "importance_sensitivity"  # ctx.hints key (encoder only): field -> S per Gaussian


@register
class Importance(Stage):
    """Per-Gaussian importance class (0 = most visible), for the later stages that adapt to it.

    Owns no field: it writes the classes (section ``classes``) and passes them on: `positions` and
    `attributes` with ``adaptive: true`` quantize class c with 2^c times their step, `rvq` with
    ``depths`` keeps depths[c] stages."""

    type = "importance"
    owns = ()
    provides = (CLASS_KEY,)
    encoder_params = ("views", "probes", "quantile", "pos_bits", "pos_core", "quat_step", "scale_step", "opacity_step",
                      "sh0_step", "shN_step", "shN_band_gain", "cameras", "max_res", "prune")

    def __init__(self, views: int = 24, probes: int | None = None, quantile: float = 0.8, levels: int = 4,
                 pos_bits: int = 14, quat_step: float = 0.01, scale_step: float = 0.05,
                 opacity_step: float = 0.06, sh0_step: float = 0.03, shN_step: float = 0.0,
                 shN_band_gain: float = 1.0, cameras: str = "auto", max_res: int = VIEW_RES,
                 pos_core: float = CORE_DEFAULT, prune: float = 0.0):
        check_int("importance.views", views, 1, 256)
        # `probes` (random probes per view) belongs to the stochastic estimate used before the exact
        # Fisher pass; still accepted so that files and configs naming it keep working, and unused
        if probes is not None:
            check_int("importance.probes", probes, 1, 64)
        check_number("importance.quantile", quantile, 0, 1, lo_open=True, hi_open=True)
        check_int("importance.levels", levels, 1, MAX_LEVELS)
        check_int("importance.pos_bits", pos_bits, 1, Q.MAX_POS_BITS)
        steps = dict(quat_step=quat_step, scale_step=scale_step, opacity_step=opacity_step, sh0_step=sh0_step,
                     shN_step=shN_step)
        for k, v in steps.items():
            check_number(f"importance.{k}", v, 0)
        check_number("importance.shN_band_gain", shN_band_gain, 1, 16)
        if shN_step:  # only stored when used: older headers unchanged
            steps["shN_band_gain"] = shN_band_gain
        else:
            del steps["shN_step"]
        if cameras not in ("auto", "train", "sphere"):
            raise GscompError(f"importance.cameras must be auto, train or sphere, got {cameras!r}")
        check_int("importance.max_res", max_res, 16, 4096)
        check_core("importance.pos_core", pos_core)
        check_number("importance.prune", prune, 0, 1, hi_open=True)
        extra = {} if probes is None else {"probes": probes}
        if pos_core != CORE_DEFAULT:  # only stored when changed: older headers unchanged
            extra["pos_core"] = float(pos_core)
        if prune:  # (likewise)
            extra["prune"] = float(prune)
        super().__init__(views=views, **extra, quantile=float(quantile), levels=levels, pos_bits=pos_bits,
                         **{k: float(v) for k, v in steps.items()}, cameras=cameras, max_res=max_res)
        self._cams = None
        self._scored = None  # (scores, per-field sensitivities, reference, warning) when bake scored

    def bake(self, splats, state=None):
        """Score with the real cameras when there are any: the training views in train-and-compress,
        or ``state.cameras`` (post-hoc `gscomp compress --cameras`, or a trained model's
        cameras.json): up to ``views`` of them evenly spaced, at most ``max_res`` pixels wide.
        Without cameras a sphere of outside views, ``max_res`` pixels wide, is a guess that fails
        for scenes seen from inside (``cameras: train`` then refuses)."""
        self._cams = None
        mode = self.params["cameras"]
        scene = getattr(getattr(state, "trainer", None), "scene", None)
        given = list(getattr(state, "cameras", None) or (scene.train if scene is not None else []))
        cams = given if mode != "sphere" else []
        if mode == "train" and not cams:
            raise GscompError("importance.cameras=train needs cameras: train-and-compress, or compress --cameras PATH")
        if cams:
            views = self.params["views"]
            pick = np.unique(np.linspace(0, len(cams) - 1, min(views, len(cams))).round().astype(int))
            cams = [cams[i] for i in pick]
            self._cams = [c.scaled(min(1.0, self.params["max_res"] / max(c.width, c.height))) for c in cams]
        self._scored = None
        if not self.params.get("prune") or not len(splats) or self._cams:  # (given cameras: nothing pruned, encode scores)
            return splats
        # Pruning: score here, before the Gaussians are coded, and keep the scores for encode. In
        # the order the positions stage will code them in (Morton): the renders of a scene in
        # that order are faster (a randomly ordered 300k scene took 1.2x as long) and, when
        # nothing is pruned, the same as encode's (`reordered` follows what order remains)
        p = self.params
        means = as_np32(splats.means)
        grid = PosGrid.fit(means, p["pos_bits"], p.get("pos_core", CORE_DEFAULT))  # (the positions stage's)
        order = morton_order(grid, means)
        ordered = splats[torch.from_numpy(order)]
        imp, sens = self._score(ordered, self.progress)
        ref = reference_score(imp, self.params["quantile"])
        warning = self._warning(ordered, imp)
        # Sphere views only: 16 of a capture's cameras need not see what its others do (given
        # cameras return above, and encode scores). Nor when most of the scene hides from them:
        # it is likely seen from inside
        keep = None if warning else self._kept(imp, ref, grid.in_core(means)[order])
        if warning:
            warning += "; nothing was pruned (importance.prune)"
        if keep is not None:
            imp, sens = imp[keep], {f: v[keep] for f, v in sens.items()}
            ordered = None  # (let go of it first: the input and one copy at a time)
            ordered = splats[torch.from_numpy(order[keep])]
        self._scored = (imp, sens, ref, warning)
        return ordered

    def _kept(self, imp: np.ndarray, ref: float, core: np.ndarray) -> np.ndarray | None:
        """Rows that stay (None: all): those scoring at least prune x I_ref, and every one outside
        the ``core`` box (an unbounded scene's far background is not what the sphere views look at)."""
        p = self.params
        keep = np.flatnonzero(~((imp < p["prune"] * ref) & core))
        dropped = len(imp) - len(keep)
        if not dropped:
            return None
        warnings.warn(f"importance: pruned {dropped:,} of {len(imp):,} Gaussians ({100 * dropped / len(imp):.1f}%) that barely "
                      f"show from the {p['views']} views around the scene (importance.prune={p['prune']:g})", Note, stacklevel=3)
        return keep

    def reordered(self, perm: torch.Tensor) -> None:
        if self._scored is not None:
            imp, sens, ref, warning = self._scored
            p = np.asarray(perm, np.int64)
            self._scored = (imp[p], {f: v[p] for f, v in sens.items()}, ref, warning)

    def _steps(self) -> dict[str, float]:
        p = self.params
        return {"quats": p["quat_step"], "scales": p["scale_step"], "opacities": p["opacity_step"], "sh0": p["sh0_step"],
                "shN": p.get("shN_step", 0.0), "shN_band_gain": p.get("shN_band_gain", 1.0)}

    def _score(self, splats, progress=None) -> tuple[np.ndarray, dict]:
        """(snapped scores, per-field sensitivities) from this encode's views."""
        p = self.params
        report = (lambda d, t: progress("importance: rendering views", d, t)) if progress else None
        sens: dict = {}
        imp = snapped_scores(splats, p["views"], self._steps(), p["pos_bits"], self._cams, report, sens,
                             p.get("pos_core", CORE_DEFAULT), p["max_res"])
        return imp, sens

    def _warning(self, splats, imp: np.ndarray) -> str | None:
        # opacity below 1/255 (a logit below -ln 254) is never drawn: alpha = opacity x G <= opacity
        drawable = as_np32(splats.opacities) >= -math.log(254.0)
        return scoring_warning(imp, self.params["quantile"], len(self._cams or []), drawable)

    def encode(self, splats, ctx: CodingContext) -> list[Section]:
        p = self.params
        sens: dict = {}
        cls = np.zeros(0, np.int64)
        if ctx.n:
            if self._scored is not None and len(self._scored[0]) == ctx.n:  # scored in bake (prune)
                imp, sens, ref, warning = self._scored
            else:
                imp, sens = self._score(splats, ctx.progress)
                ref, warning = reference_score(imp, p["quantile"]), self._warning(splats, imp)
            cls = classes_of_scores(imp, p["quantile"], p["levels"], ref)
            if warning:
                warnings.warn(f"importance: {warning}", DataWarning, stacklevel=2)
        ctx.hints[SENSITIVITY_KEY] = sens  # per-field render sensitivity, for the trellis (`posthoc`)
        return [Section("classes", "symbols/v1", E.encode_symbols(cls, allow_ctx=True))]

    def decode(self, sections: dict[str, Section], ctx: CodingContext) -> dict[str, torch.Tensor]:
        cls = E.decode_symbols(need_section(sections, "classes", "symbols/v1").payload, ctx.n, "importance classes")
        if cls.size and (cls.min() < 0 or cls.max() >= self.params["levels"]):
            raise FormatError("importance class out of range")
        return {CLASS_KEY: torch.from_numpy(cls)}


def classes_of(ctx: CodingContext, setting: str, decoding: bool = False) -> np.ndarray:
    """The classes an earlier importance stage handed on; ``setting`` names the option that needs
    them, for the error when there is none."""
    c = ctx.attrs.get(CLASS_KEY)
    if c is None:
        msg = NEEDS_IMPORTANCE.format(setting)
        raise FormatError(msg) if decoding else GscompError(msg)
    return c.numpy()


__all__ = ["CLASS_KEY", "MAX_LEVELS", "NEEDS_IMPORTANCE", "SENSITIVITY_KEY", "Importance", "classes_of", "importance_classes", "importance_scores",
           "reference_score", "scoring_warning", "sphere_cameras"]
