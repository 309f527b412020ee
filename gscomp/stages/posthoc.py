"""Post-hoc stages for plain Gaussians (no training, no images): `positions` and `attributes`,
both optionally adaptive to the classes of an `importance` stage (`gscomp.stages.importance`).

positions   means quantized on a (2^bits)^3 grid spanning the bounding box (an unbounded scene:
            a core box with log tails, `gscomp.codec.posgrid`), Gaussians put in Morton order
            (so the decoder needs no permutation), Morton-code deltas coded as (bit-length
            class: histogram rANS, remaining bits: raw).
attributes  quaternions (smallest-three), log-scales, opacity logits, SH DC and SH rest quantized
            with per-attribute uniform steps; each integer channel coded with the best of
            histogram-rANS on values or on differences from the previous Gaussian (Morton
            neighbours are spatially close), or zstd. A step of 0 keeps exact float32 bits.
adaptive    with ``adaptive: true`` and importance class c, positions keep c fewer bits per
            axis and attributes (quats, scales, opacities, sh0, shN) use 2^c times their step
            (shN from a palette source, e.g. SOG, keeps its codebook instead).
quat_axes   rotations as the direction of the axis about which turning shows least, and the
            angle of the next axis about it on a grid that follows the scale gaps
            (`gscomp.codec.axes`).

Byte layouts of the codecs named here are in docs/gsz-format.md.
"""
from __future__ import annotations

import math
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..codec import axes as AX
from ..codec import entropy as E
from ..codec import quant as Q
from ..codec.posgrid import CORE_DEFAULT, PosGrid, check_core, morton_order
from ..errors import DataWarning, FormatError, GscompError, check_bool, check_int, check_number
from ..splats import FIELDS, num_sh_rest
from .base import CodingContext, Section, Stage, as_np32, need_section, register
from .importance import CLASS_KEY, NEEDS_IMPORTANCE, SENSITIVITY_KEY, classes_of, shN_steps

ATTR_FIELDS = ("quats", "scales", "opacities", "sh0", "shN")


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
# The grid step over a Gaussian's size (its largest scale): 0.01-0.1 for the median Gaussian of real
# scenes at 12-16 bits. Over COARSE_GRID the positions lose the scene's shape, with no error: two
# objects far apart (1e6 units) put their Gaussians on a grid of 2-15-unit steps, 60-500x their size.
COARSE_GRID = 1.0


def coarse_grid_warning(grid: PosGrid, means: np.ndarray, log_scales: np.ndarray) -> str | None:
    """What to tell the user when the grid is coarser than most Gaussians, else None."""
    if len(means) < 2:
        return None
    every = max(1, len(means) // 65536)  # a median needs no more (and the encode's time stays its own)
    with np.errstate(over="ignore", invalid="ignore"):
        ratio = grid.world_step(means[::every]).max(1) / np.exp(log_scales[::every].astype(np.float64).max(1))
    r = float(np.median(ratio))
    if not r > COARSE_GRID:  # (NaN: no warning)
        return None
    more = (f"use more bits (pipeline.stages.positions.bits, up to {Q.MAX_POS_BITS}), or "
            if grid.bits < Q.MAX_POS_BITS else "")
    return (f"the {grid.bits}-bit grid's step is {r:.3g}x the size of the median Gaussian, so positions lose the "
            f"scene's shape (parts of it far apart?); {more}compress the parts as separate files")


CORE_KEY = "positions_core"  # ctx.hints key (encoder only): which Gaussians lie in the positions' core box
@register
class Positions(Stage):
    """Means on a 2^bits grid over the bounding box, in Morton order; for an unbounded scene, over
    a core box with logarithmic tails (`gscomp.codec.posgrid`)."""

    type = "positions"
    owns = ("means",)
    encoder_params = ("core",)  # (the grid itself is in the payload)

    def __init__(self, bits: int = 16, adaptive: bool = False, core: float = CORE_DEFAULT):
        check_int("positions.bits", bits, 1, Q.MAX_POS_BITS)
        check_bool("positions.adaptive", adaptive)
        check_core("positions.core", core)
        extra = {"adaptive": True} if adaptive else {}
        if core != CORE_DEFAULT:  # encoder-only choice; only stored when changed: older headers unchanged
            extra["core"] = float(core)
        super().__init__(bits=bits, **extra)
        self.bits = bits
        self.core = float(core)

    def needs(self) -> dict[str, str]:
        return {CLASS_KEY: NEEDS_IMPORTANCE.format("positions.adaptive")} if self.params.get("adaptive") else {}

    def _grid(self, means: np.ndarray) -> tuple[PosGrid, np.ndarray]:
        grid = PosGrid.fit(means, self.bits, self.core)
        return grid, grid.quantize(means)

    def reorder(self, splats) -> torch.Tensor | None:
        means = as_np32(splats.means)
        return torch.from_numpy(morton_order(PosGrid.fit(means, self.bits, self.core), means))

    def encode(self, splats, ctx: CodingContext) -> list[Section]:
        means = as_np32(splats.means)
        grid, q = self._grid(means)
        ctx.hints[CORE_KEY] = grid.in_core(means)  # for the attributes stage (encoder only)
        warning = coarse_grid_warning(grid, means, as_np32(splats.scales))
        if warning:
            warnings.warn(f"positions: {warning}", DataWarning, stacklevel=2)
        # v1: the box grid (its bounds); v2: core box and tail lengths (PosGrid.pack)
        head = grid.pack() if grid.tails else struct.pack("<6f", *grid.lo.tolist(), *grid.hi.tolist())
        v = "v2" if grid.tails else "v1"
        # the grid's bits: ``bits``, or fewer for a v2 core when the tails would pass the Morton limit
        if self.params.get("adaptive"):
            return [self._encode_adaptive(grid.bits, head, q, classes_of(ctx, "positions.adaptive"), v)]
        codes = Q.morton_encode(q).astype(np.int64)  # < 2^57
        return [Section("means", f"morton-delta/{v}", bytes([grid.bits]) + head + _morton_delta_encode(codes))]

    def _encode_adaptive(self, bits: int, head: bytes, q: np.ndarray, cls: np.ndarray, v: str) -> Section:
        """Class c keeps bits - c bits per axis: Morton deltas of the coarse grid (bits - cmax bits),
        then cmax - c raw refinement bits per axis; the decoder puts it at the centre of its cell."""
        cmax = min(int(cls.max(initial=0)), bits - 1)
        c = np.minimum(cls, cmax)
        coarse = Q.morton_encode(q >> cmax).astype(np.int64)  # sorted, as Morton(q >> k) = Morton(q) >> 3k
        width = np.repeat(cmax - c, 3)
        ref = ((q >> c[:, None]) & ((np.int64(1) << (cmax - c))[:, None] - 1)).reshape(-1)
        payload = (bytes([bits, cmax]) + head + _morton_delta_encode(coarse, blob_raw=True, ctx=True)
                   + E.pack_bits(ref.astype(np.uint64), width))
        return Section("means", f"morton-delta-classed/{v}", payload)

    def _read_grid(self, r: E.Reader, sec: Section, bits: int) -> PosGrid:
        """The grid of a payload whose first byte said ``bits``: the parameter's for v1; a v2 core
        may have fewer (the encoder's choice when the tails need them, lossless-ish)."""
        v2 = sec.codec.endswith("/v2")
        if not (bits == self.bits or (v2 and 1 <= bits < self.bits)):
            raise FormatError(f"positions: payload has {bits} bits, header says {self.bits}")
        if v2:
            return PosGrid.unpack(r, bits)
        lo, hi = _bounds(r)
        return PosGrid(bits, lo, hi)

    def _decode_adaptive(self, sec: Section, ctx: CodingContext) -> np.ndarray:
        r = E.Reader(sec.payload, "positions")
        bits, cmax = r.u8(), r.u8()
        grid = self._read_grid(r, sec, bits)
        if cmax >= bits:
            raise FormatError(f"positions: bad grid ({bits} bits, coarse shift {cmax})")
        B = grid.index_bits
        n = ctx.n
        c = np.minimum(classes_of(ctx, "positions.adaptive", True), cmax)
        coarse = _morton_delta_decode(r, n, B - cmax, blob_raw=True)
        if not grid.tails:
            return Q.classed_means(coarse, c, r.take(r.remaining()), cmax, grid.lo, grid.hi, bits)
        cell, qf = Q.classed_cells(coarse, c, r.take(r.remaining()), cmax)
        grid.check_indices(cell << c[:, None])
        return grid.to_world(qf)

    def decode(self, sections: dict[str, Section], ctx: CodingContext) -> dict[str, torch.Tensor]:
        n = ctx.n
        if self.params.get("adaptive"):
            sec = need_section(sections, "means", "morton-delta-classed/v1", "morton-delta-classed/v2")
            return {"means": torch.from_numpy(self._decode_adaptive(sec, ctx)).reshape(n, 3)}
        sec = need_section(sections, "means", "morton-delta/v1", "morton-delta/v2")
        r = E.Reader(sec.payload, "positions")
        bits = r.u8()
        grid = self._read_grid(r, sec, bits)
        q = Q.morton_decode(_morton_delta_decode(r, n, grid.index_bits).astype(np.uint64))
        if not grid.tails:
            return {"means": torch.from_numpy(Q.dequantize_positions(q, grid.lo, grid.hi, bits)).reshape(n, 3)}
        grid.check_indices(q)
        return {"means": torch.from_numpy(grid.to_world(q)).reshape(n, 3)}


def _bounds(r: E.Reader) -> tuple[np.ndarray, np.ndarray]:
    bounds = np.frombuffer(bytes(r.take(24)), "<f4").astype(np.float32)
    if not np.isfinite(bounds).all():
        raise FormatError("positions: non-finite bounding box")
    return bounds[:3], bounds[3:]


def _morton_delta_encode(codes: np.ndarray, blob_raw: bool = False, ctx: bool = False) -> bytes:
    """Sorted Morton codes as deltas: bit-length class (histogram rANS) + the bits below the
    leading one (raw). ``blob_raw`` length-prefixes the raw part (when more data follows);
    ``ctx`` lets the classes take a context stream (the adaptive layout; slower to encode)."""
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
    return E.blob(E.encode_symbols(cls, allow_delta=False, allow_ctx=ctx)) + (E.blob(raw) if blob_raw else raw)


def _morton_delta_decode(r: E.Reader, n: int, bits: int, blob_raw: bool = False) -> np.ndarray:
    cls = E.decode_symbols(r.blob(), n, "positions classes")
    return Q.morton_delta_codes(cls, r.blob() if blob_raw else r.take(r.remaining()), bits)


# ----------------------------------------------------------------------------- attributes
DEFAULT_STEPS = {"quats": 0.004, "scales": 0.03, "opacities": 0.05, "sh0": 0.015, "shN": 0.03}


@register
class Attributes(Stage):
    """Uniformly quantized, entropy-coded quats/scales/opacities/SH (any subset via ``fields``)."""

    type = "attributes"
    encoder_params = ("shN_zstd", "size_quantile")  # (the spec's encoder-only choices; canonical_quats is checked with sort_scales)

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
        adaptive: bool = False,
        canonical_quats: bool = False,
        sort_scales: bool = False,
        size_levels: dict | None = None,
        size_quantile: float = 0.5,
        dependent_quant: bool = False,
        quat_axes: bool = False,
    ):
        if isinstance(fields, str) or not isinstance(fields, (list, tuple)):
            raise GscompError(f"attributes.fields must be a list of names from {list(ATTR_FIELDS)}, got {fields!r}")
        fields = [str(f) for f in fields]
        bad = [f for f in fields if f not in ATTR_FIELDS]
        if bad or len(set(fields)) != len(fields):
            raise GscompError(f"attributes.fields must be distinct names from {list(ATTR_FIELDS)}, got {fields}")
        check_number("attributes.quat_step", quat_step, 0, 0.5)  # any step: 0 = exact float32
        for name, v in (("scale_step", scale_step), ("opacity_step", opacity_step), ("sh0_step", sh0_step),
                        ("shN_step", shN_step)):
            check_number(f"attributes.{name}", v, 0)
        steps = dict(quats=quat_step, scales=scale_step, opacities=opacity_step, sh0=sh0_step, shN=shN_step)
        check_number("attributes.shN_band_gain", shN_band_gain, 1, 16)
        check_bool("attributes.adaptive", adaptive)
        extra = {"adaptive": True} if adaptive else {}  # only stored when used: older headers unchanged
        check_bool("attributes.canonical_quats", canonical_quats)
        if canonical_quats:  # encoder-only choice (the decoder reads any quaternion), recorded for information
            extra["canonical_quats"] = True
        if check_bool("attributes.sort_scales", sort_scales):
            if not (adaptive and canonical_quats and {"quats", "scales"} <= set(fields)):
                raise GscompError("attributes.sort_scales needs adaptive, canonical_quats and both quats and scales")
            extra["sort_scales"] = True
        size_levels = {str(k): v for k, v in dict(size_levels or {}).items()}
        for k, v in size_levels.items():
            if k not in ATTR_FIELDS or not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SIZE_LEVELS):
                raise GscompError(f"attributes.size_levels maps fields of {list(ATTR_FIELDS)} to integers in 0..{MAX_SIZE_LEVELS}")
        size_levels = {k: v for k, v in size_levels.items() if v}  # (level 0: the class step, as absent)
        # checked even with no level above 0 (`compact` has them all 0), so a typo is not silent
        check_number("attributes.size_quantile", size_quantile, 0, 1, lo_open=True, hi_open=True)
        if size_levels:
            if not sort_scales:
                raise GscompError("attributes.size_levels needs sort_scales (steps follow the decoded largest scale)")
            extra.update(size_levels=size_levels, size_quantile=float(size_quantile))
        if check_bool("attributes.dependent_quant", dependent_quant):
            if not adaptive:
                raise GscompError("attributes.dependent_quant needs adaptive (it codes the importance-classed streams)")
            extra["dependent_quant"] = True
        if check_bool("attributes.quat_axes", quat_axes):
            if not sort_scales:
                raise GscompError("attributes.quat_axes needs sort_scales (the free axis follows the sorted scales)")
            if size_levels.get("quats"):
                raise GscompError("attributes.quat_axes and size_levels.quats do not go together (the angle's step "
                                  "already follows the scales)")
            extra["quat_axes"] = True
        super().__init__(
            **extra,
            fields=fields,
            quat_step=float(quat_step),
            scale_step=float(scale_step),
            opacity_step=float(opacity_step),
            sh0_step=float(sh0_step),
            shN_step=float(shN_step),
            shN_band_gain=float(shN_band_gain),
            shN_zstd=check_bool("attributes.shN_zstd", shN_zstd),
        )
        self.owns = tuple(fields)
        self.steps = {k: float(v) for k, v in steps.items()}

    def needs(self) -> dict[str, str]:
        return {CLASS_KEY: NEEDS_IMPORTANCE.format("attributes.adaptive")} if self.params.get("adaptive") else {}

    def _grid_step(self, f: str) -> float:
        """Grid step of f's classed symbols: with dependent quantization the symbols are its
        reconstruction indices on a grid of half the step (each of its two quantizers has the step)."""
        return self.steps[f] / 2 if self.params.get("dependent_quant") else self.steps[f]

    def _col_steps(self, f: str, w: int, grid: bool = True) -> np.ndarray:
        """(w,) float64 step of each column of f: shN's by band (coefficient-major, 3 channels
        each), the field's step otherwise; ``grid``: the grid step of its classed symbols (_grid_step)."""
        step = self._grid_step(f) if grid else self.steps[f]
        if f != "shN":
            return np.full(w, step)
        return np.repeat(shN_steps(step, float(self.params["shN_band_gain"]), w // 3), 3)

    def _shN_dedup(self, x: np.ndarray) -> bytes | None:
        """`symbols-dedup/v1` payload of shN at the base steps when the *input* rows repeat a lot
        (a palette source such as SOG), else None. Tested on the floats: after coarse steps most
        rows of any scene are zeros, which would pass for a palette."""
        if len(x) < 1024 or _mostly_distinct(np.ascontiguousarray(x).view(np.int32).T):
            return None
        return _dedup_encode(Q.quantize(x, self._col_steps("shN", x.shape[1], grid=False)[None], columns=True, what="shN"))

    # -- encode
    def encode(self, splats, ctx: CodingContext) -> list[Section]:
        out = []
        cls = classes_of(ctx, "attributes.adaptive") if self.params.get("adaptive") else None
        sens = ctx.hints.get(SENSITIVITY_KEY, {})  # per-field render sensitivity (importance stage), or none
        # Gaussians in the positions' core box (all of them in a bounded scene): the size reference and the
        # trellis weights are taken over these, since an unbounded capture's huge background
        # Gaussians would make every Gaussian of the centre look small and unimportant (measured on
        # an object with a far background: -4 dB from the size levels, -1.8 dB from the weights)
        self._core = ctx.hints.get(CORE_KEY)
        self._progress = ctx.progress  # per field, and per pass over SH rest (the slow part of big scenes)
        if self._core is None or len(self._core) != ctx.n:
            self._core = np.ones(ctx.n, bool)
        sort = bool(self.params.get("sort_scales")) and self.steps["quats"] > 0 and self.steps["scales"] > 0
        if sort:  # same Gaussians with axes relabelled so scale x >= y >= z (see sort_axes)
            sorted_q, sorted_s = sort_axes(as_np32(splats.quats), as_np32(splats.scales))
        sized = None
        axes = sort and bool(self.params.get("quat_axes"))
        if sort and self.params.get("size_levels"):  # from the scale symbols the decoder will see
            st = Q.class_steps(self._grid_step("scales"), cls)
            s0dq = None  # (reconstruction indices, levels) of the largest scale: the scales reuse them
            if self.params.get("dependent_quant"):
                try:
                    s0dq = _dq_classed(sorted_s[:, :1] / st[:, None], cls, sens=sens.get("scales"), core=self._core)
                except GscompError as e:  # (the trellis's message names no field)
                    raise GscompError(f"scales: {e}") from None
                ssym = s0dq[0]
            else:
                ssym = Q.quantize(sorted_s, st[:, None], what="scales")
            core = self._core
            sized = (self._size_thresholds(sorted_s[core, 0] if core.any() else sorted_s[:, 0]), ssym, s0dq)
        scales_payload = None
        if axes:  # the quaternions' coding follows the decoded scales: code them first, decode them as the decoder will
            try:
                scales_payload = self._encode_classed("scales", sorted_s, cls, sort, sized, sens.get("scales"))
            except GscompError as e:
                raise GscompError(f"scales: {e}") from None
            decoded_scales = self._decode_classed("scales", scales_payload, ctx.n, 3, cls, None,
                                                  bool(self.params.get("size_levels")), sort)[0]
        for i, f in enumerate(self.fields_in_order()):
            if ctx.progress is not None:
                ctx.progress(f"attributes: {f}", i, len(self.owns))
            t = getattr(splats, f)
            x = as_np32(t).reshape(ctx.n, _width(f, ctx))
            step = self.steps[f]
            if sort and f in ("quats", "scales"):
                x = sorted_q if f == "quats" else sorted_s
            if f == "quats" and step and self.params.get("canonical_quats"):
                x = canonical_quats(x)
            if f == "shN" and x.shape[1] == 0:
                continue
            if step == 0:
                streams = _pmap(encode_f32, [x[:, j] for j in range(x.shape[1])])
                out.append(Section(f, "f32-planes/v1", _pack_streams(streams)))
                continue
            zstd = f == "shN" and bool(self.params["shN_zstd"])
            if cls is not None and not zstd:
                dedup = self._shN_dedup(x) if f == "shN" else None
                if dedup is not None:  # SH from a palette (e.g. SOG): its codebook beats classed steps
                    out.append(Section(f, "symbols-dedup/v1", dedup))
                elif axes and f == "quats":
                    try:
                        out.append(Section(f, "axes-classed/v1", self._encode_axes(x, cls, decoded_scales, sens.get(f))))
                    except GscompError as e:
                        raise GscompError(f"{f}: {e}") from None
                elif axes and f == "scales":
                    out.append(Section(f, "symbols-classed/v1", scales_payload))
                else:
                    try:
                        payload = self._encode_classed(f, x, cls, sort, sized, sens.get(f))
                    except GscompError as e:  # (the trellis's message names no field)
                        raise GscompError(f"{f}: {e}") from None
                    out.append(Section(f, "symbols-classed/v1", payload))
                continue
            if f == "quats":
                sym = Q.quats_to_s3(x, step)
                codec = "quat-s3/v1"
            elif f == "shN":  # the widest field: quantized straight into columns (3K, n), no transpose
                sym = Q.quantize(x, self._col_steps(f, x.shape[1], grid=False)[None], columns=True, what=f)
                codec = "symbols/v1"
            else:
                sym = Q.quantize(x, step, what=f)
                codec = "symbols/v1"
                if f == "sh0" and ctx.n > 1:
                    alt = np.stack([sym[:, 1], sym[:, 0] - sym[:, 1], sym[:, 2] - sym[:, 1]], 1)
                    # (differences of values near the 2^40 limit may pass it: then plain RGB)
                    if int(np.abs(alt).max()) < E.MAX_ABS and _cost(alt) < 0.98 * _cost(sym):
                        sym, codec = alt, "symbols-gdiff/v1"
            if f == "shN" and not zstd:
                dedup = _dedup_encode(sym)
                if dedup is not None:  # vector-quantized sources: codebook + indices
                    out.append(Section(f, "symbols-dedup/v1", dedup))
                    continue
            cols = list(sym) if f == "shN" else sym  # (n, k) arrays: their columns
            try:
                streams = E.encode_symbols_many(cols, allow_zstd=zstd)  # columns, on all cores
            except GscompError as e:  # (the entropy coder's message names no field)
                raise GscompError(f"{f}: {e}") from None
            out.append(Section(f, codec, _pack_streams(streams)))
        return out

    def fields_in_order(self) -> list[str]:
        return [f for f in ATTR_FIELDS if f in self.owns]

    # -- decode
    def decode(self, sections: dict[str, Section], ctx: CodingContext) -> dict[str, torch.Tensor]:
        n, out = ctx.n, {}
        k = num_sh_rest(ctx.sh_degree)
        width = {"quats": 4, "scales": 3, "opacities": 1, "sh0": 3, "shN": 3 * k}
        cls = classes_of(ctx, "attributes.adaptive", True) if self.params.get("adaptive") else None
        order = self.fields_in_order()
        sort = bool(self.params.get("sort_scales")) and self.steps["quats"] > 0 and self.steps["scales"] > 0
        sized = bool(self.params.get("size_levels")) and cls is not None and sort
        axes = bool(self.params.get("quat_axes")) and cls is not None and sort
        scale_sym = None
        if sized or axes:  # some steps, or the quaternions' coding, follow the decoded scales: decode them first
            order = ["scales"] + [f for f in order if f != "scales"]
        for f in order:
            w = width[f]
            if f == "shN" and w == 0:
                if f in sections:  # (the spec: degree 0 has none; it was ignored)
                    raise FormatError("attributes: an shN section with SH degree 0")
                out[f] = torch.zeros(n, 0, 3)
                continue
            step = self.steps[f]
            # shN is classed unless the encoder kept it plain (shN_zstd) or as a palette (dedup)
            classed = f != "shN" or (f in sections and sections[f].codec == "symbols-classed/v1")
            if axes and f == "quats":
                x = self._decode_axes(need_section(sections, f, "axes-classed/v1").payload, n, cls, out["scales"].numpy())
            elif cls is not None and step != 0 and classed:
                payload = need_section(sections, f, "symbols-classed/v1").payload
                x, sym = self._decode_classed(f, payload, n, w, cls, scale_sym, sized, sort)
                if f == "scales":
                    scale_sym = sym
            elif step == 0:
                sec = need_section(sections, f, "f32-planes/v1")
                streams = _unpack_streams(sec.payload, w, f)
                cols = _pmap(lambda s: decode_f32(s, n, f), streams)
                x = np.stack(cols, 1) if cols else np.zeros((n, 0), np.float32)
            else:
                codecs = {"quats": ("quat-s3/v1",), "sh0": ("symbols/v1", "symbols-gdiff/v1"),
                          "shN": ("symbols/v1", "symbols-dedup/v1")}.get(f, ("symbols/v1",))
                sec = need_section(sections, f, *codecs)
                steps = self._col_steps(f, w, grid=False)
                if sec.codec == "symbols-dedup/v1":
                    book, idx = _dedup_decode(sec.payload, n, w, f)
                    x = Q.dequantize(book, steps[None])[idx]  # dequantize the small codebook, then gather
                elif sec.codec == "symbols/v1":  # decode + dequantize straight into float32
                    x = E.decode_symbols_many(_unpack_streams(sec.payload, w, f), n, f, scales=steps)
                else:
                    sym = np.stack(E.decode_symbols_many(_unpack_streams(sec.payload, w, f), n, f), 1)
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

    # -- importance-classed coding (see importance_classes)
    def _size_thresholds(self, log_s1: np.ndarray) -> list[int]:
        """T_k (k = 1..MAX_SIZE_LEVELS) in scale steps: a Gaussian whose decoded largest log-scale is
        <= T_k is at most 2^-k times the reference size (the size_quantile of the largest scales) and
        gets 2^k times the step in the fields of size_levels (capped at that field's level count).
        Why: a Gaussian's render sensitivity to its colour, opacity, rotation and log-scales grows
        with its footprint (~ size^2), to its position much less; the importance class mostly sees
        positions for small Gaussians, so their other attributes can be coarser (steps ~ 1/size).
        Computed by the encoder only and stored as integers, so the decoder repeats no float maths."""
        st = self._grid_step("scales")
        ref = float(np.quantile(log_s1, float(self.params["size_quantile"]))) if len(log_s1) else 0.0
        lim = float(1 << 30)
        return [int(np.clip(math.floor((ref - k * math.log(2.0)) / st), -lim, lim)) for k in range(1, MAX_SIZE_LEVELS + 1)]

    @staticmethod
    def _size_extra(thresholds: list[int], levels: int, ssym: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """Extra step level per Gaussian from its integer largest-scale symbol and class."""
        m = np.clip(ssym[:, 0], -(1 << 40), 1 << 40) << cls.astype(np.int64)  # largest log-scale, in scale steps
        extra = np.zeros(len(ssym), np.int64)
        for t in thresholds[:levels]:
            extra += m <= t
        return extra

    def _encode_classed(self, f: str, x: np.ndarray, cls: np.ndarray, sort: bool = False,
                        sized: tuple | None = None, sens: np.ndarray | None = None) -> bytes:
        """Rows of class c are quantized with the field's step * 2^c; every column of every class is its own
        stream (kept in Morton order, so the Morton-neighbour delta still applies inside a class).
        Fields of size_levels with ``sized`` = (thresholds, scale symbols): class c + the size level.
        With dependent_quant each stream is trellis-quantized on the half-step grid: ``sym`` holds
        the reconstruction indices (what the decoder rebuilds), ``code`` the coded levels."""
        head = b""
        dq = bool(self.params.get("dependent_quant"))
        step = self._grid_step(f)
        lv = int(self.params.get("size_levels", {}).get(f, 0))
        if f == "scales" and sort and ((lv and sized is not None) or dq):
            lv = lv if sized is not None else 0
            thr, _, s0dq = sized if sized is not None else ([], None, None)
            return self._encode_sized_scales(x, step, cls, lv, thr, s0dq, sens)
        if lv and sized is not None:
            thr, ssym, _ = sized
            head = bytes([lv]) + b"".join(struct.pack("<i", t) for t in thr[:lv])
            cls = cls + self._size_extra(thr, lv, ssym, cls)
        if f == "shN":
            return bytes([0]) + head + self._encode_classed_shN(x, cls, dq, sens)
        steps = Q.class_steps(step, cls)[:, None]
        gd = False
        if dq:
            if f == "quats":
                big, rest = Q.quats_rest(x)
                code = np.concatenate([big[:, None], _dq_classed(rest / steps, cls, sens=sens, core=self._core)[1]], 1)
            else:
                t = x.astype(np.float64) / steps  # (n, width)
                sym, code = _dq_classed(t, cls, sens=sens, core=self._core)
                if f == "sh0" and len(sym) > 1:  # red and blue from the decoded green (when cheaper)
                    ra, ka = _dq_classed(np.stack([t[:, 0] - sym[:, 1], t[:, 2] - sym[:, 1]], 1), cls, sens=sens, core=self._core)
                    alt = np.stack([code[:, 1], ka[:, 0], ka[:, 1]], 1)
                    gd = bool(_cost(alt) < 0.98 * _cost(code))
                    if gd:
                        sym, code = np.stack([sym[:, 1], ra[:, 0], ra[:, 1]], 1), alt
        else:
            if f == "quats":
                sym = Q.quats_to_s3(x, steps)
            else:
                sym = Q.quantize(x, steps, what=f)
                if f == "sh0":  # code green, then red and blue as differences from green (when cheaper)
                    alt = np.stack([sym[:, 1], sym[:, 0] - sym[:, 1], sym[:, 2] - sym[:, 1]], 1)
                    gd = bool(len(sym) > 1 and _cost(alt) < 0.98 * _cost(sym))
                    if gd:
                        sym = alt
            if f == "scales" and sort:  # sorted: largest, then the (>= 0) gaps to the next one
                sym = np.stack([sym[:, 0], sym[:, 0] - sym[:, 1], sym[:, 1] - sym[:, 2]], 1)
                gd = True
            code = sym
        code = code if code.ndim == 2 else code.reshape(-1, 1)  # opacities: one column
        cols = [col for i in _class_rows(cls) for col in _columns_of(code, i)]
        flag = bytes([int(gd)])
        return flag + head + _pack_streams(E.encode_symbols_many(cols, allow_ctx=True))

    def _encode_classed_shN(self, x: np.ndarray, cls: np.ndarray, dq: bool, sens: np.ndarray | None) -> bytes:
        """The streams of `_encode_classed` for shN (a step per column, by SH band, times 2^class
        per row; exact), worked out a few columns at a time: the streams are independent, and the
        float64 targets, the trellis' passes and the symbols of all 45 columns at once took ~2.4 KB
        per Gaussian at SH 3 (a 6M-Gaussian capture would not fit in 24 GB), and were slower."""
        n, w = x.shape
        col_steps = self._col_steps("shN", w)
        rows = _class_rows(cls)
        by_col: list[list[bytes]] = []  # [column j] -> its streams, one per class
        per_pass = _shN_pass_cols(n)
        for j0 in range(0, w, per_pass):
            j1 = min(w, j0 + per_pass)
            steps = np.ldexp(col_steps[None, j0:j1], cls.astype(np.int32)[:, None])
            if dq:
                code = _dq_classed(x[:, j0:j1].astype(np.float64) / steps, cls, sens=sens, core=self._core)[1]
            else:
                code = Q.quantize(x[:, j0:j1], steps, what="shN")
            del steps
            streams = E.encode_symbols_many([col for i in rows for col in _columns_of(code, i)], allow_ctx=True)
            by_col += [streams[j::j1 - j0] for j in range(j1 - j0)]  # class-major within the chunk
            if self._progress is not None:
                self._progress("attributes: shN columns", j1, w)
        return _pack_streams([by_col[j][c] for c in range(len(rows)) for j in range(w)])  # class-major

    def _encode_sized_scales(self, x: np.ndarray, step: float, cls: np.ndarray, lv: int, thr: list[int],
                             s0dq: tuple | None = None, sens: np.ndarray | None = None) -> bytes:
        """Sorted log-scales: the largest with the class step st, then the gaps to the next one with
        st * 2^e, e = the size level of the decoded largest scale, quantized closed-loop (each gap
        from the decoded previous scale) so errors do not add up. Streams: largest by class, gaps
        by class + e. ``step``: the grid step (half the step with dependent_quant)."""
        dq = bool(self.params.get("dependent_quant"))
        st = Q.class_steps(step, cls)
        if dq:  # s0dq: the same search, already run for the size levels of the other fields
            s0dq = s0dq if s0dq is not None else _dq_classed(x[:, :1] / st[:, None], cls, sens=sens, core=self._core)
            s0, c0 = (a[:, 0] for a in s0dq)
        else:
            s0 = c0 = Q.quantize(x[:, :1], st[:, None])[:, 0]
        e = self._size_extra(thr, lv, s0[:, None], cls)
        sg = np.ldexp(st, e.astype(np.int32))
        prev = s0 * st
        codes = []
        for j in (1, 2):
            t = (prev - x[:, j].astype(np.float64)) / sg
            if dq:
                g, c = (a[:, 0] for a in _dq_classed(t[:, None], cls + e, nonneg=True, sens=sens, core=self._core))
            else:
                g = c = np.maximum(0, np.rint(t)).astype(np.int64)
            prev = prev - g * sg
            codes.append(c)
        head = bytes([2, lv]) + b"".join(struct.pack("<i", t) for t in thr[:lv])
        return head + _pack_streams(E.encode_symbols_many(self._sized_scale_cols(c0, codes, cls, e), allow_ctx=True))

    @staticmethod
    def _sized_scale_cols(s0: np.ndarray, gaps: list[np.ndarray], cls: np.ndarray, e: np.ndarray) -> list[np.ndarray]:
        lvl = cls + e
        cols = [np.ascontiguousarray(s0[cls == c]) for c in range(int(cls.max(initial=0)) + 1)]
        return cols + [np.ascontiguousarray(g[lvl == c]) for g in gaps for c in range(int(lvl.max(initial=0)) + 1)]

    def _decode_streams(self, streams: list, counts: list[int], what: str, plain: tuple = ()) -> list[np.ndarray]:
        """Entropy-decode streams of counts[i] levels (all at once, on all cores); with
        dependent_quant, rebuild the reconstruction indices of each (its own trellis) but those
        listed in ``plain``."""
        dec = E.decode_symbols_many(streams, counts, what)
        if not self.params.get("dependent_quant"):
            return dec
        todo = [i for i in range(len(dec)) if i not in plain]
        for i, r in zip(todo, Q.dq_unpack_many([dec[i] for i in todo], inplace=True)):
            dec[i] = r
        return dec

    def _decode_sized_scales(self, r, n: int, step: float, cls: np.ndarray, lv: int) -> tuple[np.ndarray, np.ndarray]:
        if r.u8() != lv:
            raise FormatError("scales: size level count does not match the stage header")
        thr = [struct.unpack("<i", bytes(r.take(4)))[0] for _ in range(lv)]
        rs = E.Reader(r.take(r.remaining()), "scales")
        count = rs.varint(1 << 16)
        streams = [rs.blob() for _ in range(count)]
        rs.done()
        levels = int(cls.max(initial=0)) + 1
        if count < levels:
            raise FormatError(f"scales: has {count} streams, expected at least {levels}")
        rows = [np.flatnonzero(cls == c) for c in range(levels)]
        dec = self._decode_streams(streams[:levels], [len(i) for i in rows], "scales")
        s0 = _scatter_rows(n, 1, rows, dec)[:, 0]  # the largest scale first: it sets each Gaussian's size level
        e = self._size_extra(thr, lv, s0[:, None], cls)
        lvl = cls + e
        nl = int(lvl.max(initial=0)) + 1
        if count != levels + 2 * nl:
            raise FormatError(f"scales: has {count} streams, expected {levels + 2 * nl}")
        st = Q.class_steps(step, cls)
        sg = np.ldexp(st, e.astype(np.int32))
        out = np.zeros((n, 3), np.float64)
        out[:, 0] = s0 * st
        rows = [np.flatnonzero(lvl == c) for c in range(nl)]
        dec = self._decode_streams(streams[levels:], [len(i) for i in rows] * 2, "scales")
        g = _scatter_rows(n, 2, rows, [dec[j * nl + c] for c in range(nl) for j in (0, 1)])  # (gap streams are gap-major)
        for j in (1, 2):
            out[:, j] = out[:, j - 1] - g[:, j - 1] * sg
        return out.astype(np.float32), s0[:, None]  # later stages only read the largest scale's symbol

    def _decode_classed(self, f: str, payload, n: int, w: int, cls: np.ndarray,
                        scale_sym: np.ndarray | None = None, sized: bool = False,
                        sort: bool = False) -> tuple[np.ndarray, np.ndarray]:
        r = E.Reader(payload, f)
        gd = r.u8()
        dq = bool(self.params.get("dependent_quant"))
        step = self._grid_step(f)
        lv = int(self.params.get("size_levels", {}).get(f, 0))
        if f == "scales" and sort and ((lv and sized) or dq):
            if gd != 2:
                raise FormatError("scales: bad classed-coding flag for closed-loop scales")
            return self._decode_sized_scales(r, n, step, cls, lv if sized else 0)
        if lv and sized:
            if r.u8() != lv or scale_sym is None:
                raise FormatError(f"{f}: size level count does not match the stage header")
            thr = [struct.unpack("<i", bytes(r.take(4)))[0] for _ in range(lv)]
            cls = cls + self._size_extra(thr, lv, scale_sym, cls)
        levels = int(cls.max(initial=0)) + 1
        if gd > 1 or (gd and f not in ("sh0", "scales")) or (gd and dq and f != "sh0"):
            raise FormatError(f"{f}: bad classed-coding flag {gd}")
        streams = _unpack_streams(r.take(r.remaining()), levels * w, f)
        rows = [np.flatnonzero(cls == c) for c in range(levels)]
        if f == "shN":
            return self._decode_classed_shN(streams, rows, n, w, cls), None
        # every column but the quaternion's largest-component index is trellis-coded (dependent_quant)
        plain = tuple(c * w for c in range(levels)) if f == "quats" else ()
        dec = self._decode_streams(streams, [len(i) for i in rows for _ in range(w)], f, plain)
        sym = _scatter_rows(n, w, rows, dec)
        if gd and f == "sh0":  # green, then red and blue as differences from it
            g = sym[:, 0].copy()
            sym[:, 0] = sym[:, 1] + g
            sym[:, 1] = g
            sym[:, 2] += g
        elif gd:  # scales: largest, then gaps
            s1 = sym[:, 0] - sym[:, 1]
            sym = np.stack([sym[:, 0], s1, s1 - sym[:, 2]], 1)
        if f == "quats":
            return Q.s3_to_quats(sym, Q.class_steps(step, cls)[:, None]), sym
        return Q.dequantize_classed(sym, cls, self._col_steps(f, w)), sym

    # -- rotations as body axes (quat_axes: gscomp.codec.axes)
    def _encode_axes(self, q: np.ndarray, cls: np.ndarray, log_scales: np.ndarray, sens: np.ndarray | None) -> bytes:
        """`axes-classed/v1` of the (canonical, axis-sorted) quaternions ``q``: per class the u and v
        streams of the free axis's direction (classed steps, trellis with dependent_quant), then per
        level L = class + m the angle indices of the next axis. ``log_scales``: the decoded ones."""
        n = len(q)
        free, m = AX.free_axis_levels(log_scales)
        rot = AX.rotmat(q)
        rows = np.arange(n)
        d = rot[rows, :, free]
        d = np.where(d[:, 2:3] < 0, -d, d)  # up: an axis has no sign
        e = rot[rows, :, np.where(free == 0, 1, 0)]
        steps = Q.class_steps(self._grid_step("quats"), cls)[:, None]
        t = AX.octahedral(d) / steps
        if self.params.get("dependent_quant"):
            sym, code = _dq_classed(t, cls, sens=sens, core=self._core)
        else:
            sym = code = np.rint(t).astype(np.int64)  # (|u|, |v| <= 1: no range to check)
        t1, t2 = AX.basis(AX.direction(sym * steps))
        lvl = cls + m
        nl = int(lvl.max(initial=0)) + 1
        k = AX.pick_angles(t1, t2, e, AX.level_counts(self.steps["quats"], nl)[lvl])
        cols = [col for i in _class_rows(cls) for col in _columns_of(code, i)]
        cols += [np.ascontiguousarray(k[lvl == c]) for c in range(nl)]
        return _pack_streams(E.encode_symbols_many(cols, allow_ctx=True))

    def _decode_axes(self, payload, n: int, cls: np.ndarray, log_scales: np.ndarray) -> np.ndarray:
        free, m = AX.free_axis_levels(log_scales)
        lvl = cls + m
        rows = _class_rows(cls)
        lrows = [np.flatnonzero(lvl == c) for c in range(int(lvl.max(initial=0)) + 1)]
        nd = 2 * len(rows)
        streams = _unpack_streams(payload, nd + len(lrows), "quats")
        # all at once (on all cores); the angle streams are not trellis-coded
        dec = self._decode_streams(streams, [len(i) for i in rows for _ in range(2)] + [len(i) for i in lrows], "quats",
                                   plain=tuple(range(nd, nd + len(lrows))))
        return AX.to_quats(_scatter_rows(n, 2, rows, dec[:nd]), Q.class_steps(self._grid_step("quats"), cls),
                           _scatter_rows(n, 1, lrows, dec[nd:])[:, 0], lvl, AX.level_counts(self.steps["quats"], len(lrows)), free)

    def _decode_classed_shN(self, streams: list, rows: list[np.ndarray], n: int, w: int, cls: np.ndarray) -> np.ndarray:
        """float32 (n, w) shN from its class-major streams, a few columns at a time like the
        encoder (`_encode_classed_shN`): the int64 symbols of all 45 columns at once took 1 GB
        per 3M Gaussians on top of the result."""
        col_steps = self._col_steps("shN", w)
        out = np.empty((n, w), np.float32)
        per_pass = _shN_pass_cols(n)
        mod = E._rans()
        for j0 in range(0, w, per_pass):
            j1 = min(w, j0 + per_pass)
            pick = [c * w + j for c in range(len(rows)) for j in range(j0, j1)]
            dec = self._decode_streams([streams[i] for i in pick], [len(rows[i // w]) for i in pick], "shN")
            if mod is not None:  # (the same floats, without the int64 (n, w) array in between)
                mod.scatter_dequantize(out, j0, rows, dec, col_steps[j0:j1])
            else:
                out[:, j0:j1] = Q.dequantize_classed(_scatter_rows(n, j1 - j0, rows, dec), cls, col_steps[j0:j1])
        return out


def _scatter_rows(n: int, w: int, rows: list[np.ndarray], cols: list[np.ndarray]) -> np.ndarray:
    """(n, w) int64 with out[rows[c], j] = cols[c * w + j]: per-class column streams back in
    Gaussian order."""
    out = np.zeros((n, w), np.int64)
    mod = E._rans()
    if mod is not None:
        mod.scatter_rows(out, rows, cols)
        return out
    for c, i in enumerate(rows):  # one scatter of a class's rows (index list, not a mask per column)
        out[i] = np.stack(cols[c * w:(c + 1) * w], 1)
    return out


def _dq_classed(t: np.ndarray, cls: np.ndarray, nonneg: bool = False, sens: np.ndarray | None = None,
                core: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dependent quantization of every (class, column) stream of t (targets in grid steps, (n, w)):
    (reconstruction indices, coded levels), both (n, w) with each stream's rows in their order.
    ``sens`` (n,), the render sensitivity of each row (the importance stage's hint), weights each
    value's error in the search by its row's sensitivity over the stream's mean (clipped to
    [1/DQ_WEIGHT_CLIP, DQ_WEIGHT_CLIP]): all rows of a stream share one step, so this only moves
    error from the rows that show more to those that show less. ``core`` (n,) bool: the rows the
    mean is taken over (`gscomp.codec.posgrid.in_core`; all rows when None or none of a class)."""
    rows = _class_rows(cls)
    w = t.shape[1]
    weights = None
    if sens is not None:  # one weight array per class, shared by its columns' streams
        per_class = []
        for i in rows:
            si = sens[i]
            ref = si[core[i]] if core is not None and core[i].any() else si
            m = float(ref.mean()) if ref.size else 0.0
            per_class.append(np.clip(si / m, 1 / DQ_WEIGHT_CLIP, DQ_WEIGHT_CLIP) if m > 0 else np.ones(si.size))
        weights = [wc for wc in per_class for _ in range(w)]  # streams are class-major
    res = Q.dq_quantize([col for i in rows for col in _columns_of(t, i)], nonneg, weights=weights)
    r, k = np.zeros(t.shape, np.int64), np.zeros(t.shape, np.int64)
    for c, i in enumerate(rows):  # one scatter of each class's (w, n_c) block
        r[i] = np.stack([rj for _, rj in res[c * w:(c + 1) * w]], 1)
        k[i] = np.stack([kj for kj, _ in res[c * w:(c + 1) * w]], 1)
    return r, k


def _class_rows(cls: np.ndarray) -> list[np.ndarray]:
    """Row indices of each class 0..max, in order."""
    return [np.flatnonzero(cls == c) for c in range(int(cls.max(initial=0)) + 1)]


def _columns_of(a: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """The columns of a[rows] as contiguous arrays: one gather of the rows, then one transpose
    (not a gather per column: shN has 45 columns)."""
    return list(np.ascontiguousarray(a[rows].T))


# Bound on the trellis weights (sensitivity / stream mean): on biker `compact` (192 px) clips of
# 2, 3, 4, 8, 16, 32 gave 7.30/60.48, 7.28/60.56, 7.27/60.60, 7.25/60.50, 7.24/60.43, 7.23/60.41
# B/Gaussian / dB, against 7.33/60.13 unweighted: beyond ~4 a few outliers take the error budget.
DQ_WEIGHT_CLIP = 4.0


# shN is classed SHN_CHUNK_COLS columns at a time (see _encode_classed_shN), or more on small scenes:
# enough for SHN_PASS_VALUES values per pass (each pass has fixed costs). On a random 1M SH-3 scene
# (compact, 2 cores) its encode took 7.3-8.0 s one column at a time, 7.0 two, 5.4-5.9 four, 6.5 eight
# and 9.7 all 45 at once (measured in one run each; the memory grows with the width); decoding
# sodacan (26k Gaussians) took 18.5 ms with 4 columns per pass, 15-19 ms with all 45.
SHN_CHUNK_COLS = 4
SHN_PASS_VALUES = 1 << 20


def _shN_pass_cols(n: int) -> int:
    """Columns of shN per pass for n Gaussians (encoder and decoder alike; bytes do not depend on it)."""
    return max(SHN_CHUNK_COLS, SHN_PASS_VALUES // max(n, 1))


MAX_SIZE_LEVELS = 4


def sort_axes(quats: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel each Gaussian's axes so its log-scales are sorted (largest first): permute the
    columns of R the same way, negate the last one if that made det(R) = -1 (a column sign does not
    change R diag(s)^2 R^T), and convert back to a quaternion. Same Gaussians, narrower scale
    distributions (the largest, then non-negative gaps). The native coder runs the same float
    operations in one pass (numpy's temporaries for the n 3x3 matrices took ~0.4 s per 500k)."""
    mod = E._rans()
    if (mod is not None and Q.float_rows(quats, 4) and Q.float_rows(scales, 3) and len(quats) == len(scales)
            and quats.dtype == scales.dtype == np.float32):  # (it reads float32: a float64 input would be rounded)
        out = mod.sort_axes(quats, scales)
        if out is not None:  # (None: a non-finite input, left to the code below)
            return out
    q = np.asarray(quats, np.float64)
    norm = np.sqrt((q * q).sum(1, keepdims=True))
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    s = np.asarray(scales, np.float64)
    order = np.argsort(-s, axis=1, kind="stable")
    rot = np.take_along_axis(AX.rotmat(q), np.repeat(order[:, None, :], 3, 1), 2)
    rot[:, :, 2] *= np.sign(np.linalg.det(rot))[:, None]
    return AX.rotmat_to_quat(rot), np.take_along_axis(s, order, 1).astype(np.float32)


def canonical_quats(q: np.ndarray) -> np.ndarray:
    """Of the four quaternions q, q*i, q*j, q*k, the one whose w has the largest magnitude.

    Right-multiplying by i (j, k) turns the Gaussian 180 degrees about its own x (y, z) axis, which
    only flips the signs of two columns of R, so R diag(s)^2 R^T - the rendered Gaussian - is
    unchanged. After this w is the largest component, so the smallest-three index is always 0 and
    costs nothing (up to 2 bits per Gaussian saved on scenes with uniformly spread rotations)."""
    mod = E._rans()
    if mod is not None and Q.float_rows(q, 4):
        out = mod.canonical_quats(q)  # the same operations in one pass
        if out is not None:  # (None: a non-finite input)
            return out
    q = np.asarray(q, np.float64)
    norm = np.sqrt((q * q).sum(1, keepdims=True))
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    # q, q*i, q*j, q*k = (w,x,y,z), (-x,w,z,-y), (-y,-z,w,x), (-z,y,-x,w): variant k has w = -q[k] (k>0),
    # so the pick is the component of largest magnitude (first on ties), built by one gather + signs
    pick = np.argmax(np.abs(q), 1)
    return np.take_along_axis(q, _QPERM[pick], 1) * _QSIGN[pick]


_QPERM = np.array([[0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1], [3, 2, 1, 0]])
_QSIGN = np.array([[1.0, 1, 1, 1], [-1, 1, 1, -1], [-1, -1, 1, 1], [-1, 1, -1, 1]])


def _dedup_encode(cols: np.ndarray) -> bytes | None:
    """Codebook of the distinct rows + one index per Gaussian, when the rows repeat a lot (e.g.
    SH from a vector-quantized source such as SOG); None otherwise. ``cols``: the integer
    symbols column by column, (c, n). The codebook is in lexicographic row order: neighbouring
    rows then share leading values, so its column streams shrink (playbot: 575 -> 438 KB) for a
    slightly costlier index histogram (+13 KB) than with the most frequent rows first."""
    c, n = cols.shape
    if n < 1024 or _mostly_distinct(cols):
        return None
    first, inv = _unique_rows(cols)
    if len(first) > n // 3:
        return None
    rank = np.lexsort(cols[::-1, first])  # distinct rows: column 0 the primary key
    remap = np.empty_like(rank)
    remap[rank] = np.arange(len(rank))
    streams = [E.encode_symbols(np.ascontiguousarray(cols[j, first[rank]])) for j in range(c)]
    return E.varint(len(first)) + _pack_streams(streams) + E.blob(E.encode_symbols(remap[inv], allow_delta=False))


def _mostly_distinct(cols: np.ndarray) -> bool:
    """Cheap check on every k-th row of the (c, n) integer columns: a codebook of U <= n/3 rows
    shows as <= ~85% distinct rows in a sample of n/8 (U(1 - e^(-m/U)) / m), unstructured data as
    ~100%."""
    n = cols.shape[1]
    k = max(1, n // max(65536, n // 8))
    return len(np.unique(_row_hash(cols[:, ::k]))) > 0.9 * len(range(0, n, k))


def _row_hash(cols: np.ndarray) -> np.ndarray:
    """64-bit hash of each row of the (c, n) columns (a dot product with fixed random odd
    multipliers, wrapping int64 arithmetic): a 1-D key to sort instead of whole rows. Equal rows
    always hash equal; `_unique_rows` checks that unequal ones did not."""
    mult = np.random.default_rng(0x5EED).integers(1, 2**62, cols.shape[0], dtype=np.int64) * 2 + 1
    return mult @ np.asarray(cols, np.int64)  # one pass; int64 products and sums wrap mod 2^64


def _unique_rows(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first occurrence, inverse) of the distinct rows of the (c, n) columns, in some fixed
    order of the rows (the caller sorts them by their values, so it never matters)."""
    _, first, inv = np.unique(_row_hash(cols), return_index=True, return_inverse=True)
    inv = inv.ravel()
    rep = first[inv]  # each row's first equal-hash row; column by column: cache-friendly, early out
    if not all(np.array_equal(c, c[rep]) for c in cols):  # a hash collision: sort the rows themselves
        rows = np.ascontiguousarray(cols.T)
        rows = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
        _, first, inv = np.unique(rows, return_index=True, return_inverse=True)
        inv = inv.ravel()
    return first, inv


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


__all__ = ["ATTR_FIELDS", "Attributes", "Positions"]
