"""Compression stages I: hash grid, residual VQ, learned masking, colour field, c3dgs pipeline."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from gscomp.stages.hashgrid import HashGrid, TinyMLP, contract_unit
from gscomp.errors import GscompError
from gscomp.stages.rvq import ResidualVQ, kmeans


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: OpenMP fan-out costs more than it gains (and the CI box is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------- hash grid
def _ref_encode(grid: HashGrid, x: torch.Tensor) -> torch.Tensor:
    """Slow, obviously-correct per-point loop with the tcnn formulas written out in Python ints."""
    table = grid.params.detach().double()
    hashmap = 2**grid.log2_hashmap_size
    out = torch.zeros(x.shape[0], grid.n_levels * grid.n_features, dtype=torch.float64)
    offset = 0
    for level in range(grid.n_levels):
        scale = float(torch.tensor(grid.per_level_scale ** level * grid.base_resolution - 1.0, dtype=torch.float32))
        res = math.ceil(scale) + 1
        size = min(res**3, hashmap)
        size = (size + 7) // 8 * 8
        for n in range(x.shape[0]):
            pos = [float(x[n, d]) * scale + 0.5 for d in range(3)]
            lo = [math.floor(p) for p in pos]
            fr = [p - l for p, l in zip(pos, lo)]
            acc = torch.zeros(grid.n_features, dtype=torch.float64)
            for corner in range(8):
                c = [lo[d] + ((corner >> d) & 1) for d in range(3)]
                w = 1.0
                for d in range(3):
                    w *= fr[d] if (corner >> d) & 1 else 1 - fr[d]
                if res**3 <= size:
                    idx = c[0] + c[1] * res + c[2] * res * res
                else:
                    idx = ((c[0] * 1) ^ (c[1] * 2654435761) ^ (c[2] * 805459861)) % 2**32
                acc += w * table[offset + idx % size]
            out[n, level * grid.n_features : (level + 1) * grid.n_features] = acc
        offset += size
    return out


def test_hashgrid_matches_per_point_reference():
    grid = HashGrid(n_levels=6, n_features_per_level=2, log2_hashmap_size=10, base_resolution=4, per_level_scale=1.9)
    with torch.no_grad():
        grid.params.normal_()  # large values so any indexing slip shows
    assert grid.dense[0] and not grid.dense[-1]  # both code paths are exercised
    x = torch.rand(40, 3, generator=torch.Generator().manual_seed(1))
    x[0] = 0.0
    x[1] = 1.0  # the corners of the unit cube
    got = grid(x).double()
    ref = _ref_encode(grid, x)
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)
    assert torch.allclose(grid.forward_exact(x), grid(x).detach(), atol=1e-5)


def test_hashgrid_layout_matches_tcnn_sizes():
    grid = HashGrid(n_levels=16, n_features_per_level=2, log2_hashmap_size=19, base_resolution=16, per_level_scale=1.447)
    assert grid.resolutions[0] == 16 and grid.dense[0]
    assert grid.sizes[-1] == 2**19 and not grid.dense[-1]
    assert grid.params.shape == (sum(grid.sizes), 2)
    assert all(s % 8 == 0 for s in grid.sizes)


def test_hashgrid_gradients_and_used_rows():
    grid = HashGrid(n_levels=4, log2_hashmap_size=8, base_resolution=2)
    x = torch.rand(10, 3)
    grid(x).square().sum().backward()
    touched = grid.params.grad.abs().sum(1) > 0
    used = grid.used_rows(x)
    assert not (touched & ~used).any()  # every row with gradient is reported as used


@pytest.mark.parametrize("cfg", [
    dict(n_levels=6, n_features_per_level=2, log2_hashmap_size=10, base_resolution=4, per_level_scale=1.9),
    dict(n_levels=16, n_features_per_level=2, log2_hashmap_size=12, base_resolution=16, max_resolution=1024),
    dict(n_levels=3, n_features_per_level=4, log2_hashmap_size=9, base_resolution=3, per_level_scale=3.0),
])
def test_native_hashgrid_matches_torch_oracle(cfg):
    """cuda/hashgrid_cpu.cpp against the PyTorch grid: the decoder path bit for bit, the training
    forward to float rounding, gradients w.r.t. the table and the used-row mask."""
    from gscomp.stages.hashgrid import _native

    if _native() is None:
        pytest.skip("native hash grid could not be built")
    grid = HashGrid(**cfg)
    with torch.no_grad():
        grid.params.normal_()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3000, 3, generator=g)
    x[0], x[1], x[2] = 0.0, 1.0, torch.tensor([1.0, 0.0, 0.5])
    assert torch.equal(grid.forward_exact(x), grid.forward_exact_torch(x))
    y_nat, y_ref = grid(x), grid.forward_torch(x)
    assert torch.allclose(y_nat, y_ref, atol=1e-5, rtol=1e-5)
    go = torch.randn(y_nat.shape, generator=g)
    (y_nat * go).sum().backward()
    g_nat, grid.params.grad = grid.params.grad.clone(), None
    (y_ref * go).sum().backward()
    assert torch.allclose(g_nat, grid.params.grad, atol=1e-4, rtol=1e-5)
    idx, _ = grid._corners(x)
    ref_used = torch.zeros(grid.params.shape[0], dtype=torch.bool)
    ref_used[idx.reshape(-1)] = True
    assert torch.equal(grid.used_rows(x), ref_used)


def test_native_hashgrid_gradient_independent_of_threads():
    from gscomp.stages.hashgrid import _native

    if _native() is None:
        pytest.skip("native hash grid could not be built")
    grid = HashGrid(n_levels=8, log2_hashmap_size=10, base_resolution=4, max_resolution=256)
    x = torch.rand(20000, 3, generator=torch.Generator().manual_seed(0))
    go = torch.randn(20000, grid.n_output_dims, generator=torch.Generator().manual_seed(1))
    grads = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        grid.params.grad = None
        (grid(x) * go).sum().backward()
        grads.append(grid.params.grad.clone())
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])


def test_mlp_exact_matches_matmul():
    mlp = TinyMLP(8, 12, width=16, n_hidden_layers=2)
    h = torch.randn(100, 8)
    assert torch.allclose(mlp.forward_exact(h), mlp(h).detach(), atol=1e-5)


def test_contract_unit_range():
    p = torch.randn(1000, 3) * 10
    u = contract_unit(p, torch.zeros(3), torch.ones(3))
    assert float(u.min()) >= 0 and float(u.max()) <= 1
    inside = torch.rand(10, 3) * 2 - 1
    assert torch.allclose(contract_unit(inside, torch.zeros(3), torch.ones(3)), inside * 0.25 + 0.5)


# ---------------------------------------------------------------------------- residual VQ
def test_kmeans_recovers_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 3, generator=g) * 10
    x = centres.repeat_interleave(50, 0) + torch.randn(200, 3, generator=g) * 0.01
    c = kmeans(x, 4, iters=10)
    assert torch.cdist(centres, c).min(1).values.max() < 0.1


def test_rvq_error_falls_with_more_stages():
    x = torch.randn(3000, 4, generator=torch.Generator().manual_seed(0))
    errs = []
    for r in (1, 2, 4, 6):
        vq = ResidualVQ(4, n_stages=r, codebook_size=16)
        vq.init_kmeans(x, iters=5)
        q, idx = vq(x)
        assert idx.shape == (3000, r) and int(idx.max()) < 16
        errs.append(float((q.detach() - x).square().mean()))
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.35 * errs[0]


def test_rvq_straight_through_gradients():
    x = torch.randn(200, 3, requires_grad=True)
    vq = ResidualVQ(3, n_stages=2, codebook_size=8)
    vq.init_kmeans(x)
    q, idx = vq(x)
    assert torch.allclose(q.detach(), ResidualVQ.lookup(idx, vq.codebooks.detach()))
    q.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))
    assert vq.codebooks.grad is not None and vq.codebooks.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- masking
def _state(splats, max_steps=100):
    from gscomp.train.state import TrainState

    lrs = {f: 1e-3 for f in ("means", "quats", "scales", "opacities", "sh0", "shN")}
    return TrainState(splats, lrs, max_steps=max_steps)


def test_masking_loss_gradients_and_pruning(random_splats):
    from gscomp.stages.masking import Masking

    st = _state(random_splats(50, sh_degree=1))
    stage = Masking(lambda_mask=0.1, threshold=0.01, prune_every=10)
    stage.attach(st)
    with torch.no_grad():
        st.params["mask"][:10] = -10.0  # sigmoid < 0.01: masked
    out = stage.transform(st.splats(), step=5)
    opa = torch.sigmoid(out.opacities)
    assert float(opa[:10].detach().max()) < 1e-6  # masked Gaussians are invisible...
    assert float(out.scales[:10].detach().max()) < -10  # ...and have no footprint
    assert torch.allclose(out.opacities[10:], st.params["opacities"][10:], atol=1e-3)  # others unchanged
    (opa.sum() + stage.loss(out, 5, st)).backward()
    g = st.params["mask"].grad[:, 0]
    assert bool((g[10:] != 0).all())  # straight-through: gradient reaches the kept masks
    assert float(g[10:].mean()) > 0
    st.zero_grad()
    stage.on_step_end(8, st)
    assert st.n == 50  # not a prune step
    stage.on_step_end(9, st)
    assert st.n == 40 and st.params["mask"].shape == (40, 1)
    st.check()
    with torch.no_grad():
        st.params["mask"][:5] = -10.0
    baked = stage.bake(st.splats().detach())
    assert len(baked) == 35


def test_masking_learns_to_drop_unneeded_gaussians(random_splats):
    """Optimise the mask loss against a fit term that only needs half of the Gaussians."""
    from gscomp.stages.masking import Masking

    st = _state(random_splats(40, sh_degree=0), max_steps=300)
    stage = Masking(lambda_mask=0.05, lr=0.1, prune_every=100)
    stage.attach(st)
    for step in range(300):
        out = stage.transform(st.splats(), step)
        # "image" term: the first 20 must stay opaque; the rest are free to vanish
        fit = (torch.sigmoid(out.opacities[:20]) - 0.9).square().sum()
        (fit + stage.loss(out, step, st)).backward()
        st.optimizer_step()
        st.zero_grad()
        stage.on_step_end(step, st)
    assert 20 <= st.n < 40


def test_colorfield_lr_decays_to_final_fraction(random_splats):
    from gscomp.stages.colorfield import ColorField

    st = _state(random_splats(30, sh_degree=1), max_steps=100)
    stage = ColorField(n_levels=4, log2_hashmap_size=8, base_resolution=4, max_resolution=32, mlp_width=8,
                       grid_lr=0.01, mlp_lr=0.002, lr_final=0.1)
    stage.attach(st)
    lr = lambda name: st.optimizers[name].param_groups[0]["lr"]  # noqa: E731
    stage.on_step_end(49, st)
    assert math.isclose(lr("colorfield_grid"), 0.01 * 0.1**0.5, rel_tol=1e-6)
    stage.on_step_end(99, st)
    assert math.isclose(lr("colorfield_grid"), 0.001, rel_tol=1e-6)
    assert math.isclose(lr("colorfield_mlp"), 0.0002, rel_tol=1e-6)


# ---------------------------------------------------------------------------- coding side
def _smooth_splats(n: int, seed: int = 0, sh_degree: int = 1):
    """Splats whose colour is a smooth function of position (what a colour field can represent)."""
    from gscomp.splats import Splats

    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * 2 - 1
    k = (sh_degree + 1) ** 2 - 1
    sh0 = torch.sin(2.5 * means).unsqueeze(1)
    shN = (0.2 * torch.cos(3 * means)).unsqueeze(1).repeat(1, k, 1)
    scales = torch.randn(n, 3, generator=g) * 0.5 - 4
    return Splats(means, torch.randn(n, 4, generator=g), scales, torch.randn(n, generator=g), sh0, shN)


def _roundtrip(stage, splats):
    from gscomp.stages import CodingContext, build_stage

    baked = stage.bake(splats)
    ctx = CodingContext(n=len(baked), sh_degree=baked.sh_degree, attrs={"means": baked.means})
    sections = stage.encode(baked, ctx)
    fresh = build_stage(stage.describe())  # the decoder only has the header's description
    return sections, fresh.decode({s.name: s for s in sections}, ctx)


def test_rvq_stage_roundtrip():
    from gscomp.stages.rvq import RVQ, unit_quats_w_nonneg

    s = _smooth_splats(3000)
    stage = RVQ(n_stages=4, codebook_size=32, kmeans_iters=5)
    sections, out = _roundtrip(stage, s)
    assert out["scales"].shape == (3000, 3) and out["quats"].shape == (3000, 4)
    # decoded values are exactly the codebook sums the encoder chose
    cs, cr = stage._codebooks16()
    idx = stage.vq_scale.indices(s.scales, cs)
    assert torch.equal(out["scales"], ResidualVQ.lookup(idx, cs))
    assert float((out["scales"] - s.scales).abs().mean()) < 0.1
    assert float((out["quats"] - unit_quats_w_nonneg(s.quats)).abs().mean()) < 0.1
    assert sum(len(x.payload) for x in sections) < 3000 * 28 / 4  # vs 28 raw float bytes per Gaussian




def test_exact_mlp_in_row_blocks_gives_the_same_bits(monkeypatch):
    """The decoder's MLP runs over blocks of rows (all rows at once took gigabytes for a wide MLP
    over many Gaussians): the same bits as one block."""
    from gscomp.stages import hashgrid as H

    g = torch.Generator().manual_seed(0)
    h = torch.randn(5000, 16, generator=g)
    ws = [(torch.randn(48, 16, generator=g), torch.randn(48, generator=g)),
          (torch.randn(9, 48, generator=g), torch.randn(9, generator=g))]
    whole = H.mlp_exact(h, ws)
    monkeypatch.setattr(H, "MLP_BLOCK_VALUES", 48 * 700)  # 700 rows a block: 8 blocks, the last one short
    assert torch.equal(H.mlp_exact(h, ws), whole) and whole.shape == (5000, 9)

def test_index_streams_beyond_int32_are_refused():
    """R-VQ indices and colour-field grid levels were cast to int32 after decoding, so a crafted
    stream of 2^32 + 5 (valid CRCs) decoded as index 5 instead of failing."""
    import numpy as np

    from gscomp import FormatError
    from gscomp.codec import entropy
    from gscomp.stages.rvq import decode_symbols

    ok = entropy.encode_symbols(np.array([5, 7, 2**31 - 1, -(2**31)], np.int64))
    assert decode_symbols(ok, 4).tolist() == [5, 7, 2**31 - 1, -(2**31)]
    for bad in (2**32 + 5, 2**31, -(2**31) - 1):
        with pytest.raises(FormatError, match="beyond int32"):
            decode_symbols(entropy.encode_symbols(np.array([5, bad, 3], np.int64)), 3)

def test_rvq_depths_follow_importance_classes(tmp_path):
    """rvq.depths: class c keeps its first depths[c] stages; fewer index bytes, exact decode."""
    from gscomp.codec import decode_gsz, encode_gsz
    s = _smooth_splats(3000, seed=5, sh_degree=0)
    stages = {"importance": {"type": "importance", "views": 4, "quantile": 0.5},
              "positions": {"type": "positions", "bits": 16},
              "rvq": {"type": "rvq", "n_stages": 3, "codebook_size": 32, "kmeans_iters": 3},
              "attributes": {"type": "attributes", "fields": ["opacities", "sh0"]}}
    encode_gsz(s, tmp_path / "full.gsz", {"name": "x", "stages": stages})
    stages["rvq"]["depths"] = [3, 2, 1]
    encode_gsz(s, tmp_path / "deep.gsz", {"name": "x", "stages": stages})
    assert (tmp_path / "deep.gsz").stat().st_size < (tmp_path / "full.gsz").stat().st_size - 1000
    full, part = decode_gsz(tmp_path / "full.gsz"), decode_gsz(tmp_path / "deep.gsz")
    assert torch.equal(full.means, part.means)
    same = (full.scales == part.scales).all(1)
    assert 0.1 < float(same.float().mean()) < 0.9  # class-0 rows keep all stages, the others do not
    assert float((part.quats[same] - full.quats[same]).abs().max()) == 0.0
    # hostile rvq payloads behind valid checksums: one-line FormatErrors, never a crash
    from gscomp import FormatError
    from gscomp.codec import decode_bytes
    from gscomp.codec.container import pack_gsz, unpack_gsz
    from gscomp.stages.base import Section
    from gscomp.stages.rvq import pack_blobs, unpack_blobs

    header, sections = unpack_gsz((tmp_path / "deep.gsz").read_bytes())
    idx = next(x for x in sections if x.name == "rvq/rvq.indices")
    blobs = unpack_blobs(idx.payload, 6)
    bad = [pack_blobs(blobs[:5]), pack_blobs([blobs[0]] * 6), pack_blobs(blobs[:5] + [blobs[5][:3]]),
           idx.payload[:-7], b"\xff" * 40]
    for payload in bad:
        secs = [Section(x.name, x.codec, payload) if x is idx else x for x in sections]
        with pytest.raises(FormatError) as ei:
            decode_bytes(pack_gsz(header, secs))
        assert "\n" not in str(ei.value)
    from gscomp.stages.base import build_stage

    for bad_depths in ([4], 3, [2, "x"], [1] * 7):
        with pytest.raises(GscompError, match="depths"):
            build_stage({"type": "rvq", "n_stages": 3, "depths": bad_depths})
    del stages["importance"]  # depths need the classes of an importance stage before rvq
    with pytest.raises(GscompError, match="importance stage"):
        encode_gsz(s, tmp_path / "bad.gsz", {"name": "x", "stages": stages})


def test_colorfield_roundtrip_and_unused_rows_dropped():
    from gscomp.stages.colorfield import ColorField

    s = _smooth_splats(2000)
    stage = ColorField(n_levels=6, log2_hashmap_size=11, base_resolution=4, max_resolution=32, fit_steps=100,
                       mlp_width=32, grid_lr=0.03)
    sections, out = _roundtrip(stage, s)
    assert out["sh0"].shape == (2000, 1, 3) and out["shN"].shape == (2000, 3, 3)
    err = float((out["sh0"] - s.sh0).abs().mean())
    assert err < 0.25 * float(s.sh0.abs().mean()), err  # the field learned the colour function
    # decoded colours equal the trained field's exact evaluation up to the 8-bit grid quantization
    from gscomp.stages.hashgrid import contract_unit

    u = contract_unit(s.means, stage.center, stage.half)
    direct = stage.model.mlp.forward_exact(stage.model.grid.forward_exact(u))
    assert float((direct[:, :3] - out["sh0"][:, 0]).abs().max()) < 0.05
    grid_bytes = len(next(x for x in sections if x.name == "colorfield.grid").payload)
    assert grid_bytes < stage.model.grid.params.numel()  # < 1 byte per table entry: unused rows are not coded



def test_colorfield_in_map_coordinates_and_float16_overflow(tmp_path):
    """The field's box was rounded to float16, so a scene in map coordinates (UTM, 10^5-10^6 m)
    got an infinite box and decoded to NaN colours. Values float16 cannot hold (R-VQ codebooks,
    MLP weights: the file's storage) are refused when encoding, not written as infinities."""
    from gscomp.codec import decode_gsz, encode_gsz
    from gscomp.stages.pipeline import Pipeline

    s = _smooth_splats(2000)
    cfg = {"name": "x", "sh_degree": None, "stages": {
        "positions": {"type": "positions", "bits": 18},
        "colorfield": {"type": "colorfield", "n_levels": 6, "log2_hashmap_size": 11, "base_resolution": 4,
                       "max_resolution": 32, "mlp_width": 32, "grid_lr": 0.03, "fit_steps": 100},
        "attributes": {"type": "attributes", "fields": ["quats", "scales", "opacities"]}}}
    err = []
    for offset in ([0.0, 0.0, 0.0], [3e5, 2e5, 100.0]):  # (at the origin; on a 200 m city block in UTM)
        scene = s.replace(means=s.means * 100 + torch.tensor(offset))
        encode_gsz(scene, tmp_path / "a.gsz", cfg)
        d = decode_gsz(tmp_path / "a.gsz")
        src = torch.cdist(d.means.double(), scene.means.double()).argmin(1)  # (decoded: in Morton order)
        err.append(float((d.sh0 - s.sh0[src]).abs().mean()))
    assert err[1] < 1.5 * err[0] < 0.3 * float(s.sh0.abs().mean()), err
    pipe = Pipeline.from_config(cfg)
    field = pipe.stages[pipe.names.index("colorfield")]
    field.fit(s)
    with torch.no_grad():
        field.model.mlp.layers[-1].bias[0] = 7e4  # (a diverged training run: finite in float32)
    with pytest.raises(GscompError, match="colorfield: MLP weights beyond float16's range"):
        encode_gsz(s, tmp_path / "b.gsz", pipe)
    with torch.no_grad():  # weights float16 holds, features it need not: the MLP's output overflows
        for lin in field.model.mlp.layers:
            lin.weight.fill_(6e4)
            lin.bias.fill_(6e4)
        field.model.grid.params.mul_(1e24)
    with pytest.raises(GscompError, match="stage 'colorfield' would decode sh0 to non-finite values"):
        encode_gsz(s, tmp_path / "b.gsz", pipe)
    big = s.replace(scales=s.scales.clone())
    big.scales[:40] = 7e4
    with pytest.raises(GscompError, match="rvq: codebook values beyond float16's range"):
        encode_gsz(big, tmp_path / "c.gsz", {"name": "x", "sh_degree": None, "stages": {
            "positions": {"type": "positions", "bits": 16}, "rvq": {"type": "rvq"},
            "attributes": {"type": "attributes", "fields": ["opacities", "sh0", "shN"]}}})
    assert not any(tmp_path.glob("[bc].gsz"))


def test_colorfield_shN_only_leaves_dc_to_the_gaussians():
    """targets=[shN]: the field predicts only view-dependent SH; sh0 is not owned (another stage codes it)."""
    from gscomp.stages.colorfield import ColorField

    s = _smooth_splats(1500)
    stage = ColorField(n_levels=6, log2_hashmap_size=11, base_resolution=4, max_resolution=32, fit_steps=100,
                       mlp_width=32, grid_lr=0.03, targets=["shN"])
    assert stage.owns == ("shN",)
    sections, out = _roundtrip(stage, s)
    assert set(out) == {"shN"} and out["shN"].shape == (1500, 3, 3)
    err = float((out["shN"] - s.shN).abs().mean())
    assert err < 0.5 * float(s.shN.abs().mean()) + 1e-3, err
    assert stage.n_out == 9  # 3 coefficients x RGB, no DC
    trained = stage.transform(s, step=10**6)
    assert torch.equal(trained.sh0, s.sh0)  # DC stays the Gaussians' own
    with pytest.raises(GscompError):
        ColorField(targets=["sh0"])

_DECODE_SCRIPT = r"""
import sys, torch, hashlib, pickle
torch.set_num_threads(int(sys.argv[1]))
from gscomp.stages import CodingContext, Section, build_stage
jobs = pickle.load(open(sys.argv[2], "rb"))
h = hashlib.sha256()
for desc, sections, means, n, deg in jobs:
    ctx = CodingContext(n=n, sh_degree=deg, attrs={"means": means})
    out = build_stage(desc).decode({s[0]: Section(*s) for s in sections}, ctx)
    for k in sorted(out):
        h.update(out[k].numpy().tobytes())
print(h.hexdigest())
"""


def test_decode_bit_exact_across_threads_and_processes(tmp_path):
    """Encode here; decode in fresh processes with 1 and 2 threads: identical bytes, also to ours."""
    import hashlib
    import pickle

    from gscomp.stages.colorfield import ColorField
    from gscomp.stages.rvq import RVQ

    s = _smooth_splats(5000, seed=3, sh_degree=2)
    jobs, h = [], hashlib.sha256()
    for stage in (ColorField(n_levels=6, log2_hashmap_size=11, base_resolution=4, max_resolution=64, fit_steps=20,
                             mlp_width=16), RVQ(n_stages=3, codebook_size=16, kmeans_iters=3)):
        sections, out = _roundtrip(stage, s)
        for k in sorted(out):
            h.update(out[k].numpy().tobytes())
        jobs.append((stage.describe(), [(x.name, x.codec, x.payload) for x in sections], s.means, len(s), 2))
    blob = tmp_path / "jobs.pkl"
    blob.write_bytes(pickle.dumps(jobs))
    digests = []
    for threads in (1, 2):
        r = subprocess.run([sys.executable, "-c", _DECODE_SCRIPT, str(threads), str(blob)], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        digests.append(r.stdout.strip().splitlines()[-1])
    assert digests[0] == digests[1] == h.hexdigest()


# ---------------------------------------------------------------------------- bytes in the real file
def _gsz_bytes(tmp_path, splats, stages: dict, state=None, name="x") -> tuple[int, object]:
    from gscomp.codec import decode_gsz, encode_gsz

    path = tmp_path / f"{name}.gsz"
    cfg = {"name": name, "sh_degree": None, "stages": {"positions": {"type": "positions", "bits": 16}, **stages}}
    encode_gsz(splats, path, cfg, state=state)
    return path.stat().st_size, decode_gsz(path)


def test_each_stage_reduces_file_bytes(tmp_path):
    """Against the post-hoc codec alone on the same splats, each stage makes the written file smaller."""
    from gscomp.stages.masking import Masking

    s = _smooth_splats(6000, sh_degree=3)
    posthoc, _ = _gsz_bytes(tmp_path, s, {"attributes": {"type": "attributes"}}, name="posthoc")
    # residual VQ for scales + rotations
    rvq, dec = _gsz_bytes(tmp_path, s, {
        "rvq": {"type": "rvq", "n_stages": 2, "codebook_size": 16, "kmeans_iters": 3},
        "attributes": {"type": "attributes", "fields": ["opacities", "sh0", "shN"]}}, name="rvq")
    assert rvq < posthoc and len(dec) == 6000
    # colour field for sh0 + shN (colours are a smooth function of position here)
    field, dec = _gsz_bytes(tmp_path, s, {
        "colorfield": {"type": "colorfield", "n_levels": 6, "log2_hashmap_size": 10, "base_resolution": 4,
                       "max_resolution": 32, "mlp_width": 16, "fit_steps": 60},
        "attributes": {"type": "attributes", "fields": ["quats", "scales", "opacities"]}}, name="field")
    assert field < posthoc and dec.shN.shape == (6000, 15, 3)
    # masking: a trained state whose masks switch off a third of the Gaussians
    st = _state(s)
    m = Masking()
    m.attach(st)
    with torch.no_grad():
        st.params["mask"][::3] = -10.0
    masked, dec = _gsz_bytes(tmp_path, st.splats().detach(), {"masking": m.describe(),
                             "attributes": {"type": "attributes"}}, state=st, name="mask")
    assert len(dec) == 4000 and masked < posthoc


def test_rvq_and_colorfield_sections_checked_by_codec(random_splats):
    """A section of the right name with another codec, or a missing one, is refused with a one-line
    FormatError naming it (rvq and the colour field read theirs unchecked: a renamed codec decoded,
    which the spec's decoder refuses, and a missing colour-field section said KeyError)."""
    from gscomp.codec import decode_bytes, encode_bytes
    from gscomp.codec.container import pack_gsz, unpack_gsz
    from gscomp.errors import FormatError
    from gscomp.stages import Section

    s = random_splats(400, sh_degree=1)
    cfgs = {"rvq": {"rvq": {"type": "rvq", "n_stages": 2, "codebook_size": 16, "kmeans_iters": 2},
                    "attributes": {"type": "attributes", "fields": ["opacities", "sh0", "shN"]}},
            "colorfield": {"colorfield": {"type": "colorfield", "n_levels": 4, "log2_hashmap_size": 8,
                                          "base_resolution": 4, "max_resolution": 16, "mlp_width": 8,
                                          "fit_steps": 5},
                           "attributes": {"type": "attributes", "fields": ["quats", "scales", "opacities"]}}}
    for stage, stages in cfgs.items():
        data = encode_bytes(s, {"name": "t", "sh_degree": None,
                                "stages": {"positions": {"type": "positions", "bits": 12}, **stages}})
        header, secs = unpack_gsz(data)
        assert len(decode_bytes(data)) == 400
        for sec in [x for x in secs if x.name.startswith(stage + "/")]:
            renamed = [Section(x.name, "bogus" if x is sec else x.codec, x.payload) for x in secs]
            with pytest.raises(FormatError, match=f"section '{sec.name.split('/', 1)[1]}' has codec 'bogus'"):
                decode_bytes(pack_gsz(header, renamed))
            with pytest.raises(FormatError, match=f"missing section '{sec.name.split('/', 1)[1]}'"):
                decode_bytes(pack_gsz(header, [x for x in secs if x is not sec]))


# ---------------------------------------------------------------------------- end to end
def test_train_compress_decode_psnr_matches(tmp_path):
    """`gscomp compress data=synthetic pipeline=c3dgs out=OUT` (tiny) -> scene.gsz; `gscomp decode`
    gives a .ply identical to OUT/scene.ply whose rendered test PSNR equals the reported one."""
    import json
    import os

    from gscomp.io import load_splats
    from gscomp.metrics import evaluate

    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["data=synthetic", "data.resolution=40", "data.n_views=16", "pipeline=c3dgs", "train=fast",
            "train.steps=60", "train.n_renders=0", "progress=false", f"out={out}",
            "pipeline.stages.masking.prune_every=20", "pipeline.stages.rvq.start=0.5",
            "pipeline.stages.rvq.n_stages=3", "pipeline.stages.colorfield.n_levels=8",
            "pipeline.stages.colorfield.log2_hashmap_size=11", "pipeline.stages.colorfield.max_resolution=128"]
    r = subprocess.run([sys.executable, "-m", "gscomp", "compress", *args], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "total (file, " in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["gsz_bytes"] == (out / "scene.gsz").stat().st_size
    assert sum(report["sections"].values()) + report["header_bytes"] == report["gsz_bytes"]
    assert report["sh_degree"] == 3 and report["resolution"] == [40, 40] and "SH 3" in r.stdout
    assert report["n_gaussians"] > 0 and report["psnr"] > 10
    from gscomp.codec import gsz_info  # rvq's and the colour field's sections count toward their fields

    info = gsz_info(out / "scene.gsz")
    assert {"scales+quats", "shN"} <= set(info["bytes_per_attribute"]) and "other" not in info["bytes_per_attribute"]
    assert sum(info["bytes_per_attribute"].values()) == sum(info["sections"].values())
    dec = tmp_path / "dec.ply"
    r = subprocess.run([sys.executable, "-m", "gscomp", "decode", str(out / "scene.gsz"), str(dec)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_splats(dec), load_splats(out / "scene.ply")
    for f, t in a.items():
        assert torch.equal(t, getattr(b, f)), f
    from gscomp.hydra_app import compose
    from gscomp.train.trainer import load_scene_from_config

    scene = load_scene_from_config(compose("train", args))  # the very scene the run trained on
    bg = scene.background if scene.background is not None else (0.0, 0.0, 0.0)
    m = evaluate(a, scene.test, sh_degree=a.sh_degree, background=bg, backend="cpu", n_renders=0,
                 use_lpips=False)
    assert abs(m["psnr"] - report["psnr"]) < 1e-3


def test_pipeline_holds_stages_to_their_contract(random_splats):
    """A stage may decode only the Splats fields it owns, reorder only by a permutation, take a
    type name no other stage has, and keep params the header can store."""
    from gscomp.stages.base import register
    from gscomp.stages.pipeline import Pipeline
    from gscomp.stages.posthoc import Attributes, Positions

    splats = random_splats(64, sh_degree=0, seed=5)

    class Sneaky(Attributes):  # also "decodes" the means, which the positions stage owns
        def decode(self, sections, ctx):
            return {**super().decode(sections, ctx), "means": torch.zeros(ctx.n, 3)}

    with pytest.raises(GscompError, match="decoded means, which it does not own"):
        Pipeline([Sneaky(), Positions()], ["attributes", "positions"]).encode(splats)

    class Dropping(Positions):
        def reorder(self, s):
            return super().reorder(s)[:-1]

    class Repeating(Positions):
        def reorder(self, s):
            return torch.zeros(len(s), dtype=torch.long)

    for bad in (Dropping, Repeating):
        with pytest.raises(GscompError, match="reorder must return a permutation"):
            Pipeline([bad(), Attributes()], ["positions", "attributes"]).encode(splats)

    class Clash(Positions):
        type = "positions"

    with pytest.raises(ValueError, match="'positions' is taken"):
        register(Clash)
    st = Positions()
    st.params["gain"] = float("nan")
    with pytest.raises(GscompError, match="plain JSON values"):
        Pipeline([st, Attributes()], ["positions", "attributes"])


def test_a_pipeline_of_ones_own_is_checked_before_any_work(random_splats, said):
    """What qa34_A's own pipelines and stages got past the checks: a file no decoder reads (a
    param called name; a decode of the wrong shape), a failure after the encode (a stage name the
    container refuses), an order lost without a word (a second reordering stage), and sections
    nothing used."""
    from gscomp.stages.importance import Importance
    from gscomp.stages.pipeline import Pipeline
    from gscomp.stages.posthoc import Attributes, Positions

    splats = random_splats(64, sh_degree=0, seed=5)

    class Named(Attributes):
        def __init__(self, name="mine", **kw):
            super().__init__(**kw)
            self.params["name"] = name

    with pytest.raises(GscompError, match="a parameter may not be called name"):
        Pipeline([Positions(), Named()], ["positions", "attributes"])
    with pytest.raises(GscompError, match="bad stage name 'my pos': use 1-64 letters, digits"):
        Pipeline([Positions(), Attributes()], ["my pos", "attributes"])

    class Sorting(Attributes):
        def reorder(self, s):
            return torch.argsort(s.opacities)

    with pytest.raises(GscompError, match="stages 'sort', 'positions' each reorder the Gaussians"):
        Pipeline([Sorting(fields=["quats"]), Positions(), Attributes(fields=["scales", "opacities", "sh0"])],
                 ["sort", "positions", "attributes"])

    class Flat(Positions):  # decodes means as (n * 3,)
        def decode(self, sections, ctx):
            return {"means": super().decode(sections, ctx)["means"].reshape(-1)}

    with pytest.raises(GscompError, match=r"stage 'positions' decodes means of shape \(192,\), not \(64, 3\)"):
        Pipeline([Flat(), Attributes()], ["positions", "attributes"]).encode(splats)
    # a stage added after the ones that need it: the order rule is named
    with pytest.raises(GscompError, match="stages run in the order they are listed"):
        Pipeline([Positions(adaptive=True), Attributes(), Importance()], ["positions", "attributes", "importance"])
    # classes nothing uses, scores for another grid: notes
    said.text()
    Pipeline([Importance(views=2, pos_bits=14), Positions(bits=16), Attributes()],
             ["importance", "positions", "attributes"]).encode(splats)
    notes = said.text()
    assert "note: stage 'importance' (importance) hands on importance_class, which no stage after it uses" in notes
    assert "importance.pos_bits=14 but positions.bits=16" in notes
    Pipeline.preset("compact").encode(splats)
    assert "hands on" not in said.text()
    with pytest.raises(GscompError, match="stage type 'positions' has no parameter 'bitz' \\(its parameters: bits, adaptive"):
        Pipeline.from_config({"stages": {"positions": {"type": "positions", "bitz": 3}, "attributes": {"type": "attributes"}}})
    with pytest.raises(GscompError, match="attributes.fields must be a list of names .* got 'quats'"):
        Attributes(fields="quats")


def test_post_hoc_c3dgs_on_empty_and_tiny_scenes(tmp_path, random_splats):
    """The trained stages fitted post-hoc (R-VQ k-means, colour-field distillation) on N = 0, 1, 5."""
    from gscomp.codec import decode_gsz, encode_gsz
    from gscomp.commands.compress import compose_pipeline

    cfg = compose_pipeline(["pipeline=c3dgs", "+pipeline.stages.colorfield.fit_steps=5"])
    for n in (0, 1, 5):
        src = random_splats(n, sh_degree=3, seed=n)
        encode_gsz(src, tmp_path / "a.gsz", cfg)
        out = decode_gsz(tmp_path / "a.gsz")
        assert len(out) == n and out.sh_degree == 3
