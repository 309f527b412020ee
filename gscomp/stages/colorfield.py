"""Hash-grid attribute field (Compact-3DGS, Sec. 3.3): colour as a function of position.

Instead of 48 SH floats per Gaussian, a multiresolution hash grid + tiny MLP maps the Gaussian's
position to its SH coefficients (sh0 + shN of the trained degree). Compact-3DGS predicts
view-dependent colour directly; we predict ordinary SH so a decoded `.gsz` is a standard `.ply`.

Positions are normalised by a box (robust 1%-99% quantiles of the means, x1.1) and contracted
outside it (Mip-NeRF 360's contraction, with the inf-norm: `contract_unit`) into [0,1]^3. The box is stored in the file.

Coding: the decoder knows the decoded positions (``ctx.attrs["means"]``) and therefore which table
rows any Gaussian reads; only those rows are coded (``bits``-bit per-level uniform quantization,
default 8, entropy coded); the others are zero and never read. MLP weights are stored as float16.
Colours are then evaluated with `HashGrid.forward_exact` / `TinyMLP.forward_exact` (float32, element-wise only), the
same code at encode time (the pipeline feeds back the decoded fields) and at decode time.
"""
from __future__ import annotations

import struct

import numpy as np
import torch

from ..errors import FormatError, GscompError, at_step, check_int, check_number, check_schedule
from ..splats import Splats, num_sh_rest
from .base import CodingContext, Section, Stage, need_section, register
from .hashgrid import HashGrid, TinyMLP, contract_unit, has_tcnn, mlp_exact
from .rvq import decode_symbols, encode_symbols

MAX_TABLE = 1 << 26  # hash-grid values (256 MiB as float32); the paper's 16 x 2 x 2^19 is 2^24
# Decoding runs the MLP once per Gaussian: n x P multiply-adds for P parameters. Both n and P can
# be large in a small file (n: constant streams; P: 2 bytes each): a 165 KB crafted file asked for
# 80G (136 s). So n x P <= MLP_WORK_FREE + MLP_WORK_PER_BYTE x payload bytes (spec §5; the writer
# pads): at most ~10 s plus a few seconds per MB. Real files are far inside: 2^32 alone covers the
# c3dgs preset's MLP (P = 3,597) up to 1.2M Gaussians, and a 128-wide one (P = 27k) up to 160k;
# beyond, the preset needs 1.8 bytes per Gaussian, the paper's 64-wide MLP 4.6, 128 wide 13, and
# trained files hold about 11 (lego, sodacan).
MLP_WORK_FREE = 1 << 32
MLP_WORK_PER_BYTE = 2048


def _half_if_finite(x: torch.Tensor) -> torch.Tensor:
    h = x.half().float()
    return torch.where(torch.isfinite(h), h, x)


class ColorFieldModel(torch.nn.Module):
    def __init__(self, grid: HashGrid, mlp: TinyMLP):
        super().__init__()
        self.grid, self.mlp = grid, mlp


@register
class ColorField(Stage):
    type = "colorfield"
    owns = ("sh0", "shN")
    encoder_params = ("grid_lr", "mlp_lr", "lr_final", "bits", "start", "fit_steps", "backend")

    def __init__(self, n_levels: int = 16, n_features_per_level: int = 2, log2_hashmap_size: int = 15,
                 base_resolution: int = 16, max_resolution: int = 1024, mlp_width: int = 64,
                 mlp_layers: int = 2, grid_lr: float = 0.01, mlp_lr: float = 0.001, bits: int = 8,
                 start: int | float = 0, fit_steps: int = 600, backend: str = "auto", lr_final: float = 1.0,
                 targets: list[str] | tuple[str, ...] = ("sh0", "shN")):
        if not isinstance(targets, (list, tuple)) or [str(t) for t in targets] not in (["sh0", "shN"], ["shN"]):
            raise GscompError(f"colorfield.targets must be [sh0, shN] or [shN], got {targets!r}")
        targets = [str(t) for t in targets]
        check_int("colorfield.n_levels", n_levels, 1, 32)
        check_int("colorfield.n_features_per_level", n_features_per_level, 1, 8)
        check_int("colorfield.log2_hashmap_size", log2_hashmap_size, 4, 24)
        if n_levels * n_features_per_level << log2_hashmap_size > MAX_TABLE:
            raise GscompError(f"colorfield: n_levels x n_features_per_level x 2^log2_hashmap_size must be at most "
                              f"2^{MAX_TABLE.bit_length() - 1} values (the decoder allocates the whole table)")
        check_int("colorfield.base_resolution", base_resolution, 1, 1 << 16)
        check_int("colorfield.max_resolution", max_resolution, base_resolution, 1 << 20)
        check_int("colorfield.mlp_width", mlp_width, 1, 1024)
        check_int("colorfield.mlp_layers", mlp_layers, 0, 16)
        check_number("colorfield.grid_lr", grid_lr, 0, 10, lo_open=True)
        check_number("colorfield.mlp_lr", mlp_lr, 0, 10, lo_open=True)
        check_number("colorfield.lr_final", lr_final, 0, 1, lo_open=True)
        check_int("colorfield.bits", bits, 1, 16)
        check_schedule("colorfield.start", start)
        check_int("colorfield.fit_steps", fit_steps, 0, 1_000_000)
        if backend not in ("auto", "torch", "tcnn"):
            raise GscompError(f"colorfield.backend must be auto, torch or tcnn, got {backend!r}")
        self.owns = tuple(targets)
        super().__init__(targets=targets, n_levels=n_levels, n_features_per_level=n_features_per_level,
                         log2_hashmap_size=log2_hashmap_size, base_resolution=base_resolution,
                         max_resolution=max_resolution, mlp_width=mlp_width, mlp_layers=mlp_layers,
                         grid_lr=grid_lr, mlp_lr=mlp_lr, bits=bits, start=start, fit_steps=fit_steps,
                         backend=backend, lr_final=lr_final)
        self.model: ColorFieldModel | None = None
        self.center: torch.Tensor | None = None
        self.half: torch.Tensor | None = None
        self.n_out = 0
        self._start = 0
        self._fast = None  # tcnn encoder on CUDA, when available

    # ---------------------------------------------------------------- model
    def _new_model(self, sh_degree: int) -> ColorFieldModel:
        p = self.params
        grid = HashGrid(p["n_levels"], p["n_features_per_level"], p["log2_hashmap_size"], p["base_resolution"],
                        max_resolution=p["max_resolution"])
        self.check_input(sh_degree)
        self.n_out = 3 * (num_sh_rest(sh_degree) + self._has_dc())
        mlp = TinyMLP(grid.n_output_dims, self.n_out, int(p["mlp_width"]), int(p["mlp_layers"]))
        return ColorFieldModel(grid, mlp)

    def set_box(self, means: torch.Tensor) -> None:
        m = means.detach().float().cpu()
        if m.shape[0] == 0:
            lo, hi = torch.zeros(3), torch.ones(3)
        else:
            lo, hi = torch.quantile(m[:200_000], 0.01, 0), torch.quantile(m[:200_000], 0.99, 0)
        # rounded to float16 (as since the first files; the file stores float32) where that is finite:
        # a scene in map coordinates (UTM: 10^5-10^6 m) made the box infinite
        self.center = _half_if_finite((lo + hi) / 2)
        self.half = _half_if_finite(((hi - lo) / 2 * 1.1).clamp_min(1e-3))

    def predict(self, means: torch.Tensor) -> torch.Tensor:
        """Training path: (N,3) means -> (N, n_out) SH coefficients (differentiable w.r.t. the field)."""
        if getattr(self, "_box", None) is not None:  # follow a checkpoint restore
            self.center, self.half = self._box.center.cpu(), self._box.half_size.cpu()
        u = contract_unit(means.detach(), self.center.to(means), self.half.to(means))
        h = self._fast(u) if self._fast is not None else self.model.grid(u)
        return self.model.mlp(h)

    def needs(self) -> dict[str, str]:
        return {"means": "colorfield must come after the stage that codes positions (it evaluates the field at "
                         "the decoded positions): list `positions` first in the pipeline"}

    def check_input(self, sh_degree: int) -> None:
        if "sh0" not in self.owns and sh_degree == 0:
            raise GscompError("colorfield.targets=[shN] needs SH degree >= 1 (nothing view-dependent to predict)")

    def _has_dc(self) -> int:
        """1 when the field predicts the DC colour too (the paper), 0 when it predicts only the
        view-dependent SH and sh0 stays a per-Gaussian attribute."""
        return int("sh0" in self.owns)

    def _split(self, out: torch.Tensor, degree: int) -> dict[str, torch.Tensor]:
        sh = out.reshape(out.shape[0], out.shape[1] // 3, 3)  # (no -1: n may be 0)
        k, d = num_sh_rest(degree), self._has_dc()
        if sh.shape[1] < k + d:  # the file asks for more SH than the field predicts
            sh = torch.cat([sh, sh.new_zeros(sh.shape[0], k + d - sh.shape[1], 3)], 1)
        out = {"shN": sh[:, d : d + k].contiguous()}
        if d:
            out["sh0"] = sh[:, :1].contiguous()
        return out

    # ---------------------------------------------------------------- training side
    def attach(self, state) -> None:
        degree = int(state.params["shN"].shape[1])
        from ..splats import sh_degree_from_rest

        self.model = self._new_model(sh_degree_from_rest(degree))
        self.set_box(state.params["means"])
        # the box as module buffers, so a resumed run restores it from the checkpoint
        box = torch.nn.Module()
        box.register_buffer("center", self.center.clone())
        box.register_buffer("half_size", self.half.clone())
        self._box = state.add_module("colorfield_box", box, 0.0)
        state.add_module("colorfield_grid", self.model.grid, float(self.params["grid_lr"]))
        state.add_module("colorfield_mlp", self.model.mlp, float(self.params["mlp_lr"]))
        self._start = at_step(self.params["start"], state.max_steps)
        backend = self.params["backend"]
        if backend == "tcnn" or (backend == "auto" and state.device.type == "cuda" and has_tcnn()):
            from .hashgrid import TcnnHashGrid

            self._fast = state.add_module("colorfield_tcnn", TcnnHashGrid(self.model.grid), float(self.params["grid_lr"]))

    def on_step_end(self, step: int, state) -> None:
        """Exponential decay of the field's learning rates to ``lr_final`` x their start value by the
        end of the run (the reference steps its network lr down by 0.33 a few times; a smooth decay
        does the same job for any step budget)."""
        final = float(self.params["lr_final"])
        if final == 1.0 or self.model is None:
            return
        frac = min(1.0, (step + 1) / max(1, state.max_steps))
        for name in ("colorfield_grid", "colorfield_mlp", "colorfield_tcnn"):
            if name in state.base_lrs:
                state.set_lr(name, state.base_lrs[name] * final**frac)

    def transform(self, splats: Splats, step: int) -> Splats:
        if self.model is None or step < self._start:
            return splats
        return splats.replace(**self._split(self.predict(splats.means), splats.sh_degree))

    # ---------------------------------------------------------------- coding side
    def bake(self, splats: Splats, state=None) -> Splats:
        """Trained: colours come from the field (the pipeline recomputes them at the decoded positions).
        Post-hoc (never trained): fit the field to the given colours first (a short distillation)."""
        if self.model is None:
            self.fit(splats)
        if self._fast is not None:  # hand the tcnn table over to the CPU path
            with torch.no_grad():
                self.model.grid.params.copy_(self._fast.table().to(self.model.grid.params))
        return splats

    def fit(self, splats: Splats, steps: int | None = None) -> None:
        steps = int(self.params["fit_steps"] if steps is None else steps)
        self.model = self._new_model(splats.sh_degree)
        self.set_box(splats.means)
        parts = ([splats.sh0] if self._has_dc() else []) + [splats.shN]
        target = torch.cat(parts, 1).flatten(1).detach().float()
        opt = torch.optim.Adam([
            {"params": self.model.grid.parameters(), "lr": float(self.params["grid_lr"])},
            {"params": self.model.mlp.parameters(), "lr": float(self.params["mlp_lr"]) * 5},
        ], eps=1e-15)
        means = splats.means.detach().float()
        g = torch.Generator().manual_seed(0)
        batch = min(len(splats), 65536)
        for _ in range(steps if len(splats) else 0):
            idx = torch.randint(len(splats), (batch,), generator=g)
            loss = (self.predict(means[idx]) - target[idx]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    def encode(self, splats: Splats, ctx: CodingContext) -> list[Section]:
        if self.model is None:
            self.fit(splats)
        grid, mlp = self.model.grid, self.model.mlp
        bits = int(self.params["bits"])
        qmax = 2**bits - 1
        u = contract_unit(ctx.attrs["means"].float().cpu(), self.center, self.half)
        used = grid.used_rows(u)
        table = grid.params.detach().float().cpu()
        lo_hi, symbols = [], []
        for level in range(grid.n_levels):
            a, b = grid.offsets[level], grid.offsets[level] + grid.sizes[level]
            rows = table[a:b][used[a:b]]
            if rows.numel() == 0:
                lo, step = 0.0, 1.0
            else:
                lo = float(rows.min())
                step = max(float(rows.max()) - lo, 1e-12) / qmax
            lo, step = float(np.float32(lo)), float(np.float32(step))
            lo_hi.append((lo, step))
            q = torch.round((rows - lo) / step).clamp(0, qmax).to(torch.int32)
            symbols.append(q.reshape(-1))
        sym = torch.cat(symbols).numpy() if symbols else np.zeros(0, np.int32)
        n_out = self.n_out or mlp.layers[-1].out_features
        meta = struct.pack("<6f", *self.center.tolist(), *self.half.tolist())
        meta += struct.pack("<I", n_out) + struct.pack(f"<{2 * grid.n_levels}f", *[v for lh in lo_hi for v in lh])
        weights16 = [t.detach().cpu().to(torch.float16) for lin in mlp.layers for t in (lin.weight, lin.bias)]
        if not all(bool(torch.isfinite(t).all()) for t in weights16):
            raise GscompError("colorfield: MLP weights beyond float16's range (+-65504), which the file stores them "
                              "in (the field's training diverged?)")
        weights = b"".join(t.numpy().tobytes() for t in weights16)
        return [
            Section("colorfield.meta", "raw", meta),
            Section("colorfield.mlp", "float16", weights),
            Section("colorfield.grid", "symbols", encode_symbols(sym)),
        ]

    def min_payload(self, n: int, sections: list[Section]) -> int:
        mlp = next((s for s in sections if s.name == "colorfield.mlp"), None)
        work = 0 if mlp is None else n * (len(mlp.payload) // 2)
        return max(0, -(-(work - MLP_WORK_FREE) // MLP_WORK_PER_BYTE))

    def decode(self, sections: dict[str, Section], ctx: CodingContext) -> dict[str, torch.Tensor]:
        p = self.params
        grid = HashGrid(p["n_levels"], p["n_features_per_level"], p["log2_hashmap_size"], p["base_resolution"],
                        max_resolution=p["max_resolution"], init=False)
        meta = need_section(sections, "colorfield.meta", "raw").payload
        if len(meta) != 28 + 8 * grid.n_levels:  # (short, or with bytes after: both refused)
            raise FormatError(f"colorfield: metadata section of {len(meta)} bytes, expected {28 + 8 * grid.n_levels}")
        center = torch.tensor(struct.unpack_from("<3f", meta, 0))
        half = torch.tensor(struct.unpack_from("<3f", meta, 12))
        (n_out,) = struct.unpack_from("<I", meta, 24)
        lh = struct.unpack_from(f"<{2 * grid.n_levels}f", meta, 28)
        if n_out % 3 or n_out // 3 - self._has_dc() not in (0, 3, 8, 15):
            raise FormatError(f"colorfield: bad output size {n_out}")
        width, layers = int(p["mlp_width"]), int(p["mlp_layers"])
        dims = [grid.n_output_dims] + [width] * layers + [n_out]
        raw = need_section(sections, "colorfield.mlp", "float16").payload
        need = sum((a * b + b) * 2 for a, b in zip(dims[:-1], dims[1:]))
        if len(raw) != need:
            raise FormatError(f"colorfield: MLP section has {len(raw)} bytes, expected {need}")
        flat = torch.from_numpy(np.frombuffer(raw, dtype="<f2").astype(np.float32))
        weights, off = [], 0
        for a, b in zip(dims[:-1], dims[1:]):
            w = flat[off : off + a * b].reshape(b, a)
            off += a * b
            weights.append((w, flat[off : off + b]))
            off += b
        means = ctx.attrs["means"].float().cpu()  # (the pipeline checks that positions come first)
        u = contract_unit(means, center, half)
        used = grid.used_rows(u)
        n_sym = int(used.sum()) * grid.n_features
        sym = torch.from_numpy(np.asarray(decode_symbols(need_section(sections, "colorfield.grid", "symbols").payload, n_sym), dtype=np.int64))
        table = grid.params.detach()  # (zeros)
        pos = 0
        for level in range(grid.n_levels):
            a, b = grid.offsets[level], grid.offsets[level] + grid.sizes[level]
            lu = used[a:b]
            k = int(lu.sum()) * grid.n_features
            vals = sym[pos : pos + k].to(torch.float32).reshape(-1, grid.n_features) * lh[2 * level + 1] + lh[2 * level]
            pos += k
            sub = table[a:b]
            sub[lu] = vals
        return self._split(mlp_exact(grid.forward_exact(u, table), weights), ctx.sh_degree)
