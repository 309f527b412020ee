"""Importance classes (stage `importance`), adaptive positions/attributes, `compact` preset."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, shared

from gscomp import FormatError, GscompError
from gscomp.codec import decode_bytes, decode_gsz, encode_gsz, gsz_info
from gscomp.codec.container import pack_gsz, unpack_gsz
from gscomp.commands.compress import compose_pipeline
from gscomp.stages import importance as I
from gscomp.stages import posthoc as P
from gscomp.stages.base import Section
from gscomp.stages.pipeline import Pipeline

STEPS = {"quats": 0.0105, "scales": 0.047, "opacities": 0.062, "sh0": 0.027}


def compact(views: int = 4, dq: bool = False, axes: bool = True) -> dict:
    """The preset; ``dq`` = its dependent quantization (off: the exact half-step error bounds hold);
    ``axes``: its rotations as body axes (off: quaternions, whose errors have step bounds).
    Without pruning (every Gaussian coded; `prune` has tests of its own)."""
    cfg = compose_pipeline(["pipeline=compact"])  # resolves the ${...} step references
    cfg["stages"]["importance"].update(views=views, prune=0.0)  # fewer renders keep tests fast
    cfg["stages"]["attributes"].update(dependent_quant=dq, quat_axes=axes)
    return cfg


def in_morton_order(src, cfg):
    return src[Pipeline.from_config(cfg).stages[1].reorder(src)]


def test_scores_follow_visibility(random_splats):
    src = random_splats(400, sh_degree=0, seed=1)
    src.opacities[:200] = -9.0  # nearly transparent: their errors barely show
    src.opacities[200:] = 4.0
    src.scales[:] = -2.0
    imp = I.importance_scores(src, 4, STEPS, 14, res=64)
    assert imp.shape == (400,) and (imp >= 0).all()
    assert np.median(imp[:200]) * 100 < np.median(imp[200:])
    cls = I.importance_classes(src, 4, 0.7, 4, STEPS, 14)
    assert cls.min() >= 0 and cls.max() <= 3 and cls[:200].mean() > cls[200:].mean() + 1.5
    # deterministic (exact scores, snapped before the class decision)
    assert np.array_equal(cls, I.importance_classes(src.clone(), 4, 0.7, 4, STEPS, 14))


def test_old_probes_param_still_accepted():
    """Files written before the exact Fisher pass name `probes` in their header: still readable."""
    assert I.Importance(probes=4).params["probes"] == 4
    assert "probes" not in I.Importance().params


def test_out_of_view_gaussians_score_zero(random_splats):
    src = random_splats(60, sh_degree=0, seed=2)
    src.means[:3] += 100.0  # beyond the 90th-percentile radius the cameras are placed at
    imp = I.importance_scores(src, 4, STEPS, 14, res=32)
    assert (imp[:3] == 0).all() and (imp[3:] > 0).mean() > 0.5


def test_compact_roundtrip_steps_follow_classes(tmp_path, random_splats):
    src = random_splats(3000, sh_degree=1, seed=3)
    cfg = sized_compact({"quats": 0})  # class steps only (size levels: see test_size_levels_*; quat_axes: test_axes)
    encode_gsz(src, tmp_path / "a.gsz", cfg)
    info = gsz_info(tmp_path / "a.gsz")
    assert info["codecs"]["positions/means"] == "morton-delta-classed/v1"
    assert info["codecs"]["attributes/scales"] == "symbols-classed/v1"
    _, sections = unpack_gsz((tmp_path / "a.gsz").read_bytes())
    classes = {s.name: s for s in sections}["importance/classes"]
    from gscomp.codec import entropy as E

    cls = E.decode_symbols(classes.payload, 3000)
    assert cls.min() == 0 and cls.max() == 3  # the quantile puts Gaussians in every class here
    out = decode_gsz(tmp_path / "a.gsz")
    ref = in_morton_order(src, cfg)
    a = cfg["stages"]["attributes"]
    mult = np.exp2(cls)[:, None]
    ref_q, ref_s = P.sort_axes(ref.quats.numpy(), ref.scales.numpy())  # the preset relabels axes
    err = np.abs(out.scales.numpy() - ref_s)
    assert (err <= 0.5 * a["scale_step"] * mult + 1e-5).all()
    assert err[cls == 3].max() > 0.5 * a["scale_step"]  # class 3 really is coarser
    assert ((out.sh0 - ref.sh0).abs().numpy().reshape(-1, 3) <= 0.5 * a["sh0_step"] * mult + 1e-5).all()
    assert ((out.opacities - ref.opacities).abs().numpy() <= 0.5 * a["opacity_step"] * mult[:, 0] + 1e-5).all()
    qn = P.canonical_quats(ref_q)  # the preset codes the equivalent quaternion, w largest
    dots = np.abs((qn * out.quats.numpy()).sum(1))
    assert dots.min() > 0.99 and dots[cls == 0].min() > 0.9995
    # positions: class c sits at the centre of its 2^c-cell on the grid of `bits` bits
    lo, hi = ref.means.min(0).values.double(), ref.means.max(0).values.double()
    step = ((hi - lo) / (2**14 - 1)).numpy()
    perr = (out.means.double() - ref.means.double()).abs().numpy()
    assert (perr <= step * (0.5 + np.exp2(cls)[:, None] / 2) + 1e-6).all()
    assert (perr[cls == 0] <= 0.5 * step + 1e-6).all()
    # shN: classed too (one step per SH band, equal here: band gain 1), times 2^class
    assert info["codecs"]["attributes/shN"] == "symbols-classed/v1"
    assert a["shN_band_gain"] == 1.0
    serr = (out.shN - ref.shN).abs().numpy().reshape(3000, -1)
    assert (serr <= 0.5 * a["shN_step"] * mult + 1e-5).all()
    assert serr[cls == 3].max() > 0.5 * a["shN_step"]


def test_importance_shN_scores_match_brute_force_jacobian(random_splats):
    """The importance stage scores shN from sh0's Fisher sums (the Y_j^2 of a band sum to
    (2l + 1) C0^2 in every direction): equal to the step-weighted sum of the squared derivatives of
    every rendered colour by every SH-rest coefficient, from the full Jacobian (float64)."""
    from gscomp.render import render

    src = random_splats(40, sh_degree=2, seed=21, dtype=torch.float64)
    src.opacities[:] = 2.0
    src.sh0[:] += 0.6  # colours above the clamp at 0 (the clamp has no gradient; that is tested too)
    src.sh0[:5] = -3.0
    cams = I.sphere_cameras(src.means, 2, res=24)
    steps = dict(STEPS, shN=0.05, shN_band_gain=1.5)
    pf: dict = {}
    got = I.importance_scores(src, 2, steps, 14, cams=cams, per_field=pf) - I.importance_scores(src, 2, STEPS, 14, cams=cams)
    col_w = np.repeat(I.shN_steps(0.05, 1.5, 8), 3) ** 2  # per coefficient, channels inner

    def colours(shN):
        return torch.cat([render(src.replace(shN=shN), [c], sh_degree=2, backend="cpu").colors.reshape(-1) for c in cams])

    jac = torch.autograd.functional.jacobian(colours, src.shN)  # (pixels*3, n, 8, 3)
    fisher = (jac ** 2).sum(0).reshape(40, -1).numpy()  # S per coefficient and channel
    ref = fisher @ col_w
    assert ref.max() > 0 and (ref[:5] == 0).all() and (got[:5] == 0).all()
    assert np.allclose(got, ref, rtol=1e-9, atol=1e-12 * ref.max())
    assert np.allclose(pf["shN"], fisher.sum(1), rtol=1e-9, atol=1e-12 * ref.max())


def test_compact_keeps_palette_shN_as_codebook(tmp_path, random_splats):
    """SH rest from a palette (e.g. SOG, whose rows repeat) keeps `symbols-dedup/v1`: its codebook
    beats classed steps there; the test is on the input floats, not on the quantized rows."""
    src = random_splats(3000, sh_degree=2, seed=8)
    src.shN[:] = src.shN[torch.randint(0, 64, (3000,), generator=torch.Generator().manual_seed(0))]
    encode_gsz(src, tmp_path / "p.gsz", compact())
    assert gsz_info(tmp_path / "p.gsz")["codecs"]["attributes/shN"] == "symbols-dedup/v1"
    out, ref = decode_gsz(tmp_path / "p.gsz"), in_morton_order(src, compact())
    assert float((out.shN - ref.shN).abs().max()) <= 0.5 * compact()["stages"]["attributes"]["shN_step"] + 1e-6
    tiny = src.replace(shN=torch.randn(src.shN.shape, generator=torch.Generator().manual_seed(1)) * 1e-3)
    encode_gsz(tiny, tmp_path / "z.gsz", compact())  # every quantized row is 0, but the input rows differ
    assert gsz_info(tmp_path / "z.gsz")["codecs"]["attributes/shN"] == "symbols-classed/v1"


def test_compact_deterministic_and_smaller(tmp_path, random_splats):
    src = random_splats(3000, sh_degree=0, seed=4)
    cfg = compact(dq=True)
    a = encode_gsz(src, tmp_path / "a.gsz", cfg)["total_bytes"]
    encode_gsz(src.clone(), tmp_path / "b.gsz", cfg)
    assert (tmp_path / "a.gsz").read_bytes() == (tmp_path / "b.gsz").read_bytes()
    off = compact()
    del off["stages"]["importance"]
    off["stages"]["positions"]["adaptive"] = off["stages"]["attributes"]["adaptive"] = False
    off["stages"]["attributes"].update(sort_scales=False, size_levels={}, quat_axes=False)
    assert a < 0.9 * encode_gsz(src, tmp_path / "c.gsz", off)["total_bytes"]


def test_encode_reports_progress_without_changing_bytes(tmp_path, random_splats):
    """encode_gsz(progress=...) hears each stage and each view the importance stage renders; the
    file is the one written without it."""
    src = random_splats(2000, sh_degree=0, seed=6)
    calls = []
    encode_gsz(src, tmp_path / "a.gsz", compact(views=3), progress=lambda *a: calls.append(a))
    encode_gsz(src, tmp_path / "b.gsz", compact(views=3))
    assert (tmp_path / "a.gsz").read_bytes() == (tmp_path / "b.gsz").read_bytes()
    assert [c for c in calls if c[0].startswith(("preparing", "encoding"))] == [
        ("preparing: importance", 0, 3), ("preparing: positions", 1, 3), ("preparing: attributes", 2, 3),
        ("encoding: importance", 0, 3), ("encoding: positions", 1, 3), ("encoding: attributes", 2, 3)]
    assert [c[1:] for c in calls if c[0].startswith("importance")] == [(1, 3), (2, 3), (3, 3)]


def test_corrupt_classes_are_format_errors(tmp_path, random_splats):
    from gscomp.codec import entropy as E

    src = random_splats(800, sh_degree=0, seed=5)
    encode_gsz(src, tmp_path / "a.gsz", compact())
    header, sections = unpack_gsz((tmp_path / "a.gsz").read_bytes())
    names = [s.name for s in sections]

    def swap(name, payload):
        bad = list(sections)
        i = names.index(name)
        bad[i] = Section(name, bad[i].codec, payload)
        return pack_gsz(header, bad)

    with pytest.raises(FormatError, match="class out of range"):
        decode_bytes(swap("importance/classes", E.encode_symbols(np.full(800, 9))))
    sh0 = next(s for s in sections if s.name == "attributes/sh0")
    with pytest.raises(FormatError):
        decode_bytes(swap("attributes/sh0", bytes([7]) + bytes(sh0.payload[1:])))
    means = next(s for s in sections if s.name == "positions/means")
    with pytest.raises(FormatError):  # coarse shift >= bits
        decode_bytes(swap("positions/means", bytes([14, 14]) + bytes(means.payload[2:])))
    with pytest.raises(FormatError):
        decode_bytes(pack_gsz(header, [s for s in sections if s.name != "importance/classes"]))


def test_compact_fuzz_only_format_errors(tmp_path, random_splats):
    src = random_splats(600, sh_degree=1, seed=6)
    encode_gsz(src, tmp_path / "a.gsz", compact(dq=True))
    header, sections = unpack_gsz((tmp_path / "a.gsz").read_bytes())
    rng = np.random.default_rng(0)
    for trial in range(80):  # corrupt payloads behind the container's CRC (it would catch file flips)
        bad = list(sections)
        k = int(rng.integers(len(bad)))
        p = bytearray(bad[k].payload)
        if not p:
            continue
        for _ in range(int(rng.integers(1, 4))):
            p[int(rng.integers(len(p)))] = int(rng.integers(256))
        if trial % 3 == 0:
            p = p[: int(rng.integers(len(p)))]
        bad[k] = Section(bad[k].name, bad[k].codec, bytes(p))
        try:
            out = decode_bytes(pack_gsz(header, bad))
        except FormatError:
            continue
        assert len(out) == 600 and torch.isfinite(out.means).all()


@pytest.mark.parametrize("kw", [{"views": 0}, {"views": 2.5}, {"probes": 0}, {"quantile": 1.0},
                                {"levels": 0}, {"levels": 9}, {"pos_bits": 40}, {"quat_step": -1},
                                {"shN_step": -0.1}, {"shN_step": True}, {"shN_band_gain": 0.5}])
def test_bad_importance_params(kw):
    with pytest.raises(GscompError):
        I.Importance(**kw)


def test_compact_on_unrenderable_values_is_one_named_line(tmp_path, random_splats):
    """Finite input beyond what float32 rendering holds: coordinates of 3e38 gave "look_at: eye and
    target are the same point", a colour of 1e30 (an inf score) "dq_quantize: one weight >= 0 per
    target"; now the importance stage says why, and the colour meets the same refusal as without it."""
    src = random_splats(200, sh_degree=1, seed=4)
    src.means[:, 0] = torch.where(torch.arange(200) % 2 == 0, 3e38, -3e38)
    with pytest.raises(GscompError, match="cannot place views around this scene.*rescale it"):
        encode_gsz(src, tmp_path / "a.gsz", compact(dq=True))
    src = random_splats(200, sh_degree=1, seed=4)
    src.sh0[7, 0, 1] = 1e30
    with pytest.raises(GscompError, match="^sh0: values too large"):
        encode_gsz(src, tmp_path / "a.gsz", compact(dq=True))
    assert not (tmp_path / "a.gsz").exists()
    snapped = I._snap(np.array([np.inf, 1e300, np.nan, -1.0, 3.0]))
    assert np.array_equal(snapped, [I.SNAP_MAX, I.SNAP_MAX, 0.0, 0.0, 3.0])


def test_a_grid_coarser_than_the_gaussians_is_said(tmp_path, random_splats):
    """Two clusters 1e6 apart: every preset's grid steps are 35-1000x the Gaussians' size and the
    positions collapsed without a word; a normal scene gets no warning. (A DataWarning: a
    `warning: ...` line in the CLI, test_cli_ux.)"""
    from gscomp.errors import DataWarning

    src = random_splats(400, sh_degree=0, seed=6)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        encode_gsz(src, tmp_path / "a.gsz", Pipeline.preset("low"))
    assert not [w for w in seen if issubclass(w.category, DataWarning)]
    src.means[200:] += 1e6
    for preset, bits in (("lossless-ish", 19), ("high", 16)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            encode_gsz(src, tmp_path / "a.gsz", Pipeline.preset(preset))
        said = [str(w.message) for w in seen if issubclass(w.category, DataWarning)]
        assert len(said) == 1 and said[0].startswith(f"positions: the {bits}-bit grid's step is "), said
        assert said[0].endswith("compress the parts as separate files")
        assert ("use more bits" in said[0]) == (bits < 19)


@pytest.mark.parametrize("override, message", [
    ("pipeline.stages.positions.core=0.1", "positions.core must be 0 (a grid over the bounding box) or a number in 0.5..1000, got 0.1"),
    ("pipeline.stages.positions.adaptive=1", "positions.adaptive must be true or false, got 1"),
    ("pipeline.stages.attributes.quat_step=0.6", "attributes.quat_step must be a number in [0, 0.5], got 0.6"),
    ("pipeline.stages.attributes.sh0_step=-1", "attributes.sh0_step must be a number >= 0, got -1"),  # copied
    ("pipeline.stages.attributes.size_quantile=1", "attributes.size_quantile must be a number in (0, 1), got 1"),
    ("pipeline.stages.attributes.dependent_quant=yes", "attributes.dependent_quant must be true or false, got 'yes'"),
    ("pipeline.stages.importance.quantile=0", "importance.quantile must be a number in (0, 1), got 0"),
    ("pipeline.stages.importance.sh0_step=-1", "importance.sh0_step must be a number >= 0, got -1"),
    ("+pipeline.stages.importance.max_res=8", "importance.max_res must be an integer in 16..4096, got 8"),
    ("+pipeline.stages.importance.cameras=front", "importance.cameras must be auto, train or sphere, got 'front'"),
])
def test_bad_compact_params_are_one_named_line(override, message):
    """Every post-hoc stage param is checked the same way: the key, the valid range, the value."""
    with pytest.raises(GscompError) as e:
        Pipeline.preset("compact", [override])
    assert str(e.value) == message


def test_adaptive_needs_importance_stage(tmp_path, random_splats):
    cfg = compact()
    del cfg["stages"]["importance"]
    with pytest.raises(GscompError, match="importance stage"):
        encode_gsz(random_splats(50, sh_degree=0), tmp_path / "a.gsz", cfg)
    with pytest.raises(GscompError):
        P.Attributes(adaptive="yes")
    # params only written when used: files of the other presets keep their exact headers
    assert "adaptive" not in P.Attributes().describe() and "adaptive" not in P.Positions().describe()


def test_empty_and_tiny_scenes(tmp_path, random_splats):
    for n in (0, 1, 5):
        for dq in (False, True):
            src = random_splats(n, sh_degree=2, seed=n)
            encode_gsz(src, tmp_path / "a.gsz", compact(dq=dq))
            assert len(decode_gsz(tmp_path / "a.gsz")) == n


@pytest.mark.slow
def test_real_biker_compact_beats_medium(tmp_path, monkeypatch):
    from gscomp.codec import entropy as E
    from gscomp.io import load_splats

    src = load_splats(shared("splats/biker.compressed.ply"))
    st = encode_gsz(src, tmp_path / "b.gsz", compact(views=8))
    med = yaml.safe_load((ROOT / "configs" / "pipeline" / "medium.yaml").read_text())
    st_med = encode_gsz(src, tmp_path / "m.gsz", med)
    assert st["total_bytes"] < 0.9 * st_med["total_bytes"]
    seen = []  # real (spatially ordered) data: some streams take the context coding
    run = E._ctx_run
    monkeypatch.setattr(E, "_ctx_run", lambda blocks, counts, what="": seen.extend(counts) or run(blocks, counts, what))
    out = decode_gsz(tmp_path / "b.gsz")
    assert len(out) == len(src) and sum(seen) >= len(src)
    prev = E.set_backend("constriction")  # the pure-Python context decoder gives the same scene
    try:
        slow = decode_gsz(tmp_path / "b.gsz")
    finally:
        E.set_backend(prev)
    for f in ("means", "quats", "scales", "opacities", "sh0"):
        assert torch.equal(getattr(out, f), getattr(slow, f))


def test_header_inconsistencies_are_format_errors(tmp_path, random_splats):
    import copy

    encode_gsz(random_splats(300, sh_degree=0, seed=7), tmp_path / "a.gsz", compact())
    header, sections = unpack_gsz((tmp_path / "a.gsz").read_bytes())
    stages = header["pipeline"]["stages"]
    variants = []
    h = copy.deepcopy(header)  # attributes no longer adaptive: its sections have the wrong codec
    h["pipeline"]["stages"][2].pop("adaptive")
    variants.append(h)
    h = copy.deepcopy(header)  # no importance stage before the adaptive stages
    h["pipeline"]["stages"] = stages[1:]
    variants.append(h)
    h = copy.deepcopy(header)  # fewer levels than the stored classes use
    h["pipeline"]["stages"][0]["levels"] = 1
    variants.append(h)
    for v in variants:
        with pytest.raises(FormatError):
            decode_bytes(pack_gsz(v, [s for s in sections if v["pipeline"]["stages"][0]["type"] == "importance"
                                      or not s.name.startswith("importance/")]))
    # an encoder-only param out of range (`Stage.encoder_params`) is no inconsistency: unused here
    h = copy.deepcopy(header)
    h["pipeline"]["stages"][0]["views"] = 0
    assert torch.equal(decode_bytes(pack_gsz(h, sections)).means, decode_bytes(pack_gsz(header, sections)).means)


def test_canonical_quats_same_covariance_free_index(tmp_path, random_splats):
    from gscomp.splats import quat_to_rotmat

    q = np.random.default_rng(0).normal(size=(2000, 4))
    q[0] = 0.0  # zero quaternion = identity
    s = np.exp(np.random.default_rng(1).normal(size=(2000, 3)))
    c = P.canonical_quats(q)

    def cov(quat):
        r = quat_to_rotmat(torch.from_numpy(quat)).numpy()
        return (r * s[:, None, :] ** 2) @ r.transpose(0, 2, 1)

    qn = np.where(np.linalg.norm(q, axis=1, keepdims=True) > 0, q, [1.0, 0, 0, 0])
    qn = qn / np.linalg.norm(qn, axis=1, keepdims=True)
    assert np.abs(cov(qn) - cov(c)).max() < 1e-9
    assert (np.abs(c[:, 0]) >= np.abs(c[:, 1:]).max(1)).all()
    # in a file: the smallest-three index stream is constant, so it costs (next to) nothing
    src = random_splats(4000, sh_degree=0, seed=8)
    cfg = compact()
    cfg["stages"]["attributes"].update(sort_scales=False, size_levels={}, quat_axes=False)
    a = encode_gsz(src, tmp_path / "a.gsz", cfg)["sections"]["attributes/quats"]
    cfg["stages"]["attributes"]["canonical_quats"] = False
    b = encode_gsz(src, tmp_path / "b.gsz", cfg)["sections"]["attributes/quats"]
    assert a < b - 4000 * 1.5 / 8  # random rotations: the index costs ~2 bits without it
    with pytest.raises(GscompError):
        P.Attributes(canonical_quats=1)


def test_sort_axes_same_gaussians_sorted_scales(tmp_path, random_splats):
    from gscomp.splats import quat_to_rotmat

    rng = np.random.default_rng(2)
    q = rng.normal(size=(3000, 4))
    q[:4] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]  # every Shepperd branch, exactly
    s = rng.normal(size=(3000, 3)) * 0.5
    q2, s2 = P.sort_axes(q, s)

    def cov(quat, sc):
        r = quat_to_rotmat(torch.from_numpy(quat)).numpy()
        return (r * np.exp(2 * sc)[:, None, :]) @ r.transpose(0, 2, 1)

    a = cov(q / np.linalg.norm(q, axis=1, keepdims=True), s)
    assert np.abs(a - cov(q2, s2.astype(np.float64))).max() < 1e-5 * np.abs(a).max()
    assert (np.diff(s2, axis=1) <= 0).all()
    # in a file: scales decode sorted (largest first), the Gaussians are unchanged
    src = random_splats(3000, sh_degree=0, seed=9)
    encode_gsz(src, tmp_path / "a.gsz", compact())
    out = decode_gsz(tmp_path / "a.gsz")
    assert (np.diff(out.scales.numpy(), axis=1) <= 0).all()
    ref = in_morton_order(src, compact())
    c_in = cov(ref.quats.double().numpy() / ref.quats.double().norm(dim=1, keepdim=True).numpy(), ref.scales.double().numpy())

    def rel_err(o):
        c_out = cov(o.quats.double().numpy(), o.scales.double().numpy())
        return np.median(np.abs(c_in - c_out).max((1, 2)) / np.abs(c_in).max((1, 2)))

    cfg = compact()
    cfg["stages"]["attributes"].update(sort_scales=False, size_levels={}, quat_axes=False)
    encode_gsz(src, tmp_path / "b.gsz", cfg)
    unsorted = rel_err(decode_gsz(tmp_path / "b.gsz"))
    assert rel_err(out) < 1.3 * unsorted  # only quantization error, as without sorting
    with pytest.raises(GscompError):
        P.Attributes(sort_scales=True)  # needs adaptive + canonical_quats


def sized_compact(levels: dict, quantile: float = 0.5) -> dict:
    cfg = compact(axes="quats" not in levels)  # (quat_axes has the quaternions' own level)
    cfg["stages"]["attributes"].update(size_levels=levels, size_quantile=quantile)
    return cfg


def test_size_levels_coarsen_small_gaussians_only(tmp_path, random_splats):
    """Steps of the fields in size_levels grow 2x per halving of the decoded largest scale below
    the size_quantile; larger Gaussians keep their class step; bytes shrink; decode is exact."""
    from gscomp.codec import entropy as E

    src = random_splats(3000, sh_degree=0, seed=12)
    src.scales[:] = src.scales + torch.linspace(-3, 1, 3000)[torch.randperm(3000, generator=torch.Generator().manual_seed(0))][:, None]
    base = encode_gsz(src, tmp_path / "a.gsz", sized_compact({"quats": 0}))  # (quaternions, as with size levels)
    cfg = sized_compact({"quats": 3, "scales": 2, "sh0": 2}, 0.6)
    sized = encode_gsz(src, tmp_path / "b.gsz", cfg)
    encode_gsz(src.clone(), tmp_path / "c.gsz", cfg)
    assert (tmp_path / "b.gsz").read_bytes() == (tmp_path / "c.gsz").read_bytes()
    assert sized["sections"]["attributes/quats"] < 0.93 * base["sections"]["attributes/quats"]
    assert sized["sections"]["attributes/sh0"] < 0.97 * base["sections"]["attributes/sh0"]
    assert sized["sections"]["attributes/scales"] < 0.97 * base["sections"]["attributes/scales"]
    out = decode_gsz(tmp_path / "b.gsz")
    assert decode_gsz(tmp_path / "b.gsz").quats.equal(out.quats)
    _, sections = unpack_gsz((tmp_path / "b.gsz").read_bytes())
    cls = E.decode_symbols({s.name: s for s in sections}["importance/classes"].payload, 3000)
    ref = in_morton_order(src, cfg)
    ref_q, ref_s = P.sort_axes(ref.quats.numpy(), ref.scales.numpy())
    a = cfg["stages"]["attributes"]
    # the decoder's size level, recomputed here from the decoded largest scale
    thr = P.Attributes(**{k: v for k, v in a.items() if k != "type"})._size_thresholds(ref_s[:, 0])
    big = np.rint(out.scales.numpy()[:, 0] / (a["scale_step"] * np.exp2(cls))).astype(np.int64)
    extra = P.Attributes._size_extra(thr, 4, big[:, None].repeat(3, 1), cls)
    assert extra.min() == 0 and extra.max() == 4  # scene sizes span more than 4 halvings
    s_err = np.abs(out.scales.numpy() - ref_s)  # largest: class step; the gaps: up to 2 size levels
    assert (s_err[:, 0] <= 0.5 * a["scale_step"] * np.exp2(cls) + 1e-5).all()
    assert (s_err[:, 1:] <= 0.5 * a["scale_step"] * np.exp2(cls + np.minimum(extra, 2))[:, None] + 1e-5).all()
    assert s_err[extra >= 2, 1:].max() > 0.5 * a["scale_step"] * np.exp2(cls[extra >= 2] + 1).min()
    sh0_err = (out.sh0 - ref.sh0).abs().numpy().reshape(-1, 3).max(1)
    assert (sh0_err <= 0.5 * a["sh0_step"] * np.exp2(cls + np.minimum(extra, 2)) + 1e-5).all()
    assert sh0_err[extra >= 2].max() > 0.5 * a["sh0_step"] * np.exp2(cls[extra >= 2] + 1).min()
    dots = np.abs((P.canonical_quats(ref_q) * out.quats.numpy()).sum(1))
    assert dots[(cls == 0) & (extra == 0)].min() > 0.9995  # large, important Gaussians stay exact
    assert dots[extra == 3].min() < dots[(cls == 0) & (extra == 0)].min()


def test_size_levels_bad_params_and_corrupt_counts(tmp_path, random_splats):
    for kw in [{"size_levels": {"means": 1}}, {"size_levels": {"quats": 9}}, {"size_levels": {"quats": 1.5}},
               {"size_levels": {"quats": 1}, "size_quantile": 1.0},
               {"size_levels": {"means": 0}}, {"size_quantile": 0.0}]:  # (checked with every level 0 too)
        with pytest.raises(GscompError):
            P.Attributes(adaptive=True, canonical_quats=True, sort_scales=True, **kw)
    with pytest.raises(GscompError, match="sort_scales"):
        P.Attributes(adaptive=True, size_levels={"quats": 1})
    src = random_splats(500, sh_degree=0, seed=13)
    encode_gsz(src, tmp_path / "a.gsz", sized_compact({"quats": 2, "opacities": 1}))
    header, sections = unpack_gsz((tmp_path / "a.gsz").read_bytes())
    i = [s.name for s in sections].index("attributes/quats")
    bad = list(sections)
    p = bytearray(bad[i].payload)
    p[1] = 3  # level count != the header's
    bad[i] = Section(bad[i].name, bad[i].codec, bytes(p))
    with pytest.raises(FormatError, match="size level count"):
        decode_bytes(pack_gsz(header, bad))
    j = [s.name for s in sections].index("attributes/scales")
    encode_gsz(src, tmp_path / "b.gsz", sized_compact({"scales": 2}))
    header_b, sections_b = unpack_gsz((tmp_path / "b.gsz").read_bytes())
    for cut in (1, 2, 5, 11, len(sections_b[j].payload) - 1):  # truncated sized scales
        bad_b = list(sections_b)
        bad_b[j] = Section(bad_b[j].name, bad_b[j].codec, bytes(sections_b[j].payload[:cut]))
        with pytest.raises(FormatError):
            decode_bytes(pack_gsz(header_b, bad_b))
    for cut in (1, 3, 7):
        bad[i] = Section(bad[i].name, bad[i].codec, bytes(sections[i].payload[:cut]))
        with pytest.raises(FormatError):
            decode_bytes(pack_gsz(header, bad))


def test_importance_scores_on_the_training_views(random_splats):
    """In train-and-compress the importance stage renders the real training cameras (here: all of
    them look away from the first half of the Gaussians, which must then score zero)."""
    from types import SimpleNamespace

    from gscomp.camera import Camera

    src = random_splats(200, sh_degree=0, seed=4)
    src.means[:100, 2] = -5.0  # behind every camera below
    src.means[100:, 2] = 5.0
    cams = [Camera.look_at((0.1 * i, 0.0, 0.0), (0.1 * i, 0.0, 5.0), (0.0, -1.0, 0.0), 60.0, 400, 300, name=f"c{i}")
            for i in range(6)]
    state = SimpleNamespace(trainer=SimpleNamespace(scene=SimpleNamespace(train=cams)))
    stage = I.Importance(views=3, max_res=64)
    stage.bake(src, state)
    assert len(stage._cams) == 3 and max(stage._cams[0].width, stage._cams[0].height) == 64
    imp = I.importance_scores(src, 3, STEPS, 14, cams=stage._cams)
    assert (imp[:100] == 0).all() and (imp[100:] > 0).mean() > 0.5
    # no state: post-hoc input falls back to the sphere (auto) or refuses (train)
    stage.bake(src, None)
    assert stage._cams is None
    with pytest.raises(GscompError, match="needs cameras"):
        I.Importance(cameras="train").bake(src, None)
    stage.bake(src, SimpleNamespace(cameras=cams[:2]))  # post-hoc cameras (compress --cameras)
    assert len(stage._cams) == 2
    stage = I.Importance(views=3, max_res=64, cameras="sphere")  # sphere: given cameras are not used
    stage.bake(src, SimpleNamespace(cameras=cams))
    assert stage._cams is None
    with pytest.raises(GscompError, match="cameras"):
        I.Importance(cameras="front")


def test_importance_sphere_views_are_max_res_wide(tmp_path, random_splats, monkeypatch):
    """Without cameras the sphere views are ``max_res`` px (1024 by default): ranked from small
    views, small Gaussians that show in large ones got coarse steps (`compact` on biker: 6.5 dB
    below SPZ at 1024 px from 128 px views)."""
    from gscomp.render import cpu

    sizes = []
    fisher = cpu.fisher_cpu
    monkeypatch.setattr(cpu, "fisher_cpu", lambda s, cam, *a, **k: sizes.append((cam.width, cam.height)) or fisher(s, cam, *a, **k))
    src = random_splats(300, sh_degree=0, seed=5)
    cfg = compact(views=2)
    encode_gsz(src, tmp_path / "a.gsz", cfg)
    assert sizes == [(I.VIEW_RES, I.VIEW_RES)] * 2 and I.VIEW_RES == 1024
    sizes.clear()
    cfg["stages"]["importance"]["max_res"] = 48
    encode_gsz(src, tmp_path / "b.gsz", cfg)
    assert sizes == [(48, 48)] * 2
    assert gsz_info(tmp_path / "b.gsz")["pipeline"]["stages"][0]["max_res"] == 48  # (an encoder choice, written)


def test_dq_trellis_native_matches_reference_and_beats_rounding(monkeypatch):
    """Dependent quantization: the native Viterbi and the numpy reference pick the same levels,
    the decoder's prefix-XOR rebuilds the encoder's reconstructions, and at the level entropy of
    plain rounding (step 2 on its grid) it has clearly less squared error."""
    from gscomp.codec import quant as Q

    def entropy(k):
        _, c = np.unique(k, return_counts=True)
        p = c / c.sum()
        return float(-(p * np.log2(p)).sum())

    rng = np.random.default_rng(0)
    seqs = [rng.laplace(0, 6, 500), rng.uniform(-40, 40, 500), np.abs(rng.laplace(0, 2, 500)), np.zeros(0)]
    for lam in (0.0, None):
        for nonneg in (False, True):
            native = Q.dq_quantize(seqs, nonneg, lam)
            with monkeypatch.context() as m:
                m.setattr(Q, "_rans", lambda: None)
                ref = Q.dq_quantize(seqs, nonneg, lam)
            for t, (k, r), (k2, r2) in zip(seqs, native, ref):
                assert np.array_equal(k, k2) and np.array_equal(r, r2)
                assert np.array_equal(Q.dq_unpack(k), r)
                assert np.array_equal(Q.dq_unpack_many([k])[0], r)
                if nonneg:
                    assert r.min(initial=0) >= 0
    for t in (rng.laplace(0, 6, 20000), rng.uniform(-40, 40, 20000)):
        (k, r), = Q.dq_quantize([t], lam=0.0)
        sq = 2 * np.rint(t / 2)
        gain_db = 10 * np.log10(((t - sq) ** 2).mean() / ((t - r) ** 2).mean())
        assert gain_db - 6.02 * (entropy(k) - entropy(sq / 2)) > 0.6  # net of any extra bits
        assert np.abs(t - r).max() <= 2 + 1e-9  # never more than one full step off
    # rate-aware search (default lambda): fewer bits on a low-rate stream, at some extra error
    t = rng.laplace(0, 1.5, 4000)
    (k0, r0), = Q.dq_quantize([t], lam=0.0)
    (k1, r1), = Q.dq_quantize([t])
    assert entropy(k1) < entropy(k0) - 0.03 and ((t - r1) ** 2).mean() < 0.3
    with pytest.raises(GscompError):
        Q.dq_quantize([np.array([np.nan])])


def test_dq_rate_table_is_bounded_by_a_window_not_the_value_range():
    # one opacity logit of 1e8 in a 100-Gaussian file made the rate table as wide as its range
    # (11 GB); the table now spans at most DQ_RATE_SPAN levels and the outlier is still coded
    import tracemalloc

    from gscomp.codec import quant as Q

    rng = np.random.default_rng(1)
    t = np.concatenate([rng.laplace(0, 3, 2000), [4e6]])
    tracemalloc.start()
    (k, r), = Q.dq_quantize([t])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, peak  # the whole range's table took ~100 MB here
    assert np.abs(t - r).max() <= 2 + 1e-9 and np.array_equal(Q.dq_unpack(k), r)
    (k2, r2), = Q.dq_quantize([t[:-1]])  # the bulk is quantized as without the outlier
    assert (k[:-1] != k2).mean() < 0.01


def test_dq_trellis_weights(monkeypatch):
    """Per-value error weights: all-ones weights change nothing, native and numpy agree, the
    weighted search has the least weighted error (it is optimal for it), and the high-weight
    values get less error than without weights; bad weights are refused."""
    from gscomp.codec import quant as Q

    rng = np.random.default_rng(3)
    t = rng.laplace(0, 4, 3000)
    w = np.where(rng.random(3000) < 0.3, 4.0, 0.25)
    (k0, r0), = Q.dq_quantize([t], lam=0.0)
    (k1, r1), = Q.dq_quantize([t], lam=0.0, weights=[np.ones(3000)])
    assert np.array_equal(k0, k1)
    for lam in (0.0, None):
        (kw, rw), = Q.dq_quantize([t], lam=lam, weights=[w])
        with monkeypatch.context() as m:
            m.setattr(Q, "_rans", lambda: None)
            (kr, rr), = Q.dq_quantize([t], lam=lam, weights=[w])
        assert np.array_equal(kw, kr) and np.array_equal(rw, rr) and np.array_equal(Q.dq_unpack(kw), rw)
    (kw, rw), = Q.dq_quantize([t], lam=0.0, weights=[w])
    assert (w * (t - rw) ** 2).sum() < (w * (t - r0) ** 2).sum()
    hi = w > 1
    assert ((t - rw)[hi] ** 2).mean() < 0.8 * ((t - r0)[hi] ** 2).mean()
    for bad in ([np.ones(5)], [-w], [w, w]):
        with pytest.raises(GscompError):
            Q.dq_quantize([t], weights=bad)


def test_compact_uses_importance_sensitivity_in_the_trellis(tmp_path, random_splats, monkeypatch):
    """The importance stage hands per-field sensitivities to the trellis (encoder only): the file
    changes, its sensitivity-weighted error drops, and it decodes with the same decoder."""
    src = random_splats(3000, sh_degree=0, seed=22)
    sens = {}
    orig = I.importance_scores

    def spy(*a, **k):
        out = orig(*a, **k)
        sens.update(k["per_field"])
        return out

    monkeypatch.setattr(I, "importance_scores", spy)
    encode_gsz(src, tmp_path / "w.gsz", compact(dq=True))
    assert set(sens) == {"means", "quats", "scales", "opacities", "sh0"}
    monkeypatch.setattr(P, "DQ_WEIGHT_CLIP", 1.0)  # every weight clipped to 1: the unweighted search
    encode_gsz(src, tmp_path / "u.gsz", compact(dq=True))
    assert (tmp_path / "w.gsz").read_bytes() != (tmp_path / "u.gsz").read_bytes()
    ref = in_morton_order(src, compact())
    err = {}
    for name in ("w", "u"):
        out = decode_gsz(tmp_path / f"{name}.gsz")
        e = ((out.sh0 - ref.sh0) ** 2).reshape(len(ref), -1).sum(1).double().numpy()
        err[name] = float((sens["sh0"] * e).sum())
    assert err["w"] < err["u"]


def test_compact_dependent_quant_less_error_same_bytes(tmp_path, random_splats, monkeypatch):
    """dependent_quant in a file: bytes about those of plain rounding with the same steps, clearly
    less error on every classed field, errors within one step of the class, exact decode. (Plain
    squared error: the search's sensitivity weights, which trade it for render error, are off here
    and tested in test_compact_uses_importance_sensitivity_in_the_trellis.)"""
    monkeypatch.setattr(P, "DQ_WEIGHT_CLIP", 1.0)
    src = random_splats(4000, sh_degree=0, seed=21)
    files = {}
    for dq in (False, True):
        p = tmp_path / f"{dq}.gsz"
        files[dq] = (encode_gsz(src, p, compact(dq=dq))["total_bytes"], decode_gsz(p))
    assert decode_gsz(tmp_path / "True.gsz").sh0.equal(files[True][1].sh0)
    assert files[True][0] < 1.05 * files[False][0]
    ref = in_morton_order(src, compact())
    _, ref_s = P.sort_axes(ref.quats.numpy(), ref.scales.numpy())

    def mse(out, f):
        a = out.scales.numpy() if f == "scales" else getattr(out, f).numpy().reshape(len(out), -1)
        b = ref_s if f == "scales" else getattr(ref, f).numpy().reshape(len(ref), -1)
        return float(((a - b) ** 2).mean())

    for f in ("opacities", "sh0", "scales"):
        assert mse(files[True][1], f) < 0.9 * mse(files[False][1], f), f
    a = compact()["stages"]["attributes"]
    assert float((files[True][1].opacities - ref.opacities).abs().max()) <= a["opacity_step"] * 8 + 1e-5
    for kw in [{"dependent_quant": 1}, {"dependent_quant": True, "adaptive": False}]:
        with pytest.raises(GscompError, match="dependent_quant"):
            P.Attributes(**kw)


@pytest.mark.parametrize("dq", [False, True])
def test_shN_classed_in_column_chunks_same_bytes(tmp_path, random_splats, monkeypatch, dq):
    """shN is classed a few columns at a time (bounded memory on large scenes), when encoding
    (progress reported per pass) and when decoding: one column per pass and all 45 at once write
    the same file and decode it to the same scene, within the classes' steps of the source."""
    src = random_splats(1500, sh_degree=3, seed=31)
    with torch.no_grad():
        src.shN.mul_(10)  # values of many steps (misplaced columns would show)
    files, shN = {}, {}
    for cols in (45, 1, 2):  # all columns at once, one per pass, two per pass (the last one short)
        monkeypatch.setattr(P, "SHN_CHUNK_COLS", cols)
        monkeypatch.setattr(P, "SHN_PASS_VALUES", 0)  # no wider passes for this small scene
        p = tmp_path / f"{cols}.gsz"
        calls = []
        encode_gsz(src, p, compact(views=2, dq=dq), progress=lambda *a: calls.append(a))
        files[cols] = p.read_bytes()
        assert [c[1:] for c in calls if c[0] == "attributes: shN columns"] == [
            (min(j + cols, 45), 45) for j in range(0, 45, cols)]
        shN[cols] = decode_bytes(files[45]).shN
    assert len(set(files.values())) == 1
    assert all(s.equal(shN[45]) for s in shN.values())
    ref = in_morton_order(src, compact())
    err = (shN[45] - ref.shN).abs()
    step = compact()["stages"]["attributes"]["shN_step"]
    assert 0 < float(err.max()) <= step * 2 ** 3 + 1e-5  # classes 0..3: at most one step of class 3
    assert float(err.mean()) < 2 * step < 0.2 * float(ref.shN.abs().mean())  # misplaced columns: ~1.1


def _pruning(cfg, prune: float) -> dict:
    cfg["stages"]["importance"].update(prune=prune, max_res=64)
    return cfg


def _fake_scores(monkeypatch, src, scores):
    """The importance scores of ``src``'s rows, whatever order they are scored in (by position)."""
    by_row = {}
    monkeypatch.setattr(I, "snapped_scores", lambda s, *a, **k: np.array([by_row[r] for r in map(tuple, s.means.tolist())]))
    return lambda: by_row.update(zip(map(tuple, src.means.tolist()), scores))


def test_importance_prune_drops_what_barely_shows(tmp_path, random_splats, monkeypatch, said):
    """``prune`` p: with sphere views, the Gaussians scoring below p times the reference score
    (taken over all of them) are not coded; the others keep the classes they had."""
    src = random_splats(500, sh_degree=1, seed=6)
    scores = np.linspace(1.0, 2.0, 500)
    scores[1::10] = 1e-5  # 50 of 500 barely show
    _fake_scores(monkeypatch, src, scores)()
    encode_gsz(src, tmp_path / "a.gsz", _pruning(compact(views=2), 1e-3))
    out = decode_gsz(tmp_path / "a.gsz")
    assert len(out) == 450 and "note: importance: pruned 50 of 500 Gaussians (10.0%)" in said.text()
    kept = np.flatnonzero(scores > 1e-5)
    # the kept ones, by their decoded positions and colours (the file keeps its Morton order)
    key = lambda m: np.lexsort(np.round(m.numpy() / 0.05).T)  # noqa: E731
    ref = src[torch.from_numpy(kept)]
    a, b = ref.means[key(ref.means)], out.means[key(out.means)]
    assert (a - b).abs().max() < 0.05
    hdr = gsz_info(tmp_path / "a.gsz")["pipeline"]["stages"][0]
    assert hdr["prune"] == 1e-3
    # off (0): every Gaussian stays and the header is as before (no `prune` key)
    encode_gsz(src, tmp_path / "b.gsz", _pruning(compact(views=2), 0.0))
    assert len(decode_gsz(tmp_path / "b.gsz")) == 500
    assert "prune" not in gsz_info(tmp_path / "b.gsz")["pipeline"]["stages"][0]
    # an unbounded scene: its far background (outside the positions' core box) is never pruned
    src.means[1:100:10] *= 1000.0  # 10 of the 50 that barely show, far out
    _fake_scores(monkeypatch, src, scores)()
    encode_gsz(src, tmp_path / "c.gsz", _pruning(compact(views=2), 1e-3))
    out = decode_gsz(tmp_path / "c.gsz")
    assert len(out) == 460 and int((out.means.abs().max(1).values > 50).sum()) == 10


def test_importance_prune_keeps_everything_when_unsure(tmp_path, random_splats, monkeypatch, said):
    """Nothing is pruned from given cameras (16 of a capture's need not see what its others do),
    nor when so much barely shows from the sphere that the scene is likely seen from inside."""
    from gscomp.camera import Camera

    src = random_splats(400, sh_degree=0, seed=7)
    scores = np.linspace(1.0, 2.0, 400)
    scores[::10] = 0.0
    update = _fake_scores(monkeypatch, src, scores)
    update()
    cams = [Camera.look_at((0.0, 0.0, -3.0 - i), (0.0, 0.0, 0.0), (0.0, -1.0, 0.0), 60.0, 64, 48, name=f"c{i}") for i in range(2)]
    encode_gsz(src, tmp_path / "a.gsz", _pruning(compact(views=2), 1e-3), cameras=cams)
    assert len(decode_gsz(tmp_path / "a.gsz")) == 400 and "pruned" not in said.text()
    scores[: 400 // 4] = 0.0  # a quarter barely shows (and a tenth more): over the 20% bar
    update()
    encode_gsz(src, tmp_path / "b.gsz", _pruning(compact(views=2), 1e-3))
    assert len(decode_gsz(tmp_path / "b.gsz")) == 400
    text = said.text()
    assert "barely show from outside the scene" in text and "nothing was pruned (importance.prune)" in text


def test_importance_prune_scores_follow_the_morton_order(tmp_path, random_splats):
    """Scored in bake (so that pruned Gaussians are never coded), in the order the positions stage
    codes them in: when nothing is pruned the file is the same as one scored in encode, but for
    the header's `prune`."""
    src = random_splats(300, sh_degree=1, seed=8)
    src.opacities[:] = -1.0  # (none hidden behind the others, nor outside the views: every one scores > 0)
    src.means = torch.tanh(src.means) * 0.4  # (distinct depths: ties would be drawn in index order)
    encode_gsz(src, tmp_path / "a.gsz", _pruning(compact(views=3), 1e-30))
    encode_gsz(src, tmp_path / "b.gsz", _pruning(compact(views=3), 0.0))
    (ha, sa), (hb, sb) = (unpack_gsz((tmp_path / f"{x}.gsz").read_bytes()) for x in "ab")
    assert ha["n"] == hb["n"] == 300
    assert [(s.name, s.payload) for s in sa] == [(s.name, s.payload) for s in sb]
    assert ha["pipeline"]["stages"][0].pop("prune") == 1e-30 and ha["pipeline"] == hb["pipeline"]


def test_importance_prune_classes_follow_the_kept_gaussians(tmp_path, random_splats, monkeypatch):
    """After pruning, the positions stage orders the kept Gaussians on their own grid (the pruned
    outliers no longer stretch it): each Gaussian's class in the file is still the one of its own
    score, with the reference taken over all of them."""
    from gscomp.codec import entropy as E

    src = random_splats(400, sh_degree=0, seed=9)
    rng = np.random.default_rng(9)
    scores = 10.0 ** rng.uniform(-2.5, 0, 400)
    far = torch.argsort(src.means.abs().max(1).values)[-20:].numpy()  # the outermost 20
    scores[far] = 1e-7
    _fake_scores(monkeypatch, src, scores)()
    perms = []
    told = I.Importance.reordered
    monkeypatch.setattr(I.Importance, "reordered", lambda self, perm: perms.append(np.asarray(perm)) or told(self, perm))
    cfg = _pruning(compact(views=2), 1e-3)
    encode_gsz(src, tmp_path / "a.gsz", cfg)
    header, sections = unpack_gsz((tmp_path / "a.gsz").read_bytes())
    out = decode_gsz(tmp_path / "a.gsz")
    assert len(out) == 380
    got = E.decode_symbols(next(s for s in sections if s.name == "importance/classes").payload, 380)
    match = torch.cdist(out.means, src.means).argmin(1).numpy()  # decoded row -> source row
    assert len(set(match.tolist())) == 380 and not set(match.tolist()) & set(far.tolist())
    imp = cfg["stages"]["importance"]
    want = I.classes_of_scores(scores[match], imp["quantile"], imp["levels"], I.reference_score(scores, imp["quantile"]))
    assert len(set(want.tolist())) == 4 and np.array_equal(got, want)
    # (the positions stage did reorder what the importance stage handed it, in Morton order of the
    # grid of all 400)
    assert len(perms) == 1 and not np.array_equal(perms[0], np.arange(380))


def test_importance_prune_same_bytes_with_any_thread_count(tmp_path, random_splats):
    """Real scores (no stand-ins): what is pruned, and so the file, does not depend on the threads."""
    src = random_splats(600, sh_degree=1, seed=10)
    src.opacities[:60] = -12.0  # never drawn (alpha < 1/255): they score 0 from every view
    cfg = _pruning(compact(views=3), 1e-3)
    encode_gsz(src, tmp_path / "a.gsz", cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encode_gsz(src.clone(), tmp_path / "b.gsz", cfg)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "a.gsz").read_bytes() == (tmp_path / "b.gsz").read_bytes()
    out = decode_gsz(tmp_path / "a.gsz")
    assert len(out) <= 540 and float(out.opacities.min()) > -10


@pytest.mark.parametrize("prune", [-0.1, 1.0, True, "x"])
def test_bad_importance_prune(prune):
    with pytest.raises(GscompError, match="importance.prune"):
        I.Importance(prune=prune)
