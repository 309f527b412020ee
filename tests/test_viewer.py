"""The viewer without a browser: data preparation (covariances, SH -> colours, scaling, initial
camera, camera conversion), loading errors, the throttled job runner, and the server serving."""
from __future__ import annotations

import math
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from gscomp import Splats
from gscomp.camera import Camera
from gscomp.cli import main as cli_main
from gscomp.errors import GscompError
from gscomp.render import render
from gscomp.viewer.load import ViewFile, bits_rows, find_sources, load_view_file
from gscomp.viewer.prepare import (
    F16_MAX_VAR, TARGET_RADIUS, camera_from_viser, colors_dc, colors_view, covariances, initial_camera,
    opacities, prepare, scene_center_radius,
)

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199


def one(mean=(0.0, 0.0, 0.0), quat=(1.0, 0, 0, 0), log_scale=(0.0, 0.0, 0.0), opacity=0.0, sh0=(0.0, 0.0, 0.0), shN=None):
    shN = torch.zeros(1, 0, 3) if shN is None else torch.as_tensor(shN, dtype=torch.float32).reshape(1, -1, 3)
    return Splats(
        means=torch.tensor([mean], dtype=torch.float32),
        quats=torch.tensor([quat], dtype=torch.float32),
        scales=torch.tensor(np.asarray([log_scale], dtype=np.float32)),
        opacities=torch.tensor([opacity], dtype=torch.float32),
        sh0=torch.tensor([sh0], dtype=torch.float32).reshape(1, 1, 3),
        shN=shN,
    )


# ---------------------------------------------------------------------- covariances
def test_covariance_axis_aligned_and_rotated():
    s = np.log([0.1, 0.2, 0.5])
    cov = covariances(one(log_scale=s))[0]
    np.testing.assert_allclose(cov, np.diag([0.01, 0.04, 0.25]), atol=1e-7)
    # 90 degrees about z (wxyz = cos45, 0, 0, sin45): x and y variances swap.
    h = math.sqrt(0.5)
    cov = covariances(one(quat=(h, 0, 0, h), log_scale=s))[0]
    np.testing.assert_allclose(cov, np.diag([0.04, 0.01, 0.25]), atol=1e-7)
    # Quaternion length does not matter; a zero quaternion means identity (as in the renderer).
    np.testing.assert_allclose(covariances(one(quat=(3 * h, 0, 0, 3 * h), log_scale=s))[0], cov, atol=1e-7)
    np.testing.assert_allclose(covariances(one(quat=(0, 0, 0, 0), log_scale=s))[0], np.diag([0.01, 0.04, 0.25]), atol=1e-7)


def test_covariance_random_is_symmetric_with_the_right_spectrum(random_splats):
    sp = random_splats(200, sh_degree=1, seed=3)
    cov = covariances(sp).astype(np.float64)
    np.testing.assert_allclose(cov, cov.transpose(0, 2, 1), atol=1e-9)
    eig = np.sort(np.linalg.eigvalsh(cov), axis=1)
    want = np.sort(np.exp(2 * sp.scales.double().numpy()), axis=1)
    np.testing.assert_allclose(eig, want, rtol=1e-4)


# ---------------------------------------------------------------------- colours
def test_dc_colour_and_opacity():
    sp = one(sh0=((0.2 - 0.5) / SH_C0, 0.5 / SH_C0 * 2, -10.0), opacity=math.log(0.25 / 0.75))
    np.testing.assert_allclose(colors_dc(sp)[0], [0.2, 1.0, 0.0], atol=1e-6)  # clamped to [0,1]
    np.testing.assert_allclose(opacities(sp), [[0.25]], atol=1e-6)
    assert opacities(sp).shape == (1, 1)


def test_view_colour_degree1_by_hand():
    # Coefficient 2 of degree 1 multiplies C1 * z of the direction camera -> mean.
    shN = np.zeros((3, 3))
    shN[1] = [0.3, -0.2, 0.0]
    sp = one(mean=(0, 0, 5), sh0=(0.0, 0.0, 0.0), shN=shN)
    front = colors_view(sp, eye=(0, 0, 0))[0]  # direction +z
    back = colors_view(sp, eye=(0, 0, 10))[0]  # direction -z
    np.testing.assert_allclose(front, [0.5 + SH_C1 * 0.3, 0.5 - SH_C1 * 0.2, 0.5], atol=1e-6)
    np.testing.assert_allclose(back, [0.5 - SH_C1 * 0.3, 0.5 + SH_C1 * 0.2, 0.5], atol=1e-6)
    # Degree 0 requested, or no higher-order SH: the DC colour.
    np.testing.assert_allclose(colors_view(sp, (0, 0, 0), sh_degree=0), colors_dc(sp))


def test_view_colour_matches_the_renderer(random_splats):
    """A big, opaque Gaussian straight ahead: the rendered centre pixel is its baked colour."""
    g = torch.Generator().manual_seed(1)
    for seed in range(3):
        sh0 = torch.rand(3, generator=g) * 0.8 - 0.4
        shN = torch.randn(15, 3, generator=g) * 0.15
        mean = torch.randn(3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 4.0])
        sp = one(mean=tuple(mean.tolist()), log_scale=(0.0, 0.0, 0.0), opacity=12.0,
                 sh0=tuple(sh0.tolist()), shN=shN.numpy())
        eye = (0.0, 0.0, 0.0)
        cam = Camera.look_at(eye, mean.tolist(), (0, -1, 0), 40.0, 33, 33)
        out = render(sp, cam, background=(0.0, 0.0, 0.0), backend="torch").colors[0, 16, 16]
        want = colors_view(sp, eye)[0]
        # alpha is capped at 0.99 on a black background
        np.testing.assert_allclose(out.numpy(), 0.99 * want, atol=2e-3)
        assert not np.allclose(want, colors_dc(sp)[0], atol=1e-2)  # the SH term really matters


# ---------------------------------------------------------------------- prepare / scaling
def test_prepare_scales_into_float16_range(random_splats):
    sp = random_splats(500, sh_degree=2, seed=5)
    sp = sp.replace(means=sp.means * 1000.0, scales=sp.scales + math.log(1000.0))  # a km-sized scene
    a = prepare(sp)
    _, r = scene_center_radius(sp)
    assert a.factor == pytest.approx(TARGET_RADIUS / r)
    c, _ = scene_center_radius(sp)
    np.testing.assert_allclose(a.origin, c)
    np.testing.assert_allclose(a.centers, (sp.means.double().numpy() - c) * a.factor, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(a.covariances, covariances(sp) * a.factor**2, rtol=1e-4, atol=1e-9)
    assert a.node_scale == pytest.approx(1 / a.factor)
    half = a.covariances.astype(np.float16)
    assert np.isfinite(half).all()
    # After the rescale the typical variance is a normal float16 (not flushed to subnormals).
    assert np.median(np.abs(np.diagonal(half, axis1=1, axis2=2))) > 6.1e-5
    assert a.rgbs.shape == (500, 3) and a.opacities.shape == (500, 1)
    assert a.rgbs.min() >= 0 and a.rgbs.max() <= 1


def test_prepare_far_from_the_origin(random_splats):
    """A georeferenced scene (1e5 units out) reaches the browser relative to its centre (the node's
    position), so float32 keeps it as sharp as the same scene at the origin; SH colours too."""
    sp = random_splats(300, sh_degree=1, seed=2)
    sp = sp.replace(means=torch.round(sp.means * 64) / 64)  # (exact at both places in float32)
    off = torch.tensor([131584.0, -131584.0, 196608.0])  # in [2^17, 2^18): float32 steps of 1/64
    far = sp.replace(means=sp.means + off)
    a, b = prepare(sp), prepare(far)
    np.testing.assert_allclose(b.origin, a.origin + off.double().numpy())
    np.testing.assert_allclose(b.centers, a.centers, atol=1e-5)
    eye = np.array([0.3, 0.2, 5.0])
    np.testing.assert_allclose(colors_view(far, eye + off.double().numpy()), colors_view(sp, eye), atol=1e-6)


def test_prepare_clamps_enormous_splats():
    sp = Splats.cat([one(), one(mean=(1, 1, 1)), one(log_scale=(12.0, 0.0, 0.0))])
    a = prepare(sp, factor=1.0)
    assert np.abs(a.covariances).max() <= F16_MAX_VAR * 1.0001
    assert np.isfinite(a.covariances.astype(np.float16)).all()
    np.testing.assert_allclose(a.covariances[0], np.eye(3), atol=1e-6)


def test_prepare_view_dependent_colours():
    shN = np.zeros((3, 3))
    shN[1] = [0.3, 0.0, 0.0]
    sp = one(mean=(0, 0, 5), shN=shN)
    assert prepare(sp, eye=(0, 0, 0)).rgbs[0, 0] == pytest.approx(0.5 + SH_C1 * 0.3, abs=1e-6)
    assert prepare(sp).rgbs[0, 0] == pytest.approx(0.5, abs=1e-6)


# ---------------------------------------------------------------------- cameras
@pytest.mark.parametrize("up", ["-y", "+y", "+z", "-z", "+x"])
def test_initial_camera_frames_the_scene(random_splats, up):
    sp = random_splats(2000, seed=7)
    sp = sp.replace(means=sp.means * torch.tensor([3.0, 1.0, 2.0]) + torch.tensor([10.0, -5.0, 2.0]))
    eye, look = initial_camera(sp, up, fov_deg=60.0)
    center, radius = scene_center_radius(sp)
    np.testing.assert_allclose(look, center)
    assert np.linalg.norm(eye - look) > radius  # outside the scene
    upv = {"-y": (0, -1, 0), "+y": (0, 1, 0), "+z": (0, 0, 1), "-z": (0, 0, -1), "+x": (1, 0, 0)}[up]
    assert np.dot(eye - look, upv) > 0  # seen from a bit above
    cam = Camera.look_at(eye, look, upv, 60.0, 400, 400)
    p = sp.means.double() @ cam.world_to_camera[:3, :3].T + cam.world_to_camera[:3, 3]
    uv = p[:, :2] / p[:, 2:] * cam.fx + 200
    inside = ((uv >= 0) & (uv < 400)).all(1) & (p[:, 2] > 0)
    assert float(inside.float().mean()) > 0.95


def test_initial_camera_rejects_bad_up(random_splats):
    with pytest.raises(GscompError, match="--up"):
        initial_camera(random_splats(10), "up")


def test_camera_from_viser_roundtrip():
    """viser reports camera-to-world (OpenCV axes) as wxyz + position; we must invert it."""
    tf = pytest.importorskip("viser.transforms")
    ref = Camera.look_at((1.0, -2.0, 3.0), (0.2, 0.1, -0.5), (0, -1, 0), 50.0, 320, 200)
    c2w = ref.camera_to_world.double().numpy()
    wxyz = tf.SO3.from_matrix(c2w[:3, :3]).wxyz
    fov_y = 2 * math.atan(0.5 * 200 / ref.fy)
    cam = camera_from_viser(c2w[:3, 3], wxyz, fov_y, 320, 200)
    np.testing.assert_allclose(cam.world_to_camera.numpy(), ref.world_to_camera.numpy(), atol=1e-5)
    assert cam.fx == pytest.approx(ref.fx, rel=1e-5) and cam.fy == pytest.approx(ref.fy, rel=1e-5)
    assert (cam.cx, cam.cy, cam.width, cam.height) == (160.0, 100.0, 320, 200)


# ---------------------------------------------------------------------- loading and errors
def _write_ply(path: Path, sp: Splats) -> None:
    from test_viewer_browser import write_ply

    write_ply(path, sp.means.numpy(), sp.colors_dc().numpy(), scale=0.05, opacity_logit=2.0, sh_degree=1)


def test_load_view_file_summary(tmp_path, random_splats):
    p = tmp_path / "scene.ply"
    _write_ply(p, random_splats(50, sh_degree=0))
    vf = load_view_file(p)
    assert len(vf.splats) == 50 and vf.splats.sh_degree == 1
    assert vf.file_bytes == p.stat().st_size
    md = vf.summary_markdown()
    assert "scene.ply" in md and "| Gaussians | 50 |" in md and "| SH degree | 1 |" in md
    assert find_sources(p) == []
    gsz = tmp_path / "scene.gsz"
    assert find_sources(gsz) == [p]  # X.gsz next to X.ply


@pytest.mark.parametrize("name,content", [
    ("bad.ply", b""),
    ("bad.ply", b"hello world\n"),
    ("bad.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nend_header\n\x00\x01"),
    ("bad.gsz", b"GSZ\x00" + bytes(range(200))),
    ("bad.spz", b"\x1f\x8b\x08\x00garbage"),
])
def test_bad_file_is_one_line_error(tmp_path, name, content, capsys):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(GscompError) as e:
        load_view_file(p)
    assert "\n" not in str(e.value) and name in str(e.value)
    # Through the CLI: exit 2, one line on stderr, no server started (returns at once).
    t0 = time.monotonic()
    assert cli_main(["view", str(p), "--port", "0"]) == 2
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and name in err[0]


def test_missing_file_and_bad_options(tmp_path, capsys):
    assert cli_main(["view", str(tmp_path / "nope.ply")]) == 2
    assert "no such file" in capsys.readouterr().err
    p = tmp_path / "ok.ply"
    _write_ply(p, Splats.cat([one(), one(mean=(1, 0, 0))]))
    assert cli_main(["view", str(p), "--up", "sideways"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert cli_main(["view", str(p), "--compare", str(tmp_path / "missing.ply")]) == 2
    assert "missing.ply" in capsys.readouterr().err


def test_view_says_it_is_loading_a_large_file(tmp_path, capsys, monkeypatch):
    """6M Gaussians plus a 6M comparison took ~20 s before the viewer printed anything (qa35_A)."""
    import gscomp.commands.view as V

    bad = tmp_path / "big.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 9\nend_header\n")
    assert cli_main(["view", str(bad)]) == 2
    assert "gscomp view: loading" not in capsys.readouterr().err  # (small: loads at once)
    monkeypatch.setattr(V, "BIG_LOAD", 10)
    assert cli_main(["view", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "gscomp view: loading big.ply (0 MB) ..." and err[1].startswith("error: ") and len(err) == 2, err


def test_bits_rows_of_gsz_info(random_splats, tmp_path):
    from gscomp.codec import encode_gsz, gsz_info

    encode_gsz(random_splats(200, sh_degree=1), tmp_path / "a.gsz", "medium")
    rows = dict(bits_rows(gsz_info(tmp_path / "a.gsz")))
    assert set(rows) >= {"means", "quats", "scales", "opacities", "sh0", "shN"} and all(v > 0 for v in rows.values())
    # a scene of no Gaussians has no bits per Gaussian: no rows
    assert bits_rows({"bits_per_gaussian_per_attribute": {"means": None}}) == []


# ---------------------------------------------------------------------- runner and server
def test_latest_job_runner_coalesces():
    from gscomp.viewer.app import LatestJobRunner

    ran: list[int] = []
    done = threading.Event()
    r = LatestJobRunner(interval=0.0, quiet=0.2, name="test")
    try:
        for i in range(20):  # a burst for one key: only the last one runs, after the quiet time
            r.submit("k", lambda i=i: (ran.append(i), done.set()))
            time.sleep(0.005)
        assert done.wait(5)
        time.sleep(0.3)
        assert ran == [19]
        r.submit("k", lambda: 1 / 0)  # a failing job is reported, the runner keeps going
        done.clear()
        r.submit("j", lambda: (ran.append(-1), done.set()))
        assert done.wait(5) and ran == [19, -1]
    finally:
        r.stop()


def test_viewer_serves_the_client_and_renders_exact(random_splats):
    pytest.importorskip("viser")
    from gscomp.viewer.app import Viewer

    sp = random_splats(300, sh_degree=1, seed=2)
    v = Viewer(ViewFile(Path("mem.ply"), sp, 1234), port=0)
    try:
        html = urllib.request.urlopen(f"http://127.0.0.1:{v.port}/", timeout=10).read()
        assert b"<html" in html.lower()
        assert v.nodes["main"].buffer.shape == (300, 8)  # what the browser will receive
        eye, look = initial_camera(sp)
        cam = Camera.look_at(eye, look, (0, -1, 0), 60.0, 64, 48)
        import viser.transforms as tf

        c2w = cam.camera_to_world.double().numpy()
        img, ms = v.render_view(sp, c2w[:3, 3], tf.SO3.from_matrix(c2w[:3, :3]).wxyz, math.radians(50), 64, 48)
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        assert (np.abs(img.astype(int) - 255).max(-1) > 30).mean() > 0.05  # something drawn on white

        # "view-dependent" colour: the node's colours become the SH baked for that camera.
        from types import SimpleNamespace

        from gscomp.viewer.app import COLOR_VIEW

        dc = v.nodes["main"].rgbs.copy()
        v.color_mode.value = COLOR_VIEW
        v._bake(SimpleNamespace(camera=SimpleNamespace(position=np.asarray(eye))))
        want = np.clip(colors_view(sp, eye) * 255, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(v.nodes["main"].rgbs, want)
        assert np.abs(want.astype(int) - dc.astype(int)).max() > 3
    finally:
        v.close()


@pytest.mark.parametrize("unit", [1e4, 1e-3])
def test_exact_mode_for_scenes_in_any_unit(random_splats, unit):
    """Exact mode went white for a scene in millimetres (the browser's near plane, radius x 1e-3,
    lay beyond the plane 1 unit in front of the camera that viser draws its image on), and cut the
    front off a scene of a few centimetres (the renderer's near plane is 0.01 units)."""
    pytest.importorskip("viser")
    import viser.transforms as tf
    from gscomp.viewer.app import Viewer

    sp = random_splats(300, sh_degree=0, seed=2)
    big = sp.replace(means=sp.means * unit, scales=sp.scales + math.log(unit))
    shots = []
    for s in (sp, big):
        v = Viewer(ViewFile(Path("mem.ply"), s, 1234), port=0)
        try:
            near, far = v.server.initial_camera.near, v.server.initial_camera.far
            assert near < 1.0 < far
            eye, look = initial_camera(s)
            c2w = Camera.look_at(eye, look, (0, -1, 0), 60.0, 64, 48).camera_to_world.double().numpy()
            shots.append(v.render_view(s, c2w[:3, 3], tf.SO3.from_matrix(c2w[:3, :3]).wxyz, math.radians(50), 64, 48)[0])
        finally:
            v.close()
    drawn = [(np.abs(img.astype(int) - 255).max(-1) > 30).mean() for img in shots]
    assert drawn[0] > 0.05 and abs(drawn[1] - drawn[0]) < 0.01  # the same picture at every unit
    assert np.abs(shots[0].astype(int) - shots[1].astype(int)).mean() < 2


def test_most_visible_keeps_the_biggest_opaque_splats(random_splats):
    from gscomp.viewer.prepare import most_visible

    sp = random_splats(100, seed=4)
    assert most_visible(sp, 0) is sp and most_visible(sp, 100) is sp
    big = sp.replace(opacities=sp.opacities.clone(), scales=sp.scales.clone())
    big.opacities[[10, 50, 90]] = 8.0
    big.scales[[10, 50, 90]] = 0.0  # far larger and more opaque than the rest
    sub = most_visible(big, 3)
    assert len(sub) == 3
    torch.testing.assert_close(sub.means, big.means[[10, 50, 90]])  # original order kept
    assert len(most_visible(big, 40)) == 40


def test_up_option_accepts_negative_axes():
    from gscomp.commands.view import _join_negative_up, build_parser

    args = build_parser().parse_args(_join_negative_up(["f.ply", "--up", "-z", "--port", "0"]))
    assert args.up == "-z" and args.port == 0 and args.file == "f.ply"


def test_unusable_host_is_one_line_error(tmp_path, capsys):
    p = tmp_path / "ok.ply"
    _write_ply(p, Splats.cat([one(), one(mean=(1, 0, 0))]))
    assert cli_main(["view", str(p), "--host", "192.0.2.1", "--port", "0"]) == 2  # TEST-NET, not ours
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--host 192.0.2.1" in err[0]


@pytest.mark.filterwarnings("ignore:.*after the last element")  # (pc_short.ply's own tail)
def test_real_files_prepare_for_the_browser():
    """Production formats from ../shared/data load and turn into finite, well-scaled buffers."""
    from conftest import shared

    for rel, n in (("splats/biker.compressed.ply", 152_746), ("fixtures/pc_short.ply", 100)):
        vf = load_view_file(shared(rel))
        assert len(vf.splats) == n
        a = prepare(vf.splats)
        half = a.covariances.astype(np.float16)
        assert np.isfinite(half).all() and np.isfinite(a.centers).all()
        eye, look = initial_camera(vf.splats)
        assert np.isfinite(eye).all() and np.linalg.norm(eye - look) > 0


def test_port_search_and_a_broken_sibling_source(tmp_path, capsys):
    """A taken port moves to the next free one and stops at 65535 with an error (viser's own
    search ran past it and hung); a .gsz's same-stem .ply that does not load is skipped, with a note."""
    import socket

    from gscomp.commands.view import _free_port, load_compare

    inet = socket.AF_INET
    with socket.socket() as a:
        a.bind(("127.0.0.1", 0))
        a.listen()
        taken = a.getsockname()[1]
        assert _free_port("127.0.0.1", inet, taken) != taken
    # a port whose last connection is in TIME_WAIT (a viewer just stopped) is free again at once
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        freed = srv.getsockname()[1]
        c = socket.create_connection(("127.0.0.1", freed))
        conn, _ = srv.accept()
        conn.close()  # the server side closes first: its end stays in TIME_WAIT
        c.close()
    assert _free_port("127.0.0.1", inet, freed) == freed
    with socket.socket() as b:
        try:
            b.bind(("127.0.0.1", 65535))
        except OSError:
            pytest.skip("port 65535 is in use here")
        b.listen()
        with pytest.raises(GscompError, match="no free port"):
            _free_port("127.0.0.1", inet, 65535)
    p = tmp_path / "s.ply"
    _write_ply(p, Splats.cat([one(), one(mean=(1, 0, 0))]))
    gsz = tmp_path / "x.gsz"
    assert cli_main(["compress", str(p), str(gsz)]) == 0
    main = load_view_file(gsz)
    assert load_compare(main, None) is None
    (tmp_path / "x.ply").write_text("not a ply")
    capsys.readouterr()
    assert load_compare(main, None) is None
    assert capsys.readouterr().err.startswith("note: not comparing with x.ply")
    from gscomp.io import save_splats

    save_splats(tmp_path / "x.spz", Splats.cat([one(), one(mean=(1, 0, 0))]))
    assert load_compare(main, None).name == "x.spz"  # the next one, when x.ply does not load
    assert capsys.readouterr().err.startswith("note: not comparing with x.ply")
    assert cli_main(["decode", str(gsz), str(tmp_path / "x.ply")]) == 0
    capsys.readouterr()
    assert load_compare(main, None).name == "x.spz"  # ... or is x.gsz decoded (qa40_V)
    assert "note: not comparing with x.ply: it is x.gsz decoded" in capsys.readouterr().err
    _write_ply(tmp_path / "x.ply", Splats.cat([one(), one(mean=(1, 0, 0))]))
    assert load_compare(main, None).name == "x.ply"
    assert load_compare(main, str(tmp_path / "x.gsz")) is None  # (it loaded twice, one button per copy)
    assert capsys.readouterr().err.startswith("note: not comparing x.gsz with itself")
    # train-and-compress output: scene.ply is scene.gsz decoded (the "original" toggle showed the
    # decoded scene twice); the original is point_cloud.ply, which report.json marks
    run = tmp_path / "run"
    run.mkdir()
    _write_ply(run / "point_cloud.ply", Splats.cat([one(), one(mean=(1, 0, 0))]))
    assert cli_main(["compress", str(run / "point_cloud.ply"), str(run / "scene.gsz"), "pipeline=low"]) == 0
    assert cli_main(["decode", str(run / "scene.gsz"), str(run / "scene.ply")]) == 0
    coded = load_view_file(run / "scene.gsz")
    capsys.readouterr()
    assert load_compare(coded, None) is None  # no report.json: scene.ply, which is this file decoded
    assert "note: not comparing with scene.ply: it is scene.gsz decoded" in capsys.readouterr().err
    (run / "report.json").write_text('{"pipeline": "low", "gsz_bytes": 1}')
    assert find_sources(run / "scene.gsz") == [run / "point_cloud.ply"]
    assert load_compare(coded, None).name == "point_cloud.ply"
    with pytest.raises(GscompError):
        load_compare(main, str(tmp_path / "missing.ply"))


def test_exact_max_side_outside_the_slider_range(random_splats):
    pytest.importorskip("viser")
    from gscomp.viewer.app import Viewer

    for side in (16, 4096):  # the CLI takes 16..8192; the slider used to be fixed at 128..2048
        v = Viewer(ViewFile(Path("mem.ply"), random_splats(50, seed=1), 1), port=0, exact_max_side=side)
        try:
            assert v.exact_side.value == side
        finally:
            v.close()


@pytest.mark.parametrize("gap", [0.01, 0.15])
def test_a_second_ctrl_c_while_stopping_is_still_a_clean_stop(tmp_path, random_splats, gap):
    """Two Ctrl-C in quick succession (the server takes ~0.3 s to shut down) stop as one: exit 0
    and the one "stopped" line. The second used to escape as a KeyboardInterrupt traceback from
    torch's exit handlers, or kill the process with SIGINT (exit -2)."""
    import os
    import signal
    import subprocess
    import sys

    pytest.importorskip("viser")
    from gscomp.io import save_splats

    p = tmp_path / "s.ply"
    save_splats(p, random_splats(20, sh_degree=0))
    proc = subprocess.Popen([sys.executable, "-m", "gscomp", "view", str(p), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        assert "http://" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        time.sleep(gap)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert rc == 0 and err.strip() == "gscomp view: stopped", (rc, err[-500:])


@pytest.mark.parametrize("where", ["loading", "server setup"])
def test_a_stop_before_serving_is_the_same_clean_stop(tmp_path, random_splats, monkeypatch, capsys, where):
    """Ctrl-C while the file loads was 'interrupted' (exit 130), and while the server was set up it
    left viser's own "(viser) Server stopped" on stdout (qa40_V); both are now the clean stop."""
    import os
    import signal

    pytest.importorskip("viser")
    from gscomp.io import save_splats
    from gscomp.viewer import app, load

    p = tmp_path / "s.ply"
    save_splats(p, random_splats(20, sh_degree=0))
    if where == "loading":
        def stop(*_a, **_k):
            raise KeyboardInterrupt
        monkeypatch.setattr(load, "load_view_file", stop)
    else:
        real = app.Viewer._add_node

        def add_node(self, *a, **k):  # (the signal comes once viser's server runs)
            os.kill(os.getpid(), signal.SIGINT)
            return real(self, *a, **k)
        monkeypatch.setattr(app.Viewer, "_add_node", add_node)
    assert cli_main(["view", str(p), "--port", "0"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == "gscomp view: stopped\n", (out, err)
