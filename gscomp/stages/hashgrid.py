"""Multiresolution hash encoding (Instant-NGP / tiny-cuda-nn semantics) + a tiny MLP, in PyTorch.

Why our own: the decoder must evaluate the field bit-exactly on any CPU, so the CPU path is the
reference. The layout and hyperparameters follow tiny-cuda-nn's ``HashGrid`` so a tcnn-trained grid
(``backend="tcnn"`` on CUDA when `tinycudann` is installed) is interchangeable with ours:

- level l has ``scale_l = 2^(l * log2(per_level_scale)) * base_resolution - 1`` and
  ``resolution_l = ceil(scale_l) + 1``;
- a point x in [0,1]^3 maps to ``pos = x * scale_l + 0.5``; the 8 corners are ``floor(pos) + {0,1}^3``
  and are blended trilinearly with ``frac = pos - floor(pos)``;
- level l stores ``size_l = min(resolution_l^3, 2^log2_hashmap_size)`` entries (rounded up to a
  multiple of 8); a corner's index is dense (``x + y*res + z*res^2``) when the full grid fits, else
  the spatial hash ``(x*1 XOR y*2654435761 XOR z*805459861) mod 2^32``; both are taken ``mod size_l``;
- parameters are one flat (sum size_l, F) table, level-major, initialised U(-1e-4, 1e-4).

`HashGrid.forward` is the fast vectorised path used in training. `HashGrid.forward_exact` and
`TinyMLP.forward_exact` are the decoder's path: float32, fixed chunk size and only element-wise
operations in a fixed order (no BLAS reductions whose blocking may depend on threads or CPU), so
the output is identical for any thread count and machine.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

PRIMES = (1, 2654435761, 805459861)
EXACT_CHUNK = 65536  # points per chunk in the exact path (bounds memory; results do not depend on it)


def _round8(n: int) -> int:
    return (n + 7) // 8 * 8


class HashGrid(nn.Module):
    def __init__(
        self,
        n_levels: int = 16,
        n_features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        per_level_scale: float | None = None,
        max_resolution: int | None = None,
        seed: int = 0,
        init: bool = True,
    ):
        super().__init__()
        if per_level_scale is None:
            # tcnn users usually derive the growth factor from a target finest resolution
            per_level_scale = (
                math.exp(math.log(max_resolution / base_resolution) / max(1, n_levels - 1)) if max_resolution else 2.0
            )
        self.n_levels = int(n_levels)
        self.n_features = int(n_features_per_level)
        self.log2_hashmap_size = int(log2_hashmap_size)
        self.base_resolution = int(base_resolution)
        self.per_level_scale = float(per_level_scale)
        self.scales: list[float] = []
        self.resolutions: list[int] = []
        self.sizes: list[int] = []
        self.offsets: list[int] = []
        self.dense: list[bool] = []
        hashmap = 2 ** self.log2_hashmap_size
        log2s = math.log2(self.per_level_scale)
        off = 0
        for level in range(self.n_levels):
            # computed in float32 like tcnn so the two implementations place corners identically
            scale = float(torch.tensor(2.0 ** (level * log2s) * self.base_resolution - 1.0, dtype=torch.float32))
            res = int(math.ceil(scale)) + 1
            size = _round8(min(res**3, hashmap))
            self.scales.append(scale)
            self.resolutions.append(res)
            self.sizes.append(size)
            self.offsets.append(off)
            self.dense.append(res**3 <= size)
            off += size
        if init:
            g = torch.Generator().manual_seed(seed)
            self.params = nn.Parameter((torch.rand(off, self.n_features, generator=g) * 2 - 1) * 1e-4)
        else:  # (a decoder's table: zeros, filled with the coded rows; numpy's zeros come from calloc,
            # so pages no row is written to cost no memory, where torch.zeros writes them all)
            self.params = nn.Parameter(torch.from_numpy(np.zeros((off, self.n_features), np.float32)),
                                       requires_grad=False)

    @property
    def n_output_dims(self) -> int:
        return self.n_levels * self.n_features

    def config(self) -> dict:
        return {
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
        }

    # ------------------------------------------------------------------ indexing
    _OFFS = [(i, j, k) for k in (0, 1) for j in (0, 1) for i in (0, 1)]  # fixed blending order

    def _level_tensors(self, device) -> dict[str, torch.Tensor]:
        f = lambda v, dt: torch.tensor(v, dtype=dt, device=device)  # noqa: E731
        return {
            "scale": f(self.scales, torch.float32), "res": f(self.resolutions, torch.int64),
            "size": f(self.sizes, torch.int64), "offset": f(self.offsets, torch.int64),
            "dense": f(self.dense, torch.bool), "corner": f(self._OFFS, torch.int64),
        }

    def _corners(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,3) in [0,1] -> rows (N, L, 8) int64 and trilinear weights (N, L, 8), all levels at once.
        A corner (x, y, z) of a level of resolution r is row x + y r + z r^2 of a dense level, else
        tiny-cuda-nn's spatial hash (x p0 ^ y p1 ^ z p2) & 0xFFFFFFFF (PRIMES), modulo the level's
        size, plus its offset in the flat table; vectorised over levels: each axis has only two corner
        coordinates, so the 8 corners are a broadcast (z, y, x) of per-axis pairs (x fastest, the
        `_OFFS` order)."""
        t = self._level_tensors(x.device)
        pos = x[:, None, :] * t["scale"][None, :, None] + 0.5  # (N, L, 3)
        base = torch.floor(pos)
        frac = pos - base
        b = base.to(torch.int64)
        pair = lambda v: torch.stack([v, v + 1], -1)  # noqa: E731  (N, L, 2)
        cx, cy, cz = pair(b[:, :, 0]), pair(b[:, :, 1]), pair(b[:, :, 2])
        r = t["res"][None, :, None]
        bx, by, bz = cx[:, :, None, None, :], cy[:, :, None, :, None], cz[:, :, :, None, None]
        dense = bx + by * r[..., None, None] + bz * (r * r)[..., None, None]
        hashed = (bx * PRIMES[0] ^ by * PRIMES[1] ^ bz * PRIMES[2]) & 0xFFFFFFFF
        n, L = x.shape[0], self.n_levels
        idx = torch.where(t["dense"][None, :, None, None, None], dense, hashed).reshape(n, L, 8)
        idx = idx % t["size"][None, :, None] + t["offset"][None, :, None]
        wpair = lambda f: torch.stack([1 - f, f], -1)  # noqa: E731
        wx, wy, wz = wpair(frac[:, :, 0]), wpair(frac[:, :, 1]), wpair(frac[:, :, 2])
        w = (wx[:, :, None, None, :] * wy[:, :, None, :, None]) * wz[:, :, :, None, None]  # x*y*z order
        return idx, w.reshape(n, L, 8)

    def _native_args(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Level description for the native kernels: float32 scales (L,), int64 (L, 4) rows of
        (resolution, size, offset, dense)."""
        if getattr(self, "_nargs", None) is None:
            info = torch.tensor([[r, s, o, int(d)] for r, s, o, d in
                                 zip(self.resolutions, self.sizes, self.offsets, self.dense)], dtype=torch.int64)
            self._nargs = (torch.tensor(self.scales, dtype=torch.float32), info)
        return self._nargs

    def used_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean (rows,) mask of the table rows any point of ``x`` (N,3 in [0,1]) reads."""
        x = x.detach().float().cpu().contiguous()
        ext = _native()
        if ext is not None:
            return ext.used_rows(x, self.params.shape[0], *self._native_args())
        used = torch.zeros(self.params.shape[0], dtype=torch.bool)
        for i in range(0, x.shape[0], EXACT_CHUNK):
            idx, _ = self._corners(x[i : i + EXACT_CHUNK])
            used[idx.reshape(-1)] = True
        return used

    # ------------------------------------------------------------------ evaluation
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) in [0,1] -> (N, n_levels * F) features (differentiable w.r.t. the table; not w.r.t. x).
        On the CPU this is the native kernel (`cuda/hashgrid_cpu.cpp`), elsewhere the PyTorch path."""
        ext = _native() if x.device.type == "cpu" and self.params.device.type == "cpu" else None
        if ext is None:
            return self._encode(x, self.params)
        return _NativeEncode.apply(self.params, x.detach().float().contiguous(), self)

    def forward_torch(self, x: torch.Tensor) -> torch.Tensor:
        """The pure-PyTorch training path (the oracle the native kernel is tested against)."""
        return self._encode(x, self.params)

    def _encode(self, x: torch.Tensor, table: torch.Tensor, exact: bool = False) -> torch.Tensor:
        idx, w = self._corners(x)
        wf = _Gather.apply(table, idx) * w[..., None]  # (N, L, 8, F)
        if not exact:
            return wf.sum(2).reshape(x.shape[0], -1)  # fast, cheap backward
        acc = wf[:, :, 0]
        for k in range(1, 8):  # corners summed in a fixed order (no reduction kernel)
            acc = acc + wf[:, :, k]
        return acc.reshape(x.shape[0], -1)

    @torch.no_grad()
    def forward_exact(self, x: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder path: float32 on the CPU, the 8 corners added one by one per point (no reductions),
        so the output is the same for any thread count and machine. The native kernel and
        `forward_exact_torch` perform the same float operations in the same order (bit-identical)."""
        table = (self.params if table is None else table).detach().float().cpu().contiguous()
        x = x.detach().float().cpu().contiguous()
        ext = _native()
        if ext is not None:
            return ext.forward(x, table, *self._native_args())
        return self.forward_exact_torch(x, table)

    @torch.no_grad()
    def forward_exact_torch(self, x: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        table = (self.params if table is None else table).detach().float().cpu()
        x = x.detach().float().cpu()
        out = [self._encode(x[i : i + EXACT_CHUNK], table, exact=True) for i in range(0, x.shape[0], EXACT_CHUNK)]
        return torch.cat(out, 0) if out else x.new_zeros(0, self.n_output_dims)


_NATIVE: list = []  # [module or None] once tried


def _native():
    """The compiled hash-grid extension, or None (with one warning) when it cannot be built: the
    PyTorch path computes the same values, only slower."""
    if not _NATIVE:
        from .. import native
        from ..errors import GscompError

        try:
            _NATIVE.append(native.load("hashgrid"))
        except GscompError as e:  # (its message says that the PyTorch hash grid is used instead)
            import warnings

            from ..errors import Note

            warnings.warn(str(e), Note, stacklevel=2)
            _NATIVE.append(None)
    return _NATIVE[0]


class _NativeEncode(torch.autograd.Function):
    """Native forward; backward w.r.t. the table only (positions are detached in every caller)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, x: torch.Tensor, grid: "HashGrid") -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.grid = grid
        ctx.n_rows = table.shape[0]
        return _native().forward(x, table.detach().contiguous(), *grid._native_args())

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        g = _native().backward(x, grad.float().contiguous(), ctx.n_rows, *ctx.grid._native_args())
        return g, None, None


class _Gather(torch.autograd.Function):
    """table[idx] whose backward is one index_add_ into one zero table (autograd's default for
    advanced indexing re-zeroes a full-size table per call, which dominates CPU training time)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(idx)
        ctx.shape = table.shape
        return table[idx]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (idx,) = ctx.saved_tensors
        g = grad.new_zeros(ctx.shape)
        g.index_add_(0, idx.reshape(-1), grad.reshape(-1, ctx.shape[1]))
        return g, None


class TinyMLP(nn.Module):
    """Fully connected ReLU network (tcnn FullyFusedMLP shape: ``n_hidden_layers`` x ``width``), with
    biases so a constant colour needs no grid capacity. Output is linear (SH coefficients)."""

    def __init__(self, n_in: int, n_out: int, width: int = 64, n_hidden_layers: int = 2, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        dims = [n_in] + [width] * n_hidden_layers + [n_out]
        self.layers = nn.ModuleList()
        for a, b in zip(dims[:-1], dims[1:]):
            lin = nn.Linear(a, b)
            with torch.no_grad():  # seeded init so a run is reproducible regardless of global RNG use
                bound = 1 / math.sqrt(a)
                lin.weight.copy_((torch.rand(b, a, generator=g) * 2 - 1) * bound)
                lin.bias.zero_()
            self.layers.append(lin)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, lin in enumerate(self.layers):
            h = lin(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h

    def weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(lin.weight.detach().float().cpu(), lin.bias.detach().float().cpu()) for lin in self.layers]

    def forward_exact(self, h: torch.Tensor) -> torch.Tensor:
        return mlp_exact(h, self.weights())


@torch.no_grad()
def mlp_exact(h: torch.Tensor, weights: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Decoder path of `TinyMLP`: each matrix product is a fixed-order sum of rank-1 updates
    (element-wise mul, then add; never a BLAS call), so the result does not depend on the thread
    count, SIMD width or GEMM blocking of the machine."""
    h = h.float().cpu()
    # Rows are independent, so blocks of rows give the same bits; a block's widest activations stay
    # near 16 MB (all rows at once: gigabytes for a wide MLP over many Gaussians, e.g. a crafted file).
    width = max([h.shape[1]] + [w.shape[0] for w, _ in weights])
    rows = max(1, MLP_BLOCK_VALUES // width)
    if h.shape[0] > rows:
        return torch.cat([mlp_exact(h[i : i + rows], weights) for i in range(0, h.shape[0], rows)])
    for i, (w, b) in enumerate(weights):
        acc = b.expand(h.shape[0], -1).clone()
        for k in range(w.shape[1]):
            acc += h[:, k : k + 1] * w[:, k][None, :]  # (in place: the same rounding, no new tensor)
        h = torch.relu(acc) if i < len(weights) - 1 else acc
    return h


MLP_BLOCK_VALUES = 1 << 22  # float32 values per activation block of `mlp_exact`


def contract_unit(p: torch.Tensor, center: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """World points -> [0,1]^3: normalise by the box (center, half size) so the box becomes [-1,1]^3,
    then contract the outside with Mip-NeRF 360's formula x -> (2 - 1/|x|) x/|x| into [-2,2]^3, and
    map to [0,1]^3. Mip-NeRF 360 and the Compact-3DGS reference take |x| as the L2 norm (a ball);
    this is the inf-norm, so the box maps onto the whole cube the grid covers (the ball leaves its
    corners unused) and no square root enters a value the decoder must reproduce bit for bit.
    Element-wise only (deterministic)."""
    x = (p - center) / half
    m = x.abs().amax(-1, keepdim=True)
    far = m > 1
    xc = torch.where(far, (2 - 1 / m.clamp_min(1)) * (x / m.clamp_min(1)), x)
    return xc * 0.25 + 0.5


def has_tcnn() -> bool:
    try:
        import tinycudann  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


class TcnnHashGrid(nn.Module):
    """Training-time stand-in on CUDA: tcnn's fused HashGrid with the same config; its parameter
    table has our level-major layout, so `table()` hands it to the CPU path unchanged."""

    def __init__(self, grid: HashGrid):
        super().__init__()
        import tinycudann as tcnn

        self.grid = grid
        cfg = {"otype": "HashGrid", **grid.config()}
        self.enc = tcnn.Encoding(3, cfg, dtype=torch.float32)
        with torch.no_grad():
            self.enc.params.copy_(grid.params.detach().reshape(-1)[: self.enc.params.numel()].to(self.enc.params))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x).float()

    def table(self) -> torch.Tensor:
        t = self.enc.params.detach().float().cpu()
        return t[: self.grid.params.numel()].reshape(self.grid.params.shape)
