"""Rotations coded as body axes (`attributes.quat_axes`, codec axes-classed/v1, gscomp.codec.axes)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_posthoc import compact, in_morton_order

from gscomp import FormatError, GscompError
from gscomp.codec import axes as AX
from gscomp.codec import decode_bytes, decode_gsz, encode_gsz, gsz_info
from gscomp.codec.container import pack_gsz, unpack_gsz
from gscomp.stages import posthoc as P
from gscomp.stages.base import Section


def _numpy_only(monkeypatch):
    monkeypatch.setattr(AX, "_rans", lambda: None)


def test_sincos_is_libm_close_and_exact_at_the_ends():
    t = np.linspace(0.0, np.pi, 100_001)
    s, c = AX.sincos(t)
    assert np.abs(s - np.sin(t)).max() < 4e-16 and np.abs(c - np.cos(t)).max() < 4e-16
    s0, c0 = AX.sincos(np.array([0.0, AX.HALF_PI]))
    assert abs(s0[0]) < 1e-16 and c0[0] == 1.0 and s0[1] == 1.0 and abs(c0[1]) < 1e-16


def test_free_axis_and_level_follow_the_scale_gaps(monkeypatch):
    """e1 for an elongated Gaussian, e3 for a round flat one; the level is log2 of the ratio of the
    scale gaps, rounded (4 at most, and for equal scales); native and numpy agree bit for bit."""
    ls = np.log(np.array([[4.0, 1.0, 1.0],      # needle: turning about its length does not show
                          [4.0, 4.0, 1.0],      # round disk: turning about its normal does not
                          [4.0, 2.0, 1.0],      # gaps s1 - s2 = 2, s2 - s3 = 1: e1 free, ratio 2 -> level 1
                          [1.0, 1.0, 1.0],      # a ball: any turn, the top level (4)
                          [np.e ** 90, 2.0, 1.0]]), dtype=np.float64).astype(np.float32)  # (clamped)
    free, m = AX.free_axis_levels(ls)
    assert free.tolist() == [0, 2, 0, 0, 0] and m.tolist() == [4, 4, 1, 4, 4]
    rng = np.random.default_rng(0)
    many = -np.sort(-rng.normal(-3, 1.5, (50_000, 3)), 1).astype(np.float32)
    many[:500] = many[:500, :1]  # equal scales
    native = AX.free_axis_levels(many)
    _numpy_only(monkeypatch)
    assert all(np.array_equal(a, b) for a, b in zip(native, AX.free_axis_levels(many)))
    assert AX.free_axis_levels(np.zeros((0, 3), np.float32))[0].shape == (0,)


def test_decoded_axes_native_equals_numpy(monkeypatch):
    rng = np.random.default_rng(1)
    n = 20_000
    step = np.ldexp(0.004, rng.integers(0, 4, n))
    sym = np.rint(rng.uniform(-1.05, 1.05, (n, 2)) / step[:, None]).astype(np.int64)
    sym[:100] = 0  # straight up
    counts = AX.level_counts(0.0095, 8)
    level = rng.integers(0, 8, n)
    k = (rng.random(n) * counts[level]).astype(np.int64)
    free = rng.choice([0, 2], n)
    bad = ((sym * 3, k, "axis direction"), (sym, k + counts[level], "angle index"), (sym, np.full_like(k, -1), "angle index"))

    def refused():
        for bad_sym, bad_k, msg in bad:
            with pytest.raises(FormatError, match=msg):
                AX.to_quats(bad_sym, step, bad_k, level, counts, free)
    native = AX.to_quats(sym, step, k, level, counts, free)
    refused()
    _numpy_only(monkeypatch)
    ref = AX.to_quats(sym, step, k, level, counts, free)
    assert native.dtype == np.float32 and np.array_equal(native, ref)
    refused()  # (the numpy reference refuses the same values)
    assert np.abs(np.linalg.norm(ref.astype(np.float64), axis=1) - 1).max() < 1e-6
    # the rotation's columns are the free axis (up), the axis at angle k pi / N, and their cross
    r = AX.rotmat(ref.astype(np.float64))
    d = AX.direction(sym * step[:, None])
    fcol = r[np.arange(n), :, np.where(free == 0, 0, 2)]
    assert np.abs(np.abs((fcol * d).sum(1)) - 1).max() < 1e-6
    assert np.abs(np.linalg.det(r) - 1).max() < 1e-6


def _anisotropic(random_splats, n=3000, seed=30):
    """Random Gaussians whose scales are spread like biker's (median ratios s1/s2 ~4, s2/s3 ~3.5)."""
    src = random_splats(n, sh_degree=0, seed=seed)
    g = torch.Generator().manual_seed(seed)
    l3 = -5.0 + 0.5 * torch.rand(n, generator=g)
    l2 = l3 + 0.2 + 2.4 * torch.rand(n, generator=g)
    l1 = l2 + 0.2 + 2.4 * torch.rand(n, generator=g)
    src.scales[:] = torch.stack([l2, l1, l3], 1)  # (not in order: the preset sorts them)
    return src


def _covariances(quats, log_scales) -> np.ndarray:
    r = AX.rotmat(np.asarray(quats, np.float64) / np.linalg.norm(quats, axis=1, keepdims=True))
    s2 = np.exp(2 * np.asarray(log_scales, np.float64))
    return np.einsum("nij,nj,nkj->nik", r, s2, r)


def test_quat_axes_round_trip_is_smaller_and_closer(tmp_path, random_splats):
    """At the same step, rotations as axes take fewer bytes than quaternions and turn the
    covariances less (their error with the source's scales: the rotation's part alone)."""
    src = _anisotropic(random_splats)
    sizes, errs = {}, {}
    for axes in (False, True):
        cfg = compact(dq=True, axes=axes)
        encode_gsz(src, tmp_path / f"{axes}.gsz", cfg)
        sizes[axes] = gsz_info(tmp_path / f"{axes}.gsz")["sections"]["attributes/quats"]
        out = decode_gsz(tmp_path / f"{axes}.gsz")
        ref = in_morton_order(src, cfg)
        ref_q, ref_s = P.sort_axes(ref.quats.numpy(), ref.scales.numpy())
        a, b = _covariances(out.quats.numpy(), ref_s), _covariances(ref_q, ref_s)
        errs[axes] = np.linalg.norm(a - b, axis=(1, 2)) / np.linalg.norm(b, axis=(1, 2))
    assert gsz_info(tmp_path / "True.gsz")["codecs"]["attributes/quats"] == "axes-classed/v1"
    assert sizes[True] < sizes[False], sizes
    assert np.median(errs[True]) < 0.95 * np.median(errs[False]) and errs[True].max() < 0.5, (errs[True].max(), errs[False].max())


def test_quat_axes_deterministic_and_same_without_native(tmp_path, random_splats, monkeypatch):
    src = _anisotropic(random_splats, 800, seed=31)
    cfg = compact()
    encode_gsz(src, tmp_path / "a.gsz", cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encode_gsz(src, tmp_path / "b.gsz", cfg)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "b.gsz").read_bytes() == (tmp_path / "a.gsz").read_bytes()
    out = decode_gsz(tmp_path / "a.gsz")
    _numpy_only(monkeypatch)
    ref = decode_gsz(tmp_path / "a.gsz")
    assert np.array_equal(out.quats.numpy(), ref.quats.numpy())


def _with_quats_payload(data: bytes, payload: bytes) -> bytes:
    header, sections = unpack_gsz(data)
    return pack_gsz(header, [Section(s.name, s.codec, payload) if s.name == "attributes/quats" else s for s in sections])


def test_quat_axes_bad_payloads_are_format_errors(tmp_path, random_splats):
    """A direction outside the octahedron, an angle index past its grid, a stream too few: one
    clean error each (the decoder never trusts what the file says)."""
    from gscomp.codec import entropy as E

    src = _anisotropic(random_splats, 300, seed=32)
    encode_gsz(src, tmp_path / "a.gsz", compact(dq=False))
    data = (tmp_path / "a.gsz").read_bytes()
    _, sections = unpack_gsz(data)
    by_name = {s.name: s.payload for s in sections}
    n = len(src)
    cls = E.decode_symbols(by_name["importance/classes"], n)
    lvl = cls + AX.free_axis_levels(decode_gsz(tmp_path / "a.gsz").scales.numpy())[1]
    k, nl = int(cls.max()) + 1, int(lvl.max()) + 1
    r = E.Reader(by_name["attributes/quats"], "t")
    streams = [bytes(r.blob()) for _ in range(r.varint())]
    assert len(streams) == 2 * k + nl

    def payload(ss):
        return E.varint(len(ss)) + b"".join(E.blob(x) for x in ss)

    far = [E.encode_symbols(np.full(int((cls == c).sum()), 10**6, np.int64)) for c in range(k) for _ in range(2)]
    past = [E.encode_symbols(np.full(int((lvl == c).sum()), 10**6, np.int64)) for c in range(nl)]
    for ss, msg in ((far + streams[2 * k:], "axis direction out of range"), (streams[:2 * k] + past, "angle index out of range"),
                    (streams[:-1], "stream")):
        with pytest.raises(FormatError, match=msg):
            decode_bytes(_with_quats_payload(data, payload(ss)))
    assert np.array_equal(decode_bytes(_with_quats_payload(data, payload(streams))).quats.numpy(),
                          decode_gsz(tmp_path / "a.gsz").quats.numpy())


def test_quat_axes_settings():
    with pytest.raises(GscompError, match="quat_axes needs sort_scales"):
        P.Attributes(adaptive=True, canonical_quats=True, quat_axes=True)
    with pytest.raises(GscompError, match="quat_axes and size_levels.quats"):
        P.Attributes(adaptive=True, canonical_quats=True, sort_scales=True, quat_axes=True, size_levels={"quats": 1})
    with pytest.raises(GscompError, match="quat_axes"):
        P.Attributes(adaptive=True, canonical_quats=True, sort_scales=True, quat_axes="yes")
    assert "quat_axes" not in P.Attributes().params  # (off: not in the header, older files unchanged)
