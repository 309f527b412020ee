"""Camera poses without images (`gscomp.data.cameras`) and `gscomp compress --cameras`: the
importance stage scores Gaussians from the views a scene is really seen from."""
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import shared
from gscomp.cli import main
from gscomp.data.cameras import find_cameras_json, load_cameras, save_cameras_json
from gscomp.errors import FormatError, GscompError
from gscomp.io import save_splats
from gscomp.stages.importance import sphere_cameras


def _cams(n=6):
    cams = sphere_cameras(torch.zeros(10, 3) + torch.arange(10.0)[:, None] * 0.1, n, res=40)
    for i, c in enumerate(cams):
        c.cx += 0.5 * i  # off-centre principal points survive the round trip (our cx/cy keys)
    return cams


def test_cameras_json_round_trip(tmp_path):
    cams = _cams()
    save_cameras_json(tmp_path / "cameras.json", cams)
    back = load_cameras(tmp_path / "cameras.json")
    assert [c.name for c in back] == sorted(c.name for c in cams)
    by = {c.name: c for c in cams}
    for b in back:
        a = by[b.name]
        assert (b.width, b.height) == (a.width, a.height)
        assert np.allclose([b.fx, b.fy, b.cx, b.cy], [a.fx, a.fy, a.cx, a.cy])
        assert torch.allclose(b.world_to_camera, a.world_to_camera, atol=1e-5)
    assert len(load_cameras(tmp_path, max_views=3)) == 3  # a folder holding cameras.json


def test_inria_cameras_json_convention(tmp_path):
    """INRIA's entries hold the camera-to-world rotation and the camera centre; no cx/cy = centre."""
    rot = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    entry = {"id": 0, "img_name": "a", "width": 64, "height": 48, "position": [1.0, 2.0, 3.0],
             "rotation": rot, "fx": 50.0, "fy": 51.0}
    (tmp_path / "cameras.json").write_text(json.dumps([entry]))
    (c,) = load_cameras(tmp_path / "cameras.json")
    assert (c.cx, c.cy) == (32.0, 24.0)
    assert torch.allclose(c.camera_to_world[:3, 3], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert torch.allclose(c.camera_to_world[:3, :3], torch.tensor(rot, dtype=torch.float64))


@pytest.mark.parametrize("text, msg", [
    ("{not json", "not a readable"),
    ('{"a": 1}', "expected a list"),
    ('[{"width": 4}]', "bad or missing field"),
    ('[{"width": 4, "height": 4, "fx": 1, "fy": 1, "position": [0, 0, 0], "rotation": [[2, 0, 0], [0, 1, 0], [0, 0, 1]]}]',
     "not orthonormal"),
    ('[{"width": 0, "height": 4, "fx": 1, "fy": 1, "position": [0, 0, 0], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}]',
     "out of range"),
    ('[{"width": 4, "height": 4, "fx": NaN, "fy": 1, "position": [0, 0, 0], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}]',
     "non-finite"),
    ("[]", "no cameras"),
])
def test_bad_cameras_json(tmp_path, text, msg):
    (tmp_path / "cameras.json").write_text(text)
    with pytest.raises(FormatError, match=msg):
        load_cameras(tmp_path / "cameras.json")


def test_missing_cameras_path(tmp_path):
    with pytest.raises(GscompError, match="no such cameras"):
        load_cameras(tmp_path / "nope.json")


def test_colmap_cameras_without_images(tmp_path):
    src = shared("scenes/sodacan/sparse")
    shutil.copytree(src, tmp_path / "sparse")  # the model alone: no images needed
    cams = load_cameras(tmp_path)
    assert len(cams) == 71 and all(c.image is None for c in cams)
    assert len(load_cameras(tmp_path / "sparse" / "0", max_views=16)) == 16


def test_compress_scores_from_given_cameras(tmp_path, random_splats, capsys):
    """--cameras changes which Gaussians count (other bytes); a trained model's cameras.json is
    found on its own (INRIA layout); bad uses are one-line errors."""
    s = random_splats(3000, sh_degree=1)
    model = tmp_path / "model"
    ply = model / "point_cloud" / "iteration_30" / "point_cloud.ply"
    ply.parent.mkdir(parents=True)
    save_splats(ply, s)
    lone = tmp_path / "lone.ply"
    save_splats(lone, s)
    cams = sphere_cameras(s.means, 4, res=48)
    cams = [c.scaled(1.0) for c in cams[:2]]  # two views only: a different view set than the default
    save_cameras_json(tmp_path / "two.json", cams)
    base = ["pipeline=compact", "pipeline.stages.importance.views=4"]
    assert main(["compress", str(lone), str(tmp_path / "a.gsz"), *base]) == 0
    assert main(["compress", str(lone), str(tmp_path / "b.gsz"), "--cameras", str(tmp_path / "two.json"), *base]) == 0
    assert "scoring from 2 views" in capsys.readouterr().err
    assert (tmp_path / "a.gsz").read_bytes() != (tmp_path / "b.gsz").read_bytes()
    shutil.copy(tmp_path / "two.json", model / "cameras.json")
    assert find_cameras_json(ply) == model / "cameras.json"
    assert main(["compress", str(ply), str(tmp_path / "c.gsz"), *base]) == 0
    assert "scoring from 2 views" in capsys.readouterr().err
    assert (tmp_path / "c.gsz").read_bytes() == (tmp_path / "b.gsz").read_bytes()
    assert main(["compress", str(lone), str(tmp_path / "d.gsz"), "--cameras"]) == 2
    assert main(["compress", str(lone), str(tmp_path / "d.gsz"), f"--cameras={tmp_path / 'x.json'}", *base]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "needs a path" in err[0] and "no such cameras" in err[1]
    assert not (tmp_path / "d.gsz").exists()


def test_cameras_of_another_frame_are_flagged(tmp_path, random_splats, capsys):
    """Cameras that do not see the scene (another scene's, or another coordinate frame) leave most
    Gaussians with score 0: the encoder says so. The scene's own views give no warning."""
    s = random_splats(2000, sh_degree=0)
    lone = tmp_path / "lone.ply"
    save_splats(lone, s)
    own = sphere_cameras(s.means, 4, res=48)
    save_cameras_json(tmp_path / "own.json", own)
    save_cameras_json(tmp_path / "far.json", sphere_cameras(s.means + 1000.0, 4, res=48))  # looks at empty space
    base = ["pipeline=compact", "pipeline.stages.importance.views=4"]
    assert main(["compress", str(lone), str(tmp_path / "a.gsz"), "--cameras", str(tmp_path / "own.json"), *base]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["compress", str(lone), str(tmp_path / "b.gsz"), "--cameras", str(tmp_path / "far.json"), *base]) == 0
    err = capsys.readouterr().err
    assert "% of the drawable Gaussians are not seen from any of the 4 given views" in err
    assert "same coordinate frame" in err and (tmp_path / "b.gsz").exists()


def test_scoring_warning_thresholds():
    from gscomp.stages.importance import scoring_warning

    seen = np.linspace(1, 2, 100)
    assert scoring_warning(seen, 0.78, 16) is None and scoring_warning(seen, 0.78, 0) is None
    assert scoring_warning(np.zeros(0), 0.78, 16) is None
    # a scene smaller than the near plane: the sphere views saw nothing, which went unsaid
    assert "the views around the scene see none of its Gaussians" in scoring_warning(np.zeros(50), 0.78, 0)
    part = seen.copy()
    part[:24] = 0  # 24% unseen: under the bar; 26%: over it
    assert scoring_warning(part, 0.78, 16) is None
    part[:26] = 0
    assert "26% of the drawable Gaussians are not seen" in scoring_warning(part, 0.78, 16)
    # Gaussians too transparent to be drawn score 0 from any camera: no sign of wrong cameras (after
    # a short training run most of a model can be such; the warning blamed the cameras for them)
    drawable = np.ones(100, bool)
    drawable[:26] = False
    assert scoring_warning(part, 0.78, 16, drawable) is None
    drawable[:10] = True  # 10 of 84 drawable unseen: 12%
    assert scoring_warning(part, 0.78, 16, drawable) is None
    drawable[:26] = True
    drawable[26:60] = False  # 26 of 66 drawable unseen: 39%
    assert "39% of the drawable Gaussians are not seen" in scoring_warning(part, 0.78, 16, drawable)
    # sphere views: the quantile is 0 when most score 0; the reference falls back to the seen ones
    mostly = seen.copy()
    mostly[:90] = 0
    assert "90% of the Gaussians barely show" in scoring_warning(mostly, 0.78, 0)
    # "barely": under 1e-3 of the reference (from 1024 px views, sodacan's can on a floor has 32% of
    # its Gaussians there and objects 7-8%; under 1e-4 it was 17%, and went unwarned)
    faint = seen.copy()
    faint[:30] = 5e-4
    assert "30% of the Gaussians barely show" in scoring_warning(faint, 0.78, 0)
    faint[:30] = 5e-3
    assert scoring_warning(faint, 0.78, 0) is None
