"""Splat file I/O: INRIA PLY, SPZ, .splat, PlayCanvas compressed PLY and SOG."""
from __future__ import annotations

import gzip
import io
import json
import math
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch

from conftest import shared
from gscomp import FormatError, GscompError, Splats
from gscomp.errors import DataWarning, Note
from gscomp.io import LossySaveWarning, detect_format, load_splats, save_splats
from gscomp.io.common import SH_FLIP_YZ, atomic_open, clamped_rows, flip_yz
from gscomp.io.ply import ply_property_names, read_ply, write_ply
from gscomp.io.spz import decode_spz, encode_spz, read_spz
from gscomp.io.splat import decode_splat, encode_splat
from gscomp.render.sh import eval_sh

FIX = "fixtures"


# ----------------------------------------------------------------------------- helpers
def assert_same(a: Splats, b: Splats) -> None:
    assert a.antialiased == b.antialiased
    for k, v in a.items():
        w = getattr(b, k)
        assert v.shape == w.shape, k
        assert torch.equal(v, w), k


def unit(q: torch.Tensor) -> torch.Tensor:
    return q / q.norm(dim=1, keepdim=True)


def quat_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|<a, b>| of normalised quaternions: 1 means the same rotation (q and -q are equal)."""
    return (unit(a) * unit(b)).sum(1).abs()


def covariance(s: Splats) -> torch.Tensor:
    w, x, y, z = unit(s.quats).unbind(1)
    r = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1).reshape(-1, 3, 3)
    m = r * s.scales.exp()[:, None, :]
    return m @ m.transpose(1, 2)


def well_formed(n: int, degree: int, seed: int = 0) -> Splats:
    """Random splats inside every lossy format's range (scales in SPZ's [-10, 5.9], |SH| < 1)."""
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1
    return Splats(
        means=torch.randn(n, 3, generator=g) * 3,
        quats=torch.randn(n, 4, generator=g),
        scales=torch.rand(n, 3, generator=g) * 6 - 8,
        opacities=torch.randn(n, generator=g) * 2,
        sh0=(torch.rand(n, 1, 3, generator=g) - 0.5) * 3,
        shN=(torch.rand(n, k, 3, generator=g) - 0.5) * 1.8,
    )


def write_raw_ply(path, props: list[tuple[str, str]], rows: np.ndarray, fmt="binary_little_endian",
                  extra_header: str = "") -> None:
    """Hand-written single-element PLY (so malformed variants are easy to produce)."""
    head = f"ply\nformat {fmt} 1.0\n{extra_header}element vertex {len(rows)}\n"
    head += "".join(f"property {t} {n}\n" for n, t in props) + "end_header\n"
    with open(path, "wb") as f:
        f.write(head.encode())
        if fmt == "ascii":
            for r in rows:
                f.write((" ".join(repr(float(v)) for v in r) + "\n").encode())
        else:
            f.write(rows.astype("<f4").tobytes())


def inria_rows(s: Splats) -> np.ndarray:
    n, k = len(s), s.shN.shape[1]
    return np.concatenate([
        s.means.numpy(), np.zeros((n, 3), np.float32), s.sh0[:, 0].numpy(),
        s.shN.transpose(1, 2).reshape(n, 3 * k).numpy(), s.opacities[:, None].numpy(),
        s.scales.numpy(), s.quats.numpy()], 1)


def one_line_error(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


# ----------------------------------------------------------------------------- INRIA PLY
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 57])
def test_ply_round_trip_bit_exact(tmp_path, random_splats, degree, n):
    s = random_splats(n, sh_degree=degree, seed=degree + n)
    p = tmp_path / "s.ply"
    save_splats(p, s)
    r = load_splats(p)
    assert r.sh_degree == degree and len(r) == n
    assert_same(s, r)
    assert list(p.parent.iterdir()) == [p]  # no temp files left behind


def test_ply_layout_is_inria(tmp_path, random_splats):
    from plyfile import PlyData

    s = random_splats(5, sh_degree=2)
    write_ply(tmp_path / "a.ply", s)
    ply = PlyData.read(str(tmp_path / "a.ply"))
    assert ply.header.splitlines()[1] == "format binary_little_endian 1.0"
    v = ply["vertex"]
    assert [p.name for p in v.properties] == ply_property_names(2)
    assert all(p.val_dtype in ("f4", "<f4", "float32") for p in v.properties)
    # channel-major f_rest: index c*K + k holds shN[:, k, c]
    k = 8
    for c in range(3):
        for j in range(k):
            np.testing.assert_array_equal(v.data[f"f_rest_{c * k + j}"], s.shN[:, j, c].numpy())
    np.testing.assert_array_equal(v.data["rot_0"], s.quats[:, 0].numpy())  # w first
    assert not any(v.data[f].any() for f in ("nx", "ny", "nz"))


def test_ply_written_in_blocks_same_bytes(tmp_path, random_splats, monkeypatch):
    """write_ply sends rows through a reused buffer: blocks of 2 rows (the last one short) give the
    bytes of one block."""
    import gscomp.io.ply as P

    s = random_splats(5, sh_degree=3, seed=3)
    write_ply(tmp_path / "one.ply", s)
    monkeypatch.setattr(P, "WRITE_BLOCK", 2 * 4 * len(ply_property_names(3)))
    write_ply(tmp_path / "blocks.ply", s)
    assert (tmp_path / "blocks.ply").read_bytes() == (tmp_path / "one.ply").read_bytes()
    assert_same(s, read_ply(tmp_path / "blocks.ply"))


def test_pc_short_rewrite_reproduces_float_values(tmp_path):
    from plyfile import PlyData

    src = shared(f"{FIX}/pc_short.ply")
    s = read_ply(src)
    assert len(s) == 100 and s.sh_degree == 3
    write_ply(tmp_path / "b.ply", s)
    a, b = PlyData.read(str(src))["vertex"].data, PlyData.read(str(tmp_path / "b.ply"))["vertex"].data
    for name in ply_property_names(3):
        if name not in ("nx", "ny", "nz"):
            np.testing.assert_array_equal(a[name].view(np.uint32), b[name].view(np.uint32), err_msg=name)
    assert_same(s, read_ply(tmp_path / "b.ply"))


def test_spz3_binary_and_ascii_ply_agree():
    b = read_ply(shared(f"{FIX}/spz3/test-splat.3-points-from-train.ply"))
    a = read_ply(shared(f"{FIX}/spz3/test-splat.3-points-from-train-ascii.ply"))
    assert len(b) == 3 and b.sh_degree == 3
    assert_same(a, b)


def test_ply_tolerates_extra_properties_ascii_and_other_order(tmp_path, random_splats):
    s = random_splats(4, sh_degree=1)
    rows = inria_rows(s)
    names = ply_property_names(1)
    props = [(n, "float") for n in names]
    # extra float and uchar properties, columns shuffled, plus an unrelated element
    perm = np.random.default_rng(0).permutation(len(names))
    rows2 = np.concatenate([rows[:, perm], np.full((4, 1), 7, np.float32)], 1)
    props2 = [props[i] for i in perm] + [("confidence", "float")]
    write_raw_ply(tmp_path / "x.ply", props2, rows2, fmt="ascii", extra_header="comment hello\n")
    with warnings.catch_warnings(record=True) as caught:  # (plyfile's unclosed text wrapper gave a ResourceWarning)
        warnings.simplefilter("always")
        assert_same(s, read_ply(tmp_path / "x.ply"))
    assert not caught, [str(w.message) for w in caught]


def test_ply_reads_fast_enough(tmp_path, random_splats):
    # 200k SH-3 Gaussians (~50 MB); the whole-column path does this in ~0.15 s. The bound is
    # loose because the test machine is shared; a per-vertex loop would take minutes.
    import time

    s = random_splats(200_000, sh_degree=3)
    write_ply(tmp_path / "big.ply", s)
    t = time.perf_counter()
    r = read_ply(tmp_path / "big.ply")
    assert time.perf_counter() - t < 5.0
    assert torch.equal(r.shN, s.shN)


def test_ply_is_read_without_a_memory_map(tmp_path, random_splats, monkeypatch):
    # A map of a file that another process truncates (a trainer rewriting point_cloud.ply in
    # place) kills the reader with SIGBUS while the columns are copied out of it; read() copies
    # the records into memory instead, so that case is the file-ended error below.
    s = random_splats(50, sh_degree=2)
    write_ply(tmp_path / "a.ply", s)

    def no_map(*a, **k):
        raise AssertionError("memory-mapped")
    monkeypatch.setattr(np, "memmap", no_map)
    assert torch.equal(read_ply(tmp_path / "a.ply").shN, s.shN)
    (tmp_path / "c.ply").write_bytes(_compressed_ply_bytes(np.zeros((1, 18), np.float32), np.zeros((3, 4), np.uint32)))
    assert len(load_splats(tmp_path / "c.ply")) == 3  # chunk and vertex elements
    import os
    real = os.fstat

    class Bigger:  # the file shrinks between the size check and the read
        def __init__(self, st):
            self.st_size = st.st_size + 10
    data = (tmp_path / "a.ply").read_bytes()
    (tmp_path / "a.ply").write_bytes(data[:-10])
    monkeypatch.setattr(os, "fstat", lambda fd: Bigger(real(fd)))
    with pytest.raises(FormatError, match=r"a\.ply: truncated PLY: the file ended inside element 'vertex'"):
        read_ply(tmp_path / "a.ply")


def _std_props():
    return [(n, "float") for n in ply_property_names(0)]


def test_ply_malformed_inputs(tmp_path, random_splats):
    s = random_splats(3, sh_degree=0)
    good = tmp_path / "good.ply"
    write_ply(good, s)
    data = good.read_bytes()

    (tmp_path / "trunc.ply").write_bytes(data[:-10])
    with pytest.raises(FormatError) as e:
        read_ply(tmp_path / "trunc.ply")
    assert "trunc.ply" in one_line_error(e)

    (tmp_path / "garbage.ply").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(FormatError, match="not a PLY file"):
        read_ply(tmp_path / "garbage.ply")

    (tmp_path / "badheader.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex x\nend_header\n")
    with pytest.raises(FormatError) as e:
        read_ply(tmp_path / "badheader.ply")
    one_line_error(e)
    # the header's end named (plyfile's own message was about decoding body bytes as ASCII)
    write_raw_ply(tmp_path / "trail.ply", _std_props(), inria_rows(s))
    (tmp_path / "trail.ply").write_bytes((tmp_path / "trail.ply").read_bytes().replace(b"end_header\n", b"end_header \n", 1))
    with pytest.raises(FormatError) as e:
        read_ply(tmp_path / "trail.ply")
    assert one_line_error(e).endswith("trail.ply: malformed PLY header: its 'end_header' line has more on it than "
                                      "'end_header' (trailing spaces?)")
    (tmp_path / "noend.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n")
    with pytest.raises(FormatError) as e:
        read_ply(tmp_path / "noend.ply")
    assert one_line_error(e).endswith("noend.ply: malformed PLY header: no 'end_header' line")

    props = [p for p in _std_props() if p[0] != "scale_1"]
    rows = np.delete(inria_rows(s), [n for n, _ in _std_props()].index("scale_1"), 1)
    write_raw_ply(tmp_path / "x.ply", props, rows)
    with pytest.raises(FormatError) as e:
        read_ply(tmp_path / "x.ply")
    assert one_line_error(e).endswith("x.ply: missing property 'scale_1' in element 'vertex'")
    props = [p for p in _std_props() if p[0] != "scale_2"]  # 2D Gaussian Splatting's surfels
    write_raw_ply(tmp_path / "2d.ply", props, np.delete(inria_rows(s), [n for n, _ in _std_props()].index("scale_2"), 1))
    with pytest.raises(FormatError) as e:
        read_ply(tmp_path / "2d.ply")
    assert one_line_error(e).endswith("2d.ply: missing property 'scale_2' in element 'vertex' (two scales: a 2D "
                                      "Gaussian Splatting file, which gscomp does not read)")

    with pytest.raises(GscompError, match="no such file"):
        load_splats(tmp_path / "missing.ply")


@pytest.mark.parametrize("n_rest, msg", [(7, "not a multiple of 3"), (6, "not a valid SH degree"),
                                         (12, "not a valid SH degree")])
def test_ply_wrong_f_rest_counts(tmp_path, n_rest, msg):
    props = _std_props()[:9] + [(f"f_rest_{i}", "float") for i in range(n_rest)] + _std_props()[9:]
    write_raw_ply(tmp_path / "r.ply", props, np.ones((2, len(props)), np.float32))
    with pytest.raises(FormatError, match=msg):
        read_ply(tmp_path / "r.ply")


def test_ply_mip_splatting_filter_3d_is_fused(tmp_path, random_splats):
    # Mip-Splatting's save_ply appends filter_3D (a std. dev.); its renderer draws each Gaussian with
    # scales sqrt(s^2 + f^2) and opacity alpha * sqrt(prod s^2 / prod(s^2 + f^2)): read as that
    s = random_splats(6, sh_degree=0)
    rows = inria_rows(s)
    filt = np.array([0, 0.01, 0.5, 0, 2.0, 1e-4], np.float32)
    write_raw_ply(tmp_path / "mip.ply", _std_props() + [("filter_3D", "float")], np.concatenate([rows, filt[:, None]], 1))
    with pytest.warns(Note, match=r"mip.ply: Mip-Splatting's 3D filter \(filter_3D\) of 4 Gaussians is fused .* renders "
                                  r"antialiased"):
        r = read_ply(tmp_path / "mip.ply")
    assert r.antialiased  # its 2D filter is the antialiased mode's opacity factor
    sc = s.scales.double().exp()
    f = torch.from_numpy(filt).double()[:, None]
    want_s = (sc ** 2 + f ** 2).sqrt()
    want_a = torch.sigmoid(s.opacities.double()) * ((sc ** 2).prod(1) / (sc ** 2 + f ** 2).prod(1)).sqrt()
    torch.testing.assert_close(r.scales.double().exp(), want_s, rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.sigmoid(r.opacities.double()), want_a, rtol=1e-5, atol=1e-7)
    zero = torch.from_numpy(filt == 0)  # rows without a filter: exactly as written
    assert torch.equal(r.scales[zero], s.scales[zero]) and torch.equal(r.opacities[zero], s.opacities[zero])
    assert torch.equal(r.means, s.means) and torch.equal(r.sh0, s.sh0)
    # an all-zero filter changes no value and says nothing (a Mip-Splatting scene all the same)
    write_raw_ply(tmp_path / "z.ply", _std_props() + [("filter_3D", "float")], np.concatenate([rows, 0 * filt[:, None]], 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(s.replace(antialiased=True), read_ply(tmp_path / "z.ply"))


def test_ply_keeps_the_antialiased_mode_in_a_comment(tmp_path, random_splats):
    # INRIA PLY has no field for it: gscomp's writer adds a header comment and its reader honours it;
    # a classic scene's file has no comment (the same bytes as before the flag existed)
    s = random_splats(5, sh_degree=1)
    write_ply(tmp_path / "c.ply", s)
    write_ply(tmp_path / "a.ply", s.replace(antialiased=True))
    head = (tmp_path / "a.ply").read_bytes()[:200]
    assert b"comment gscomp: antialiased" in head and b"comment" not in (tmp_path / "c.ply").read_bytes()[:200]
    assert_same(s, read_ply(tmp_path / "c.ply"))
    assert_same(s.replace(antialiased=True), read_ply(tmp_path / "a.ply"))
    # the exact comment, wherever the header has it (plyfile files one after an element line under
    # that element); look-alikes are not it
    data = (tmp_path / "c.ply").read_bytes()
    for comment, want in (("gscomp: antialiased", True), ("gscomp: antialiased=false", False),
                          ("gscomp: antialiasedness unknown", False), ("this scene is not antialiased", False)):
        for at in (b"format binary_little_endian 1.0\n", b"property float rot_3\n"):
            (tmp_path / "x.ply").write_bytes(data.replace(at, at + f"comment {comment}\n".encode(), 1))
            assert read_ply(tmp_path / "x.ply").antialiased is want, (comment, at)
    body = (tmp_path / "c.ply").read_bytes().split(b"end_header\n", 1)[1]
    assert (tmp_path / "a.ply").read_bytes().split(b"end_header\n", 1)[1] == body


def test_ply_sh_degree_4_is_read_as_degree_3(tmp_path):
    # 72 f_rest (24 per channel, channel-major): the first 15 of each channel, as SPZ's reader
    props = _std_props()[:9] + [(f"f_rest_{i}", "float") for i in range(72)] + _std_props()[9:]
    rows = np.zeros((2, len(props)), np.float32)
    rows[:, 9:81] = np.arange(72, dtype=np.float32)  # f_rest_i = i
    rows[:, [n for n, _ in props].index("rot_0")] = 1
    write_raw_ply(tmp_path / "d4.ply", props, rows)
    with pytest.warns(Note, match=r"d4.ply: SH degree 4 is read as degree 3 \(its band-4 coefficients are dropped\)"):
        r = read_ply(tmp_path / "d4.ply")
    want = torch.tensor([[c * 24 + j for c in range(3)] for j in range(15)], dtype=torch.float32)
    assert r.sh_degree == 3 and torch.equal(r.shN[0], want) and torch.equal(r.shN[1], want)


def test_ply_non_contiguous_f_rest(tmp_path):
    idx = [0, 1, 2, 3, 4, 5, 6, 7, 9]
    props = _std_props()[:9] + [(f"f_rest_{i}", "float") for i in idx] + _std_props()[9:]
    write_raw_ply(tmp_path / "r.ply", props, np.ones((2, len(props)), np.float32))
    with pytest.raises(FormatError, match="missing 'f_rest_8'"):
        read_ply(tmp_path / "r.ply")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("column", ["y", "opacity", "rot_3"])
def test_ply_non_finite_values(tmp_path, random_splats, bad, column):
    s = random_splats(5, sh_degree=0)
    rows = inria_rows(s)
    rows[3, [n for n, _ in _std_props()].index(column)] = bad
    write_raw_ply(tmp_path / "nan.ply", _std_props(), rows)
    if column == "opacity" and math.isinf(bad):  # alpha exactly 1 or 0, as converters write it
        with pytest.warns(Note, match=r"nan.ply: 1 opacity logit is infinite \(alpha exactly 0 or 1, as some "
                                      r"converters write them\): read as \+-30"):
            r = read_ply(tmp_path / "nan.ply")
        assert float(r.opacities[3]) == math.copysign(30.0, bad) and torch.equal(r.opacities[:3], s.opacities[:3])
        return
    with pytest.raises(FormatError) as e:
        read_ply(tmp_path / "nan.ply")
    assert "non-finite" in one_line_error(e) and "Gaussian 3" in str(e.value)



def test_ply_double_beyond_float32_is_named(tmp_path, random_splats):
    """A finite double past float32's range (1e300) was reported as "non-finite values"."""
    s = random_splats(5, sh_degree=0)
    rows = inria_rows(s).astype(np.float64)
    rows[2, 1] = -1e300
    write_raw_ply(tmp_path / "d.ply", [(n, "double") for n, _ in _std_props()], rows, fmt="ascii")
    with pytest.raises(FormatError) as e:
        read_ply(tmp_path / "d.ply")
    assert one_line_error(e).endswith("d.ply: property 'y' of Gaussian 2 is -1e+300, beyond float32's range")
    rows[2, 1] = 0.25  # doubles within range: read (rounded to float32)
    write_raw_ply(tmp_path / "d.ply", [(n, "double") for n, _ in _std_props()], rows, fmt="ascii")
    assert float(read_ply(tmp_path / "d.ply").means[2, 1]) == 0.25


def test_api_float64_beyond_float32_is_named(tmp_path, random_splats):
    """The same through the API: a float64 Splats holding a finite 1e300 was refused by the
    encoder as "non-finite values"; a real NaN is still named as such."""
    from gscomp.codec import encode_gsz
    from gscomp.commands.compress import compose_pipeline

    s = random_splats(5, sh_degree=0, dtype=torch.float64)
    s.means[2, 1] = 1e300
    with pytest.raises(GscompError, match=r"input splats: means has values beyond float32's range \(first at Gaussian 2\)"):
        encode_gsz(s, tmp_path / "a.gsz", compose_pipeline([]))
    s.means[2, 1] = float("nan")
    with pytest.raises(GscompError, match=r"input splats: means has non-finite values \(first at Gaussian 2\)"):
        encode_gsz(s, tmp_path / "a.gsz", compose_pipeline([]))
    assert not (tmp_path / "a.gsz").exists()


# ----------------------------------------------------------------------------- SPZ
def _check_lossy(s: Splats, r: Splats, *, pos_tol, quat_dot_min, sh_tols=(None, None)):
    assert len(r) == len(s)
    if not len(s):
        return
    assert (r.means - s.means).abs().max() <= pos_tol
    assert quat_dot(r.quats, s.quats).min() >= quat_dot_min
    assert (r.scales - s.scales).abs().max() <= 1 / 32 + 1e-5
    assert (torch.sigmoid(r.opacities) - torch.sigmoid(s.opacities)).abs().max() <= 0.5 / 255 + 1e-6
    assert (r.sh0 - s.sh0).abs().max() <= 0.5 / 255 / 0.15 + 1e-5
    k = s.shN.shape[1]
    if k and sh_tols[0] is not None:
        assert (r.shN[:, :3] - s.shN[:, :3]).abs().max() <= sh_tols[0]
        if k > 3:
            assert (r.shN[:, 3:] - s.shN[:, 3:]).abs().max() <= sh_tols[1]


@pytest.mark.parametrize("version", [2, 3, 4])
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spz_round_trip_bounded_error(tmp_path, version, degree):
    s = well_formed(300, degree, seed=version * 10 + degree)
    data = encode_spz(s, version=version)
    assert data[:2] == (b"\x1f\x8b" if version < 4 else b"NG")
    r = decode_spz(data)
    assert r.sh_degree == degree
    # 12 fractional bits -> half a step is 2^-13; SH buckets are 8/128 (5 bits) and 16/128 (4 bits)
    _check_lossy(s, r, pos_tol=2 ** -13 + 1e-6, quat_dot_min=0.9995 if version >= 3 else 0.995,
                 sh_tols=(4.5 / 128, 8.5 / 128))


@pytest.mark.parametrize("version", [2, 4])
def test_spz_antialiased_flag_round_trips(version):
    # flag 0x1 (made for gsplat's antialiased mode) is Splats.antialiased, read and written; the values
    # are the same either way
    s = well_formed(20, 1, seed=2)
    flag_at = 14 if version == 4 else None  # v4: uncompressed header, flags at byte 14

    def flags(data: bytes) -> int:
        return data[flag_at] if flag_at else gzip.decompress(data)[14]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = decode_spz(encode_spz(s, version=version), "p.spz")
        r = decode_spz(encode_spz(s, version=version, antialiased=True), "aa.spz")
    assert not plain.antialiased and r.antialiased
    assert_same(plain.replace(antialiased=True), r)
    assert flags(encode_spz(r, version=version)) & 1  # the flag follows the scene
    assert not flags(encode_spz(r, version=version, antialiased=False)) & 1


@pytest.mark.parametrize("n", [0, 1])
def test_spz_tiny_scenes(tmp_path, n):
    s = well_formed(n, 3, seed=5)
    for v in (2, 3, 4):
        save = tmp_path / f"t{v}.spz"
        save.write_bytes(encode_spz(s, version=v))
        r = load_splats(save)
        assert len(r) == n and r.sh_degree == 3


def test_spz_full_precision_sh_and_save_splats(tmp_path):
    s = well_formed(50, 3, seed=1)
    r = decode_spz(encode_spz(s, sh_bits=(8, 8)))
    assert (r.shN - s.shN).abs().max() <= 0.5 / 128 + 1e-6
    save_splats(tmp_path / "a.spz", s)  # default: version 3
    assert gzip.decompress((tmp_path / "a.spz").read_bytes())[4:8] == struct.pack("<I", 3)


def test_spz_large_payload_deflated_in_pieces(monkeypatch):
    """Large SPZ v3 payloads are deflated on two threads in pieces (pigz-style) yet stay one gzip
    member: any inflater (gzip, zlib with a gzip wrapper, our reader) gets the payload back, the
    bytes are the same every time, and the size is that of one stream (the pieces are primed with
    the 32 KB before them)."""
    import gscomp.io.spz as S

    s = well_formed(3000, 3, seed=9)
    monkeypatch.setattr(S, "GZIP_PIECE", 1 << 15)  # 5 pieces of its 195 KB
    data = encode_spz(s)
    raw = gzip.decompress(data)
    assert data == encode_spz(s) and zlib.decompress(data, 31) == raw
    assert gzip.decompress(gzip.compress(raw, compresslevel=6, mtime=0)) == raw
    assert len(data) < 1.01 * len(gzip.compress(raw, compresslevel=6, mtime=0))
    monkeypatch.setattr(S, "GZIP_PIECE", 1 << 30)  # one piece: the plain path, same payload
    assert gzip.decompress(encode_spz(s)) == raw
    r = decode_spz(data)
    assert len(r) == 3000 and r.shN.equal(decode_spz(encode_spz(s)).shN)


def test_spz_axis_flip_is_applied_and_undone():
    s = well_formed(20, 3, seed=2)
    raw = decode_spz(encode_spz(s, sh_bits=(8, 8)), convert=False)  # the file's own RUB values
    assert torch.allclose(raw.means[:, 0], s.means[:, 0], atol=2 ** -12)
    assert torch.allclose(raw.means[:, 1:], -s.means[:, 1:], atol=2 ** -12)
    assert (quat_dot(raw.quats, s.quats * torch.tensor([1.0, 1, -1, -1]))).min() > 0.999
    flip = torch.from_numpy(SH_FLIP_YZ)[None, :, None]
    assert torch.allclose(raw.shN, s.shN * flip, atol=0.5 / 128 + 1e-6)


def test_sh_flip_matches_the_rotation():
    # negating y and z (rotation by pi about x) must map the SH colour of direction d to the
    # colour of the flipped direction with the flipped coefficients
    g = torch.Generator().manual_seed(0)
    coeffs = torch.randn(64, 16, 3, generator=g, dtype=torch.float64)
    dirs = torch.nn.functional.normalize(torch.randn(64, 3, generator=g, dtype=torch.float64), dim=1)
    _, _, shN = flip_yz(np.zeros((64, 3)), np.zeros((64, 4)), coeffs[:, 1:].numpy())
    flipped = torch.cat([coeffs[:, :1], torch.from_numpy(shN)], 1)
    fd = dirs * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    assert torch.allclose(eval_sh(coeffs, dirs, 3), eval_sh(flipped, fd, 3), atol=1e-12)


def test_spz_splat_transform_fixtures_agree():
    d = f"{FIX}/splat_transform"
    ref = load_splats(shared(f"{d}/minimal.splat"))
    v3 = load_splats(shared(f"{d}/minimal-v3.spz"))
    v4 = load_splats(shared(f"{d}/minimal-v4.spz"))
    assert len(ref) == len(v3) == len(v4) == 4
    assert_same(v3, v4)  # same content, gzip container vs zstd streams
    # byte-exact re-encoding of these reference-written files
    assert gzip.decompress(encode_spz(v3, version=3)) == gzip.decompress(shared(f"{d}/minimal-v3.spz").read_bytes())
    # v3/v4 were written by the reference library from RDF data: after undoing the RUB flip
    # they match the .splat (which stores the same grid directly)
    assert torch.allclose(v3.means, ref.means, atol=1e-6)
    assert torch.allclose(v3.colors_dc(), ref.colors_dc(), atol=1 / 255)
    assert torch.allclose(torch.sigmoid(v3.opacities), torch.sigmoid(ref.opacities), atol=1 / 255)
    assert torch.allclose(covariance(v3), covariance(ref), rtol=0.07, atol=1e-7)

    # minimal-raw.spz / minimal-v2.spz are hand-made "historical" files (per their generator
    # script): the same uncompressed stream with and without gzip, no axis conversion and the
    # colour stored as plain RGB bytes. Check we decode exactly those bytes.
    raw = read_spz(shared(f"{d}/minimal-raw.spz"), convert=False)
    v2 = read_spz(shared(f"{d}/minimal-v2.spz"), convert=False)
    assert_same(raw, v2)
    assert torch.allclose(v2.means, ref.means, atol=2 ** -8)
    assert torch.allclose(v2.sh0 * 0.15 + 0.5, ref.colors_dc().unsqueeze(1), atol=1e-6)
    assert torch.allclose(v2.scales, ref.scales, atol=1 / 32)


def test_spz3_fixture_matches_its_ply():
    # This SPZ v2 (from MetalSplatter's test data) was written without axis conversion, with
    # fractionalBits = 21, with the PLY's rot_0..rot_3 in SPZ's x, y, z, w slots and the SH in
    # the PLY's channel-major order. We decode the bytes per the spec and check those facts.
    p = read_ply(shared(f"{FIX}/spz3/test-splat.3-points-from-train.ply"))
    z = read_spz(shared(f"{FIX}/spz3/test-splat.3-points-from-train.spz"), convert=False)
    assert len(z) == 3 and z.sh_degree == 3
    assert (z.means - p.means).abs().max() <= 2 ** -21
    # this encoder quantises by truncation, so errors reach a whole step
    assert (z.scales - p.scales).abs().max() <= 1 / 16
    assert (torch.sigmoid(z.opacities) - torch.sigmoid(p.opacities)).abs().max() <= 1 / 255
    assert (z.sh0 - p.sh0).abs().max() <= 1 / 255 / 0.15
    pq = unit(p.quats)
    stored_xyz = z.quats[:, 1:]  # the file's x, y, z = +-(rot_0, rot_1, rot_2), w >= 0 rebuilt
    sign = torch.sign(pq[:, 3:4])  # encoder made the file's w (the PLY's rot_3) non-negative
    assert (stored_xyz - sign * pq[:, :3]).abs().max() <= 1 / 127.5
    ply_channel_major = p.shN.transpose(1, 2).reshape(3, 45)
    assert (z.shN.reshape(3, 45) - ply_channel_major).abs().max() <= 8.5 / 128


def test_spz_malformed(tmp_path):
    good = encode_spz(well_formed(10, 1), version=3)
    with pytest.raises(FormatError, match="truncated|corrupt"):
        decode_spz(good[:-7], "x.spz")
    raw = gzip.decompress(good)
    with pytest.raises(FormatError, match="truncated SPZ data"):
        decode_spz(gzip.compress(raw[:-5]), "x.spz")
    with pytest.raises(FormatError, match="bad magic"):
        decode_spz(gzip.compress(b"XXXX" + raw[4:]), "x.spz")
    with pytest.raises(FormatError, match="unsupported SPZ version 9"):
        decode_spz(gzip.compress(raw[:4] + struct.pack("<I", 9) + raw[8:]), "x.spz")
    with pytest.raises(FormatError, match="not an SPZ file"):
        decode_spz(b"hello world, not spz", "x.spz")
    v4 = encode_spz(well_formed(10, 1), version=4)
    with pytest.raises(FormatError, match="truncated|past the end|out of bounds"):
        decode_spz(v4[:-3], "x.spz")
    with pytest.raises(FormatError, match="corrupt zstd"):
        decode_spz(v4[:-12] + b"\x00" * 12, "x.spz")
    (tmp_path / "e.spz").write_bytes(b"")
    with pytest.raises(FormatError):
        load_splats(tmp_path / "e.spz")
    # a gzip stream that inflates past what its header declares (a "bomb") is cut off there
    with pytest.raises(FormatError, match="more data than its header declares"):
        decode_spz(gzip.compress(raw + bytes(1 << 20)), "x.spz")
    # and a small file that declares (and would inflate to) far more points than it can hold
    import zstandard

    n = 400_000
    head = struct.pack("<IIIBBBB", 0x5053474E, 3, 50 * n, 0, 12, 0, 0)  # (gzip: over deflate's 1032:1)
    with pytest.raises(FormatError, match="decompression bomb"):
        decode_spz(gzip.compress(head + bytes(21 * n)), "x.spz")
    # gzip at 500:1, as 100k identical Gaussians give (gscomp wrote such a file and refused to read it)
    same = well_formed(1, 0, seed=5)
    same = Splats(**{k: v.expand(100_000, *v.shape[1:]).contiguous() for k, v in same.items()})
    data = encode_spz(same)
    assert len(data) * 300 < 21 * 100_000
    assert torch.equal(decode_spz(data, "x.spz").means, decode_spz(encode_spz(same[:1]), "y.spz").means.expand(100_000, 3))
    sizes = [9 * n, n, 3 * n, 3 * n, 4 * n]
    blobs = [zstandard.ZstdCompressor().compress(bytes(k)) for k in sizes]
    v4 = struct.pack("<IIIBBBBI12x", 0x5053474E, 4, n, 0, 12, 0, 5, 32)
    v4 += b"".join(struct.pack("<QQ", len(b), k) for b, k in zip(blobs, sizes)) + b"".join(blobs)
    with pytest.raises(FormatError, match="decompression bomb"):
        decode_spz(v4, "x.spz")


def test_ply_data_after_the_last_element_is_named(tmp_path):
    """A .ply with bytes (binary) or lines (ASCII) after its last element, a cut or hand-edited
    file, is read with a warning naming them, as the SPZ and .ksplat readers do; one that ends
    there reads in silence."""
    path = tmp_path / "a.ply"
    write_ply(path, well_formed(10, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = read_ply(path)
    with open(path, "ab") as f:
        f.write(b"\x00" * 1234)
    with pytest.warns(DataWarning, match=r"a.ply: 1,234 bytes after the last element are ignored"):
        got = read_ply(path)
    assert torch.equal(got.means, ref.means) and torch.equal(got.shN, ref.shN)
    # ASCII: plyfile reads a record a line and stops after the last; blank lines after it are fine
    s = well_formed(4, 1)
    write_raw_ply(path, [(n, "float") for n in ply_property_names(1)], inria_rows(s), fmt="ascii")
    with open(path, "a") as f:
        f.write("\n  \n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = read_ply(path)
    with open(path, "a") as f:
        f.write("1 2 3\n\n4 5 6")
    with pytest.warns(DataWarning, match=r"a.ply: 2 lines after the last element are ignored"):
        assert torch.equal(read_ply(path).means, ref.means)
    path.write_text(path.read_text().replace("1 2 3\n\n", ""))  # one line: singular (it said "1 line ... are ignored")
    with pytest.warns(DataWarning, match=r"a.ply: 1 line after the last element is ignored") as said:
        load_splats(path)
    assert said[0].filename == __file__  # (the ASCII warning pointed into gscomp.io)


def test_spz_bytes_after_its_gzip_stream_are_named():
    data = encode_spz(well_formed(10, 1), version=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = decode_spz(data, "x.spz")  # (no warning for a file that ends with its stream)
    for extra in (b"\x00" * 700, gzip.compress(b"a second member")):
        with pytest.warns(DataWarning, match=rf"x.spz: {len(extra):,} bytes after the SPZ's gzip stream are ignored"):
            got = decode_spz(data + extra, "x.spz")
        assert torch.equal(got.means, ref.means)
    v4 = encode_spz(well_formed(10, 1), version=4)  # (its zstd streams: read in silence, qa38_R F6)
    with pytest.warns(DataWarning, match=r"x.spz: 700 bytes after the SPZ's last stream are ignored"):
        assert torch.equal(decode_spz(v4 + bytes(700), "x.spz").means, decode_spz(v4, "x.spz").means)


def test_spz_large_coordinates_and_degree_4():
    s = well_formed(10, 0, seed=4)
    s = s.replace(means=s.means * 1000)  # |x| up to ~10^4: fewer fractional bits are used
    r = decode_spz(encode_spz(s))
    frac = gzip.decompress(encode_spz(s))[13]
    assert frac < 12 and (r.means - s.means).abs().max() <= 2.0 ** -(frac + 1) + 1e-3
    with pytest.raises(GscompError, match="cannot store positions"):
        encode_spz(s.replace(means=s.means * 1e4))
    # SH degree 4 (24 coefficients per channel) is read as its degree-3 part
    n = 2
    sh = np.arange(n * 24 * 3, dtype=np.uint8).reshape(n, 24, 3)
    head = struct.pack("<IIIBBBB", 0x5053474E, 3, n, 4, 12, 0, 0)
    body = bytes(9 * n) + bytes([255] * n) + bytes([128] * 3 * n) + bytes(3 * n) + bytes(4 * n)
    with pytest.warns(Note, match=r"x.spz: SH degree 4 is read as degree 3 \(its band-4 coefficients are dropped\)"):
        r = decode_spz(gzip.compress(head + body + sh.tobytes()), "x.spz", convert=False)
    assert r.sh_degree == 3
    assert torch.equal(r.shN, (torch.from_numpy(sh[:, :15].astype(np.float32)) - 128) / 128)


def test_spz_extension_records_are_skipped():
    s = well_formed(4, 1, seed=3)
    raw = bytearray(gzip.decompress(encode_spz(s, version=3)))
    raw[14] |= 0x2  # flags: has extensions
    ext = struct.pack("<II", 0xADBE0002, 12) + struct.pack("<fff", 0.1, 0.2, 0.3)
    data = gzip.compress(bytes(raw[:16]) + ext + bytes(raw[16:]))
    assert_same(decode_spz(data), decode_spz(encode_spz(s, version=3)))


def test_biker_compressed_ply_matches_biker_spz():
    b = load_splats(shared("splats/biker.compressed.ply"))
    z = load_splats(shared("splats/biker.spz"))  # SPZ v4, RUB; the loader undoes the flip
    assert len(b) == len(z) == 152_746 and b.sh_degree == z.sh_degree == 0
    # same order; differences are within the two formats' quantisation
    assert (b.means - z.means).abs().max() <= 2 ** -12
    assert quat_dot(b.quats, z.quats).min() >= 0.999
    inside = (b.scales >= -10).all(1)  # SPZ clamps log scales to [-10, 5.9]
    assert inside.float().mean() > 0.99
    assert (b.scales[inside] - z.scales[inside]).abs().max() <= 1 / 32 + 1e-3
    assert (b.colors_dc() - z.colors_dc()).abs().max() <= 1 / 255 + 1e-3
    assert (torch.sigmoid(b.opacities) - torch.sigmoid(z.opacities)).abs().max() <= 1e-6
    # our encoder reproduces the reference encoder's attribute streams: re-encoding the file's
    # content gives identical bytes, except rotation words that differ only in the sign bit of
    # a zero component or in the pick between (near-)equal largest components
    from gscomp.io.spz import _parse_v4

    orig, _ = _parse_v4(shared("splats/biker.spz").read_bytes(), "a")
    again, _ = _parse_v4(encode_spz(z, version=4), "b")
    for key in ("positions", "alphas", "colors", "scales"):
        assert np.array_equal(orig[key], again[key]), key
    ro, ra = orig["rotations"].view("<u4"), again["rotations"].view("<u4")
    assert (ro != ra).mean() < 0.01
    assert quat_dot(decode_spz(encode_spz(z, version=4)).quats, z.quats).min() > 0.99999
    # without the flip, y and z would disagree
    zr = read_spz(shared("splats/biker.spz"), convert=False)
    assert (zr.means[:, 1:] + b.means[:, 1:]).abs().max() <= 2 ** -12


def test_spz_save_says_what_its_ranges_clamp(tmp_path):
    """SPZ stores DC colour, log-scales and SH rest in fixed 8-bit ranges: what falls past them is
    clamped, and save_splats says how much (one warning); values inside stay unsaid."""
    s = well_formed(50, 1, seed=3)
    s = s.replace(sh0=torch.zeros(50, 1, 3), scales=torch.full((50, 3), -3.0), shN=torch.zeros(50, 3, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_splats(tmp_path / "a.spz", s)
    assert not [w for w in caught if issubclass(w.category, LossySaveWarning)]
    sh0, scales = s.sh0.clone(), s.scales.clone()
    sh0[:4] = 5.0  # DC colour past +-3.35
    scales[3:5, 1] = -14.0  # log-scale below -10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_splats(tmp_path / "b.spz", s.replace(sh0=sh0, scales=scales))
    said = [str(w.message) for w in caught if issubclass(w.category, LossySaveWarning)]
    assert said == ["b.spz: SPZ's 8-bit ranges clamp values of 5 of 50 Gaussians (DC colour past +-3.35 4, "
                    "log-scale outside [-10.03, 5.97] 2)"]


def test_spz_save_says_when_its_positions_are_coarse(tmp_path):
    """24-bit fixed point leaves few fraction bits far from the origin (a scene in map coordinates:
    a 3 cm step at x = 2e5, -14 dB on biker) and at most 12 for a tiny scene; that went unsaid."""
    s = well_formed(50, 0, seed=3).replace(scales=torch.full((50, 3), math.log(0.05)))
    for offset, coarse in ((0.0, False), (2e5, True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            save_splats(tmp_path / "a.spz", s.replace(means=s.means + offset))
        said = [str(w.message) for w in caught if issubclass(w.category, LossySaveWarning)]
        assert said == (["a.spz: SPZ's 24-bit fixed-point positions have a step of 0.03125 here, 0.63x the median "
                         "Gaussian's size (a scene far from the origin, or a tiny one): .ply or .gsz keep them"]
                        if coarse else []), offset


def test_clamp_notes_count_what_rounding_cannot_reach():
    """A value is noted as clamped when clamping moves it more than rounding would: more than half
    a step past the 8-bit ends (the rule the notes' labels, e.g. log-scale <= 5.97, state)."""
    raw = np.array([[-0.4, 0.0], [255.4, 3.0], [-0.6, 1.0], [2.0, 255.6]])
    assert clamped_rows(raw).tolist() == [False, False, True, True]


# ----------------------------------------------------------------------------- .splat
@pytest.mark.parametrize("degree", [0, 3])
@pytest.mark.parametrize("n", [0, 1, 100])
def test_splat_round_trip(tmp_path, degree, n):
    s = well_formed(n, degree, seed=n)
    s = s.replace(sh0=(torch.rand(n, 1, 3) - 0.5) * 3.4)  # colours inside [0, 1]
    with warnings.catch_warnings(record=True) as caught:  # dropping SH is said, once
        warnings.simplefilter("always")
        save_splats(tmp_path / "a.splat", s)
    said = [str(w.message) for w in caught if issubclass(w.category, LossySaveWarning)]
    assert said == ([f"a.splat: .splat keeps SH degree 0 only (the scene has degree {degree})"] if degree else [])
    assert (tmp_path / "a.splat").stat().st_size == 32 * n
    r = load_splats(tmp_path / "a.splat")
    assert r.sh_degree == 0 and len(r) == n  # .splat has no higher-order SH
    if n:
        assert torch.equal(r.means, s.means)
        assert torch.allclose(r.scales, s.scales, atol=1e-5)
        assert (r.colors_dc() - s.colors_dc()).abs().max() <= 0.5 / 255 + 1e-6
        assert (torch.sigmoid(r.opacities) - torch.sigmoid(s.opacities)).abs().max() <= 0.5 / 255 + 1e-6
        assert quat_dot(r.quats, s.quats).min() >= 0.99


def test_splat_clamps_scales_float32_cannot_hold(tmp_path):
    # exp of a log-scale of 100 is inf in float32: the file could not be read back
    s = well_formed(4, 0, seed=1)
    scales = s.scales.clone()
    scales[0, 0], scales[1, 2] = 100.0, -120.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_splats(tmp_path / "a.splat", s.replace(scales=scales))
    said = [str(w.message) for w in caught if issubclass(w.category, LossySaveWarning)]
    # ... and one of -120 underflowed to a scale of 0, which splat-transform reads as log-scale -inf
    assert "a.splat: .splat's float32 scales clamp the scale of 2 of 4 Gaussians (log-scale outside [-87.3, 88.7])" in said
    rec = np.frombuffer((tmp_path / "a.splat").read_bytes(), np.float32).reshape(4, 8)
    assert rec[1, 5] == np.finfo(np.float32).tiny  # (the record's scales: floats 3-5)
    r = load_splats(tmp_path / "a.splat")
    assert torch.isfinite(r.scales).all() and float(r.scales[0, 0]) > 88 and float(r.scales[1, 2]) < -60
    assert torch.allclose(r.scales[2:], scales[2:], atol=1e-5)


def test_splat_fixture_values():
    s = load_splats(shared(f"{FIX}/splat_transform/minimal.splat"))
    assert len(s) == 4
    assert s.means[:, 1].abs().max() == 0 and set(s.means[:, 0].tolist()) == {-1.0, 0.0}
    assert torch.allclose(s.scales.exp(), torch.full((4, 3), 0.1))
    assert torch.allclose(torch.sigmoid(s.opacities), torch.full((4,), 230 / 255))
    assert torch.allclose(s.colors_dc()[:, 2], torch.full((4,), 128 / 255))


def test_splat_malformed():
    with pytest.raises(FormatError, match="multiple of the 32-byte"):
        decode_splat(b"\x00" * 33, "x.splat")
    rec = bytearray(encode_splat(well_formed(2, 0)))
    rec[0:4] = struct.pack("<f", float("nan"))
    with pytest.raises(FormatError, match="non-finite"):
        decode_splat(bytes(rec), "x.splat")


# ----------------------------------------------------------------------------- .ksplat
def test_ksplat_fixture_matches_splat():
    d = f"{FIX}/splat_transform"
    k = load_splats(shared(f"{d}/minimal.ksplat"))
    s = load_splats(shared(f"{d}/minimal.splat"))
    for f in ("means", "scales", "opacities", "sh0"):
        assert torch.allclose(getattr(k, f), getattr(s, f), atol=1e-6), f


@pytest.mark.parametrize("mode", [1, 2])
def test_ksplat_quantized_modes(tmp_path, mode):
    # one section, buckets: one full (capacity 2) + one partial of 1 splat; SH degree 1
    qr, block = 32767, 4.0
    centres = np.array([[1.0, 2.0, 3.0], [-5.0, 0.0, 5.0]], np.float32)
    bucket = [0, 0, 1]
    u16 = np.array([[qr, qr + 100, qr - 200], [0, 65535, qr], [qr + 1, qr, qr]], np.uint16)
    lin = np.array([[0.1, 0.2, 0.3], [1.0, 0.5, 0.25], [2.0, 0.01, 0.1]])
    rot = np.array([[1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5], [0, 0, 0.6, 0.8]])
    rgba = np.array([[255, 0, 128, 200], [10, 20, 30, 40], [0, 0, 0, 255]], np.uint8)
    sh_u8 = np.arange(3 * 9, dtype=np.uint8).reshape(3, 9) * 9  # stored order: R0 R1 R2 G0..B2
    sh_vals = sh_u8.astype(np.float64) * 0.01 - 0.1 if mode == 1 else -1.5 + sh_u8 / 255 * 3.0
    head = bytearray(4096)
    head[0], head[1] = 0, 1
    struct.pack_into("<I", head, 4, 1)
    struct.pack_into("<I", head, 16, 3)
    struct.pack_into("<H", head, 20, mode)
    sec = bytearray(1024)
    struct.pack_into("<IIII", sec, 0, 3, 3, 2, 2)
    struct.pack_into("<f", sec, 16, block)
    struct.pack_into("<H", sec, 20, 12)
    struct.pack_into("<I", sec, 24, qr)
    struct.pack_into("<II", sec, 32, 1, 1)
    struct.pack_into("<H", sec, 40, 1)
    recs = b""
    for i in range(3):
        recs += u16[i].tobytes() + lin[i].astype("<f2").tobytes() + rot[i].astype("<f2").tobytes()
        recs += rgba[i].tobytes()
        recs += sh_vals[i].astype("<f2").tobytes() if mode == 1 else sh_u8[i].tobytes()
    p = tmp_path / "a.ksplat"
    p.write_bytes(bytes(head) + bytes(sec) + struct.pack("<I", 1) + centres.tobytes() + recs)
    s = load_splats(p)
    assert len(s) == 3 and s.sh_degree == 1
    want = (u16.astype(np.float64) - qr) * (block / 2 / qr) + centres[bucket]
    assert np.allclose(s.means.numpy(), want, atol=1e-5)
    assert np.allclose(s.scales.exp().numpy(), lin.astype(np.float16), rtol=1e-3)
    assert np.allclose(s.quats.numpy(), rot.astype(np.float16))
    assert np.allclose(s.colors_dc().numpy(), rgba[:, :3] / 255, atol=1e-6)
    tol = 1e-3 if mode == 1 else 1e-6
    for c in range(3):  # channel-major inside the band
        assert np.allclose(s.shN[:, :, c].numpy(), sh_vals[:, 3 * c:3 * c + 3], atol=tol)
    # untrusted bucket geometry: nothing is allocated by the declared counts (2^32 x 2^32 here),
    # and a layout this reader does not know is a clean error
    data = p.read_bytes()
    big = bytearray(data)
    struct.pack_into("<I", big, 4096 + 8, 0xFFFFFFFF)  # bucket capacity
    struct.pack_into("<I", big, 4096 + 32, 0xFFFFFFFF)  # full buckets
    p.write_bytes(bytes(big))
    assert len(load_splats(p)) == 3
    bad = bytearray(data)
    struct.pack_into("<H", bad, 4096 + 20, 0)  # bucket storage
    p.write_bytes(bytes(bad))
    with pytest.raises(FormatError, match="bucket storage 0 bytes"):
        load_splats(p)


def test_ksplat_malformed(tmp_path):
    (tmp_path / "a.ksplat").write_bytes(b"\x00\x01" + bytes(100))
    with pytest.raises(FormatError, match="too small"):
        load_splats(tmp_path / "a.ksplat")
    data = bytearray(shared(f"{FIX}/splat_transform/minimal.ksplat").read_bytes())
    (tmp_path / "t.ksplat").write_bytes(bytes(data) + bytes(100_000))
    with pytest.warns(DataWarning, match=r"t\.ksplat: 100,000 bytes after the last section are ignored"):
        assert len(load_splats(tmp_path / "t.ksplat")) == 4
    (tmp_path / "b.ksplat").write_bytes(bytes(data[:-20]))
    with pytest.raises(FormatError, match="truncated"):
        load_splats(tmp_path / "b.ksplat")
    struct.pack_into("<I", data, 16, 5)
    (tmp_path / "c.ksplat").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="header says 5 splats"):
        load_splats(tmp_path / "c.ksplat")


# ----------------------------------------------------------------------------- compressed PLY
def _compressed_ply_bytes(chunks: np.ndarray, packed: np.ndarray, sh: np.ndarray | None = None,
                          n_chunks: int | None = None) -> bytes:
    """chunks has 18 columns (with the per-chunk colour range) or 12 (older files)."""
    cprops = ["min_x", "min_y", "min_z", "max_x", "max_y", "max_z", "min_scale_x", "min_scale_y",
              "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z", "min_r", "min_g", "min_b",
              "max_r", "max_g", "max_b"][:chunks.shape[1]]
    h = f"ply\nformat binary_little_endian 1.0\nelement chunk {n_chunks or len(chunks)}\n"
    h += "".join(f"property float {p}\n" for p in cprops)
    h += f"element vertex {len(packed)}\n"
    h += "".join(f"property uint {p}\n" for p in ("packed_position", "packed_rotation", "packed_scale", "packed_color"))
    if sh is not None:
        h += f"element sh {len(sh)}\n" + "".join(f"property uchar f_rest_{i}\n" for i in range(sh.shape[1]))
    h += "end_header\n"
    body = chunks.astype("<f4").tobytes() + packed.astype("<u4").tobytes()
    if sh is not None:
        body += sh.astype(np.uint8).tobytes()
    return h.encode() + body


@pytest.mark.parametrize("n,degree", [(0, 0), (1, 3), (257, 1), (700, 3)])
def test_compressed_ply_writer_round_trip(tmp_path, n, degree):
    # `OUT.compressed.ply` is PlayCanvas's layout: Gaussians in Morton order, each value within half
    # a step of its chunk's range (11/10/11-bit positions and log-scales, 8-bit colour in the chunk's
    # colour range, 8-bit alpha, 10-bit smallest-three rotations, uchar SH over [-4, 4])
    s = well_formed(n, degree, seed=n)
    p = tmp_path / "o.compressed.ply"
    save_splats(p, s)
    head = p.read_bytes()[:3000]
    assert b"element chunk %d\n" % ((n + 255) // 256) in head and b"property uint packed_rotation" in head
    assert (b"element sh" in head) == (degree > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Note)  # (alpha 255 reads as an infinite logit, with a note)
        r = load_splats(p)
    assert len(r) == n and r.sh_degree == degree
    if not n:
        return
    from gscomp.io.compressed_ply import chunk_order
    from gscomp.splats import SH_C0

    t = s[torch.from_numpy(chunk_order(s.means.numpy()))]  # the source in the written order
    ci = torch.arange(n) // 256

    def half_steps(v: torch.Tensor, bits) -> torch.Tensor:
        v = v.double()
        lo = torch.stack([v[ci == c].min(0).values for c in range(int(ci[-1]) + 1)])[ci]
        hi = torch.stack([v[ci == c].max(0).values for c in range(int(ci[-1]) + 1)])[ci]
        return (hi - lo) / (2 * (2 ** torch.tensor(bits, dtype=torch.float64) - 1)) + 1e-5 * (1 + v.abs())

    assert ((r.means - t.means).abs() <= half_steps(t.means, [11, 10, 11])).all()
    assert ((r.scales - t.scales).abs() <= half_steps(t.scales, [11, 10, 11])).all()
    rgb = 0.5 + SH_C0 * t.sh0[:, 0].double()
    assert ((r.sh0[:, 0].double() - t.sh0[:, 0]).abs() * SH_C0 <= half_steps(rgb, [8, 8, 8])).all()
    assert (torch.sigmoid(r.opacities) - torch.sigmoid(t.opacities)).abs().max() <= 0.5 / 255 + 1e-6
    assert quat_dot(r.quats, t.quats).min() >= 0.99999
    if degree:
        assert (r.shN - t.shN).abs().max() <= 8 / 256 + 1e-6


def test_compressed_ply_writer_clamps_sh_with_a_note(tmp_path):
    s = well_formed(10, 1, seed=3)
    s.shN[2, 0, 0] = 5.0
    with pytest.warns(LossySaveWarning, match=r"c.compressed.ply: 1 Gaussian has SH coefficients beyond the sh element's "
                                              r"range \+-4, clamped"):
        save_splats(tmp_path / "c.compressed.ply", s)


@pytest.mark.parametrize("chunk_color", [True, False])
def test_compressed_ply_decoding_math(tmp_path, chunk_color):
    chunk = np.array([[-1, 0, 2, 1, 4, 3, -5, -4, -3, -1, 0, 1, 0, 0, 0, 1, 0.5, 2]], np.float32)
    if not chunk_color:
        chunk = chunk[:, :12]
    pos = (2047 << 21) | (0 << 11) | 1023  # x = max, y = min, z ~ middle
    # largest = x (index 1 in wxyz); the others (w, y, z) encode 0.5, 0, -0.5 * sqrt(0.5)...
    a, b, c = 0.5, 0.0, -0.5
    enc = lambda v: int(round((v / math.sqrt(2) + 0.5) * 1023))  # noqa: E731
    rot = (1 << 30) | (enc(a) << 20) | (enc(b) << 10) | enc(c)
    scl = (0 << 21) | (1023 << 11) | 2047
    col = (255 << 24) | (0 << 16) | (51 << 8) | 128
    sh = np.array([[0, 255, 128] * 3])
    p = tmp_path / "c.ply"
    p.write_bytes(_compressed_ply_bytes(chunk, np.array([[pos, rot, scl, col]], np.uint32), sh))
    s = load_splats(p)
    assert len(s) == 1 and s.sh_degree == 1
    assert torch.allclose(s.means[0], torch.tensor([1.0, 0.0, 2 + 1023 / 2047]), atol=1e-6)
    small = torch.tensor([enc(v) / 1023 - 0.5 for v in (a, b, c)]) * math.sqrt(2)
    expect = torch.tensor([small[0], (1 - (small ** 2).sum()).sqrt(), small[1], small[2]])
    assert torch.allclose(s.quats[0], expect, atol=1e-6)
    assert torch.allclose(s.scales[0], torch.tensor([-5.0, 0.0, 1.0]), atol=1e-6)
    # colour is lerped in the chunk's colour range when the file has one
    rgb = torch.tensor([1.0, 0.0, (2 if chunk_color else 1) * 51 / 255])
    assert torch.allclose(s.colors_dc()[0], rgb, atol=1e-6)
    assert torch.allclose(torch.sigmoid(s.opacities), torch.tensor([128 / 255]), atol=1e-6)
    # sh: channel-major, value (n - 0.5) * 8 with n(0)=0, n(255)=1, n(b)=(b+0.5)/256
    assert torch.allclose(s.shN[0, :, 0], torch.tensor([-4.0, 4.0, (128.5 / 256 - 0.5) * 8]))


def test_compressed_ply_malformed(tmp_path):
    chunk = np.zeros((1, 18), np.float32)
    p = tmp_path / "c.ply"
    p.write_bytes(_compressed_ply_bytes(chunk, np.zeros((300, 4), np.uint32), n_chunks=1))
    with pytest.raises(FormatError, match="1 chunks for 300 Gaussians"):
        load_splats(p)
    p.write_bytes(_compressed_ply_bytes(chunk, np.zeros((3, 4), np.uint32))[:-5])
    with pytest.raises(FormatError):
        load_splats(p)
    # a list where a scalar belongs; an `sh` element without properties (no SH)
    head = "ply\nformat ascii 1.0\nelement chunk 1\n" + "".join(f"property float {c}\n" for c in
                                                                  ("min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
                                                                   "min_scale_x", "min_scale_y", "min_scale_z",
                                                                   "max_scale_x", "max_scale_y", "max_scale_z"))
    verts = "element vertex 2\nproperty uint packed_position\nproperty uint packed_rotation\nproperty uint packed_scale\n"
    body = " ".join(["0"] * 12) + "\n"
    p.write_text(head + verts + "property list uchar uint packed_color\nend_header\n" + body + "0 0 0 1 7\n" * 2)
    with pytest.raises(FormatError, match="'packed_color' in element 'vertex' is a list"):
        load_splats(p)
    p.write_text(head + verts + "property uint packed_color\nelement sh 2\nend_header\n" + body + "0 0 0 7\n" * 2 + "\n" * 2)
    assert load_splats(p).sh_degree == 0
    # sh values are bytes: a float column (no writer makes one) was read through the byte formula
    sh9 = "element sh 2\n" + "".join(f"property float f_rest_{i}\n" for i in range(9))
    p.write_text(head + verts + "property uint packed_color\n" + sh9 + "end_header\n" + body + "0 0 0 7\n" * 2
                 + (" ".join(["0.3"] * 9) + "\n") * 2)
    with pytest.raises(FormatError, match="property 'f_rest_0' of the sh element must hold bytes 0..255"):
        load_splats(p)
    # the byte table is the layout's formula (0 and 255 the range's ends, else the bucket centre)
    from gscomp.io.compressed_ply import SH_OF_BYTE

    assert SH_OF_BYTE[0] == -4.0 and SH_OF_BYTE[255] == 4.0 and SH_OF_BYTE[128] == np.float32((128.5 / 256 - 0.5) * 8)


def test_compressed_sh_fixture():
    s = load_splats(shared(f"{FIX}/compressed_sh.ply"))
    assert len(s) == 64 and s.sh_degree == 3
    assert s.shN.abs().max() <= 4.0
    assert torch.allclose(s.quats.norm(dim=1), torch.ones(64), atol=1e-5)


# ----------------------------------------------------------------------------- SOG
def _webp(arr: np.ndarray) -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, np.uint8), "RGBA").save(b, format="WEBP", lossless=True, exact=True)
    return b.getvalue()


def _make_sog(d, n=5, w=3, h=2, bands=1, seed=0):
    """A tiny SOG v2 scene with known values; returns the expected Splats."""
    rng = np.random.default_rng(seed)
    d.mkdir(exist_ok=True)
    px = lambda: np.zeros((h * w, 4), np.uint8)  # noqa: E731
    q16 = rng.integers(0, 65536, (n, 3))
    lo, hi = px(), px()
    lo[:n, :3], hi[:n, :3] = q16 & 255, q16 >> 8
    mins, maxs = [-1.0, -0.5, 0.0], [1.0, 2.0, 0.5]
    quat_px = px()
    quat_px[:n, :3] = rng.integers(0, 256, (n, 3))
    quat_px[:n, 3] = 252 + rng.integers(0, 4, n)
    sc_px, c0_px = px(), px()
    sc_px[:n, :3] = rng.integers(0, 256, (n, 3))
    c0_px[:n] = rng.integers(0, 256, (n, 4))
    cb = np.sort(rng.normal(size=256)).tolist()
    k = (bands + 1) ** 2 - 1
    palette = 70
    cent = np.zeros((2, 64 * k, 4), np.uint8)
    cent[..., :3] = rng.integers(0, 256, (2, 64 * k, 3))
    cent[..., 3] = 255
    labels = rng.integers(0, palette, n)
    lab_px = px()
    lab_px[:n, 0], lab_px[:n, 1] = labels & 255, labels >> 8
    files = {"means_l.webp": lo, "means_u.webp": hi, "quats.webp": quat_px, "scales.webp": sc_px,
             "sh0.webp": c0_px, "shN_labels.webp": lab_px}
    for name, arr in files.items():
        (d / name).write_bytes(_webp(arr.reshape(h, w, 4)))
    (d / "shN_centroids.webp").write_bytes(_webp(cent))
    meta = {"version": 2, "count": n,
            "means": {"mins": mins, "maxs": maxs, "files": ["means_l.webp", "means_u.webp"]},
            "scales": {"codebook": cb, "files": ["scales.webp"]},
            "quats": {"files": ["quats.webp"]},
            "sh0": {"codebook": cb, "files": ["sh0.webp"]},
            "shN": {"count": palette, "bands": bands, "codebook": cb,
                    "files": ["shN_centroids.webp", "shN_labels.webp"]}}
    (d / "meta.json").write_text(json.dumps(meta))
    # expected values, computed per Gaussian from the spec
    cbn = np.array(cb)
    means = np.zeros((n, 3))
    quats = np.zeros((n, 4))
    shN = np.zeros((n, k, 3))
    for i in range(n):
        for a in range(3):
            v = mins[a] + (maxs[a] - mins[a]) * q16[i, a] / 65535
            means[i, a] = math.copysign(math.expm1(abs(v)), v)
        big = quat_px[i, 3] - 252
        rest = [j for j in range(4) if j != big]
        for j, c in zip(rest, quat_px[i, :3]):
            quats[i, j] = (c / 255 * 2 - 1) / math.sqrt(2)
        quats[i, big] = math.sqrt(max(0.0, 1 - (quats[i] ** 2).sum()))
        lab = labels[i]
        for j in range(k):
            shN[i, j] = cbn[cent[lab // 64, (lab % 64) * k + j, :3]]
    alpha = np.clip(c0_px[:n, 3] / 255, 1e-6, 1 - 1e-6)
    return Splats(
        means=torch.tensor(means, dtype=torch.float32), quats=torch.tensor(quats, dtype=torch.float32),
        scales=torch.tensor(cbn[sc_px[:n, :3]], dtype=torch.float32),
        opacities=torch.tensor(np.log(alpha / (1 - alpha)), dtype=torch.float32),
        sh0=torch.tensor(cbn[c0_px[:n, :3]], dtype=torch.float32).unsqueeze(1),
        shN=torch.tensor(shN, dtype=torch.float32))


def test_sog_decoding_math(tmp_path):
    want = _make_sog(tmp_path / "scene", bands=2)
    for target in (tmp_path / "scene", tmp_path / "scene" / "meta.json"):
        got = load_splats(target)
        assert got.sh_degree == 2
        for k, v in want.items():
            assert torch.allclose(getattr(got, k), v, atol=1e-6), k
    # zipped bundle
    import zipfile

    with zipfile.ZipFile(tmp_path / "scene.sog", "w") as z:
        for f in (tmp_path / "scene").iterdir():
            z.write(f, f.name)
    assert_same(load_splats(tmp_path / "scene.sog"), load_splats(tmp_path / "scene"))


def test_sog_malformed(tmp_path):
    d = tmp_path / "s"
    _make_sog(d)
    meta = json.loads((d / "meta.json").read_text())
    bad = dict(meta, count=100)  # more Gaussians than texture pixels
    (d / "meta.json").write_text(json.dumps(bad))
    with pytest.raises(FormatError, match="fewer than the 100"):
        load_splats(d)
    (d / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "scales"}))
    with pytest.raises(FormatError, match=r"no 'scales\.(files|codebook)'"):
        load_splats(d)
    (d / "meta.json").write_text(json.dumps(dict(meta, version=3)))
    with pytest.raises(FormatError, match="SOG version 3"):
        load_splats(d)
    (d / "meta.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": []}))  # another JSON file
    with pytest.raises(FormatError, match="not a SOG meta.json"):
        load_splats(d / "meta.json")
    (d / "meta.json").write_text(json.dumps(dict(meta, quats={"files": []})))
    with pytest.raises(FormatError, match="quats.files must list 1"):
        load_splats(d)
    (d / "meta.json").write_text(json.dumps(meta))
    (d / "quats.webp").write_bytes(b"RIFF0000WEBPjunk")
    with pytest.raises(FormatError, match=r"cannot decode texture 'quats.webp' \(cannot identify image file\)$"):
        load_splats(d)  # (PIL's text named the buffer's address, different in each run)
    (d / "meta.json").write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        load_splats(d)
    (d / "meta.json").write_text("[" * 100_000 + "]" * 100_000)  # nested past Python's recursion limit
    with pytest.raises(FormatError, match="not valid JSON"):
        load_splats(d)
    _make_sog(d)  # (the good textures again)
    wrong = [  # values of the wrong kind
        (dict(meta, count=True), "'count' must be a non-negative integer"),
        (dict(meta, means=dict(meta["means"], mins=["a", "b", "c"])), "'means.mins' must be 3 numbers"),
        (dict(meta, scales=dict(meta["scales"], codebook={"a": 1})), "'scales.codebook' must be 256 numbers"),
        (dict(meta, shN=dict(meta["shN"], bands=1.0)), "'shN.bands' must be a non-negative integer"),
        (dict(meta, shN=dict(meta["shN"], count="12")), "'shN.count' must be a non-negative integer"),
        (dict(meta, scales=dict(meta["scales"], codebook=["1"] * 256)), "'scales.codebook' must be 256 numbers"),
        (dict(meta, scales=dict(meta["scales"], codebook=[True] * 256)), "'scales.codebook' must be 256 numbers"),
        (dict(meta, version=2.0), "'version' must be the integer 2, got 2.0"),  # (numpy and == took these)
        (dict(meta, version=True), "'version' must be the integer 2, got True"),
    ]
    for bad, msg in wrong:
        (d / "meta.json").write_text(json.dumps(bad))
        with pytest.raises(FormatError, match=msg):
            load_splats(d)
    sog = tmp_path / "x.sog"
    sog.write_bytes(b"PK\x03\x04" + bytes(40) + b"PK\x05\x06" + bytes(18))  # directory points nowhere
    with pytest.raises(FormatError, match="x.sog"):
        load_splats(sog)
    import zipfile

    with zipfile.ZipFile(sog, "w") as z:
        for f in sorted(d.iterdir()):
            z.write(f, f.name)
    sog.write_bytes(sog.read_bytes()[:-30])  # cut: no zip directory at the end
    with pytest.raises(FormatError, match="not a readable .sog bundle"):
        load_splats(sog)
    with pytest.raises(GscompError, match="no meta.json"):
        load_splats(tmp_path)


def test_playbot_sog_levels():
    with pytest.raises(FormatError, match="level-of-detail index"):
        load_splats(shared("splats/playbot/lod-meta.json"))
    meta = json.loads(shared("splats/playbot/lod-meta.json").read_text())
    lo, hi = (torch.tensor(meta["tree"]["bound"][k]) for k in ("min", "max"))
    for level, count in (("6_0", 1873), ("0_0", 500_000)):
        s = load_splats(shared(f"splats/playbot/{level}"))
        assert len(s) == count and s.sh_degree == 2
        assert (s.means >= lo - 1e-3).all() and (s.means <= hi + 1e-3).all()
        assert torch.allclose(s.quats.norm(dim=1), torch.ones(count), atol=1e-5)


# ----------------------------------------------------------------------------- mutation fuzz
FUZZ_FIXTURES = ["fixtures/pc_short.ply", "fixtures/compressed_sh.ply", "fixtures/spz3/test-splat.3-points-from-train-ascii.ply",
                 "fixtures/spz3/test-splat.3-points-from-train.spz", "fixtures/splat_transform/minimal-v2.spz",
                 "fixtures/splat_transform/minimal-v4.spz", "fixtures/splat_transform/minimal.ksplat",
                 "fixtures/splat_transform/minimal.splat"]


def _mutate(b: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(b)
    at = int(rng.integers(0, len(b)))
    kind = int(rng.integers(0, 6))
    if kind == 0:
        return bytes(b[:at])
    if kind == 1:
        for _ in range(int(rng.integers(1, 9))):
            b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
    elif kind == 2:
        b[at:at] = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    elif kind == 3:
        del b[at:at + int(rng.integers(1, 65))]
    elif kind == 4:  # a 32-bit field set to an extreme (counts, sizes, offsets)
        b[at:at + 4] = [b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff"][int(rng.integers(0, 3))]
    else:  # PLY header edits: counts and types that disagree with the body
        for a, c in ((b"element vertex ", b"element vertex 9"), (b"float", b"double"), (b"float", b"uchar"),
                     (b"binary_little_endian", b"binary_big_endian")):
            if rng.random() < 0.5:
                b = bytearray(bytes(b).replace(a, c, 1))
    return bytes(b)


@pytest.mark.parametrize("rel", FUZZ_FIXTURES)
def test_readers_on_mutated_files(rel, tmp_path):
    """Truncated, bit-flipped, spliced or re-headed files load or fail with a one-line
    GscompError: no other exception, no hang (each load is timed)."""
    import time

    src = shared(rel).read_bytes()
    rng = np.random.default_rng(FUZZ_FIXTURES.index(rel))
    path = tmp_path / ("m" + rel[rel.rindex("."):])
    for _ in range(60):
        path.write_bytes(_mutate(src, rng))
        t = time.perf_counter()
        try:
            load_splats(path)
        except GscompError as e:
            assert "\n" not in str(e)
        assert time.perf_counter() - t < 5


# ----------------------------------------------------------------------------- dispatch & atomicity
def test_dispatch_and_errors(tmp_path, random_splats, monkeypatch):
    s = random_splats(3, sh_degree=1)
    save_splats(tmp_path / "a.ply", s)
    (tmp_path / "renamed.bin").write_bytes((tmp_path / "a.ply").read_bytes())
    assert detect_format(tmp_path / "renamed.bin") == "ply"
    assert_same(load_splats(tmp_path / "renamed.bin"), s)
    (tmp_path / "x.xyz").write_bytes(b"????")
    with pytest.raises(FormatError, match="unrecognised splat file type"):
        load_splats(tmp_path / "x.xyz")
    with pytest.raises(GscompError, match="cannot write '.gsz'"):
        save_splats(tmp_path / "a.gsz", s)
    with pytest.raises(GscompError, match="non-finite"):
        save_splats(tmp_path / "b.ply", s.replace(means=s.means * float("nan")))
    assert not (tmp_path / "b.ply").exists()

    import gscomp.codec

    seen = []
    monkeypatch.setattr(gscomp.codec, "decode_gsz", lambda p: seen.append(p) or s, raising=False)
    (tmp_path / "c.gsz").write_bytes(b"GSZ")
    assert load_splats(tmp_path / "c.gsz") is s and seen == [tmp_path / "c.gsz"]


def test_atomic_open_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "out.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(p) as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["out.bin"]
    with atomic_open(p) as f:
        f.write(b"new")
    assert p.read_bytes() == b"new"
    # torch.save on a full disk: its writer raises RuntimeError("... unexpected pos ..."), the
    # OSError being its context (was an internal error while saving a checkpoint)
    with pytest.raises(GscompError, match="cannot write .*out.bin: No space left on device"):
        with atomic_open(p) as f:
            try:
                raise OSError(28, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert p.read_bytes() == b"new" and [x.name for x in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_open_gives_the_mode_of_a_plain_open(tmp_path):
    """Outputs are readable as the umask allows (mkstemp's 0600 made them private to the user)."""
    import os
    import stat

    p = tmp_path / "out.bin"
    with atomic_open(p) as f:
        f.write(b"x")
    with open(tmp_path / "plain.bin", "wb") as f:
        f.write(b"x")
    mode = stat.S_IMODE(os.stat(p).st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.bin").st_mode) and mode & stat.S_IRUSR
    os.chmod(p, 0o600)  # a file replaced keeps its mode (a private output stayed private... until rewritten)
    with atomic_open(p) as f:
        f.write(b"y")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600 and p.read_bytes() == b"y"


def test_atomic_open_writes_through_a_symlink(tmp_path):
    """Like cp: the link's target gets the new content and the link stays a link; os.replace on
    the link itself would have turned it into a plain file. Like cp, a link to no file is refused."""
    import os

    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "scene.gsz"
    target.write_bytes(b"old")
    link = tmp_path / "scene.gsz"
    link.symlink_to(target)
    with atomic_open(link) as f:
        f.write(b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path / "real")) == ["scene.gsz"]  # no temp file left
    # a link that leads to no file is refused, as cp refuses it (it created a file wherever it pointed)
    dangling = tmp_path / "d.gsz"
    dangling.symlink_to(tmp_path / "elsewhere" / "later.gsz")
    (tmp_path / "elsewhere").mkdir()
    loop = tmp_path / "loop.gsz"
    loop.symlink_to(loop)
    for p in (dangling, loop):
        with pytest.raises(GscompError, match="symbolic link that leads to no file"):
            with atomic_open(p) as f:
                f.write(b"x")
    assert dangling.is_symlink() and loop.is_symlink() and os.listdir(tmp_path / "elsewhere") == []
    # a FIFO (or a link to /dev/null) is refused: replacing it with a file would be wrong
    fifo = tmp_path / "f.gsz"
    os.mkfifo(fifo)
    (tmp_path / "null.gsz").symlink_to("/dev/null")
    for p in (fifo, tmp_path / "null.gsz"):
        with pytest.raises(GscompError, match="not a regular file"):
            with atomic_open(p) as f:
                f.write(b"x")
    assert fifo.exists() and not fifo.is_file() and os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    if os.path.isdir("/proc/self/fd"):  # a link to /dev/stdout on a pipe: realpath gives the pipe's
        # pseudo-name ('/proc/PID/fd/pipe:[...]'), which said "cannot write ...: No such file or directory"
        r, w = os.pipe()
        try:
            (tmp_path / "out.gsz").symlink_to(f"/proc/self/fd/{w}")
            with pytest.raises(GscompError, match="not a regular file"):
                with atomic_open(tmp_path / "out.gsz") as f:
                    f.write(b"x")
        finally:
            os.close(r)
            os.close(w)


def test_a_killed_writers_temp_is_removed_by_the_next_write(tmp_path):
    """SIGKILL (the OOM killer, a power cut) runs no handler: the hidden temp of a half-written
    output stayed next to it, as big as the output, for good. The next write to that name removes
    it, once it is a minute old and no live writer holds its lock; a live writer's temp, a fresh
    one, a FIFO of that name (without waiting on it) and files that only look alike are kept."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "scene.ply"
    code = ("import sys, time; from gscomp.fileio import atomic_open\n"
            "with atomic_open(sys.argv[1]) as f:\n f.write(b'x' * 1000); f.flush(); print('ok', flush=True); time.sleep(60)")
    old = time.time() - 120

    def writer(known=()):
        p = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline() == "ok\n"
        (tmp,) = [q for q in tmp_path.iterdir() if q.name.startswith(".scene.ply.gscomp-") and q not in known]
        os.utime(tmp, (old, old))
        return p, tmp

    live, live_tmp = writer()
    try:
        dead, dead_tmp = writer([live_tmp])
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        look_alike = [tmp_path / ".scene.ply.backup_1.tmp", tmp_path / ".scene.ply.gscomp-abcd1234.tmp.bak",
                      tmp_path / ".other.ply.gscomp-abcd1234.tmp"]
        for q in look_alike:
            q.write_bytes(b"user")
            os.utime(q, (old, old))
        fresh = tmp_path / ".scene.ply.gscomp-zzzz9999.tmp"
        fresh.write_bytes(b"young")
        fifo = tmp_path / ".scene.ply.gscomp-fifo0000.tmp"  # (opening it to lock it waited for a writer)
        os.mkfifo(fifo)
        os.utime(fifo, (old, old))
        with atomic_open(out) as f:
            f.write(b"done")
        assert out.read_bytes() == b"done"
        assert not dead_tmp.exists()
        assert live_tmp.exists() and fresh.exists() and fifo.exists() and all(q.exists() for q in look_alike)
    finally:
        live.kill()
        live.wait()


def test_atomic_open_edge_cases_of_the_sweep_and_its_fds(tmp_path, monkeypatch):
    """A stale temp that keeps a read-only output's mode (0444) could not be opened read-write
    to lock it, so no ordinary user's write removed it; and a failing fchmod leaked the temp's fd."""
    import os
    import time

    from gscomp import fileio

    out = tmp_path / "ro.ply"
    stale = tmp_path / ".ro.ply.gscomp-abcd1234.tmp"
    stale.write_bytes(b"half")
    os.chmod(stale, 0o444)
    os.utime(stale, (time.time() - 120,) * 2)
    real_open = os.open

    def refuse_rw(path, flags, *a):  # (as for a non-root user: tests may run as root)
        if str(path) == str(stale) and flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", refuse_rw)
    with fileio.atomic_open(out) as f:
        f.write(b"x")
    assert out.read_bytes() == b"x" and not stale.exists()
    monkeypatch.undo()

    fds = len(os.listdir("/proc/self/fd"))

    def fail(*a):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", fail)
    for _ in range(3):
        with pytest.raises(GscompError, match="cannot write"):
            with fileio.atomic_open(tmp_path / "b.ply") as f:
                f.write(b"x")
    assert len(os.listdir("/proc/self/fd")) == fds
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro.ply"]


def test_output_names_ending_in_a_slash_are_refused(tmp_path, random_splats, capsys):
    """`decode a.gsz out.ply/` wrote a file out.ply: the slash said a folder was meant."""
    from gscomp.cli import main

    save_splats(tmp_path / "in.ply", random_splats(50, 0))
    assert main(["compress", str(tmp_path / "in.ply"), str(tmp_path / "o.gsz") + "/"]) == 2
    assert main(["compress", str(tmp_path / "in.ply"), str(tmp_path / "o.gsz")]) == 0
    assert main(["decode", str(tmp_path / "o.gsz"), str(tmp_path / "d.ply") + "/"]) == 2
    assert "names a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ply", "o.gsz"]


def test_stored_size_counts_a_sog_scenes_own_files_once(tmp_path):
    """meta.json's listed images count once each, and only those inside the scene's folder."""
    from gscomp.io import stored_size

    d = tmp_path / "scene"
    d.mkdir()
    (d / "a.webp").write_bytes(b"x" * 10)
    (tmp_path / "outside.webp").write_bytes(b"y" * 1000)
    meta = {"means": {"files": ["a.webp", "./a.webp", "../outside.webp", "z" * 300, 5]}, "other": [1]}
    (d / "meta.json").write_text(json.dumps(meta))
    size = (d / "meta.json").stat().st_size + 10
    assert stored_size(d) == stored_size(d / "meta.json") == size
    (d / "meta.json").write_text("[" * 100000 + "]" * 100000)  # (not a SOG scene: its own size only)
    assert stored_size(d) == 200000


# ----------------------------------------------------------------------------- interop fuzz findings
def test_interop_readers_refuse_what_the_fuzz_pass_found(tmp_path, random_splats):
    """Inputs from the interop-reader fuzz pass: each was an internal error (exit 1), gigabytes of
    memory from a few KB, a read outside the scene folder, or garbage accepted."""
    import zipfile

    # PLY: f_rest_<huge> built set(range(huge)); a list element's or an ASCII file's count was
    # allocated before any data was read (2.6 GB, 7.5 GiB, 69 GiB asked for by files of a few KB)
    p = tmp_path / "a.ply"
    write_ply(p, random_splats(4, sh_degree=1))
    data = p.read_bytes()
    p.write_bytes(data.replace(b"f_rest_8\n", b"f_rest_99999999999999999999\n"))
    with pytest.raises(FormatError, match="missing 'f_rest_8'"):
        load_splats(p)
    head, body = data.split(b"end_header\n", 1)
    p.write_bytes(head + b"element face 1000000000\nproperty list uchar int vertex_indices\nend_header\n" + body)
    with pytest.raises(FormatError, match="element 'face' declares 1000000000 records"):
        load_splats(p)
    p.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 300000000\nproperty float x\nend_header\n1\n2\n")
    with pytest.raises(FormatError, match="element 'vertex' declares 300000000 records"):
        load_splats(p)

    # SPZ: a raw (not gzipped) legacy stream longer than its header says (another version's
    # layout, a wrong count) decoded as garbage; 255 fractional bits gave positions of 0
    s = random_splats(4, sh_degree=0)
    raw = gzip.decompress(encode_spz(s, version=2))
    p = tmp_path / "a.spz"
    p.write_bytes(raw[:8] + struct.pack("<I", 3) + raw[12:])  # 4 points, header says 3
    with pytest.raises(FormatError, match="more than its header declares"):
        load_splats(p)
    p.write_bytes(raw[:13] + bytes([255]) + raw[14:])
    with pytest.raises(FormatError, match="255 fractional bits"):
        load_splats(p)

    # .ksplat: an empty section of SH degree 1 (IndexError), an empty one with a bucket storage
    # of 0 (read past the end), and bucket fields that shift every record (positions of 1e23)
    head = bytearray(4096)
    head[1] = 1
    struct.pack_into("<I", head, 4, 1)  # one section, no splats
    sec = bytearray(1024)
    struct.pack_into("<H", sec, 40, 1)  # SH degree 1
    p = tmp_path / "a.ksplat"
    p.write_bytes(bytes(head) + bytes(sec))
    assert len(load_splats(p)) == 0
    struct.pack_into("<H", head, 20, 1)  # mode 1
    struct.pack_into("<I", sec, 12, 100000)  # buckets, with a bucket storage of 0
    p.write_bytes(bytes(head) + bytes(sec))
    with pytest.raises(FormatError, match="bucket storage 0 bytes"):
        load_splats(p)

    # compressed PLY: a float packed_* column was cast to bits it never held
    chunk = np.zeros((1, 12), np.float32)
    chunk[0, 3:6] = 1
    names = ["min_x", "min_y", "min_z", "max_x", "max_y", "max_z", "min_scale_x", "min_scale_y", "min_scale_z",
             "max_scale_x", "max_scale_y", "max_scale_z"]
    hdr = ("ply\nformat binary_little_endian 1.0\nelement chunk 1\n" + "".join(f"property float {c}\n" for c in names)
           + "element vertex 1\nproperty uint packed_position\nproperty float packed_rotation\n"
           + "property uint packed_scale\nproperty uint packed_color\nend_header\n")
    p = tmp_path / "c.ply"
    p.write_bytes(hdr.encode() + chunk.tobytes() + struct.pack("<IfII", 0, 1.5, 0, 0xFFFFFFFF))
    with pytest.raises(FormatError, match="'packed_rotation' is float32, expected a 32-bit unsigned integer"):
        load_splats(p)

    # SOG: a 5x5 scene's texture declaring 4000 x 4000 was decoded in full (4 GB at 13000^2);
    # textures of different widths; names leaving the folder were opened; a 1.5 GB meta.json in
    # a 1.5 MB bundle was inflated and parsed
    d = tmp_path / "s"
    _make_sog(d)
    meta = json.loads((d / "meta.json").read_text())
    good = (d / "quats.webp").read_bytes()
    (d / "quats.webp").write_bytes(_webp(np.zeros((4000, 4000, 4), np.uint8)))
    with pytest.raises(FormatError, match="'quats.webp' is 4000x4000, far more than the 5 pixels"):
        load_splats(d)
    (d / "quats.webp").write_bytes(_webp(np.full((1, 6, 4), 252, np.uint8)))  # 6x1 beside 3x2
    with pytest.raises(FormatError, match="'quats.webp' is 6 pixels wide, the scene's first texture 3"):
        load_splats(d)
    (d / "quats.webp").write_bytes(good)
    for name in ("../quats.webp", str(d / "quats.webp"), ".."):
        (d / "meta.json").write_text(json.dumps(dict(meta, quats={"files": [name]})))
        with pytest.raises(FormatError, match="not a file beside meta.json"):
            load_splats(d)
    (d / "meta.json").write_text(json.dumps(meta))
    assert len(load_splats(d)) == 5
    with zipfile.ZipFile(tmp_path / "b.sog", "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(d.iterdir()):
            z.writestr(f.name, f.read_bytes() + (b" " * (5 << 20) if f.name == "meta.json" else b""))
    with pytest.raises(FormatError, match="bundle member 'meta.json' is implausibly large"):
        load_splats(tmp_path / "b.sog")


def test_cli_error_lines_are_cut_to_a_terminal_length(tmp_path, capsys):
    """A message quoting what a file holds (a 5,000-character texture name) printed in full."""
    from gscomp.cli import ERROR_MAX, main as cli_main

    d = tmp_path / "s"
    _make_sog(d)
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps(dict(meta, version=list(range(100_000)))))
    assert cli_main(["compress", str(d), str(tmp_path / "o.gsz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip()) <= ERROR_MAX + 7 and err.count("\n") == 1


def test_formats_without_an_antialiased_flag_say_so(tmp_path, random_splats):
    s = random_splats(20, sh_degree=0).replace(antialiased=True)
    for name in ("a.splat", "a.compressed.ply"):
        with pytest.warns(LossySaveWarning, match=f"{name}: the scene is made for the antialiased render mode, which "
                                                  "this format cannot say"):
            save_splats(tmp_path / name, s)
        assert not load_splats(tmp_path / name).antialiased
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("a.spz", "a.ply"):
            save_splats(tmp_path / name, s)
            assert load_splats(tmp_path / name).antialiased, name
        save_splats(tmp_path / "c.splat", s.replace(antialiased=False))


def test_splats_keep_their_render_mode(random_splats):
    s = random_splats(10, sh_degree=1).replace(antialiased=True)
    for t in (s[2:5], s[3], s.detach(), s.to(torch.float64), s.with_sh_degree(0), Splats.cat([s, s])):
        assert t.antialiased
    with pytest.raises(GscompError, match="mix antialiased and classic"):
        Splats.cat([s, s.replace(antialiased=False)])
    with pytest.raises(GscompError, match="antialiased is 'yes', expected True or False"):
        s.replace(antialiased="yes").validate()


def test_compressed_ply_keeps_a_far_background_out_of_the_core_chunks(tmp_path):
    """A chunk's 11/10/11-bit positions span its box: one far Gaussian in a chunk of core ones gave
    them steps of its own scale (qa34_C: 6% of the core moved more than its size). The core is
    written first, the background after it, so one chunk at most mixes them."""
    from gscomp.io.compressed_ply import chunk_order

    rng = np.random.default_rng(0)
    d = rng.normal(size=(60, 3))
    m = np.concatenate([rng.uniform(-1, 1, (6000, 3)), 100 * d / np.linalg.norm(d, axis=1, keepdims=True)])
    n = len(m)
    s = Splats(means=torch.from_numpy(m).float(), quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
               scales=torch.full((n, 3), -4.0), opacities=torch.zeros(n), sh0=torch.zeros(n, 1, 3), shN=torch.zeros(n, 0, 3))
    save_splats(tmp_path / "a.compressed.ply", s)
    order = chunk_order(s.means.numpy())
    moved = (load_splats(tmp_path / "a.compressed.ply").means - s.means[order]).norm(dim=1)
    core = torch.from_numpy(order < 6000)
    assert int((moved[core] > math.exp(-4)).sum()) < 256, int((moved[core] > math.exp(-4)).sum())
    assert sorted(order.tolist()) == list(range(n))


def test_counts_beyond_this_machines_memory_are_refused_before_inflating(tmp_path, monkeypatch):
    """A 126 KB .spz of zeros declaring 2M SH-3 points inflated to 1.5 GB, and 12 KB of WebPs
    under a meta.json count of 4M took 1.6 GB (qa37_H H1, H2): a count whose Splats cannot fit in
    the memory available is refused from the header, before any inflating or image decoding;
    a file that cannot hold its count is a bomb first, on any machine (qa38_R F3)."""
    import gscomp.memory as M

    monkeypatch.setattr(M, "MIN_CHECKED", 0)
    monkeypatch.setattr(M, "available_memory", lambda: 1 << 20)  # 1 MB
    n = 100_000  # SH 3: 23.6 MB of Splats, 29.5 MB at the least to decode
    head = struct.pack("<IIIBBBB", 0x5053474E, 3, n, 3, 12, 0, 0)
    spz = tmp_path / "big.spz"
    spz.write_bytes(gzip.compress(head + np.random.default_rng(0).bytes(65 * n), 1))  # (holds what it declares)
    with pytest.raises(GscompError, match=r"big\.spz: 100,000 Gaussians of SH degree 3 need at least 0\.0 GB to decode, "
                                          r"more than the 0\.0 GB this machine has available"):
        load_splats(spz)
    bomb = tmp_path / "bomb.spz"
    bomb.write_bytes(gzip.compress(head))  # (the header alone)
    with pytest.raises(FormatError, match=r"100,000 points \(6,500,000 bytes of arrays\) cannot come from a \d+-byte file"):
        load_splats(bomb)
    d = tmp_path / "sog"
    _make_sog(d)
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps(dict(meta, count=n, shN={"bands": 3})))
    monkeypatch.setattr(M, "available_memory", lambda: 5 << 20)
    with pytest.raises(GscompError, match=r"100,000 Gaussians of SH degree 3 need at least"):
        load_splats(d)
    (d / "meta.json").write_text(json.dumps({**{k: v for k, v in meta.items() if k != "shN"}, "count": n}))
    assert M.DECODE_FACTOR * M.splats_bytes(n, 0) > 5 << 20
    with pytest.raises(GscompError, match=r"100,000 Gaussians of SH degree 0 need at least"):
        load_splats(d)
    for v in ("1", "true", " Yes ", "ON"):  # then the reader goes on (and finds too few pixels)
        monkeypatch.setenv("GSCOMP_NO_MEMORY_CHECK", v)
        with pytest.raises(FormatError, match="fewer than the 100000|fewer than the 100,000"):
            load_splats(d)
    for v in ("0", "false", "off", ""):  # (the check stays)
        monkeypatch.setenv("GSCOMP_NO_MEMORY_CHECK", v)
        with pytest.raises(GscompError, match=r"100,000 Gaussians of SH degree 0 need at least"):
            load_splats(d)


def test_a_memory_check_setting_of_no_meaning_is_one_line(tmp_path, monkeypatch, capsys, random_splats):
    """GSCOMP_NO_MEMORY_CHECK took only "1": "true" kept the check in silence (a Low of qa41). Now
    1/true/yes/on and 0/false/no/off (any case); anything else is a one-line error, not a guess."""
    import gscomp.memory as M
    from gscomp.cli import main

    monkeypatch.setattr(M, "MIN_CHECKED", 0)
    src = tmp_path / "a.ply"
    save_splats(src, random_splats(5, sh_degree=0))
    monkeypatch.setenv("GSCOMP_NO_MEMORY_CHECK", "2")
    assert main(["compress", str(src), str(tmp_path / "a.gsz"), "pipeline=high"]) == 0  # (no check on encode)
    capsys.readouterr()
    assert main(["decode", str(tmp_path / "a.gsz"), str(tmp_path / "b.ply")]) == 2
    err = capsys.readouterr().err
    assert err == "error: GSCOMP_NO_MEMORY_CHECK must be 1 (or true, yes, on) to skip the memory checks, or 0 " \
                  "(false, no, off), got '2'\n", err
    assert not (tmp_path / "b.ply").exists()


def test_the_memory_available_counts_a_cgroups_limit(tmp_path):
    """A container or a Slurm job may allow far less than the machine's free memory (qa38_R F9):
    the least room over the process's cgroup and its parents, v2 and v1."""
    from gscomp.memory import _cgroup_room

    root = tmp_path / "cg"
    (root / "job" / "step").mkdir(parents=True)
    (root / "job" / "memory.max").write_text("4000\n")
    (root / "job" / "memory.current").write_text("1000\n")
    (root / "job" / "step" / "memory.max").write_text("max\n")
    me = tmp_path / "self"
    me.write_text("0::/job/step\n")
    assert _cgroup_room(str(root), str(me)) == 3000
    (root / "job" / "step" / "memory.max").write_text("2500\n")
    (root / "job" / "step" / "memory.current").write_text("500\n")
    assert _cgroup_room(str(root), str(me)) == 2000
    (root / "memory" / "slurm").mkdir(parents=True)
    (root / "memory" / "slurm" / "memory.limit_in_bytes").write_text("9000\n")
    (root / "memory" / "slurm" / "memory.usage_in_bytes").write_text("8000\n")
    (root / "memory" / "memory.limit_in_bytes").write_text(f"{(1 << 63) - 4096}\n")  # v1's "no limit"
    me.write_text("4:memory:/slurm\n1:cpu:/\n")
    assert _cgroup_room(str(root), str(me)) == 1000
    me.write_text("4:memory:/\n")
    assert _cgroup_room(str(root), str(me)) is None
    assert _cgroup_room(str(root), str(tmp_path / "none")) is None


def test_a_ply_header_is_refused_when_not_ended_in_its_first_16_mb(tmp_path, monkeypatch, random_splats):
    """plyfile parses a header a character at a time with no end: 64 MB without 'end_header'
    took 45 s and 0.8 GB before it failed (qa37_H H3). It is now never handed such a file; a
    header of a few MB of comments still reads (a 1 MB limit refused one, qa38_R F4)."""
    from plyfile import PlyData

    save_splats(tmp_path / "s.ply", random_splats(5, sh_degree=0))
    data = (tmp_path / "s.ply").read_bytes()
    cut = data.index(b"end_header\n")
    (tmp_path / "long.ply").write_bytes(data[:cut] + b"comment " + b"c" * (3 << 19) + b"\n" + data[cut:])
    assert torch.equal(load_splats(tmp_path / "long.ply").means, load_splats(tmp_path / "s.ply").means)
    p = tmp_path / "noend.ply"
    p.write_bytes(b"ply\nformat binary_little_endian 1.0\n" + b"comment " + b"a" * (17 << 20))
    monkeypatch.setattr(PlyData, "_parse_header", staticmethod(lambda f: pytest.fail("plyfile parsed it")))
    with pytest.raises(FormatError, match="malformed PLY header: no 'end_header' line in its first 16 MB"):
        load_splats(p)


def test_info_names_the_format_of_an_empty_file(tmp_path, capsys):
    """An empty .ply (or .spz, .splat) was 'truncated .gsz (0 bytes)' to `info`, which tried the
    .gsz reader first; it now reads a file by its name, as decode does (qa37_H M1)."""
    from gscomp.cli import main

    for name in ("e.ply", "e.spz", "e.gsz"):
        (tmp_path / name).write_bytes(b"")
        assert main(["info", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and (".gsz" in err) == name.endswith(".gsz"), err
    assert "empty file (0 bytes)" in err
    (tmp_path / "e.splat").write_bytes(b"")  # (a .splat of no records: no Gaussians, as decode reads it)
    assert main(["info", str(tmp_path / "e.splat")]) == 0 and "0 Gaussians" in capsys.readouterr().out


def test_an_input_link_to_no_file_says_so(tmp_path, capsys):
    """A dangling link or a link loop as IN said "no such file", hiding that it is a link."""
    from gscomp.fileio import input_file

    (tmp_path / "loop.ply").symlink_to(tmp_path / "loop.ply")
    (tmp_path / "gone.ply").symlink_to(tmp_path / "nothing.ply")
    for p in ("loop.ply", "gone.ply"):
        with pytest.raises(GscompError, match="a symbolic link that leads to no file"):
            input_file(tmp_path / p)
    with pytest.raises(GscompError, match="no such file"):
        input_file(tmp_path / "nothing.ply")
    from gscomp.cli import main

    for verb in (["compress", str(tmp_path / "gone.ply"), str(tmp_path / "o.gsz")],  # (compress said "no such file", qa38_R F5)
                 ["decode", str(tmp_path / "loop.ply"), str(tmp_path / "o.spz")], ["info", str(tmp_path / "gone.ply")]):
        assert main(verb) == 2
        assert capsys.readouterr().err.endswith(".ply: a symbolic link that leads to no file\n")
