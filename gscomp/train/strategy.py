"""Adaptive density control, kept apart from the training loop (the shape of gsplat's strategies).

`DefaultStrategy` is the 3DGS reference's: accumulate the screen-space gradient norm of each
Gaussian's 2D mean (normalised to NDC units, so thresholds do not depend on the image size) over
the steps where it is visible; every ``refine_every`` steps between ``refine_start`` and
``refine_stop``, clone small Gaussians and split large ones whose average gradient exceeds
``grow_grad2d``, prune transparent (and, after the first opacity reset, huge) ones; every
``reset_every`` steps clamp opacities down so that floaters have to earn their opacity back.

Schedule values may be given as an int (absolute step) or a float in [0, 1] (fraction of the run),
so one preset scales to any ``train.steps``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields

import torch

from ..errors import GscompError, Note, at_step
from ..splats import quat_to_rotmat
from .state import TrainState


@dataclass
class DefaultStrategy:
    refine_start: int | float = 500
    refine_stop: int | float = 15_000
    refine_every: int = 100
    reset_every: int | float = 3_000
    prune_opa: float = 0.005
    grow_grad2d: float = 0.0002
    grow_scale3d: float = 0.01  # x scene extent: below = clone, above = split
    prune_scale3d: float = 0.1  # x scene extent: larger Gaussians are pruned after the first reset
    max_gaussians: int | None = None  # CPU budget cap on growth (None = unlimited)
    pause_after_reset: int = 0  # steps after a reset without refinement

    type: str = "default"

    @classmethod
    def from_config(cls, cfg: dict) -> "DefaultStrategy":
        cfg = dict(cfg)
        names = {f.name for f in fields(cls)}
        bad = sorted(set(cfg) - names)
        if bad:
            raise GscompError(f"unknown strategy option(s) {bad}; known: {sorted(names)}")
        if cfg.get("type", "default") != "default":
            raise GscompError(f"unknown densification strategy {cfg['type']!r} (known: default)")
        return cls(**cfg)

    # ------------------------------------------------------------------ hooks
    def initialize(self, state: TrainState) -> None:
        n = state.n
        self._steps = state.max_steps
        self._start = at_step(self.refine_start, self._steps)
        self._stop = at_step(self.refine_stop, self._steps)
        self._reset = at_step(self.reset_every, self._steps)
        state.add_gaussian_buffer("grad2d", torch.zeros(n, device=state.device))
        state.add_gaussian_buffer("count", torch.zeros(n, device=state.device))
        self.last_refine: dict[str, int] = {}
        self._capped = False

    def _refines_at(self, step: int) -> bool:
        return (0 < step < self._stop and step >= self._start and step % self.refine_every == 0
                and (self._reset <= 0 or step % self._reset >= self.pause_after_reset))

    def refine_steps(self) -> list[int]:
        """The steps at which `step_post_backward` refines (after `initialize`)."""
        return [s for s in range(self.refine_every, self._stop, self.refine_every) if self._refines_at(s)]

    def step_pre_backward(self, state: TrainState, info: dict) -> None:
        if self._refining_soon(state.step):
            info["means2d"].retain_grad()

    def _refining_soon(self, step: int) -> bool:
        return step < self._stop

    def step_post_backward(self, state: TrainState, step: int, info: dict, extent: float) -> None:
        if step >= self._stop:
            return
        self._accumulate(state, info)
        if self._refines_at(step):
            self.refine(state, step, extent)
        if self._reset > 0 and step > 0 and step % self._reset == 0:
            self.reset_opacity(state)

    # ------------------------------------------------------------------ statistics
    def _accumulate(self, state: TrainState, info: dict) -> None:
        m2d = info["means2d"]
        if m2d.grad is None:
            return
        g = m2d.grad.detach().clone()  # (C, N, 2) in pixels
        c = g.shape[0]
        # d(loss)/d(ndc) = d(loss)/d(pixel) * size/2; x C because the loss averages over cameras.
        g[..., 0] *= info["width"] / 2.0 * c
        g[..., 1] *= info["height"] / 2.0 * c
        norms = g.norm(dim=-1)  # (C, N)
        visible = info["radii"] > 0
        state.buffers["grad2d"] += torch.where(visible, norms, torch.zeros_like(norms)).sum(0)
        state.buffers["count"] += visible.sum(0).to(norms.dtype)

    # ------------------------------------------------------------------ refinement
    @torch.no_grad()
    def refine(self, state: TrainState, step: int, extent: float) -> None:
        grads = state.buffers["grad2d"] / state.buffers["count"].clamp_min(1)
        scales = torch.exp(state.params["scales"]).max(-1).values
        high = grads > self.grow_grad2d
        small = scales <= self.grow_scale3d * extent
        clone = high & small
        split = high & ~small
        if self.max_gaussians is not None:
            room = max(0, int(self.max_gaussians) - state.n)
            wanted = int((clone | split).sum())
            clone, split = self._cap(grads, clone, split, room)
            if wanted > room and not self._capped:  # said once: growth stops short of what the scene asks
                self._capped = True
                warnings.warn(f"step {step}: densification reached train.strategy.max_gaussians={int(self.max_gaussians):,} "
                              f"({wanted:,} Gaussians wanted to grow, room for {room:,}); raise it "
                              "(train.strategy.max_gaussians=N, or null for no cap) for a larger model", Note)
        n_clone, n_split = int(clone.sum()), int(split.sum())
        if n_clone:
            state.grow(clone.nonzero().squeeze(1))
        if n_split:
            split = torch.cat([split, split.new_zeros(n_clone)])
            self._split(state, split)
        # Prune transparent Gaussians, and after the first opacity reset also huge ones.
        opac = torch.sigmoid(state.params["opacities"]).detach()
        prune = opac < self.prune_opa
        if self._reset > 0 and step > self._reset:
            prune |= torch.exp(state.params["scales"]).max(-1).values > self.prune_scale3d * extent
        n_prune = int(prune.sum())
        if n_prune:
            state.prune(~prune)
        state.buffers["grad2d"].zero_()
        state.buffers["count"].zero_()
        self.last_refine = {"step": step, "cloned": n_clone, "split": n_split, "pruned": n_prune, "n": state.n}

    @staticmethod
    def _cap(grads, clone, split, room: int):
        """Keep only the ``room`` candidates with the largest gradient (a split adds one net Gaussian,
        a clone one), so a CPU run cannot blow past its Gaussian budget."""
        cand = clone | split
        if int(cand.sum()) <= room:
            return clone, split
        keep = torch.zeros_like(cand)
        if room > 0:
            idx = cand.nonzero().squeeze(1)
            top = idx[torch.topk(grads[idx], room).indices]
            keep[top] = True
        return clone & keep, split & keep

    @staticmethod
    def _split(state: TrainState, sel: torch.Tensor) -> None:
        """Replace each selected Gaussian by two samples drawn from it with scales / 1.6."""
        idx = sel.nonzero().squeeze(1)
        scales = torch.exp(state.params["scales"][idx])
        rot = quat_to_rotmat(state.params["quats"][idx])
        offsets = torch.randn(2, len(idx), 3, device=scales.device) * scales  # sampled in local frame
        means = state.params["means"][idx] + torch.einsum("nij,bnj->bni", rot, offsets)
        new_scales = torch.log(scales / 1.6).repeat(2, 1)
        src = idx.repeat(2)
        state.grow(src, {"means": means.reshape(-1, 3), "scales": new_scales})
        keep = torch.ones(state.n, dtype=torch.bool, device=sel.device)
        keep[idx] = False
        state.prune(keep)

    @torch.no_grad()
    def reset_opacity(self, state: TrainState) -> None:
        cap = math.log(2 * self.prune_opa / (1 - 2 * self.prune_opa))  # logit(2 * prune_opa)
        state.params["opacities"].data.clamp_(max=cap)
        state.reset_moments("opacities")

    def state_dict(self) -> dict:
        return {"last_refine": self.last_refine}

    def load_state_dict(self, sd: dict) -> None:
        self.last_refine = dict(sd.get("last_refine", {}))


def build_strategy(cfg: dict) -> DefaultStrategy:
    return DefaultStrategy.from_config(cfg)


__all__ = ["DefaultStrategy", "build_strategy", "at_step"]
