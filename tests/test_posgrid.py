"""Position grids for unbounded scenes: a core box with logarithmic tails (morton-delta*/v2)."""
import math

import numpy as np
import pytest
import torch

from gscomp import Splats
from gscomp.codec import decode_bytes, decode_gsz, encode_gsz
from gscomp.codec import entropy as E
from gscomp.codec import quant as Q
from gscomp.codec.container import pack_gsz, unpack_gsz
from gscomp.codec.posgrid import PosGrid, exp_det
from gscomp.commands.compress import compose_pipeline
from gscomp.errors import FormatError, GscompError
from gscomp.stages.posthoc import Positions


def _scene(n=4000, far=0.05, seed=0, reach=1000.0):
    """An object (radius ~1) and a share ``far`` of Gaussians at 3..reach units (log-uniform)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * 2 - 1
    k = int(n * far)
    d = torch.randn(k, 3, generator=g)
    means[:k] = d / d.norm(dim=1, keepdim=True) * 3 * torch.exp(torch.rand(k, 1, generator=g) * math.log(reach / 3))
    return Splats(means=means, quats=torch.randn(n, 4, generator=g), scales=torch.randn(n, 3, generator=g) * 0.3 - 4,
                  opacities=torch.randn(n, generator=g), sh0=torch.randn(n, 1, 3, generator=g) * 0.5,
                  shN=torch.zeros(n, 0, 3))


def test_exp_det_is_exp():
    y = np.concatenate([np.linspace(0, 700, 20001), np.random.default_rng(0).random(10000) * 30])
    rel = np.abs(exp_det(y) / np.exp(y) - 1)
    assert rel.max() < 4e-16
    assert exp_det(np.array([0.0]))[0] == 1.0


def test_bounded_scene_keeps_the_box_grid():
    m = _scene(far=0).means.numpy()
    g = PosGrid.fit(m, 14)
    assert not g.tails and g.index_bits == 14
    assert np.array_equal(g.quantize(m), Q.quantize_positions(m, m.min(0), m.max(0), 14))
    assert not PosGrid.fit(_scene().means.numpy(), 14, core=0).tails  # core 0: always the box


def test_tails_pick_the_nearest_grid_position():
    m = _scene().means.numpy()
    g = PosGrid.fit(m, 12)
    assert g.tails and g.index_bits > 12
    q = g.quantize(m)
    assert (q >= 0).all() and (q < g.size).all()
    x = g.to_world(q.astype(np.float64))
    for dq in (-1, 1):  # no neighbouring index is nearer (float64 grid values, per axis)
        nb = np.clip(q + dq, 0, g.size - 1)
        for a in range(3):
            here = np.abs(g.to_world(q.astype(np.float64))[:, a].astype(np.float64) - m[:, a])
            there = np.abs(g.to_world(nb.astype(np.float64))[:, a].astype(np.float64) - m[:, a])
            assert (here <= there + 1e-6 * np.abs(m[:, a]) + 1e-7).all()
    # the object gets the core's step (the box grid's would be ~1000x coarser); the background
    # keeps a constant relative precision
    core = (np.abs(m) <= 1).all(1)
    h = (g.hi - g.lo).astype(np.float64) / ((1 << 12) - 1)
    assert (np.abs(x[core] - m[core]) <= h / 2 + 1e-6).all()
    far = ((m < g.lo) | (m > g.hi)).any(1)  # in a tail on some axis
    rel = np.abs(x[far] - m[far]).max(1) / np.abs(m[far]).max(1)
    assert rel.max() < 4 * h.max()
    steps = g.world_step(m)
    assert np.allclose(steps[core], h[None].repeat(core.sum(), 0)) and (steps[far].max(1) > h.max()).all()


@pytest.mark.parametrize("preset", ["medium", "compact"])
def test_unbounded_scene_round_trip(tmp_path, preset):
    src = _scene(3000)
    errs = {}
    for core in (3.0, 0):
        path = tmp_path / f"{core}.gsz"
        keep = ["pipeline.stages.importance.prune=0"] if preset == "compact" else []  # (every Gaussian, to match them)
        encode_gsz(src, path, compose_pipeline([f"pipeline={preset}", f"pipeline.stages.positions.core={core}", *keep]))
        header, sections = unpack_gsz(path.read_bytes())
        codec = next(s.codec for s in sections if s.name.endswith("means"))
        assert codec.endswith("/v2" if core else "/v1")
        out = decode_gsz(path)
        assert torch.isfinite(out.means).all()
        # match decoded Gaussians to the source (Morton order) by nearest neighbour in the object
        a = src.means[(src.means.abs() <= 1).all(1)]
        b = out.means[(out.means.abs() <= 1.01).all(1)]
        errs[core] = float(torch.cdist(a, b).min(1).values.median())
    assert errs[3.0] < errs[0] / 30  # the object's positions: far finer with the core grid


def test_core_param_only_stored_when_changed():
    assert "core" not in Positions(bits=14).describe()
    assert Positions(bits=14, core=5).describe()["core"] == 5.0
    for bad in (-1, 0.1, True, "x", 5000):
        with pytest.raises(GscompError):
            Positions(bits=14, core=bad)


def test_corrupt_grid_blocks_are_format_errors():
    def grid(bounds, tails, bits=14):
        return PosGrid.unpack(E.Reader(np.array(bounds, "<f4").tobytes() + np.array(tails, "<u4").tobytes()), bits)

    assert grid([0, 0, 0, 1, 1, 1], [5, 0, 0, 0, 7, 0]).tails
    for bounds, tails in (([0, 0, 0, float("nan"), 1, 1], [1] * 6), ([0, 0, 2, 1, 1, 1], [0] * 6),
                          ([0, 0, 0, 1, 1, 1], [2**31] * 6), ([0, 0, 0, 1, 1, 1], [2**19] * 6),
                          ([0, 0, 0, 0, 1, 1], [3, 0, 0, 0, 0, 0])):
        with pytest.raises(FormatError):
            grid(bounds, tails)
    g = grid([0, 0, 0, 1, 1, 1], [5, 0, 0, 0, 7, 0])
    with pytest.raises(FormatError):
        g.check_indices(np.array([[0, (1 << 14) + 7, 0]]))
    # an index far out in a long tail of a tiny core runs past float32: an error, not inf
    huge = grid([0, 0, 0, 1e-30, 1, 1], [0, 0, 0, 40000, 0, 0], bits=1)
    with pytest.raises(FormatError):
        huge.to_world(np.array([[40001.0, 0, 0]]))


def test_unbounded_fuzz_only_format_errors(tmp_path):
    src = _scene(800)
    encode_gsz(src, tmp_path / "a.gsz", compose_pipeline(["pipeline=compact"]))
    header, sections = unpack_gsz((tmp_path / "a.gsz").read_bytes())
    k = next(i for i, s in enumerate(sections) if s.name.endswith("means"))
    rng = np.random.default_rng(1)
    for trial in range(60):  # the grid block is at the start of the payload: hit it often
        p = bytearray(sections[k].payload)
        for _ in range(int(rng.integers(1, 3))):
            p[int(rng.integers(2, 50 if trial % 2 else len(p)))] = int(rng.integers(256))
        bad = list(sections)
        bad[k] = type(sections[k])(sections[k].name, sections[k].codec, bytes(p))
        try:
            out = decode_bytes(pack_gsz(header, bad))
        except FormatError:
            continue
        assert len(out) == 800 and torch.isfinite(out.means).all()


def test_grid_does_not_depend_on_the_order():
    """reorder fits the grid on the input order, encode on the Morton order: they must agree
    (a grid fitted on a strided sample broke this above 65k Gaussians)."""
    m = _scene(140000).means.numpy()
    perm = np.random.default_rng(2).permutation(len(m))
    a, b = PosGrid.fit(m, 14), PosGrid.fit(m[perm], 14)
    assert a.tails and a.pack() == b.pack()
    assert np.array_equal(a.quantize(m)[perm], b.quantize(m[perm]))


def test_lossless_ish_core_gets_the_bits_that_fit(tmp_path):
    """19 bits leave no room for tails in 19-bit Morton codes: the core gets fewer bits, and still far
    finer steps on the object than the box grid (which lossless-ish used before: worse than high)."""
    src = _scene(3000)
    g = PosGrid.fit(src.means.numpy(), 19)
    assert g.tails and g.bits < 19 and g.index_bits <= Q.MAX_POS_BITS
    assert PosGrid.fit(src.means.numpy(), g.bits).bits == g.bits  # the most bits that fit
    assert PosGrid.fit(src.means.numpy(), g.bits + 1).bits == g.bits
    far = PosGrid.fit(_scene(3000, reach=1e5).means.numpy(), 16)  # high, background at 1e5: 15-bit core
    assert far.tails and far.bits == 15 and far.index_bits == Q.MAX_POS_BITS
    errs = {}
    for core in (3.0, 0):
        path = tmp_path / f"{core}.gsz"
        encode_gsz(src, path, compose_pipeline(["pipeline=lossless-ish", f"pipeline.stages.positions.core={core}"]))
        header, sections = unpack_gsz(path.read_bytes())
        sec = next(s for s in sections if s.name.endswith("means"))
        assert sec.codec == ("morton-delta/v2" if core else "morton-delta/v1")
        assert sec.payload[0] == (g.bits if core else 19)
        out = decode_gsz(path)
        a = src.means[(src.means.abs() <= 1).all(1)]
        b = out.means[(out.means.abs() <= 1.01).all(1)]
        errs[core] = float(torch.cdist(a.double(), b.double()).min(1).values.median())
        if core:  # a payload claiming more bits than the stage's, or v1 with fewer: format errors
            for codec, bits in (("morton-delta/v2", 20), ("morton-delta/v1", g.bits)):
                bad = [type(s)(s.name, codec, bytes([bits]) + s.payload[1:]) if s is sec else s for s in sections]
                with pytest.raises(FormatError):
                    decode_bytes(pack_gsz(header, bad))
    assert errs[3.0] < errs[0] / 20  # reach 1000: the tails take 3 bits, the core keeps 16
