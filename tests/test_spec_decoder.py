"""The specification against the implementation: `tools/gsz_spec_decode.py` is a second decoder,
written from docs/gsz-format.md alone (no gscomp code). Files of every preset and option (post-hoc
and the trained stages) must decode to bit-identical fields with both decoders; a change to the
format that is not also made in the document (and so in that decoder) fails here."""
import dataclasses
import importlib.util

import numpy as np
import pytest
import torch

from conftest import ROOT, shared
from gscomp import Splats
from gscomp.codec import decode_gsz, encode_gsz
from gscomp.codec.container import read_gsz
from gscomp.commands.compress import compose_pipeline
from gscomp.io import load_splats

FIELDS = ("means", "quats", "scales", "opacities", "sh0", "shN")
A = "pipeline.stages.attributes."
PRESETS = ("lossless-ish", "high", "medium", "low", "compact")


def _spec():
    spec = importlib.util.spec_from_file_location("gsz_spec_decode", ROOT / "tools" / "gsz_spec_decode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SPEC = _spec()


def _same_bits(path, what: str) -> list[str]:
    """Fields where the two decoders disagree (empty list = bit-identical)."""
    ref = decode_gsz(path)
    mine = SPEC.decode(path)
    bad = []
    for f in FIELDS:
        a = getattr(ref, f).detach().numpy().astype(np.float32)
        b = mine[f]
        if a.shape != b.shape or a.view(np.uint32).tobytes() != b.view(np.uint32).tobytes():
            bad.append(f"{what}: {f}")
    return bad


def _vq(splats: Splats, rows: int = 12, seed: int = 5) -> Splats:
    """The same Gaussians with shN drawn from a small codebook (the writer then dedups it)."""
    g = torch.Generator().manual_seed(seed)
    book = torch.randn(rows, *splats.shN.shape[1:], generator=g) * 0.2
    pick = torch.randint(0, rows, (len(splats),), generator=g)
    return Splats(means=splats.means * 40, quats=splats.quats, scales=splats.scales,
                  opacities=splats.opacities, sh0=splats.sh0, shN=book[pick])


def _far(splats: Splats, share: float = 0.05, seed: int = 3) -> Splats:
    """The same Gaussians with a share of them moved out to 3..1000 times the scene's radius
    (log-uniform, all directions): an unbounded capture's background."""
    g = torch.Generator().manual_seed(seed)
    k = int(len(splats) * share)
    d = torch.randn(k, 3, generator=g)
    d = d / d.norm(dim=1, keepdim=True) * torch.exp(torch.rand(k, 1, generator=g) * np.log(1000 / 3)) * 3
    means = splats.means.clone()
    means[:k] = d
    return Splats(means=means, quats=splats.quats, scales=splats.scales, opacities=splats.opacities,
                  sh0=splats.sh0, shN=splats.shN)


# (name, n, sh degree, overrides): every codec and option of the post-hoc stages in docs/gsz-format.md §5
CASES = [(f"{p} sh{d} n{n}", n, d, [f"pipeline={p}"]) for p in PRESETS for n, d in ((1500, 3), (700, 1))]
CASES += [(f"{p} n{n}", n, 2, [f"pipeline={p}"]) for p in ("high", "compact") for n in (0, 1, 2)]
CASES += [
    ("high sh0", 500, 0, ["pipeline=high"]),
    ("compact sh_degree=1", 800, 3, ["pipeline=compact", "pipeline.sh_degree=1"]),
    ("high exact floats", 400, 3, ["pipeline=high"] + [A + f"{k}_step=0" for k in ("quat", "scale", "opacity", "sh0", "shN")]),
    ("compact exact opacity+shN", 600, 2, ["pipeline=compact", A + "opacity_step=0", A + "shN_step=0"]),
    ("high shN zstd", 500, 2, ["pipeline=high", "++" + A + "shN_zstd=true"]),
    ("lossless-ish tiny steps (split blocks, delta)", 8000, 1,
     ["pipeline=lossless-ish", A + "opacity_step=1e-5", A + "scale_step=1e-5", A + "sh0_step=1e-5"]),
    ("high band gain 1.3", 500, 3, ["pipeline=high", A + "shN_band_gain=1.3"]),
    ("compact no trellis", 1500, 2, ["pipeline=compact", A + "dependent_quant=false"]),
    ("compact no trellis, no size levels", 1500, 2, ["pipeline=compact", A + "dependent_quant=false", "~" + A + "size_levels"]),
    ("compact no size levels", 1500, 2, ["pipeline=compact", "~" + A + "size_levels"]),
    ("compact size levels on all", 1500, 2,
     ["pipeline=compact", A + "size_levels={quats:4,scales:4,opacities:2,sh0:3}", "++" + A + "quat_axes=false"]),
    ("compact unsorted scales", 1500, 2,
     ["pipeline=compact", A + "sort_scales=false", "~" + A + "size_levels", "++" + A + "quat_axes=false"]),
    ("compact unsorted scales, no trellis", 1500, 2,
     ["pipeline=compact", A + "sort_scales=false", "~" + A + "size_levels", A + "dependent_quant=false",
      "++" + A + "quat_axes=false"]),
    ("compact shN size levels, band gain", 1500, 3, ["pipeline=compact", "+" + A + "size_levels.shN=2", A + "shN_band_gain=1.5"]),
    ("compact shN classed, no trellis", 1500, 1, ["pipeline=compact", A + "dependent_quant=false"]),
    ("compact shN plain (zstd)", 1500, 2, ["pipeline=compact", "+" + A + "shN_zstd=true"]),
    ("compact size levels on opacities only, no trellis", 1500, 2,
     ["pipeline=compact", "~" + A + "size_levels", "+" + A + "size_levels={opacities:3}", A + "dependent_quant=false"]),
    # rotations as body axes (axes-classed/v1): both ways whatever the preset's default
    ("compact quats as quaternions", 1500, 2, ["pipeline=compact", "++" + A + "quat_axes=false"]),
    ("compact quat_axes", 1500, 2, ["pipeline=compact", "++" + A + "quat_axes=true"]),
    ("compact quat_axes, no trellis", 1500, 1, ["pipeline=compact", "++" + A + "quat_axes=true", A + "dependent_quant=false"]),
    ("compact quat_axes, size levels", 1500, 2,
     ["pipeline=compact", "++" + A + "quat_axes=true", A + "size_levels={scales:3,opacities:2,sh0:2}"]),
    ("compact quat_axes, coarse quat step (N = 1)", 1500, 0, ["pipeline=compact", "++" + A + "quat_axes=true", A + "quat_step=0.5"]),
    ("compact quat_axes, exact quats", 300, 0, ["pipeline=compact", "++" + A + "quat_axes=true", A + "quat_step=0"]),
]
CASES += [(f"compact quat_axes n{n}", n, 2, ["pipeline=compact", "++" + A + "quat_axes=true"]) for n in (0, 1, 2)]
CASES += [("compact quat_axes, no trellis n2", 2, 1, ["pipeline=compact", "++" + A + "quat_axes=true", A + "dependent_quant=false"])]


def _small_views(overrides: list[str]) -> list[str]:
    """``overrides`` plus 128 px importance views for a preset that ranks (compact, c3dgs): the views'
    size changes which classes come out, not which codecs write them, and small ones keep this fast."""
    ranks = any(o in ("pipeline=compact", "pipeline=c3dgs") for o in overrides)
    return overrides + ["+pipeline.stages.importance.max_res=128"] if ranks else overrides


def test_spec_decoder_matches_on_every_codec(random_splats, tmp_path):
    SPEC.STATS.clear()
    bad = []
    for i, (what, n, deg, overrides) in enumerate(CASES):
        splats = random_splats(n, sh_degree=deg, seed=i)
        path = tmp_path / f"{i}.gsz"
        encode_gsz(splats, path, compose_pipeline(_small_views(overrides)))
        if "quat_axes=true" in " ".join(overrides):
            codec = next(s.codec for s in read_gsz(path)[1] if s.name.endswith("quats"))
            assert codec == ("f32-planes/v1" if A + "quat_step=0" in overrides else "axes-classed/v1"), (what, codec)
        bad += _same_bits(path, what)
    splats = _vq(random_splats(3000, sh_degree=3, seed=99))
    for p in ("high", "compact"):
        encode_gsz(splats, tmp_path / "vq.gsz", compose_pipeline(_small_views([f"pipeline={p}"])))
        bad += _same_bits(tmp_path / "vq.gsz", f"{p}, codebook shN (dedup)")
    # an unbounded scene (far background): the core box with log tails (morton-delta*/v2)
    far = _far(random_splats(2000, sh_degree=1, seed=98))
    for p in ("high", "low", "compact", "lossless-ish"):  # lossless-ish: a core of fewer bits than 19
        encode_gsz(far, tmp_path / "far.gsz", compose_pipeline(_small_views([f"pipeline={p}"])))
        codec = next(s.codec for s in read_gsz(tmp_path / "far.gsz")[1] if s.name.endswith("means"))
        assert codec.endswith("/v2"), codec
        bad += _same_bits(tmp_path / "far.gsz", f"{p}, far background (log tails)")
    assert not bad, f"the spec decoder disagrees with gscomp on: {bad}"
    # the cases above must exercise every integer-stream mode the writer produces:
    # empty, constant, rANS (16-bit, split, 12-bit histogram), delta rANS, zstd, varints, context rANS
    used = set(SPEC.STATS)
    for key in ((0, None), (1, None), (2, 0), (2, 1), (2, 2), (3, 1), (4, None), (6, None), (7, None)):
        assert key in used, f"no case exercised integer stream (mode, kind) {key}: {sorted(used, key=str)}"


def _varints(values) -> bytes:
    """An integer stream of mode 6 (svarints), or mode 0 when empty (spec §2)."""
    out = bytearray([6] if len(values) else [0])
    for v in values:
        u = 2 * int(v) if v >= 0 else -2 * int(v) - 1
        while u >= 0x80:
            out.append(u & 0x7F | 0x80)
            u >>= 7
        out.append(u)
    return bytes(out)


def test_both_decoders_check_the_axes_payload(random_splats, tmp_path):
    """axes-classed/v1 written by hand: the edge values decode bit-identically (|u| = 2, the last
    angle index N - 1), and both decoders refuse |u| > 2, an angle index outside [0, N) and a wrong
    stream count."""
    from gscomp import FormatError
    from gscomp.codec.container import pack_gsz, unpack_gsz

    path = tmp_path / "a.gsz"
    overrides = ["pipeline=compact", "++" + A + "quat_axes=true", A + "dependent_quant=false", A + "quat_step=0.5"]
    encode_gsz(random_splats(60, sh_degree=0, seed=4), path, compose_pipeline(_small_views(overrides)))
    header, sections = unpack_gsz(path.read_bytes())
    _, secs, _ = SPEC.read_container(path.read_bytes())
    n = header["n"]
    c = SPEC.read_int_stream(secs["importance/classes"][0], n)
    _, m = SPEC.axes_free_axis(SPEC.decode(path)["scales"])
    lev = c + m
    N = np.maximum(1, np.floor(np.pi / (0.5 * 2.0 ** lev) + 0.5)).astype(np.int64)
    K, Kp = int(c.max()) + 1, int(lev.max()) + 1

    def payload(U, V, kappa, extra=()):
        blobs = [_varints(x[c == k]) for k in range(K) for x in (U, V)]
        blobs += [_varints(kappa[lev == k]) for k in range(Kp)] + list(extra)
        out = bytearray([len(blobs)])
        for b in blobs:
            out += bytes([len(b)]) if len(b) < 0x80 else bytes([len(b) & 0x7F | 0x80, len(b) >> 7])
            out += b
        return bytes(out)

    def write(data):
        path.write_bytes(pack_gsz(header, [dataclasses.replace(x, payload=data) if x.name.endswith("quats")
                                           else x for x in sections]))
        return path

    two = 4 >> c  # U · 0.5 · 2^c = 2 exactly (class 3's step is 4: only 0 fits)
    zero = np.zeros(n, np.int64)
    assert np.any(N[lev >= 3] == 1) and np.all(N[lev >= 3] == 1) and np.any(N > 1)  # (step 0.5 * 2^L: N = 1 from L = 3)
    for U, V, kappa in ((two, -two, N - 1), (-two, zero, zero), (zero, two, N // 2)):
        assert _same_bits(write(payload(U, V, kappa)), "axes edge values") == []
    for data in (payload(two + 1, zero, zero), payload(zero, -two - 1, zero), payload(zero, zero, N),
                 payload(zero, zero, zero - 1), payload(zero, zero, zero, extra=[b"\0"])):
        with pytest.raises(FormatError):
            decode_gsz(write(data))
        with pytest.raises(SPEC.FormatError):
            SPEC.decode(write(data))


C = "pipeline.stages.colorfield."
# the trained pipeline's stages (masking, rvq, colorfield), here fitted post-hoc
C3DGS = [
    ("c3dgs", []),
    ("c3dgs, rvq without depths", ["~pipeline.stages.rvq.depths"]),
    ("c3dgs, field predicts sh0 too", [C + "targets=[sh0,shN]", A + "fields=[opacities]"]),
    ("c3dgs, small grid with dense levels", [C + "n_levels=6", C + "base_resolution=13", C + "max_resolution=64",
                                             C + "log2_hashmap_size=14", C + "mlp_layers=1"]),
    ("c3dgs, SH 1", ["pipeline.sh_degree=1"]),
]
# far outliers (~300x the box, towards +z, +y+z, +x+y+z) contract to u near 1, where a dense level's
# top corner passes res - 1 and the row wraps (`mod size`, checked: without it this case fails)
FAR = ("c3dgs, far outliers (dense levels wrap)", [C + "n_levels=6", C + "base_resolution=14", C + "max_resolution=64",
                                                   C + "log2_hashmap_size=14", C + "mlp_layers=1"])


def test_spec_decoder_matches_on_trained_stages(random_splats, tmp_path):
    bad = []
    for i, (what, overrides) in enumerate(C3DGS + [FAR]):
        path = tmp_path / f"{i}.gsz"
        splats = random_splats(400, sh_degree=3, seed=i)
        if (what, overrides) == FAR:
            means = splats.means.clone()  # fewer than 1% of the points: outside the 1-99% box
            means[:3] = torch.tensor([[0.1, 0.2, 300.0], [0.2, 400.0, 250.0], [500.0, 450.0, 520.0]])
            splats = splats.replace(means=means)
        encode_gsz(splats, path, compose_pipeline(_small_views(["pipeline=c3dgs", "+" + C + "fit_steps=60"] + overrides)))
        bad += _same_bits(path, what)
        if "targets=[sh0,shN]" in " ".join(overrides):  # as written before `targets` existed: key absent
            from gscomp.codec.container import write_gsz

            header, sections = read_gsz(path)
            field = next(st for st in header["pipeline"]["stages"] if st["type"] == "colorfield")
            del field["targets"]
            write_gsz(tmp_path / "old.gsz", header, sections)
            bad += _same_bits(tmp_path / "old.gsz", what + ", no targets key")
    assert not bad, f"the spec decoder disagrees with gscomp on: {bad}"


@pytest.mark.parametrize("preset", PRESETS)
def test_spec_decoder_matches_on_real_scenes(preset, tmp_path):
    bad = []
    for rel in ("fixtures/pc_short.ply", "splats/playbot/4_0"):
        path = tmp_path / "x.gsz"
        encode_gsz(load_splats(shared(rel)), path, compose_pipeline([f"pipeline={preset}"]))
        bad += _same_bits(path, rel)
    assert not bad, f"the spec decoder disagrees with gscomp on: {bad}"


def test_spec_decoder_refuses_zstd_frames_of_the_wrong_size_before_inflating_them():
    # a small frame may declare (and inflate to) gigabytes: the size the stream must have is
    # checked against the frame's header first; a frame that declares none is refused (the spec
    # requires it, as gscomp does)
    zstandard = pytest.importorskip("zstandard")
    big = zstandard.ZstdCompressor().compress(bytes(50_000_000))  # ~2 KB declaring 50 MB
    with pytest.raises(SPEC.FormatError, match="wrong content size"):
        SPEC.zstd_exact(big, 100, "x")
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(50_000_000))
    with pytest.raises(SPEC.FormatError, match="wrong content size"):
        SPEC.zstd_exact(unsized, 100, "x")
    with pytest.raises(SPEC.FormatError, match="wrong content size"):  # even of the right size
        SPEC.zstd_exact(zstandard.ZstdCompressor(write_content_size=False).compress(b"abc"), 3, "x")
    with pytest.raises(SPEC.FormatError, match="x: "):
        SPEC.zstd_exact(b"not zstd at all", 100, "x")
    assert SPEC.zstd_exact(zstandard.ZstdCompressor().compress(b"abc"), 3, "x") == b"abc"


def test_both_decoders_read_the_antialiased_flag(random_splats, tmp_path):
    """Format 1.1's optional header flag: the same fields either way; a value other than true or
    false makes the file invalid for both."""
    from gscomp import FormatError
    from gscomp.codec.container import pack_gsz, unpack_gsz

    path = tmp_path / "a.gsz"
    encode_gsz(random_splats(200, sh_degree=1).replace(antialiased=True), path, compose_pipeline(["pipeline=high"]))
    assert _same_bits(path, "antialiased") == [] and decode_gsz(path).antialiased
    header, sections = unpack_gsz(path.read_bytes())
    path.write_bytes(pack_gsz({**header, "antialiased": "true"}, sections))
    with pytest.raises(FormatError, match='bad antialiased "true" in the header \\(true or false\\)'):
        decode_gsz(path)
    with pytest.raises(SPEC.FormatError, match="bad antialiased"):
        SPEC.decode(path)


def test_both_decoders_refuse_a_file_that_decodes_to_infinities(random_splats, tmp_path):
    """Spec §1: every decoded value is a finite float32 (here a scale step of 1e300 under valid
    checksums); the spec decoder returned the infinities."""
    import json

    from gscomp import FormatError
    from gscomp.codec.container import pack_gsz, unpack_gsz

    path = tmp_path / "a.gsz"
    encode_gsz(random_splats(200, sh_degree=1), path, compose_pipeline(["pipeline=high"]))
    header, sections = unpack_gsz(path.read_bytes())
    st = json.loads(json.dumps(header["pipeline"]))
    st["stages"][1]["scale_step"] = 1e300
    path.write_bytes(pack_gsz({**header, "pipeline": st}, sections))
    with pytest.raises(FormatError, match="decoded scales has non-finite values"):
        decode_gsz(path)
    with pytest.raises(SPEC.FormatError, match="decoded scales has non-finite values"):
        with np.errstate(over="ignore", invalid="ignore"):
            SPEC.decode(path)


def test_colorfield_decode_work_is_bounded_by_the_file_size(random_splats, tmp_path, monkeypatch):
    """Decoding runs the MLP once per Gaussian, and a 165 KB crafted file (1M constant Gaussians,
    an MLP 1024 wide) took 136 s. Now n x P <= 2^32 + 2048 x payload bytes: the writer pads the
    rare real file beyond it, and without that padding both decoders (and `info`) refuse it before
    any work, unless GSCOMP_NO_WORK_LIMIT is set. The 2^32 is lowered here to 2^28 so that 20k
    identical Gaussians through a 20k-parameter MLP cross it; with 2^32 they need no padding."""
    from gscomp import FormatError
    from gscomp.codec import decode_bytes, gsz_info
    from gscomp.codec.container import pack_gsz, unpack_gsz
    from gscomp.splats import FIELDS
    from gscomp.stages import colorfield

    monkeypatch.delenv("GSCOMP_NO_WORK_LIMIT", raising=False)
    n, free = 20000, 1 << 28
    one = random_splats(1, sh_degree=1)
    s = one.replace(**{f: getattr(one, f).expand(n, *getattr(one, f).shape[1:]).clone() for f in FIELDS})
    path = tmp_path / "a.gsz"
    pipeline = {"name": "x", "sh_degree": None, "stages": {
        "positions": {"type": "positions", "bits": 16},
        "colorfield": {"type": "colorfield", "n_levels": 6, "log2_hashmap_size": 10, "base_resolution": 4,
                       "max_resolution": 32, "mlp_width": 128, "fit_steps": 2},
        "attributes": {"type": "attributes", "fields": ["quats", "scales", "opacities"]}}}
    encode_gsz(s, path, pipeline)
    header, sections = unpack_gsz(path.read_bytes())
    assert sections[-1].name != "_pad/zeros"  # (n x P = 394M: inside 2^32)
    monkeypatch.setattr(colorfield, "MLP_WORK_FREE", free)
    monkeypatch.setattr(SPEC, "MLP_WORK_FREE", free)
    encode_gsz(s, path, pipeline)
    header, sections = unpack_gsz(path.read_bytes())
    mlp = next(x for x in sections if x.name == "colorfield/colorfield.mlp")
    least = -(-(n * (len(mlp.payload) // 2) - free) // colorfield.MLP_WORK_PER_BYTE)
    assert sum(len(x.payload) for x in sections) == least and sections[-1].name == "_pad/zeros"
    assert len(decode_bytes(path.read_bytes())) == n
    unpadded = pack_gsz(header, sections[:-1])
    path.write_bytes(unpadded)
    words = f"stage 'colorfield': decoding {n} Gaussians takes work for a file of at least {least} payload bytes"
    for read in (decode_bytes, lambda data: gsz_info(path)):
        with pytest.raises(FormatError, match=words):
            read(unpadded)
    with pytest.raises(SPEC.FormatError, match="colorfield: n x MLP parameters over 2.32 . 2048 x the payload bytes"):
        SPEC.decode(path)
    for value in ("0", "no", "true"):  # (only the documented =1 lifts it)
        monkeypatch.setenv("GSCOMP_NO_WORK_LIMIT", value)
        with pytest.raises(FormatError, match=words):
            decode_bytes(unpadded)
    monkeypatch.setenv("GSCOMP_NO_WORK_LIMIT", "1")
    assert len(decode_bytes(unpadded)) == n
