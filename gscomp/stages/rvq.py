"""Residual vector quantization (Compact-3DGS) of scales and rotations.

Pure module: R codebooks of K codes each; stage r quantizes what the earlier stages left over.
Forward value is the sum of the chosen codes; gradients reach the codebooks through that sum and
the input through a straight-through identity, and Adam trains the codebooks with the rest.

Where this differs from the Compact-3DGS reference (which uses vector-quantize-pytorch's
ResidualVQ): there the codebooks follow an exponential moving average of their assigned vectors
(decay 0.8, k-means initialised), not the optimizer, and the quantized values are the activated
scales (exp of the log-scales) and normalized quaternions. Here they are the log-scales (the
value the renderer's gradients act on, and whose errors are relative ones, as in the other
coders) and sign-canonical quaternions (w >= 0: q and -q are one rotation)."""
from __future__ import annotations

import copy

import struct

import numpy as np
import torch
from torch import nn

from ..errors import FormatError, GscompError, at_step, check_int, check_number, check_schedule
from ..splats import Splats
from .base import CodingContext, Section, Stage, need_section, register

# bounds of the params (a decoder allocates R x K codes from its header before reading them)
MAX_STAGES, MAX_CODEBOOK = 16, 4096


def kmeans(x: torch.Tensor, k: int, iters: int = 10, seed: int = 0) -> torch.Tensor:
    """Plain Lloyd's k-means with k-means++-style seeding; returns (k, D) centres. When there are fewer
    distinct points than k, unused centres repeat points (harmless: they are never the unique nearest)."""
    x = x.detach().float()
    n = x.shape[0]
    g = torch.Generator().manual_seed(seed)
    if n == 0:
        return x.new_zeros(k, x.shape[1])
    # k-means++ seeding on a subsample keeps this O(k * sample) even for millions of points
    sample = x[torch.randperm(n, generator=g)[: min(n, 20000)]].cpu()
    centres = [sample[torch.randint(len(sample), (1,), generator=g)].squeeze(0)]
    d2 = ((sample - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        if float(d2.sum()) <= 0:
            centres.append(sample[torch.randint(len(sample), (1,), generator=g)].squeeze(0))
            continue
        i = torch.multinomial(d2, 1, generator=g)
        centres.append(sample[i].squeeze(0))
        d2 = torch.minimum(d2, ((sample - centres[-1]) ** 2).sum(1))
    c = torch.stack(centres).to(x.device)
    for _ in range(iters):
        a = nearest(x, c)
        sums = torch.zeros_like(c).index_add_(0, a, x)
        cnt = torch.bincount(a, minlength=k).to(x.dtype)
        c = torch.where(cnt[:, None] > 0, sums / cnt.clamp_min(1)[:, None], c)
    return c


def nearest(x: torch.Tensor, codes: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Index of the nearest code (squared L2) for each row of x. |x|^2 is the same for every code,
    so argmin(|c|^2 - 2 x.c) suffices: one small GEMM, no square roots (3x faster than cdist here)."""
    out = []
    c = codes.detach().float()
    cn = (c * c).sum(1)
    for i in range(0, x.shape[0], chunk):
        d = torch.addmm(cn[None, :], x[i : i + chunk].detach().float(), c.t(), alpha=-2.0)
        out.append(d.argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


class ResidualVQ(nn.Module):
    def __init__(self, dim: int, n_stages: int = 6, codebook_size: int = 64):
        super().__init__()
        self.dim, self.n_stages, self.codebook_size = int(dim), int(n_stages), int(codebook_size)
        self.codebooks = nn.Parameter(torch.zeros(self.n_stages, self.codebook_size, self.dim))
        # a buffer (not a bool) so it survives checkpoints and follows .to(device)
        self.register_buffer("_initialised", torch.zeros((), dtype=torch.bool))

    @property
    def initialised(self) -> bool:
        return bool(self._initialised)

    @torch.no_grad()
    def init_kmeans(self, x: torch.Tensor, iters: int = 10) -> None:
        """Fit stage by stage: k-means on the data, then on each stage's residual."""
        res = x.detach().float()
        for r in range(self.n_stages):
            c = kmeans(res, self.codebook_size, iters=iters, seed=r)
            self.codebooks[r].copy_(c.to(self.codebooks))
            res = res - c[nearest(res, c)]
        self._initialised.fill_(True)

    def indices(self, x: torch.Tensor, codebooks: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy residual assignment -> (N, R) int64."""
        cb = (self.codebooks if codebooks is None else codebooks).detach()
        res = x.detach().float()
        idx = []
        for r in range(cb.shape[0]):
            i = nearest(res, cb[r])
            idx.append(i)
            res = res - cb[r][i]
        return torch.stack(idx, 1) if idx else torch.zeros(x.shape[0], 0, dtype=torch.long)

    @staticmethod
    def lookup(idx: torch.Tensor, codebooks: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of the chosen codes, added in stage order (fixed order: deterministic). With ``depth``
        (per row), row i sums only its first depth[i] stages."""
        out = codebooks.new_zeros(idx.shape[0], codebooks.shape[2])
        for r in range(codebooks.shape[0]):
            code = codebooks[r][idx[:, r]]
            if depth is None:
                out = out + code
            else:
                keep = depth > r
                out[keep] = out[keep] + code[keep]
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (quantized with straight-through gradients, indices). Training path: one gather of
        all stages' codes (its backward is a single index_add into the codebooks) and a sum over
        stages; `lookup` is the fixed-order decoder path."""
        idx = self.indices(x)
        r, k, d = self.codebooks.shape
        flat = idx + torch.arange(r, device=idx.device)[None, :] * k
        q = self.codebooks.reshape(r * k, d).index_select(0, flat.reshape(-1)).reshape(-1, r, d).sum(1)
        return q + (x - x.detach()), idx


# ============================================================================ entropy-layer glue
def encode_symbols(symbols) -> bytes:
    """int symbols -> bytes through the bitstream's adaptive histogram model (gscomp.codec.entropy)."""
    from ..codec import entropy

    return entropy.encode_symbols(np.ascontiguousarray(np.asarray(symbols, dtype=np.int32).reshape(-1)))


def decode_symbols(data: bytes, n: int) -> np.ndarray:
    from ..codec import entropy

    out = np.asarray(entropy.decode_symbols(data, int(n)))
    if out.shape != (int(n),):
        raise FormatError(f"symbol stream decoded to {out.shape[0]} values, expected {n}")
    # indices and grid levels are written from int32: larger values would wrap in the cast (2^32 + 5 read as 5)
    if out.size and (int(out.min()) < -(1 << 31) or int(out.max()) >= 1 << 31):
        raise FormatError("symbol stream holds values beyond int32")
    return out.astype(np.int32)


def pack_blobs(blobs: list[bytes]) -> bytes:
    """Several byte strings in one section: u32 count, then (u32 length, bytes) each."""
    return struct.pack("<I", len(blobs)) + b"".join(struct.pack("<I", len(b)) + b for b in blobs)


def unpack_blobs(data: bytes, expect: int) -> list[bytes]:
    try:
        (count,) = struct.unpack_from("<I", data, 0)
        if count != expect:
            raise FormatError(f"section holds {count} streams, expected {expect}")
        out, off = [], 4
        for _ in range(count):
            (ln,) = struct.unpack_from("<I", data, off)
            off += 4
            if off + ln > len(data):
                raise FormatError("stream length runs past the end of its section")
            out.append(data[off : off + ln])
            off += ln
    except struct.error:
        raise FormatError("truncated stream table in section") from None
    if off != len(data):  # (the spec: the section ends with its last stream)
        raise FormatError(f"{len(data) - off} unexpected trailing bytes after the streams of a section")
    return out


# ============================================================================ the stage
def unit_quats_w_nonneg(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternion with w >= 0 (q and -q are the same rotation; one sign halves what VQ must cover)."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sign = torch.where(q[:, :1] < 0, -1.0, 1.0).to(q)
    return q * sign


@register
class RVQ(Stage):
    """Compact-3DGS R-VQ of the log-scales (dim 3) and canonical unit quaternions (dim 4).

    Training: plain per-Gaussian parameters until ``start`` (default: the last 10% of the run), then
    k-means initialisation of both quantizers and straight-through training of codes + codebooks
    (optional commitment loss ``commitment`` * |x - sg(q)|^2; the reference uses 0).
    File: codebooks as float16, indices per quantizer stage coded with the histogram model."""

    type = "rvq"
    owns = ("scales", "quats")
    encoder_params = ("start", "kmeans_iters", "lr", "commitment")

    def __init__(self, n_stages: int = 6, codebook_size: int = 64, start: int | float = 0.9,
                 kmeans_iters: int = 10, lr: float = 0.0005, commitment: float = 0.0,
                 depths: list[int] | None = None):
        check_int("rvq.n_stages", n_stages, 1, MAX_STAGES)
        check_int("rvq.codebook_size", codebook_size, 1, MAX_CODEBOOK)
        check_schedule("rvq.start", start)
        check_int("rvq.kmeans_iters", kmeans_iters, 0, 1000)
        check_number("rvq.lr", lr, 0, 1, lo_open=True)
        check_number("rvq.commitment", commitment, 0, 100)
        extra = {}
        if depths:  # only stored when used: older headers unchanged
            from .importance import MAX_LEVELS

            ok = (isinstance(depths, (list, tuple)) and len(depths) <= MAX_LEVELS and isinstance(n_stages, int)
                  and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= n_stages for d in depths))
            if not ok:
                raise GscompError(f"rvq.depths must list at most {MAX_LEVELS} stage counts in 1..n_stages (one per importance class)")
            extra["depths"] = [int(d) for d in depths]
        super().__init__(n_stages=n_stages, codebook_size=codebook_size, start=start,
                         kmeans_iters=kmeans_iters, lr=lr, commitment=commitment, **extra)
        self.vq_scale = ResidualVQ(3, n_stages, codebook_size)
        self.vq_rot = ResidualVQ(4, n_stages, codebook_size)
        self._start = 0
        self.state = None

    def needs(self) -> dict[str, str]:
        from .importance import CLASS_KEY, NEEDS_IMPORTANCE

        return {CLASS_KEY: NEEDS_IMPORTANCE.format("rvq.depths")} if self.params.get("depths") else {}

    def attach(self, state) -> None:
        self.state = state
        self._start = at_step(self.params["start"], state.max_steps)
        lr = float(self.params["lr"])
        self.vq_scale = state.add_module("rvq_scale", self.vq_scale, lr)
        self.vq_rot = state.add_module("rvq_rot", self.vq_rot, lr)

    def _init(self, splats: Splats) -> None:
        it = int(self.params["kmeans_iters"])
        self.vq_scale.init_kmeans(splats.scales.detach(), iters=it)
        self.vq_rot.init_kmeans(unit_quats_w_nonneg(splats.quats.detach()), iters=it)

    def _active(self, step: int) -> bool:
        return step >= self._start or step < 0

    def transform(self, splats: Splats, step: int) -> Splats:
        if not self._active(step) or len(splats) == 0:
            return splats
        if not self.vq_scale.initialised:
            self._init(splats)
        s, _ = self.vq_scale(splats.scales)
        r, _ = self.vq_rot(unit_quats_w_nonneg(splats.quats))
        self._last = (splats.scales, s, unit_quats_w_nonneg(splats.quats), r)
        return splats.replace(scales=s, quats=r)

    def loss(self, splats: Splats, step: int, state) -> torch.Tensor | None:
        beta = float(self.params["commitment"])
        if not beta or not self._active(step) or not hasattr(self, "_last"):
            return None
        xs, qs, xr, qr = self._last
        return beta * ((xs - qs.detach()).square().mean() + (xr - qr.detach()).square().mean())

    # ---------------------------------------------------------------- coding side
    def bake(self, splats: Splats, state=None) -> Splats:
        """Raw values go on to `encode`, which assigns codes exactly as training did; only make sure
        codebooks exist (post-hoc use: fit them now by k-means, into codebooks of this encode's own:
        `Pipeline.encode` bakes a shallow copy of the stage, and fitting the shared ones in place
        gave the next scene coded with the same pipeline this scene's codebooks)."""
        if not self.vq_scale.initialised and len(splats):
            self.vq_scale, self.vq_rot = copy.deepcopy(self.vq_scale), copy.deepcopy(self.vq_rot)
            self._init(splats)
        return splats

    def _codebooks16(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.vq_scale.codebooks.detach().cpu().half().float(),
                self.vq_rot.codebooks.detach().cpu().half().float())

    def encode(self, splats: Splats, ctx: CodingContext) -> list[Section]:
        if not self.vq_scale.initialised:
            self.bake(splats)
        cs, cr = self._codebooks16()
        if not (torch.isfinite(cs).all() and torch.isfinite(cr).all()):
            raise GscompError("rvq: codebook values beyond float16's range (+-65504), which the file stores them in "
                              "(log-scales that large?)")
        idx_s = self.vq_scale.indices(splats.scales.detach().cpu(), cs)
        idx_r = self.vq_rot.indices(unit_quats_w_nonneg(splats.quats.detach().cpu()), cr)
        books = cs.half().numpy().tobytes() + cr.half().numpy().tobytes()
        depth = self._depth(ctx)
        streams = [encode_symbols(idx[:, r].numpy() if depth is None else idx[depth > r, r].numpy())
                   for idx in (idx_s, idx_r) for r in range(idx.shape[1])]
        return [Section("rvq.codebooks", "float16", books), Section("rvq.indices", "symbols", pack_blobs(streams))]

    def decode(self, sections: dict[str, Section], ctx: CodingContext) -> dict[str, torch.Tensor]:
        r, k = int(self.params["n_stages"]), int(self.params["codebook_size"])
        books = need_section(sections, "rvq.codebooks", "float16").payload
        blobs = unpack_blobs(need_section(sections, "rvq.indices", "symbols").payload, 2 * r)
        if len(books) != r * k * 7 * 2:
            raise FormatError(f"rvq: codebook section has {len(books)} bytes, expected {r * k * 14}")
        flat = torch.from_numpy(np.frombuffer(books, dtype="<f2").astype(np.float32))
        cs = flat[: r * k * 3].reshape(r, k, 3)
        cr = flat[r * k * 3 :].reshape(r, k, 4)
        depth = self._depth(ctx, decoding=True)
        cols = []
        for j, b in enumerate(blobs):
            rows = None if depth is None else depth > j % r  # Gaussians that keep stage j % r
            m = ctx.n if rows is None else int(rows.sum())
            sym = torch.from_numpy(decode_symbols(b, m).astype(np.int64))
            if m and (sym.min() < 0 or sym.max() >= k):
                raise FormatError("rvq: code index out of range")
            if rows is not None:  # the others' index is never read (lookup skips their stage)
                sym = torch.zeros(ctx.n, dtype=torch.int64).masked_scatter_(rows, sym)
            cols.append(sym)
        if ctx.n == 0:
            return {"scales": torch.zeros(0, 3), "quats": torch.zeros(0, 4)}
        idx_s, idx_r = torch.stack(cols[:r], 1), torch.stack(cols[r:], 1)
        return {"scales": ResidualVQ.lookup(idx_s, cs, depth), "quats": ResidualVQ.lookup(idx_r, cr, depth)}

    def _depth(self, ctx: CodingContext, decoding: bool = False) -> torch.Tensor | None:
        """With ``depths``: a Gaussian of importance class c keeps only its first depths[c] R-VQ
        stages (the last listed depth for higher classes): the residual stages refine what barely
        shows for the less important Gaussians. None = every Gaussian keeps every stage."""
        depths = self.params.get("depths")
        if not depths:
            return None
        from .importance import classes_of

        cls = torch.from_numpy(classes_of(ctx, "rvq.depths", decoding).astype(np.int64))
        table = torch.tensor(depths, dtype=torch.int64)
        return table[cls.clamp_max(len(depths) - 1)]
