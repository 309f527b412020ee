"""Learned volume masking (Compact-3DGS, Lee et al. CVPR 2024, Sec. 3.1).

Every Gaussian gets a mask logit ``mask`` (init 1, so sigmoid ~ 0.73). In the forward pass the mask is
hard, ``M = 1[sigmoid(mask) > threshold]``, but its gradient is that of ``sigmoid(mask)``
(straight-through), and it multiplies both the opacity and the scale, so a masked Gaussian is
invisible *and* has no footprint. The loss ``lambda_mask * mean(sigmoid(mask))`` pushes masks down;
Gaussians that the images do not need fall below the threshold and are pruned for good every
``prune_every`` steps (the reference prunes during densification and every 1000 steps after it).

Nothing of the mask reaches the bitstream: `bake` drops the masked Gaussians and the stage owns no
field.
"""
from __future__ import annotations

import torch

from ..errors import at_step, check_int, check_number, check_schedule
from ..splats import Splats
from .base import Stage, register

_OPA_EPS = 1e-7  # keeps logit(opacity * M) finite: opacity 1e-7 is far below the 1/255 skip threshold


def straight_through_mask(mask_logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Hard 0/1 mask in the forward pass, d/dlogit = sigmoid' in the backward pass."""
    soft = torch.sigmoid(mask_logits)
    hard = (soft > threshold).to(soft.dtype)
    return hard + soft - soft.detach()


def apply_mask(splats: Splats, m: torch.Tensor) -> Splats:
    """Multiply activated opacity and scale by ``m`` (N,), staying in logit / log space."""
    p = torch.sigmoid(splats.opacities) * m
    p = p.clamp(_OPA_EPS, 1 - _OPA_EPS)
    opacities = torch.log(p) - torch.log1p(-p)
    scales = splats.scales + torch.log(m.clamp_min(1e-8))[:, None]
    return splats.replace(opacities=opacities, scales=scales)


@register
class Masking(Stage):
    type = "masking"
    owns = ()
    encoder_params = ("lambda_mask", "threshold", "lr", "prune_every", "prune_until", "start", "init")
    posthoc_note = "keeps every Gaussian: its masks are learned in training (gscomp compress data=... out=...)"

    def __init__(self, lambda_mask: float = 0.0005, threshold: float = 0.01, lr: float = 0.01,
                 prune_every: int = 1000, prune_until: int | float | None = None, start: int | float = 0,
                 init: float = 1.0):
        check_number("masking.lambda_mask", lambda_mask, 0, 1e3)
        check_number("masking.threshold", threshold, 0, 1)
        check_number("masking.lr", lr, 0, 10, lo_open=True)
        check_int("masking.prune_every", prune_every, 1, 1 << 30)
        check_schedule("masking.prune_until", prune_until, allow_none=True)
        check_schedule("masking.start", start)
        check_number("masking.init", init, -100, 100)
        super().__init__(lambda_mask=lambda_mask, threshold=threshold, lr=lr, prune_every=prune_every,
                         prune_until=prune_until, start=start, init=init)
        self.state = None

    # ---------------------------------------------------------------- training side
    def attach(self, state) -> None:
        self.state = state
        if "mask" not in state.params:
            state.add_gaussian_param("mask", torch.full((state.n, 1), float(self.params["init"])),
                                     float(self.params["lr"]))
        self._start = at_step(self.params["start"], state.max_steps)
        until = self.params["prune_until"]
        self._until = state.max_steps if until is None else at_step(until, state.max_steps)

    def _logits(self) -> torch.Tensor | None:
        if self.state is None or "mask" not in self.state.params:
            return None
        return self.state.params["mask"][:, 0]

    def transform(self, splats: Splats, step: int) -> Splats:
        logits = self._logits()
        if logits is None or step < self._start or logits.shape[0] != len(splats):
            return splats
        return apply_mask(splats, straight_through_mask(logits, float(self.params["threshold"])))

    def loss(self, splats: Splats, step: int, state) -> torch.Tensor | None:
        logits = self._logits()
        if logits is None or step < self._start or not self.params["lambda_mask"]:
            return None
        return float(self.params["lambda_mask"]) * torch.sigmoid(logits).mean()

    def keep_mask(self) -> torch.Tensor | None:
        logits = self._logits()
        if logits is None:
            return None
        return torch.sigmoid(logits.detach()) > float(self.params["threshold"])

    def on_step_end(self, step: int, state) -> None:
        every = int(self.params["prune_every"])
        if every <= 0 or step < self._start or step > self._until or (step + 1) % every:
            return
        keep = self.keep_mask()
        if keep is not None and not bool(keep.all()) and bool(keep.any()):
            state.prune(keep)

    # ---------------------------------------------------------------- coding side
    def bake(self, splats: Splats, state=None) -> Splats:
        """Drop masked Gaussians; the kept ones have M = 1, so their values are unchanged."""
        if state is not None and "mask" in getattr(state, "params", {}):
            self.state = state  # a stage built from a config can bake a trained state too
        keep = self.keep_mask()
        if keep is None or keep.shape[0] != len(splats):
            return splats
        return splats[keep.to(splats.device)]
