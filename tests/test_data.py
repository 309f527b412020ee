"""Scene loaders: COLMAP (binary/text, distorted models), Blender, instant-ngp, synthetic.

Generated fixtures draw a smooth pattern that is a function of the *ray direction* through each
pixel (computed with pycolmap's own distortion model). After loading, the same pattern evaluated
through the returned pinhole camera must reproduce the pixels: this checks both the undistortion
of the image and the intrinsics returned with it.
"""
import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared
from gscomp.camera import Camera
from gscomp.data import load_scene, split, subsample, synthetic_gt
from gscomp.errors import FormatError, GscompError

pycolmap = pytest.importorskip("pycolmap")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Undistorted images go to a throwaway cache, never to the user's ~/.cache. (Only the data
    cache: $GSCOMP_CACHE also holds the compiled native renderer, which must not be rebuilt.)"""
    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setattr("gscomp.data.colmap.cache_root", lambda: root)
    return root


# ------------------------------------------------------------------------------------ helpers
def pattern(xn: np.ndarray, yn: np.ndarray) -> np.ndarray:
    """Smooth RGB in [0.1, 0.9] of normalised image coordinates (x/z, y/z)."""
    return np.stack([0.5 + 0.4 * np.sin(5 * xn + 0.3), 0.5 + 0.4 * np.cos(4 * yn),
                     0.5 + 0.3 * np.sin(3 * (xn + yn))], -1)


def render_pattern(pcam) -> np.ndarray:
    """uint8 image as seen through pycolmap camera ``pcam`` (distortion included)."""
    u, v = np.meshgrid(np.arange(pcam.width) + 0.5, np.arange(pcam.height) + 0.5)
    n = pcam.cam_from_img(np.stack([u.ravel(), v.ravel()], 1).astype(np.float64))
    rgb = pattern(n[:, 0], n[:, 1]).reshape(pcam.height, pcam.width, 3)
    return np.round(rgb * 255).astype(np.uint8)


def pattern_error(cam: Camera, border: int = 2) -> float:
    """Mean |loaded image - pattern through the returned pinhole camera| away from the border."""
    u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    want = pattern((u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy)
    got = cam.image.numpy()
    b = border
    return float(np.abs(got - want)[b:-b, b:-b].mean())


def rotmat_to_quat(R: np.ndarray) -> np.ndarray:
    """wxyz quaternion of a rotation matrix (COLMAP's images.txt convention)."""
    w = math.sqrt(max(0.0, 1 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1 + R[0, 0] - R[1, 1] - R[2, 2])) / 2, R[2, 1] - R[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1 - R[0, 0] + R[1, 1] - R[2, 2])) / 2, R[0, 2] - R[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1 - R[0, 0] - R[1, 1] + R[2, 2])) / 2, R[1, 0] - R[0, 1])
    return np.array([w, x, y, z])


def poses(n: int) -> list[np.ndarray]:
    return [Camera.look_at((3 * math.cos(a), 3 * math.sin(a), 1.0), (0, 0, 0), (0, 0, 1), 60, 8, 8)
            .world_to_camera.double().numpy() for a in np.linspace(0, 2, n)]


MODELS = {  # model -> params for a 96x72 camera; distortion strong enough to matter at the border
    "SIMPLE_PINHOLE": [80, 48, 36],
    "PINHOLE": [80, 84, 47, 37],
    "SIMPLE_RADIAL": [80, 48, 36, -0.15],
    "RADIAL": [80, 48, 36, 0.12, -0.05],
    "OPENCV": [80, 82, 47.5, 36.5, -0.12, 0.03, 0.004, -0.003],
    "OPENCV_FISHEYE": [70, 70, 48, 36, 0.05, -0.02, 0.0, 0.0],
}


def write_colmap_text(root, model: str, params, n_images: int = 3, with_half: bool = False):
    """A complete text COLMAP scene: cameras/images/points3D.txt + pattern images (and images_2)."""
    W, H = 96, 72
    (root / "sparse" / "0").mkdir(parents=True)
    (root / "images").mkdir()
    pcam = pycolmap.Camera(model=model, width=W, height=H, params=params)
    rng = np.random.default_rng(0)
    X = rng.uniform(-0.5, 0.5, (20, 3))
    img_lines, tracks = [], {i: [] for i in range(len(X))}
    for k, w2c in enumerate(poses(n_images), 1):
        name = f"img_{k:02d}.png"
        Image.fromarray(render_pattern(pcam)).save(root / "images" / name)
        if with_half:
            (root / "images_2").mkdir(exist_ok=True)
            half = pycolmap.Camera(model=model, width=W, height=H, params=params)
            half.rescale(W // 2, H // 2)
            Image.fromarray(render_pattern(half)).save(root / "images_2" / name)
        P = X @ w2c[:3, :3].T + w2c[:3, 3]
        xy = pcam.img_from_cam(P)
        q, t = rotmat_to_quat(w2c[:3, :3]), w2c[:3, 3]
        img_lines.append(f"{k} {' '.join(map(str, q))} {' '.join(map(str, t))} 1 {name}")
        img_lines.append(" ".join(f"{x} {y} {i + 1}" for i, (x, y) in enumerate(xy)))
        for i in range(len(X)):
            tracks[i].append(f"{k} {i}")
    sp = root / "sparse" / "0"
    (sp / "cameras.txt").write_text(f"# test\n1 {model} {W} {H} {' '.join(map(str, params))}\n")
    (sp / "images.txt").write_text("\n".join(img_lines) + "\n")
    (sp / "points3D.txt").write_text("".join(
        f"{i + 1} {x} {y} {z} 200 100 50 0.1 {' '.join(tracks[i])}\n" for i, (x, y, z) in enumerate(X)))
    return pcam, X


def reprojection_errors(scene_cams, rec) -> np.ndarray:
    """Pixel distance between projecting points3D with the loaded cameras and COLMAP's recorded
    observations mapped through pycolmap's own undistortion (and the loader's resize)."""
    byname = {im.name: im for im in rec.images.values()}
    errs = []
    for c in scene_cams:
        im = byname[c.name]
        pc = rec.cameras[im.camera_id]
        obs = [(p.xy, p.point3D_id) for p in im.points2D if p.has_point3D()]
        xy = np.array([o[0] for o in obs])
        X = np.array([rec.points3D[o[1]].xyz for o in obs])
        und = pycolmap.undistort_camera(pycolmap.UndistortCameraOptions(), pc) \
            if pc.model.name not in ("PINHOLE", "SIMPLE_PINHOLE") else pc
        n = pc.cam_from_img(xy)
        ref = und.img_from_cam(np.c_[n, np.ones(len(n))]) * [c.width / und.width, c.height / und.height]
        w2c = c.world_to_camera.double().numpy()
        P = X @ w2c[:3, :3].T + w2c[:3, 3]
        uv = np.c_[c.fx * P[:, 0] / P[:, 2] + c.cx, c.fy * P[:, 1] / P[:, 2] + c.cy]
        errs.append(np.linalg.norm(uv - ref, axis=1))
    return np.concatenate(errs)


def check_cameras(scene):
    for c in scene.train + scene.test:
        assert c.image is not None and c.image.dtype == torch.float32
        assert tuple(c.image.shape) == (c.height, c.width, 3)
        assert float(c.image.min()) >= 0 and float(c.image.max()) <= 1
        if c.alpha is not None:
            assert tuple(c.alpha.shape) == (c.height, c.width)
    assert scene.points.dtype == torch.float32 and scene.points.shape[1] == 3
    assert scene.colors.shape == scene.points.shape
    assert float(scene.colors.min()) >= 0 and float(scene.colors.max()) <= 1
    assert scene.extent > 0


# ------------------------------------------------------------------------------------ COLMAP (real data)
def test_colmap_sodacan_undistorted_portrait():
    root = shared("scenes/sodacan")
    # 24 of the 71 views (evenly spread) keep the first-time undistortion cost down
    scene = load_scene("colmap", str(root), downscale=4, max_images=24)
    check_cameras(scene)
    assert len(scene.train) + len(scene.test) == 24 and len(scene.test) == 3  # 0, 8, 16
    names = sorted(c.name for c in scene.train + scene.test)
    assert names[0] == "0000.jpg" and names[-1] > "0065.jpg"  # spread over the whole capture
    assert [c.name for c in scene.test] == names[::8]
    rec = pycolmap.Reconstruction(str(root / "sparse" / "0"))
    cam_of = {im.name: im.camera_id for im in rec.images.values()}
    for c in scene.train + scene.test:
        pc = rec.cameras[cam_of[c.name]]
        und = pycolmap.undistort_camera(pycolmap.UndistortCameraOptions(), pc)
        assert c.height > c.width  # portrait kept
        assert (c.width, c.height) == (round(und.width / 4), round(und.height / 4))
        assert c.fx == pytest.approx(und.focal_length_x * c.width / und.width, rel=1e-6)
        assert c.cy == pytest.approx(und.principal_point_y * c.height / und.height, rel=1e-6)
    err = reprojection_errors(scene.train + scene.test, rec)
    assert np.median(err) < 0.5, np.median(err)  # px at 1/4 resolution
    assert scene.meta["undistorted_images"] == 24 and len(scene.points) == 4414


def test_colmap_book_reprojection_and_cache(monkeypatch, _private_cache):
    root = shared("scenes/book")
    a = load_scene("colmap", str(root), downscale=2, test_every=0)
    assert len(list(_private_cache.rglob("*.png"))) == 7

    def no_undistort(*args):
        raise AssertionError("second load should come from the cache")

    monkeypatch.setattr("gscomp.data.colmap.undistort_array", no_undistort)
    b = load_scene("colmap", str(root), downscale=2, test_every=0)
    check_cameras(a)
    assert len(a.train) == 7 and a.test == [] and len(a.points) == 699
    assert a.background is None  # photos have no alpha
    rec = pycolmap.Reconstruction(str(root / "sparse" / "0"))
    err = reprojection_errors(a.train, rec)
    assert np.median(err) < 1.0, np.median(err)
    for ca, cb in zip(a.train, b.train):  # the cache holds exactly what was computed
        assert torch.equal(ca.image, cb.image) and ca.fx == cb.fx


# ------------------------------------------------------------------------------------ COLMAP (generated)
@pytest.mark.parametrize("model", list(MODELS))
def test_colmap_text_models(tmp_path, model):
    pcam, X = write_colmap_text(tmp_path, model, MODELS[model])
    scene = load_scene("colmap", str(tmp_path), test_every=0)
    check_cameras(scene)
    assert [c.name for c in scene.train] == ["img_01.png", "img_02.png", "img_03.png"]
    for c in scene.train:
        assert pattern_error(c) < 0.006, (model, pattern_error(c))
    rec = pycolmap.Reconstruction(str(tmp_path / "sparse" / "0"))
    assert np.median(reprojection_errors(scene.train, rec)) < 0.05
    assert torch.allclose(scene.points.double(), torch.from_numpy(X), atol=1e-5)
    assert torch.allclose(scene.colors[0], torch.tensor([200, 100, 50]) / 255.0)
    distorted = model not in ("PINHOLE", "SIMPLE_PINHOLE")
    assert scene.meta["undistorted_images"] == (3 if distorted else 0)
    if distorted:
        # Treating the distorted images as pinhole would be visibly wrong: the check has teeth.
        c = scene.train[0]
        fake = Camera(pcam.focal_length_x, pcam.focal_length_y, pcam.principal_point_x,
                      pcam.principal_point_y, pcam.width, pcam.height, c.world_to_camera,
                      image=torch.from_numpy(render_pattern(pcam)).float() / 255)
        assert pattern_error(fake) > 3 * pattern_error(c)


@pytest.mark.parametrize("model", ["PINHOLE", "OPENCV"])
def test_colmap_downscale_resize_and_images_n(tmp_path, model):
    write_colmap_text(tmp_path / "a", model, MODELS[model], n_images=2)
    s = load_scene("colmap", str(tmp_path / "a"), downscale=2, test_every=0)
    assert s.meta["image_dir"].endswith("images")
    write_colmap_text(tmp_path / "b", model, MODELS[model], n_images=2, with_half=True)
    t = load_scene("colmap", str(tmp_path / "b"), downscale=2, test_every=0)
    assert t.meta["image_dir"].endswith("images_2")
    for c in s.train + t.train:
        assert 40 <= c.width <= 52 and 32 <= c.height <= 40  # undistortion may grow the frame
        assert pattern_error(c) < 0.008, pattern_error(c)
    # fractional downscale: resized, intrinsics follow
    u = load_scene("colmap", str(tmp_path / "b"), downscale=1.5, test_every=0)
    assert u.meta["image_dir"].endswith("images") and pattern_error(u.train[0]) < 0.008


def test_colmap_masked_images_keep_their_background(tmp_path):
    # RGBA photos (a masked object) are composited over data.background; the scene must say so,
    # or training and eval render on black against ground truth on white
    write_colmap_text(tmp_path, "PINHOLE", MODELS["PINHOLE"], n_images=2)
    assert load_scene("colmap", str(tmp_path), test_every=0).background is None  # plain photos
    for f in (tmp_path / "images").iterdir():
        rgb = np.asarray(Image.open(f))
        Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(f)
    white = load_scene("colmap", str(tmp_path), test_every=0, background=(1, 1, 1))
    assert white.background == (1.0, 1.0, 1.0) and white.train[0].alpha is not None
    assert float(white.train[0].image.min()) >= 127 / 255 - 1e-6  # over white
    assert load_scene("colmap", str(tmp_path), test_every=0, background=None).background == (0.0, 0.0, 0.0)


def test_colmap_bad_inputs(tmp_path):
    with pytest.raises(GscompError, match="not found"):
        load_scene("colmap", str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(GscompError, match="no COLMAP model"):
        load_scene("colmap", str(tmp_path / "empty"))

    write_colmap_text(tmp_path / "foo", "PINHOLE", MODELS["PINHOLE"], n_images=1)
    cams = tmp_path / "foo" / "sparse" / "0" / "cameras.txt"
    cams.write_text("1 FOO 96 72 80 48 36\n")
    with pytest.raises(GscompError, match="unsupported camera model 'FOO'"):
        load_scene("colmap", str(tmp_path / "foo"))
    cams.write_text("1 EQUIRECTANGULAR 96 72\n")
    with pytest.raises(GscompError, match="unsupported camera model"):
        load_scene("colmap", str(tmp_path / "foo"))

    write_colmap_text(tmp_path / "noimg", "PINHOLE", MODELS["PINHOLE"], n_images=1)
    (tmp_path / "noimg" / "sparse" / "0" / "images.txt").write_text("# no images\n")
    (tmp_path / "noimg" / "sparse" / "0" / "points3D.txt").write_text("")
    with pytest.raises(GscompError, match="no registered images"):
        load_scene("colmap", str(tmp_path / "noimg"))

    write_colmap_text(tmp_path / "bad", "OPENCV", MODELS["OPENCV"], n_images=2)
    (tmp_path / "bad" / "images" / "img_02.png").write_bytes(b"not an image at all")
    with pytest.raises(GscompError, match="cannot read image .*img_02.png"):
        load_scene("colmap", str(tmp_path / "bad"))
    (tmp_path / "bad" / "images" / "img_02.png").unlink()
    with pytest.raises(GscompError, match="img_02.png .*missing"):
        load_scene("colmap", str(tmp_path / "bad"))

    # binary models are walked before pycolmap reads them: it trusts their counts (a truncated
    # images.bin made it allocate gigabytes; a name without its terminator, loop)
    import shutil
    import struct

    book = tmp_path / "book"
    shutil.copytree(shared("scenes/book") / "sparse", book / "sparse")
    (book / "images").mkdir()
    model = book / "sparse" / "0"
    good = {f: (model / f).read_bytes() for f in ("cameras.bin", "images.bin", "points3D.bin")}
    for f, data, msg in [("images.bin", good["images.bin"][:50], "runs past the end"),
                         ("images.bin", good["images.bin"][:86], "without its terminator"),
                         ("points3D.bin", b"", "truncated"),
                         ("points3D.bin", struct.pack("<Q", struct.unpack_from("<Q", good["points3D.bin"])[0] + 1)
                          + good["points3D.bin"][8:], "declares .* records but ends"),
                         ("cameras.bin", good["cameras.bin"][:8 + 24 + 8] + struct.pack("<d", math.nan)
                          + good["cameras.bin"][8 + 24 + 16:], "non-finite parameters")]:
        (model / f).write_bytes(data)
        with pytest.raises(FormatError, match=msg):
            load_scene("colmap", str(book))
        (model / f).write_bytes(good[f])

    write_colmap_text(tmp_path / "garbled", "PINHOLE", MODELS["PINHOLE"], n_images=1)
    (tmp_path / "garbled" / "sparse" / "0" / "points3D.txt").write_text("1 2 3\n")
    with pytest.raises(GscompError, match="cannot read COLMAP model"):
        load_scene("colmap", str(tmp_path / "garbled"))


def test_colmap_images_txt_layout_and_bad_poses(tmp_path):
    # COLMAP's reader takes the line after an image as its POINTS2D: hand-written files without
    # the empty lines used to lose every other image without a word; zero quaternions became the
    # identity; one image registered twice trained on both poses
    write_colmap_text(tmp_path, "PINHOLE", MODELS["PINHOLE"], n_images=4)
    txt = tmp_path / "sparse" / "0" / "images.txt"
    good = txt.read_text().splitlines()
    image_lines = good[0::2]
    cases = [("\n".join(image_lines) + "\n", r"images.txt:2: expected the POINTS2D line of the image on line 1"),
             ("\n".join(good[:-1]) + "\n", r"images.txt:7: the last image has no POINTS2D line after it"),
             ("\n".join(["# c", "1 0 0 0 0 1 2 3 1 img_01.png", ""] + good[2:]) + "\n",
              r"images.txt:2: image 1 has rotation quaternion 0 0 0 0 \(not a rotation\)"),
             ("1 2 3\n\n", r"images.txt:1: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'")]
    for text, msg in cases:
        txt.write_text(text)
        with pytest.raises(FormatError, match=msg):
            load_scene("colmap", str(tmp_path), test_every=0)
    # CRLF endings are fine, and so are empty POINTS2D lines and -1 (unmatched) point ids
    txt.write_text("\r\n".join(good) + "\r\n")
    assert len(load_scene("colmap", str(tmp_path), test_every=0).train) == 4
    from gscomp.data.colmap import _check_images_txt
    (tmp_path / "other.txt").write_text("\n".join([good[0], "", good[2], "10.5 20.5 -1 1 2 3"]) + "\n")
    _check_images_txt(tmp_path / "other.txt")
    dup = good[:2] + [good[2].replace("img_02.png", "img_01.png"), good[3]] + good[4:]
    txt.write_text("\n".join(dup) + "\n")
    with pytest.raises(FormatError, match="image 'img_01.png' is registered twice"):
        load_scene("colmap", str(tmp_path), test_every=0)
    # the same zero quaternion in a binary model
    txt.write_text("\n".join(good) + "\n")
    rec = pycolmap.Reconstruction(str(tmp_path / "sparse" / "0"))
    (tmp_path / "bin" / "sparse" / "0").mkdir(parents=True)
    rec.write_binary(str(tmp_path / "bin" / "sparse" / "0"))
    (tmp_path / "bin" / "images").symlink_to(tmp_path / "images")
    binf = tmp_path / "bin" / "sparse" / "0" / "images.bin"
    data = bytearray(binf.read_bytes())
    data[8 + 4:8 + 36] = bytes(32)  # the first record's qw qx qy qz
    binf.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=r"images.bin: image \d+ has rotation quaternion \(0.0, 0.0, 0.0, 0.0\)"):
        load_scene("colmap", str(tmp_path / "bin"), test_every=0)


def test_principal_point_outside_the_image(tmp_path):
    # instant-ngp intrinsics written for the 800 px originals, without w/h, next to 64 px images
    (tmp_path / "s").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "s" / "v.png")
    w2c = poses(1)[0]
    fr = {"file_path": "v.png", "transform_matrix": (np.linalg.inv(w2c) @ np.diag([1.0, -1, -1, 1])).tolist()}
    meta = {"fl_x": 1100, "fl_y": 1100, "cx": 400, "cy": 400, "frames": [fr]}
    (tmp_path / "s" / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match=r"principal point \(400, 400\) is outside its 64x64 image "
                                          r"\(intrinsics written for another image size\?\)"):
        load_scene("ngp", str(tmp_path / "s"), test_every=0)


# ------------------------------------------------------------------------------------ Blender
def test_blender_lego():
    root = shared("scenes/lego")
    scene = load_scene("blender", str(root), downscale=4)
    check_cameras(scene)
    assert len(scene.train) == 87 and len(scene.test) == 13 and scene.meta["test_split"] == "holdout"
    assert scene.points.shape == (100_000, 3) and float(scene.points.abs().max()) <= 1.3
    assert scene.background == (1.0, 1.0, 1.0)
    for c in scene.train[:10] + scene.test[:5]:
        assert (c.width, c.height) == (200, 200) and c.alpha is not None
        # OpenCV convention: the model at the origin is in front of the camera, near the image
        # centre, and covered by the alpha mask there.
        p = c.world_to_camera[:3, :3] @ torch.zeros(3, dtype=torch.float64) + c.world_to_camera[:3, 3]
        assert p[2] > 2
        u, v = c.fx * p[0] / p[2] + c.cx, c.fy * p[1] / p[2] + c.cy
        assert abs(u - 100) < 10 and abs(v - 100) < 10
        assert float(c.alpha[int(v) - 3:int(v) + 4, int(u) - 3:int(u) + 4].mean()) > 0.5
        # background: fully transparent pixels are exactly white
        clear = c.alpha == 0
        assert bool(clear.any()) and bool((c.image[clear] == 1).all())
    # the up axis: +z world is up, i.e. projects upwards (smaller v) in the image
    c = scene.train[0]
    p0 = c.world_to_camera[:3, 3]
    p1 = c.world_to_camera[:3, :3] @ torch.tensor([0, 0, 0.5], dtype=torch.float64) + p0
    assert c.fy * p1[1] / p1[2] < c.fy * p0[1] / p0[2]


def test_blender_initial_box_follows_cameras_outside_the_unit_frame():
    """The random initial cloud was always [-1.3, 1.3]^3, NeRF-synthetic's frame: lego exported
    x1000 (and moved by 5e5) trained to 9 dB against 20 dB. Cameras around the origin at lego's
    distance keep that box; others get it scaled and moved to what they look at."""
    import copy

    from gscomp.data.blender import init_box
    from gscomp.stages.importance import sphere_cameras

    points = torch.randn(500, 3, generator=torch.Generator().manual_seed(0)).clamp(-1.5, 1.5)
    cams = sphere_cameras(points, 12)  # (looking at the points' median from all around)
    target = points.double().median(0).values
    centres = torch.stack([c.center.double() for c in cams])
    radius = float(centres.norm(dim=1).median())
    assert 2 < radius < 8
    assert init_box(cams) == ([-1.3] * 3, [1.3] * 3)
    for scale, offset in ((1000.0, 5e5), (1000.0, 0.0), (0.01, 0.0)):
        moved = []
        for c in cams:
            m = c.camera_to_world.double().clone()
            m[:3, 3] = m[:3, 3] * scale + offset
            moved.append(copy.copy(c))
            moved[-1].world_to_camera = torch.linalg.inv(m).to(c.world_to_camera.dtype)
        lo, hi = (torch.tensor(v, dtype=torch.float64) for v in init_box(moved))
        half = 1.3 * scale * radius / 4.03
        assert torch.allclose((lo + hi) / 2, target * scale + offset, atol=1e-3 * scale), (scale, offset)
        assert torch.allclose((hi - lo) / 2, torch.full((3,), half, dtype=torch.float64), rtol=0.05), (scale, offset)


def test_blender_bad_json(tmp_path):
    import shutil

    root = tmp_path / "lego"
    shutil.copytree(shared("fixtures/lego_tiny"), root)
    meta = json.loads((root / "transforms_train.json").read_text())
    for text, msg in [('{"camera_angle_x": 0.7, "frames": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON"),
                      (json.dumps(dict(meta, camera_angle_x="abc")), "camera_angle_x must be a number"),
                      ('{"camera_angle_x": ' + "9" * 5000 + ', "frames": []}', "not valid JSON"),
                      (json.dumps(dict(meta, frames=[dict(meta["frames"][0], file_path="r\u0000x")])),
                       "image file not found")]:
        (root / "transforms_train.json").write_text(text)
        with pytest.raises(GscompError, match=msg):
            load_scene("blender", str(root), num_points=100)
    (root / "transforms_train.json").write_text(json.dumps(meta))
    with pytest.raises(GscompError, match="num_points must be an integer"):  # 1.2 TB of points
        load_scene("blender", str(root), num_points=10**11)


def test_blender_tiny_and_background(tmp_path):
    root = shared("fixtures/lego_tiny")
    s = load_scene("blender", str(root), background=(0, 0, 0), num_points=500, seed=3)
    check_cameras(s)
    assert len(s.train) == 1 and len(s.test) == 1 and s.test[0].name.startswith("val/")
    c = s.train[0]
    meta = json.loads((root / "transforms_train.json").read_text())
    assert (c.width, c.height) == (50, 50)
    assert c.fx == pytest.approx(25 / math.tan(meta["camera_angle_x"] / 2))
    raw = np.asarray(Image.open(root / "train" / "r_0.png").convert("RGBA")).astype(np.float32) / 255
    assert np.allclose(c.image.numpy(), raw[..., :3] * raw[..., 3:], atol=1e-6)  # over black
    assert np.allclose(c.alpha.numpy(), raw[..., 3])
    assert s.points.shape == (500, 3) and s.background == (0.0, 0.0, 0.0)
    # OpenGL -> OpenCV: the camera centre is the matrix's translation, its forward axis is -z_gl
    m = np.array(meta["frames"][0]["transform_matrix"])
    assert np.allclose(c.center.numpy(), m[:3, 3], atol=1e-5)
    assert np.allclose(c.camera_to_world[:3, 2].numpy(), -m[:3, 2], atol=1e-5)
    s2 = load_scene("blender", str(root), num_points=500, seed=3, test_every=0)
    assert s2.test == [] and torch.equal(s.points, s2.points)
    with pytest.raises(GscompError, match="no transforms_train.json"):
        load_scene("blender", str(tmp_path))
    (tmp_path / "transforms_train.json").write_text("{not json")
    with pytest.raises(GscompError, match="not valid JSON"):
        load_scene("blender", str(tmp_path))


# ------------------------------------------------------------------------------------ instant-ngp
def write_ngp(root, n_frames: int = 6, missing=(2, 5)):
    """transforms.json with global OPENCV distortion, one frame with its own focal length, and
    frames whose images are missing."""
    W, H = 96, 72
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir()
    glob = {"fl_x": 80.0, "fl_y": 82.0, "cx": 47.5, "cy": 36.5, "w": W, "h": H,
            "k1": -0.12, "k2": 0.03, "p1": 0.004, "p2": -0.003, "aabb_scale": 4}
    frames, truth = [], {}
    for k, w2c in enumerate(poses(n_frames)):
        fr = {"file_path": f"images/f_{k:02d}.png",
              "transform_matrix": (np.linalg.inv(w2c) @ np.diag([1.0, -1, -1, 1])).tolist()}
        fx = 90.0 if k == 1 else glob["fl_x"]
        if k == 1:
            fr["fl_x"] = fx
        pcam = pycolmap.Camera(model="OPENCV", width=W, height=H,
                               params=[fx, glob["fl_y"], 47.5, 36.5, -0.12, 0.03, 0.004, -0.003])
        if k not in missing:
            Image.fromarray(render_pattern(pcam)).save(root / fr["file_path"])
        frames.append(fr)
        truth[fr["file_path"]] = (w2c, fx)
    (root / "transforms.json").write_text(json.dumps({**glob, "frames": frames}))
    return truth


def test_ngp_distortion_and_missing_frames(tmp_path, said):
    truth = write_ngp(tmp_path / "s")
    scene = load_scene("ngp", str(tmp_path / "s"), test_every=0, num_points=1000)
    err = said.text()
    assert err.count("warning:") == 1 and "2 of 6 frames skipped: image file missing" in err
    check_cameras(scene)
    assert [c.name for c in scene.train] == ["images/f_00.png", "images/f_01.png", "images/f_03.png",
                                             "images/f_04.png"]
    for c in scene.train:
        w2c, fx = truth[c.name]
        assert np.allclose(c.world_to_camera.numpy(), w2c, atol=1e-5)
        assert pattern_error(c) < 0.006, pattern_error(c)
    assert scene.train[1].fx > scene.train[0].fx * 1.05  # the per-frame focal length was used
    assert scene.meta["aabb_scale"] == 4 and scene.meta["skipped_frames"] == 2
    assert float(scene.points.abs().max()) <= 0.5 / 0.33 + 1e-4
    # every 2nd view held out; downscale 2 halves the undistorted size
    half = load_scene("ngp", str(tmp_path / "s"), test_every=2, downscale=2)
    said.text()
    assert len(half.train) == 2 and len(half.test) == 2
    assert half.test[0].width == round(scene.train[0].width / 2)
    assert pattern_error(half.test[0]) < 0.008


def test_far_from_the_origin_keeps_poses_and_warns(tmp_path, said):
    """A georeferenced capture (1e5 units out) keeps its camera centres to float64 (float32 poses put
    them 4 mm off there), and the loader says that float32 training cannot be fine there."""
    write_ngp(tmp_path / "s", missing=())
    meta = json.loads((tmp_path / "s" / "transforms.json").read_text())
    near = load_scene("ngp", str(tmp_path / "s"), test_every=0, num_points=100)
    assert "recentre" not in said.text()
    off = np.array([123456.789, -98765.4321, 5432.1])
    for fr in meta["frames"]:
        m = np.array(fr["transform_matrix"])
        m[:3, 3] += off
        fr["transform_matrix"] = m.tolist()
    (tmp_path / "s" / "transforms.json").write_text(json.dumps(meta))
    far = load_scene("ngp", str(tmp_path / "s"), test_every=0, num_points=100)
    err = said.text()
    assert "1.23e+05 units from the coordinate origin" in err and "recentre the capture" in err
    for a, b in zip(near.train, far.train):
        assert (b.center - a.center - torch.from_numpy(off)).abs().max() < 1e-9


def test_capture_variants_of_other_tools(tmp_path, said):
    """Each of these was read silently wrong (qa31_L): a fisheye with zero coefficients as a pinhole;
    camera_angle_x in degrees; nerfstudio's k4 (an r^8 term) as FULL_OPENCV's denominator term;
    nerfstudio's SfM points (ply_file_path) ignored for a random cube the scene was outside."""
    from plyfile import PlyData, PlyElement

    from gscomp.data.colmap import is_distorted, pinhole_of
    from gscomp.data.ngp import camera_spec

    for model, params in (("OPENCV_FISHEYE", [300, 300, 320, 240, 0, 0, 0, 0]),
                          ("SIMPLE_RADIAL_FISHEYE", [300, 320, 240, 0]), ("RADIAL_FISHEYE", [300, 320, 240, 0, 0])):
        cam = pycolmap.Camera(model=model, width=640, height=480, params=params)
        assert is_distorted(cam), model
        assert pinhole_of(cam)[4:] != (640, 480), model  # (undistorted: another size)
    assert not is_distorted(pycolmap.Camera(model="OPENCV", width=64, height=48, params=[50, 50, 32, 24, 0, 0, 0, 0]))

    with pytest.raises(FormatError, match=r"camera_angle_x must be a number in \(0, pi\) radians, got 39.6"):
        camera_spec({"camera_angle_x": 39.6}, (400, 400), "t")
    assert camera_spec({"fl_x": 50, "k1": 0.1, "k4": 0.02}, (64, 48), "t")[0] == "OPENCV"
    model, *_, params = camera_spec({"fl_x": 50, "k1": 0.1, "k3": 0.01, "k4": 0.02}, (64, 48), "t")
    assert model == "FULL_OPENCV" and params[8:] == (0.01, 0.0, 0.0, 0.0)
    assert camera_spec({"fl_x": 50, "k4": 0.02, "camera_model": "OPENCV_FISHEYE"}, (64, 48), "t")[3][-1] == 0.02

    write_ngp(tmp_path / "s", missing=())
    meta = json.loads((tmp_path / "s" / "transforms.json").read_text())
    meta["k4"] = 0.001
    pts = np.array([(5.0, 6.0, 7.0, 255, 0, 0), (5.5, 6.0, 7.0, 0, 255, 0)],
                   dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    PlyData([PlyElement.describe(pts, "vertex")]).write(str(tmp_path / "s" / "sparse_pc.ply"))
    meta["ply_file_path"] = "sparse_pc.ply"
    (tmp_path / "s" / "transforms.json").write_text(json.dumps(meta))
    scene = load_scene("ngp", str(tmp_path / "s"), test_every=0)
    assert "6 of 6 frames have k4" in said.text()
    assert scene.points.tolist() == [[5.0, 6.0, 7.0], [5.5, 6.0, 7.0]]
    assert scene.colors.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    (tmp_path / "s" / "sparse_pc.ply").write_text("not a ply")
    with pytest.raises(FormatError, match="ply_file_path .* is not a point-cloud .ply"):
        load_scene("ngp", str(tmp_path / "s"), test_every=0)


def test_ngp_angle_fallback_rgba_and_fisheye(tmp_path):
    """No fl_x/w/h: focal from camera_angle_x and size from the file; RGBA keeps alpha; then the
    same scene declared as an OpenCV fisheye is undistorted through COLMAP's fisheye model."""
    (tmp_path / "a").mkdir()
    pcam = pycolmap.Camera(model="PINHOLE", width=64, height=48, params=[50, 50, 32, 24])
    rgba = np.dstack([render_pattern(pcam), np.full((48, 64), 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a" / "v.png")
    w2c = poses(1)[0]
    fr = {"file_path": "v", "transform_matrix": (np.linalg.inv(w2c) @ np.diag([1.0, -1, -1, 1])).tolist()}
    ax = 2 * math.atan(32 / 50)
    (tmp_path / "a" / "transforms.json").write_text(json.dumps({"camera_angle_x": ax, "frames": [fr]}))
    s = load_scene("ngp", str(tmp_path / "a"), background=(0, 0, 0), test_every=0)
    c = s.train[0]
    assert (c.width, c.height, c.fx, c.fy, c.cx) == (64, 48, pytest.approx(50), pytest.approx(50), 32)
    assert s.background == (0.0, 0.0, 0.0) and torch.allclose(c.alpha, torch.tensor(128 / 255))
    assert np.allclose(c.image.numpy(), rgba[..., :3] / 255 * (128 / 255), atol=1e-6)

    (tmp_path / "b").mkdir()
    fish = pycolmap.Camera(model="OPENCV_FISHEYE", width=64, height=48, params=[50, 50, 32, 24, 0.05, -0.02, 0, 0])
    Image.fromarray(render_pattern(fish)).save(tmp_path / "b" / "v.png")
    meta = {"fl_x": 50, "fl_y": 50, "k1": 0.05, "k2": -0.02, "is_fisheye": True, "frames": [fr]}
    (tmp_path / "b" / "transforms.json").write_text(json.dumps(meta))
    c = load_scene("ngp", str(tmp_path / "b"), test_every=0).train[0]
    assert pattern_error(c) < 0.006
    # nerfstudio says the same with camera_model; a model that is no perspective one is refused
    del meta["is_fisheye"]
    for model in ("OPENCV_FISHEYE", "EQUIRECTANGULAR"):
        (tmp_path / "b" / "transforms.json").write_text(json.dumps({**meta, "camera_model": model}))
        if model == "OPENCV_FISHEYE":
            assert pattern_error(load_scene("ngp", str(tmp_path / "b"), test_every=0).train[0]) < 0.006
        else:
            with pytest.raises(FormatError, match="frame 0: camera_model 'EQUIRECTANGULAR' is not supported"):
                load_scene("ngp", str(tmp_path / "b"), test_every=0)


def test_ngp_loads_in_threads_in_a_fresh_process(tmp_path):
    # the loader threads used to race on the first `import pycolmap`, and all but one got the
    # module half initialised ("partially initialized module 'pycolmap' has no attribute 'Camera'")
    import subprocess
    import sys

    write_ngp(tmp_path / "s", n_frames=8, missing=())
    code = ("import sys; from gscomp.data import load_scene; "
            "print(len(load_scene('ngp', sys.argv[1], test_every=0, num_points=100, threads=4).train))")
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.strip() == "8", r.stderr[-500:]


def test_ngp_bad_inputs(tmp_path, capsys):
    with pytest.raises(GscompError, match="no transforms.json"):
        load_scene("ngp", str(tmp_path))
    write_ngp(tmp_path / "s", n_frames=2, missing=(0, 1))
    with pytest.raises(GscompError, match="none of the 2 frames has an image file"):
        load_scene("ngp", str(tmp_path / "s"))
    (tmp_path / "s" / "transforms.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(GscompError, match="non-empty 'frames'"):
        load_scene("ngp", str(tmp_path / "s"))


# ------------------------------------------------------------------------------------ synthetic
def test_synthetic_deterministic():
    a, b, c = synthetic_gt(0), synthetic_gt(0), synthetic_gt(1)
    assert 2000 <= len(a) <= 6000 and a.sh_degree == 3
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a.items(), b.items()))
    assert not torch.equal(a.shN, c.shN)
    assert float(a.shN[:, :3].abs().max()) > 0.05 and float(a.shN[:, 3:].abs().max()) > 0.01
    try:  # the native renderer when it is built, else the (slow) reference: determinism either way
        import gscomp.render.cpu  # noqa: F401
        backend = "cpu"
    except Exception:
        backend = "torch"
    kw = dict(n_views=5, resolution=24, backend=backend, test_every=4)
    s1, s2 = load_scene("synthetic", None, **kw), load_scene("synthetic", None, **kw)
    check_cameras(s1)
    assert len(s1.train) == 3 and len(s1.test) == 2 and s1.background == (1.0, 1.0, 1.0)
    for x, y in zip(s1.train + s1.test, s2.train + s2.test):
        assert torch.equal(x.image, y.image) and torch.equal(x.world_to_camera, y.world_to_camera)
    assert torch.equal(s1.points, s2.points)
    # objects are in view (not just background), some background shows (alpha < 1)
    for cam in s1.train:
        assert 0.2 < float(cam.alpha.mean()) < 0.98
    # initial points are noisy GT means: close to, but not on, the GT surface
    d = torch.cdist(s1.points, a.means).min(1).values
    assert 0.005 < float(d.median()) < 0.1


def test_synthetic_default_with_native_renderer():
    pytest.importorskip("gscomp.render.cpu")
    import time

    from gscomp.render import render

    render(synthetic_gt(0), Camera.look_at((0, -4, 1), (0, 0, 0), (0, 0, 1), 50, 16, 16),
           backend="auto")  # the first call may compile the native kernels: not timed
    t = time.perf_counter()
    s = load_scene("synthetic", None)
    took = time.perf_counter() - t
    assert len(s.train) == 42 and len(s.test) == 6
    assert (s.train[0].width, s.train[0].height) == (128, 128)
    assert took < 30, took  # ~2-7 s on 2 busy cores


# ------------------------------------------------------------------------------------ shared API
def test_split_and_subsample():
    items = list(range(20))
    tr, te = split(items, 8)
    assert te == [0, 8, 16] and len(tr) == 17
    assert split(items, 0) == (items, [])
    assert subsample(items, 5) == [0, 4, 8, 12, 16] and subsample(items, None) == items


def test_load_scene_bad_arguments(tmp_path):
    with pytest.raises(GscompError, match="unknown scene kind"):
        load_scene("nerf", str(tmp_path))
    with pytest.raises(GscompError, match="downscale"):
        load_scene("synthetic", None, downscale=0)
    with pytest.raises(GscompError, match="downscale must be >= 0.25"):  # 10000x upsampling: out of memory
        load_scene("synthetic", None, downscale=1e-4)
    with pytest.raises(FormatError, match="8x8 pixels: too small"):
        load_scene("synthetic", None, n_views=4, resolution=32, downscale=4)
    with pytest.raises(GscompError, match="max_images"):
        load_scene("synthetic", None, max_images="abc")
    with pytest.raises(GscompError, match="test_every"):
        load_scene("synthetic", None, test_every=-1)
    with pytest.raises(GscompError, match="max_images"):
        load_scene("synthetic", None, max_images=0)
    with pytest.raises(GscompError, match="no option 'fps'"):
        load_scene("colmap", str(tmp_path), fps=3)
    with pytest.raises(GscompError, match="background"):
        load_scene("synthetic", None, background=(2, 0, 0))
    with pytest.raises(GscompError, match="path is needed"):
        load_scene("blender", None)


def test_open_image_modes(tmp_path):
    # every mode a capture's images come in becomes 8-bit RGB(A) with the same picture
    from gscomp.data.images import open_image

    g = np.linspace(0, 1, 64 * 48).reshape(48, 64)
    want = np.round(g * 255)
    cases = {"l.png": Image.fromarray((g * 255 + 0.5).astype(np.uint8)),
             "i16.png": Image.fromarray((g * 65535 + 0.5).astype(np.uint16)),
             "f.tif": Image.fromarray(g.astype(np.float32)),
             "rgba.png": Image.fromarray(np.dstack([(g * 255 + 0.5).astype(np.uint8)] * 3 + [np.full((48, 64), 9, np.uint8)]))}
    for name, im in cases.items():
        im.save(tmp_path / name)
        a = np.asarray(open_image(tmp_path / name)).astype(np.float64)
        assert a.shape == (48, 64, 4 if name.startswith("rgba") else 3), name
        assert np.abs(a[..., :3] - want[..., None]).max() <= 1, name  # float TIFF was all black
    # a dark 16-bit frame (every value below 256 of 65535) is still 16-bit: it was read 257x too bright
    Image.fromarray(np.full((48, 64), 200, np.uint16)).save(tmp_path / "dark16.png")
    assert np.asarray(open_image(tmp_path / "dark16.png")).max() == 1  # 200 / 65535 * 255 = 0.78
    Image.fromarray((g * 2).astype(np.float32)).save(tmp_path / "hdr.tif")
    with pytest.raises(GscompError, match=r"cannot read image .*hdr.tif: .*values outside \[0, 1\] \(HDR or depth\?\)"):
        open_image(tmp_path / "hdr.tif")


def test_image_cache_write_failures_are_ignored(tmp_path):
    """The resized-image cache only saves time: a failed write (read-only or full cache) was said to
    be ignored, but atomic_open reports it as a GscompError, which escaped and stopped the run."""
    from gscomp.data.images import save_png_atomic

    save_png_atomic(tmp_path / ("x" * 300 + ".png"), np.zeros((4, 4, 3), np.uint8))  # name too long
    (tmp_path / "file").write_text("")
    save_png_atomic(tmp_path / "file" / "x.png", np.zeros((4, 4, 3), np.uint8))  # parent is a file
    (tmp_path / "d.png").mkdir()  # (a GscompError from atomic_open, as a read-only cache's as non-root)
    save_png_atomic(tmp_path / "d.png", np.zeros((4, 4, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "file"]


def test_damaged_jpeg_and_exif_rotation(tmp_path, said):
    """A JPEG with bytes overwritten mid-scan decodes without an error (PIL drops libjpeg's
    "Corrupt JPEG data"), 60% flat grey, and was trained on silently; EXIF-rotated photos trained
    on the stored pixels with no word (qa31_L S5, S8)."""
    import io

    from gscomp.data.images import jpeg_damage, open_image, rotation_note

    rng = np.random.default_rng(0)
    a = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    streams = []
    for kw in ({}, {"progressive": True}, {"restart_marker_blocks": 2}, {"progressive": True, "restart_marker_blocks": 2}):
        b = io.BytesIO()
        Image.fromarray(a).save(b, "JPEG", quality=90, **kw)
        streams.append(b.getvalue())
        assert jpeg_damage(b.getvalue()) is None and jpeg_damage(b.getvalue() + b"trailer") is None, kw
    assert "truncated" in jpeg_damage(streams[0][: len(streams[0]) // 2])
    hits = 0
    for k in range(40):
        d = bytearray(streams[k % 4])
        at = int(rng.integers(len(d) // 4, len(d) // 2))
        d[at:at + 1500] = rng.integers(0, 256, 1500, dtype=np.uint8).tobytes()
        hits += jpeg_damage(bytes(d)) is not None
    assert hits >= 38, hits
    for seed in range(20):  # (some damage PIL refuses outright: "broken data stream")
        d = bytearray(streams[0])
        d[len(d) // 3:len(d) // 3 + 1500] = np.random.default_rng(seed).integers(0, 256, 1500, dtype=np.uint8).tobytes()
        (tmp_path / "bad.jpg").write_bytes(bytes(d))
        try:
            assert np.asarray(open_image(tmp_path / "bad.jpg")).shape == (96, 128, 3)
            break
        except GscompError as e:
            assert "broken data stream" in str(e)
    err = said.text()
    assert err.startswith("warning: image ") and "bad.jpg is damaged" in err and err.count("\n") == 1
    (tmp_path / "good.jpg").write_bytes(streams[1])
    open_image(tmp_path / "good.jpg")
    assert said.text() == ""

    exif = Image.Exif()
    exif[0x0112] = 3
    Image.fromarray(a).save(tmp_path / "turned.jpg", exif=exif)
    assert rotation_note([tmp_path / "good.jpg"]) is None
    note = rotation_note([tmp_path / "good.jpg", tmp_path / "turned.jpg"])
    assert note.startswith("1 of 2 images carry an EXIF Orientation tag") and "3, rotated 180 degrees" in note

    # a COLMAP scene whose photos are stored landscape, tagged to show portrait, posed as portrait
    write_colmap_text(tmp_path / "c", "PINHOLE", MODELS["PINHOLE"], n_images=2)
    for p in (tmp_path / "c" / "images").iterdir():
        exif[0x0112] = 6
        Image.open(p).transpose(Image.Transpose.ROTATE_90).save(p, exif=exif)
    with pytest.raises(GscompError, match=r"img_01.png: image is 72x96 but its camera is 96x72 \(different aspect "
                                          r"ratio\); its EXIF Orientation tag 6 shows it rotated 90 degrees"):
        load_scene("colmap", str(tmp_path / "c"), test_every=0)


def test_messages_that_name_the_cause(tmp_path, said):
    """Inputs that failed with a message naming the wrong thing, or loaded with none (qa31_L U1-U3,
    M1, M3, M4, S7, S9): each now gets a line that says what is wrong and what to do."""
    import shutil

    write_colmap_text(tmp_path / "c", "PINHOLE", MODELS["PINHOLE"], n_images=2)
    sp = tmp_path / "c" / "sparse" / "0"
    good = {f: (sp / f).read_text() for f in ("cameras.txt", "images.txt")}
    cases = [("images.txt", good["images.txt"].replace("img_02.png", "my photo 02.png"),
              r"images.txt:3: image name 'my photo 02.png' has spaces, .* use the binary model"),
             ("cameras.txt", "\ufeff" + good["cameras.txt"], r"cameras.txt starts with a UTF-8 byte-order mark"),
             ("images.txt", good["images.txt"].replace(" 1 img_02", " 7 img_02"),
              r"images.txt:3: image 'img_02.png' uses camera 7, which cameras.txt does not define")]
    for f, text, msg in cases:
        (sp / f).write_text(text, encoding="utf-8")
        with pytest.raises(FormatError, match=msg):
            load_scene("colmap", str(tmp_path / "c"), test_every=0)
        (sp / f).write_text(good[f])
    # the same missing camera in a binary model (pycolmap said "Rig with ID 1 does not exist")
    (tmp_path / "b" / "sparse" / "0").mkdir(parents=True)
    pycolmap.Reconstruction(str(sp)).write_binary(str(tmp_path / "b" / "sparse" / "0"))
    (tmp_path / "b" / "images").symlink_to(tmp_path / "c" / "images")
    cbin = tmp_path / "b" / "sparse" / "0" / "cameras.bin"
    data = bytearray(cbin.read_bytes())
    data[8:12] = (9).to_bytes(4, "little")
    cbin.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=r"images.bin: image 'img_0\d.png' uses camera 1, which cameras.bin does not define"):
        load_scene("colmap", str(tmp_path / "b"), test_every=0)

    # several models: sparse/0 is used, and the note names the others with their sizes
    shutil.copytree(sp, tmp_path / "c" / "sparse" / "1")
    load_scene("colmap", str(tmp_path / "c"), test_every=0)
    err = said.text()
    assert "sparse/ holds 2 models (0: 2 images, 1: 2 images); using sparse/0" in err
    # a distorted camera says that its images were undistorted
    write_colmap_text(tmp_path / "d", "OPENCV", MODELS["OPENCV"], n_images=1)
    load_scene("colmap", str(tmp_path / "d"), test_every=0)
    assert "note: colmap scene" in (err := said.text()) and "1 images undistorted to pinhole" in err

    # a folder of another kind: the error names the kind that loads it
    write_ngp(tmp_path / "n", missing=())
    with pytest.raises(GscompError, match=r"no transforms_train.json in .*; it holds a transforms.json .*: data=ngp"):
        load_scene("blender", str(tmp_path / "n"))
    with pytest.raises(GscompError, match=r"no transforms.json in .*; it looks like a COLMAP scene: data=colmap"):
        load_scene("ngp", str(tmp_path / "c"))
    with pytest.raises(GscompError, match=r"no transforms.json in .*; it looks like a Blender .*: data=blender"):
        load_scene("ngp", str(shared("fixtures/lego_tiny")))
    (tmp_path / "ns" / "colmap").mkdir(parents=True)
    shutil.copytree(tmp_path / "c" / "sparse", tmp_path / "ns" / "colmap" / "sparse")
    with pytest.raises(GscompError, match=r"no COLMAP model under .*; it holds a COLMAP model in colmap/sparse/0: "
                                          r"data=colmap data.path=.*/ns/colmap \+data.images=../images"):
        load_scene("colmap", str(tmp_path / "ns"))
    meta = json.loads((tmp_path / "n" / "transforms.json").read_text())
    (tmp_path / "n" / "transforms_train.json").write_text(json.dumps(meta))
    with pytest.raises(GscompError, match=r"needs 'camera_angle_x' .*; with instant-ngp intrinsics it loads as "
                                          r"data=ngp data.path=.*transforms_train.json"):
        load_scene("blender", str(tmp_path / "n"))
    (tmp_path / "n" / "transforms_train.json").unlink()

    # nerfstudio keys that are not applied are named; a principal point on the border is flagged
    meta["mask_path"] = "masks"
    meta["train_filenames"] = ["images/f_00.png"]
    del meta["w"], meta["h"], meta["k1"], meta["k2"], meta["p1"], meta["p2"]
    meta["cx"] = meta["cy"] = 2.0
    (tmp_path / "n" / "transforms.json").write_text(json.dumps(meta))
    load_scene("ngp", str(tmp_path / "n"), test_every=0)
    err = said.text()
    assert "mask_path, train_filenames ignored (masks are not applied" in err
    assert "6 of 6 views have their principal point on the image border (e.g. view 'images/f_00.png': (2, 2) in 96x72)" in err

    # a Blender-format scene on black without alpha, trained against the default white background
    root = tmp_path / "bl"
    shutil.copytree(shared("fixtures/lego_tiny"), root)
    for p in list(root.rglob("*.png")):
        rgba = np.asarray(Image.open(p).convert("RGBA")).astype(np.float32)
        Image.fromarray((rgba[..., :3] * rgba[..., 3:] / 255 + 0.5).astype(np.uint8)).save(p)
    load_scene("blender", str(root), num_points=100)
    err = said.text()
    assert "no alpha and stand on a plain backdrop of colour [0, 0, 0], but renders use data.background=[1.0, 1.0, 1.0]" in err
    load_scene("blender", str(root), num_points=100, background=(0, 0, 0))
    load_scene("blender", str(shared("fixtures/lego_tiny")), num_points=100)  # RGBA: composited, no issue
    assert "warning" not in said.text()


def test_ngp_cameras_need_no_images(tmp_path):
    """`compress --cameras` on an instant-ngp capture refused when the image files were gone, though
    transforms.json has every intrinsic and w/h (qa31_L M5): poses and pinhole cameras come from
    the JSON alone, the same as the loader makes with the images."""
    from gscomp.data.cameras import load_cameras

    write_ngp(tmp_path / "s", missing=())
    with_images = load_cameras(tmp_path / "s")
    loaded = load_scene("ngp", str(tmp_path / "s"), test_every=0)
    for d in (tmp_path / "s" / "images").iterdir():
        d.unlink()
    without = load_cameras(tmp_path / "s" / "transforms.json")
    assert [c.name for c in without] == [c.name for c in with_images] == [c.name for c in loaded.train]
    for a, b in zip(without, loaded.train):
        assert (a.fx, a.fy, a.cx, a.cy, a.width, a.height) == (b.fx, b.fy, b.cx, b.cy, b.width, b.height)
        assert torch.equal(a.world_to_camera, b.world_to_camera)
    meta = json.loads((tmp_path / "s" / "transforms.json").read_text())
    del meta["w"], meta["h"]
    (tmp_path / "s" / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(GscompError, match="no frame has w/h or an image file to take its size from"):
        load_cameras(tmp_path / "s")


def test_loaded_images_stay_8_bit(tmp_path):
    """Loaders kept every view as float32 tensors, 4x the memory of the pixels (a 300-view capture
    at 1.6 MP: 5.8 GB, not 1.4 GB), and the trainer kept a float32 copy of each view it had drawn.
    Cameras now hold the 8-bit photo, and image and alpha are computed from it on each read, with
    the bits the float32 tensors had (training and scores unchanged)."""
    from gscomp.camera import Photo
    from gscomp.train.trainer import Trainer

    s = load_scene("blender", str(shared("fixtures/lego_tiny")), background=(1, 1, 1), num_points=500, seed=3)
    c = s.train[0]
    assert isinstance(c._photo, Photo) and c._photo.pixels.dtype == np.uint8 and c._image is None
    raw = torch.from_numpy(np.asarray(Image.open(shared("fixtures/lego_tiny/train/r_0.png")).convert("RGBA"))
                           .astype(np.float32)).div_(255.0)  # what the loaders held before
    a = raw[..., 3:]
    assert torch.equal(c.alpha, raw[..., 3]) and torch.equal(c.image, raw[..., :3] * a + torch.ones(3) * (1.0 - a))
    assert c.has_image and c.image.dtype == torch.float32 and c.image.is_contiguous()
    moved = c.moved_origin(torch.tensor([1.0, 2.0, 3.0]))
    assert moved._photo is c._photo and torch.equal(moved.image, c.image)  # shared, not copied
    assert not c.scaled(0.5).has_image and c.scaled(0.5).image is None

    # an alpha of one's own turns the photo's floats into the image
    d = s.test[0]
    img = d.image
    d.alpha = torch.zeros(d.height, d.width)
    assert d._photo is None and torch.equal(d.image, img) and float(d.alpha.max()) == 0
    with pytest.raises(GscompError, match="uint8"):
        Photo(np.zeros((4, 4, 3), np.float32))

    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    p = Photo(rgb, (0.2, 0.3, 0.4))
    assert p.alpha() is None and torch.equal(p.rgb(), torch.from_numpy(rgb.astype(np.float32)) / 255)

    from gscomp.hydra_app import compose

    cfg = compose("train", ["train.steps=2", "render.backend=cpu", "progress=false", "train.n_renders=0",
                            "train.ckpt_every=0", "device=cpu"])
    tr = Trainer(cfg, out_dir=tmp_path / "run", scene=s)
    tr.setup()
    tr.fit()
    assert tr.gt == [None] * len(s.train)  # (on the CPU no float32 copies are kept)


def test_wide_images_load_at_max_width(tmp_path):
    """Images over 1600 pixels wide trained at full size (a 12 MP phone capture: 7x the pixels per
    step of the 3DGS reference, which shrinks such images to 1.6K wide unless told a resolution).
    They now load at data.max_width (1600) wide, with a note; 0 keeps them."""
    from gscomp.errors import Note
    from gscomp.hydra_app import compose
    from gscomp.train.trainer import load_scene_from_config

    root = tmp_path / "wide"
    (root / "train").mkdir(parents=True)
    rgb = np.random.default_rng(1).integers(0, 256, (60, 1700, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "train" / "r_0.png")
    fov = 1.2
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": fov, "frames": [
        {"file_path": "train/r_0", "transform_matrix": np.eye(4).tolist()}]}))
    with pytest.warns(Note, match=r"1 of 1 images would be over data\.max_width=1600 pixels wide \(e\.g\. 1700x60\): "
                                  r"they load at 1600 wide.*data\.max_width=0 keeps their size"):
        c = load_scene("blender", str(root), test_every=0, num_points=10).train[0]
    assert (c.width, c.height) == (1600, 56) and tuple(c.image.shape) == (56, 1600, 3)
    assert c.fx == pytest.approx(0.5 * 1700 / math.tan(fov / 2) * 1600 / 1700)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Note)  # no note when nothing is shrunk
        assert load_scene("blender", str(root), test_every=0, num_points=10, max_width=0).train[0].width == 1700
        assert load_scene("blender", str(root), test_every=0, num_points=10, downscale=2).train[0].width == 850
    cfg = compose("train", ["data=blender", f"data.path={root}", "data.test_every=0", "data.max_width=1000"])
    assert load_scene_from_config(cfg).train[0].width == 1000
    with pytest.raises(GscompError, match="max_width"):
        load_scene("blender", str(root), max_width=-1)

    # COLMAP (and instant-ngp) views go through load_view, which caps the undistorted size
    write_colmap_text(tmp_path / "c", "PINHOLE", MODELS["PINHOLE"])  # 96x72
    with pytest.warns(Note, match=r"3 of 3 images would be over data\.max_width=64"):
        s = load_scene("colmap", str(tmp_path / "c"), test_every=0, max_width=64)
    assert {(c.width, c.height, tuple(c.image.shape)) for c in s.train} == {(64, 48, (48, 64, 3))}
    assert pattern_error(s.train[0]) < 0.02


def test_images_too_large_for_memory_refused_before_loading(tmp_path, monkeypatch):
    """Full-resolution photos were decoded for minutes into float32 tensors far beyond the machine's
    memory, and the OOM killer ended the run with no message (qa35_A: 32 views of 10 MP took 11.4 GB).
    Now one line says so before any image is decoded, and which data.downscale fits."""
    import gscomp.data.images as I

    write_colmap_text(tmp_path, "PINHOLE", MODELS["PINHOLE"], with_half=True)  # 3 images of 96x72, and images_2
    need = 3 * 96 * 72 * I.BYTES_PER_PIXEL
    monkeypatch.setattr(I, "available_memory", lambda: need + 1000)  # half of it holds a quarter of the pixels
    import gscomp.data.colmap as C

    monkeypatch.setattr(C, "load_view", lambda *a, **k: pytest.fail("an image was decoded"))
    with pytest.raises(GscompError, match=r"its 3 images \(up to 96x72 pixels\) take 0\.0 GB in memory, more "
                                          r"than half .*data\.downscale=2 .*GSCOMP_NO_MEMORY_CHECK=1") as e:
        load_scene("colmap", str(tmp_path))
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    monkeypatch.setattr(I, "available_memory", lambda: need + 1000)
    assert len(load_scene("colmap", str(tmp_path), downscale=2, test_every=0).train) == 3  # (images_2: fits)
    monkeypatch.setenv("GSCOMP_NO_MEMORY_CHECK", "1")
    assert len(load_scene("colmap", str(tmp_path), test_every=0).train) == 3
