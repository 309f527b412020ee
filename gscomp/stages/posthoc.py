"""Post-hoc stages for plain Gaussians (no training, no images): `positions` and `attributes`.

positions   means quantized on a (2^bits)^3 grid spanning the bounding box, Gaussians put in
            Morton order (so the decoder needs no permutation), Morton-code deltas coded as
            (bit-length class: histogram rANS, remaining bits: raw).
attributes  quaternions (smallest-three), log-scales, opacity logits, SH DC and SH rest quantized
            with per-attribute uniform steps; each integer channel coded with the best of
            histogram-rANS on values or on differences from the previous Gaussian (Morton
            neighbours are spatially close), or zstd. A step of 0 keeps exact float32 bits.

Byte layouts of the codecs named here are in docs/gsz-format.md.
"""
from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..codec import entropy as E
from ..codec import quant as Q
from ..errors import FormatError, GscompError
from ..splats import FIELDS, num_sh_rest
from .base import CodingContext, Section, Stage, register

ATTR_FIELDS = ("quats", "scales", "opacities", "sh0", "shN")


def _np32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def _pmap(fn, items: list) -> list:
    """Run independent stream coders on both cores (zstd and numpy release the GIL)."""
    if len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=2) as ex:
        return list(ex.map(fn, items))


def _pack_streams(streams: list[bytes]) -> bytes:
    return E.varint(len(streams)) + b"".join(E.blob(s) for s in streams)


def _unpack_streams(data: bytes, count: int, what: str) -> list[memoryview]:
    r = E.Reader(data, what)
    c = r.varint(1 << 16)
    if c != count:
        raise FormatError(f"{what}: has {c} streams, expected {count}")
    out = [r.blob() for _ in range(c)]
    r.done()
    return out


# ----------------------------------------------------------------------------- exact float32
def encode_f32(x: np.ndarray) -> bytes:
    """Exact float32: byte planes (all byte 0s, then all byte 1s, ...) + zstd."""
    import zstandard

    b = np.ascontiguousarray(x, dtype="<f4").view(np.uint8).reshape(-1, 4).T.copy()
    return zstandard.ZstdCompressor(level=19, write_content_size=True).compress(b.tobytes())


def decode_f32(data, count: int, what: str) -> np.ndarray:
    import zstandard

    z = bytes(data)
    try:
        if zstandard.frame_content_size(z) != 4 * count:
            raise FormatError(f"{what}: float32 stream has the wrong size")
        raw = zstandard.ZstdDecompressor().decompress(z, max_output_size=4 * count)
    except zstandard.ZstdError as e:
        raise FormatError(f"{what}: bad zstd data: {e}") from None
    if len(raw) != 4 * count:
        raise FormatError(f"{what}: float32 stream has the wrong size")
    return np.frombuffer(raw, np.uint8).reshape(4, count).T.copy().view("<f4").reshape(count).astype(np.float32)


# ----------------------------------------------------------------------------- positions
@register
class Positions(Stage):
    """Means on a 2^bits grid over the bounding box, in Morton order."""

    type = "positions"
    owns = ("means",)

    def __init__(self, bits: int = 16):
        bits = int(bits)
        if not 1 <= bits <= Q.MAX_POS_BITS:
            raise GscompError(f"positions.bits must be in 1..{Q.MAX_POS_BITS}, got {bits}")
        super().__init__(bits=bits)
        self.bits = bits

    def _grid(self, means: np.ndarray):
        if len(means) == 0:
            lo = hi = np.zeros(3, np.float32)
        else:
            lo, hi = means.min(0).astype(np.float32), means.max(0).astype(np.float32)
        return lo, hi, Q.quantize_positions(means, lo, hi, self.bits)

    def reorder(self, splats) -> torch.Tensor | None:
        _, _, q = self._grid(_np32(splats.means))
        order = np.argsort(Q.morton_encode(q), kind="stable")
        return torch.from_numpy(order)

    def encode(self, splats, ctx: CodingContext) -> list[Section]:
        lo, hi, q = self._grid(_np32(splats.means))
        codes = Q.morton_encode(q).astype(np.int64)  # < 2^57
        d = np.diff(codes, prepend=np.int64(0))
        if d.size and d.min() < 0:
            raise GscompError("the positions stage needs Morton order: no stage after it may reorder Gaussians")
        cls = np.zeros(d.shape, np.int64)
        nz = d > 0
        cls[nz] = np.floor(np.log2(d[nz].astype(np.float64))).astype(np.int64) + 1
        # float log2 can be off by one near powers of two: fix so 2^(c-1) <= d < 2^c exactly
        cls[nz] += (d[nz] >= (np.int64(1) << cls[nz])).astype(np.int64)
        cls[nz] -= (d[nz] < (np.int64(1) << (cls[nz] - 1))).astype(np.int64)
        width = np.maximum(cls - 1, 0)
        raw = E.pack_bits((d - np.where(nz, np.int64(1) << np.maximum(cls - 1, 0), 0)).astype(np.uint64), width)
        payload = (
            bytes([self.bits])
            + struct.pack("<6f", *lo.tolist(), *hi.tolist())
            + E.blob(E.encode_symbols(cls, allow_delta=False))
            + raw
        )
        return [Section("means", "morton-delta/v1", payload)]

    def decode(self, sections: dict[str, Section], ctx: CodingContext) -> dict[str, torch.Tensor]:
        sec = _need(sections, "means", "morton-delta/v1")
        r = E.Reader(sec.payload, "positions")
        bits = r.u8()
        if bits != self.bits:
            raise FormatError(f"positions: payload has {bits} bits, header says {self.bits}")
        bounds = np.frombuffer(bytes(r.take(24)), "<f4").astype(np.float32)
        if not np.isfinite(bounds).all():
            raise FormatError("positions: non-finite bounding box")
        lo, hi = bounds[:3], bounds[3:]
        n = ctx.n
        cls = E.decode_symbols(r.blob(), n, "positions classes")
        if cls.size and (cls.min() < 0 or cls.max() > 3 * bits):
            raise FormatError("positions: Morton delta class out of range")
        width = np.maximum(cls - 1, 0)
        raw = E.unpack_bits(r.take(r.remaining()), width, n).astype(np.int64)
        d = np.where(cls > 0, (np.int64(1) << width) | raw, 0)
        d[cls == 1] = 1
        codes = np.cumsum(d)
        if codes.size and codes[-1] >= (1 << (3 * bits)):
            raise FormatError("positions: Morton code out of range")
        q = Q.morton_decode(codes.astype(np.uint64))
        return {"means": torch.from_numpy(Q.dequantize_positions(q, lo, hi, bits)).reshape(n, 3)}


def _need(sections: dict[str, Section], name: str, *codecs: str) -> Section:
    sec = sections.get(name)
    if sec is None:
        raise FormatError(f"missing section {name!r}")
    if sec.codec not in codecs:
        raise FormatError(f"section {name!r} has codec {sec.codec!r}, expected {' or '.join(codecs)}")
    return sec


# ----------------------------------------------------------------------------- attributes
DEFAULT_STEPS = {"quats": 0.004, "scales": 0.03, "opacities": 0.05, "sh0": 0.015, "shN": 0.03}


@register
class Attributes(Stage):
    """Uniformly quantized, entropy-coded quats/scales/opacities/SH (any subset via ``fields``)."""

    type = "attributes"

    def __init__(
        self,
        fields: list[str] | tuple[str, ...] = ATTR_FIELDS,
        quat_step: float = DEFAULT_STEPS["quats"],
        scale_step: float = DEFAULT_STEPS["scales"],
        opacity_step: float = DEFAULT_STEPS["opacities"],
        sh0_step: float = DEFAULT_STEPS["sh0"],
        shN_step: float = DEFAULT_STEPS["shN"],
        shN_band_gain: float = 1.0,
        shN_zstd: bool = False,
    ):
        fields = [str(f) for f in fields]
        bad = [f for f in fields if f not in ATTR_FIELDS]
        if bad or len(set(fields)) != len(fields):
            raise GscompError(f"attributes.fields must be distinct names from {list(ATTR_FIELDS)}, got {fields}")
        steps = dict(quats=quat_step, scales=scale_step, opacities=opacity_step, sh0=sh0_step, shN=shN_step)
        for k, v in steps.items():
            if not (isinstance(v, (int, float)) and v >= 0 and np.isfinite(v)):
                raise GscompError(f"attributes: step for {k} must be a number >= 0 (0 = exact), got {v!r}")
        if not (isinstance(shN_band_gain, (int, float)) and 1.0 <= shN_band_gain <= 16):
            raise GscompError("attributes.shN_band_gain must be in [1, 16]")
        super().__init__(
            fields=fields,
            quat_step=float(quat_step),
            scale_step=float(scale_step),
            opacity_step=float(opacity_step),
            sh0_step=float(sh0_step),
            shN_step=float(shN_step),
            shN_band_gain=float(shN_band_gain),
            shN_zstd=bool(shN_zstd),
        )
        self.owns = tuple(fields)
        self.steps = {k: float(v) for k, v in steps.items()}
        if self.steps["quats"] and self.steps["quats"] > 0.5:
            raise GscompError("attributes.quat_step must be <= 0.5")

    def _shN_steps(self, k: int) -> np.ndarray:
        """Step per SH-rest coefficient: band l gets shN_step * gain^(l-1) (higher bands coarser)."""
        band = np.floor(np.sqrt(np.arange(1, k + 1))).astype(np.int64)  # coefficient i+1 -> band
        return self.steps["shN"] * float(self.params["shN_band_gain"]) ** (band - 1)

    # -- encode
    def encode(self, splats, ctx: CodingContext) -> list[Section]:
        out = []
        for f in self.fields_in_order():
            t = getattr(splats, f)
            x = _np32(t).reshape(ctx.n, _width(f, ctx))
            step = self.steps[f]
            if f == "shN" and x.shape[1] == 0:
                continue
            if step == 0:
                streams = _pmap(encode_f32, [x[:, j] for j in range(x.shape[1])])
                out.append(Section(f, "f32-planes/v1", _pack_streams(streams)))
                continue
            if f == "quats":
                sym = Q.quats_to_s3(x, step)
                codec = "quat-s3/v1"
            elif f == "shN":
                steps = np.repeat(self._shN_steps(x.shape[1] // 3), 3)[None]
                sym = Q.quantize(x, steps)
                codec = "symbols/v1"
            else:
                sym = Q.quantize(x, step)
                codec = "symbols/v1"
                if f == "sh0" and ctx.n > 1:
                    alt = np.stack([sym[:, 1], sym[:, 0] - sym[:, 1], sym[:, 2] - sym[:, 1]], 1)
                    if _cost(alt) < 0.98 * _cost(sym):
                        sym, codec = alt, "symbols-gdiff/v1"
            zstd = f == "shN" and bool(self.params["shN_zstd"])
            if f == "shN" and not zstd:
                dedup = _dedup_encode(sym)
                if dedup is not None:  # vector-quantized sources: codebook + indices
                    out.append(Section(f, "symbols-dedup/v1", dedup))
                    continue
            cols = [np.ascontiguousarray(sym[:, j]) for j in range(sym.shape[1])]
            streams = _pmap(lambda c: E.encode_symbols(c, allow_zstd=zstd), cols)
            out.append(Section(f, codec, _pack_streams(streams)))
        return out

    def fields_in_order(self) -> list[str]:
        return [f for f in ATTR_FIELDS if f in self.owns]

    # -- decode
    def decode(self, sections: dict[str, Section], ctx: CodingContext) -> dict[str, torch.Tensor]:
        n, out = ctx.n, {}
        k = num_sh_rest(ctx.sh_degree)
        width = {"quats": 4, "scales": 3, "opacities": 1, "sh0": 3, "shN": 3 * k}
        for f in self.fields_in_order():
            w = width[f]
            if f == "shN" and w == 0:
                out[f] = torch.zeros(n, 0, 3)
                continue
            step = self.steps[f]
            if step == 0:
                sec = _need(sections, f, "f32-planes/v1")
                streams = _unpack_streams(sec.payload, w, f)
                cols = _pmap(lambda s: decode_f32(s, n, f), streams)
                x = np.stack(cols, 1) if cols else np.zeros((n, 0), np.float32)
            else:
                codecs = {"quats": ("quat-s3/v1",), "sh0": ("symbols/v1", "symbols-gdiff/v1"),
                          "shN": ("symbols/v1", "symbols-dedup/v1")}.get(f, ("symbols/v1",))
                sec = _need(sections, f, *codecs)
                steps = np.repeat(self._shN_steps(k), 3) if f == "shN" else np.full(w, step)
                if sec.codec == "symbols-dedup/v1":
                    book, idx = _dedup_decode(sec.payload, n, w, f)
                    x = Q.dequantize(book, steps[None])[idx]  # dequantize the small codebook, then gather
                elif sec.codec == "symbols/v1":
                    streams = _unpack_streams(sec.payload, w, f)
                    x = np.empty((n, w), np.float32)

                    def col(j):  # decode + dequantize straight into the output column
                        x[:, j] = E.decode_symbols(streams[j], n, f) * steps[j]

                    _pmap(col, list(range(w)))
                else:
                    streams = _unpack_streams(sec.payload, w, f)
                    sym = np.stack(_pmap(lambda s: E.decode_symbols(s, n, f), streams), 1)
                    if sec.codec == "symbols-gdiff/v1":
                        g = sym[:, 0]
                        sym = np.stack([sym[:, 1] + g, g, sym[:, 2] + g], 1)
                        x = Q.dequantize(sym, step)
                    else:
                        x = Q.s3_to_quats(sym, step)
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            shape = {"quats": (n, 4), "scales": (n, 3), "opacities": (n,), "sh0": (n, 1, 3), "shN": (n, k, 3)}[f]
            out[f] = t.reshape(shape)
        return out


def _dedup_encode(sym: np.ndarray) -> bytes | None:
    """Codebook of the distinct rows (most frequent first) + one index per Gaussian, when the rows
    repeat a lot (e.g. SH from a vector-quantized source such as SOG); None otherwise."""
    n, c = sym.shape
    if n < 1024 or sym.min() < -32768 or sym.max() > 32767:
        return None
    # cheap pre-check: distinct rows >= distinct values of the first 4 columns (packed in int64)
    h = np.zeros(n, np.int64)
    for j in range(min(c, 4)):
        h = (h << 16) | (sym[:, j] + 32768)
    if len(np.unique(h)) > n // 3:
        return None
    rows = np.ascontiguousarray(sym.astype("<i2")).view(np.dtype((np.void, 2 * c))).ravel()
    uniq, first, inv, counts = np.unique(rows, return_index=True, return_inverse=True, return_counts=True)
    if len(uniq) > n // 3:
        return None
    rank = np.lexsort((first, -counts))  # most frequent first; ties by first occurrence
    remap = np.empty_like(rank)
    remap[rank] = np.arange(len(rank))
    book = sym[first[rank]]
    streams = [E.encode_symbols(np.ascontiguousarray(book[:, j])) for j in range(c)]
    return E.varint(len(uniq)) + _pack_streams(streams) + E.blob(E.encode_symbols(remap[inv.ravel()], allow_delta=False))


def _dedup_decode(payload, n: int, c: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(codebook rows (U, c), indices (n,)) of a symbols-dedup/v1 payload."""
    r = E.Reader(payload, what)
    u = r.varint(max(n, 1))
    if n == 0 or u == 0:
        raise FormatError(f"{what}: empty codebook")
    count = r.varint(1 << 16)
    if count != c:
        raise FormatError(f"{what}: codebook has {count} columns, expected {c}")
    cols = [E.decode_symbols(r.blob(), u, what) for _ in range(c)]
    idx = E.decode_symbols(r.blob(), n, what)
    r.done()
    if idx.min() < 0 or idx.max() >= u:
        raise FormatError(f"{what}: codebook index out of range")
    return np.stack(cols, 1), idx


def _width(f: str, ctx: CodingContext) -> int:
    return {"quats": 4, "scales": 3, "opacities": 1, "sh0": 3, "shN": 3 * num_sh_rest(ctx.sh_degree)}[f]


def _cost(sym: np.ndarray) -> float:
    return sum(E._entropy_bits(np.diff(sym[:, j], prepend=0)) for j in range(sym.shape[1]))


__all__ = ["Positions", "Attributes", "ATTR_FIELDS", "FIELDS"]
