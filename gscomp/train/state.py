"""`TrainState`: the trainable model, its optimizers and everything a stage or strategy may touch.

Per-Gaussian tensors (the six `Splats` fields plus any a stage adds with `add_gaussian_param`, and
non-optimized per-Gaussian buffers such as densification statistics) live here so that one place
keeps them in step when Gaussians are cloned, split or pruned, Adam moments included.
Each per-Gaussian parameter has its own Adam optimizer (as in gsplat) so its learning rate and
moments can be changed independently; global modules (hash grids, MLPs, codebooks) get one Adam each.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..errors import GscompError
from ..splats import FIELDS, Splats

_ADAM_EPS = 1e-15  # as in the 3DGS reference: tiny eps keeps updates of rarely-seen Gaussians alive


def make_adam(params: list, lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel where torch has one for these tensors (about 5x faster per step
    on CPU for millions of Gaussian parameters), else the default implementation."""
    try:
        return torch.optim.Adam(params, lr=lr, eps=_ADAM_EPS, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, eps=_ADAM_EPS)


class TrainState:
    def __init__(self, splats: Splats, lrs: dict[str, float], *, cfg: Any = None, scene=None,
                 max_steps: int = 0, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.scene = scene
        self.max_steps = int(max_steps)
        self.step = 0
        self.device = torch.device(device)
        self.params = nn.ParameterDict()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.gaussian_keys: list[str] = []  # params that follow densification (first dim = N)
        self.buffers: dict[str, torch.Tensor] = {}  # per-Gaussian, not optimized (e.g. grad stats)
        self.modules = nn.ModuleDict()  # global trainable modules added by stages
        self.base_lrs: dict[str, float] = {}
        self.antialiased = bool(splats.antialiased)  # the render mode trained for (`Splats.antialiased`)
        splats = splats.to(self.device)
        for name in FIELDS:
            if name not in lrs:
                raise GscompError(f"no learning rate given for {name!r}")
            self.add_gaussian_param(name, getattr(splats, name), lrs[name])

    # ---------------------------------------------------------------- registration
    @property
    def n(self) -> int:
        return int(self.params["means"].shape[0])

    def add_gaussian_param(self, name: str, tensor: torch.Tensor, lr: float) -> nn.Parameter:
        """Register a per-Gaussian trainable tensor (first dim N); it follows clone/split/prune."""
        if name in self.params or name in self.modules:
            raise GscompError(f"parameter {name!r} already exists")
        if "means" in self.params and (tensor.ndim == 0 or tensor.shape[0] != self.n):
            raise GscompError(f"per-Gaussian parameter {name!r} has first dim "
                              f"{tuple(tensor.shape)[:1]}, expected {self.n}")
        p = nn.Parameter(tensor.detach().to(self.device, torch.float32).contiguous().clone())
        self.params[name] = p
        self.gaussian_keys.append(name)
        self.optimizers[name] = make_adam([p], lr)
        self.base_lrs[name] = lr
        return p

    def add_module(self, name: str, module: nn.Module, lr: float) -> nn.Module:
        """Register a global trainable module (hash grid, MLP, codebook) with its own Adam."""
        if name in self.params or name in self.modules:
            raise GscompError(f"module {name!r} already exists")
        module = module.to(self.device)
        self.modules[name] = module
        params = [p for p in module.parameters() if p.requires_grad]
        if params:
            self.optimizers[name] = torch.optim.Adam(params, lr=lr, eps=_ADAM_EPS)  # small: default Adam
            self.base_lrs[name] = lr
        return module

    def add_gaussian_buffer(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """A non-optimized per-Gaussian tensor that also follows densification (new rows are zero)."""
        if tensor.shape[0] != self.n:
            raise GscompError(f"buffer {name!r} has first dim {tensor.shape[0]}, expected {self.n}")
        self.buffers[name] = tensor.to(self.device)
        return self.buffers[name]

    def set_lr(self, name: str, lr: float) -> None:
        for group in self.optimizers[name].param_groups:
            group["lr"] = lr

    # ---------------------------------------------------------------- views
    def splats(self) -> Splats:
        """The six fields as a `Splats` of the live parameters (differentiable, no copy)."""
        return Splats(**{f: self.params[f] for f in FIELDS}, antialiased=self.antialiased)

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def optimizer_step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    # ---------------------------------------------------------------- structural edits
    def _edit(self, fn_param: Callable[[str, torch.Tensor], torch.Tensor],
              fn_moment: Callable[[torch.Tensor], torch.Tensor],
              fn_buffer: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace every per-Gaussian parameter by ``fn_param(name, old)`` and each of its Adam
        moments by ``fn_moment(old)``, keeping the optimizer bound to the new Parameter."""
        for name in self.gaussian_keys:
            old = self.params[name]
            new = nn.Parameter(fn_param(name, old.data).contiguous())
            opt = self.optimizers[name]
            st = opt.state.pop(old, None)
            if st is not None:
                for k, v in list(st.items()):
                    if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape == old.shape:
                        st[k] = fn_moment(v).contiguous()
                opt.state[new] = st
            opt.param_groups[0]["params"] = [new]
            self.params[name] = new
        for name, buf in list(self.buffers.items()):
            self.buffers[name] = fn_buffer(buf)

    def prune(self, keep: torch.Tensor) -> None:
        """Keep only the Gaussians where ``keep`` (bool, (N,)) is True, in every per-Gaussian
        parameter, its optimizer state and every per-Gaussian buffer."""
        keep = keep.to(self.device)
        if keep.dtype != torch.bool or keep.shape != (self.n,):
            raise GscompError(f"prune mask must be a bool tensor of shape ({self.n},)")
        self._edit(lambda _, t: t[keep], lambda m: m[keep], lambda b: b[keep])

    def grow(self, src: torch.Tensor, values: dict[str, torch.Tensor] | None = None) -> None:
        """Append copies of the Gaussians ``src`` (index tensor); ``values[name]`` overrides the copy
        for some parameters (e.g. new means/scales of a split). New Adam moments and buffer rows
        are zero, as in the 3DGS reference."""
        src = src.to(self.device)
        values = values or {}
        k = int(src.numel())

        def param(name: str, t: torch.Tensor) -> torch.Tensor:
            add = values[name].to(t) if name in values else t[src]
            return torch.cat([t, add], 0)

        def zeros_like_rows(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t, t.new_zeros((k, *t.shape[1:]))], 0)

        self._edit(param, zeros_like_rows, zeros_like_rows)

    def reset_moments(self, name: str, rows: torch.Tensor | None = None) -> None:
        """Zero the Adam moments of parameter ``name`` (all rows or a mask/index)."""
        p = self.params[name]
        st = self.optimizers[name].state.get(p)
        if not st:
            return
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and v.shape == p.shape:
                if rows is None:
                    v.zero_()
                else:
                    v[rows] = 0

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        opt_states = {}
        for name, opt in self.optimizers.items():
            opt_states[name] = opt.state_dict()
        return {
            "step": self.step,
            "antialiased": self.antialiased,
            "gaussian_keys": list(self.gaussian_keys),
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "buffers": {k: v.cpu() for k, v in self.buffers.items()},
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": opt_states,
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore a checkpoint into this state. Stages must already be attached (so the same
        parameter names and modules exist); tensor shapes are taken from the checkpoint."""
        was = bool(sd.get("antialiased", False))
        if was != self.antialiased:
            raise GscompError(f"the checkpoint was trained in the {'antialiased' if was else 'classic'} render mode: "
                              f"resume it with train.antialiased={str(was).lower()} (this run has "
                              f"{str(self.antialiased).lower()})")
        missing = set(self.params) ^ set(sd["params"])
        if missing:
            raise GscompError(f"checkpoint parameters do not match this run: {sorted(missing)} (trained with another "
                              "pipeline's stages? resume with the same pipeline)")
        for name in self.gaussian_keys:
            data = sd["params"][name].to(self.device)
            new = nn.Parameter(data.clone())
            opt = self.optimizers[name]
            opt.state.clear()
            opt.param_groups[0]["params"] = [new]
            self.params[name] = new
            opt.load_state_dict(sd["optimizers"][name])
        for name, m in self.modules.items():
            m.load_state_dict(sd["modules"][name])
            if name in self.optimizers:
                self.optimizers[name].load_state_dict(sd["optimizers"][name])
        self.buffers = {k: v.to(self.device) for k, v in sd.get("buffers", {}).items()}
        self.step = int(sd["step"])
        self.check()

    def check(self) -> None:
        """Assert that every per-Gaussian tensor and optimizer moment agrees with N (for tests)."""
        n = self.n
        for name in self.gaussian_keys:
            p = self.params[name]
            assert p.shape[0] == n, f"{name}: {p.shape[0]} != {n}"
            opt = self.optimizers[name]
            assert opt.param_groups[0]["params"][0] is p, f"{name}: optimizer holds a stale tensor"
            for k, v in opt.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.ndim > 0:
                    assert v.shape == p.shape, f"{name}.{k}: {tuple(v.shape)} != {tuple(p.shape)}"
        for name, b in self.buffers.items():
            assert b.shape[0] == n, f"buffer {name}: {b.shape[0]} != {n}"


__all__ = ["TrainState"]
