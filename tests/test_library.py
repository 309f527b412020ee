"""gscomp used as a Python library (qa34_B): what a script or notebook relies on beyond the CLI."""
from __future__ import annotations

import threading
import warnings
from types import SimpleNamespace

import pytest
import torch

from gscomp import Camera, GscompError, render
from gscomp.codec import decode_bytes, encode_bytes, encode_gsz
from gscomp.errors import Note
from gscomp.splats import Splats
from gscomp.stages.pipeline import Pipeline


def _cams(n=3, res=48):
    return [Camera.look_at((4.0 * (i - 1), -1.0, -4.0), (0.0, 0.0, 0.0), (0.0, -1.0, 0.0), 60.0, res, res, name=f"c{i}")
            for i in range(n)]


def test_camera_copies_the_pose_it_is_given():
    """A float64 pose matrix reused for the next camera moved the cameras built before it."""
    m = torch.eye(4, dtype=torch.float64)
    cams = []
    for z in (1.0, 2.0, 3.0):
        m[2, 3] = z
        cams.append(Camera(50.0, 50.0, 32.0, 32.0, 64, 64, m))
    assert [float(c.world_to_camera[2, 3]) for c in cams] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("kw, message", [
    (dict(eye=(float("nan"), 0.0, -4.0)), "eye must be 3 finite numbers"),
    (dict(fov=180.0), "fov_x_deg must be a number in \\(0, 180\\)"),
    (dict(fov="wide"), "fov_x_deg must be a number"),
])
def test_look_at_checks_its_arguments(kw, message):
    with pytest.raises(GscompError, match=message):
        Camera.look_at(kw.get("eye", (0.0, 0.0, -4.0)), (0.0, 0.0, 0.0), (0.0, -1.0, 0.0), kw.get("fov", 50.0), 64, 64)


def test_render_refuses_what_it_cannot_use(random_splats):
    s = random_splats(20, sh_degree=1, seed=1)
    cam = _cams(1)[0]
    for kw, message in ((dict(background="white"), "background must be 3 numbers"),
                        (dict(sh_degree=1.7), "sh_degree must be an integer"),
                        (dict(cameras=["x"]), "cameras must be gscomp.Camera objects"),
                        (dict(cameras="c0"), "cameras must be a Camera or a list")):
        with pytest.raises(GscompError, match=message):
            render(s, kw.pop("cameras", cam), **kw)
    with pytest.raises(GscompError, match="float32 or float64"):
        render(s.to(dtype=torch.float16), cam, backend="torch")
    assert render.__call__.__doc__ and "RenderOutput" in render.__call__.__doc__


def test_splats_cat_and_compare(random_splats):
    a, b = random_splats(5, sh_degree=1, seed=1), random_splats(4, sh_degree=2, seed=2)
    with pytest.raises(GscompError, match="SH degrees \\[1, 2\\]"):
        Splats.cat([a, b])
    with pytest.raises(GscompError, match="non-empty list of Splats"):
        Splats.cat([])
    assert len(Splats.cat([a, b.with_sh_degree(1)])) == 9
    with pytest.raises(GscompError, match="n must be an integer"):
        Splats.empty(1, 1.5)
    assert a != a.clone() and a == a and a.same_as(a.clone())  # (identity; same_as compares values)


def test_one_pipeline_encodes_in_threads_as_in_sequence(random_splats):
    """Per-encode state was kept on the stage objects (the importance stage's cameras, the
    attributes stage's core mask): one Pipeline in two threads wrote another file or failed."""
    pipe = Pipeline.preset("compact", ["pipeline.stages.importance.views=4"])
    a, b = random_splats(600, sh_degree=1, seed=3), random_splats(900, sh_degree=1, seed=4)
    before = dict(vars(pipe.stages[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = (encode_bytes(a, pipe, cameras=_cams()), encode_bytes(b, pipe))
        assert vars(pipe.stages[0]) == before  # encoding leaves the pipeline as it was
        for _ in range(3):
            got, errors = {}, []
            barrier = threading.Barrier(2)

            def job(key, s, cams):
                try:
                    barrier.wait()
                    got[key] = encode_bytes(s, pipe, cameras=cams)
                except Exception as e:  # (reported below)
                    errors.append(e)
            ts = [threading.Thread(target=job, args=("a", a, _cams())), threading.Thread(target=job, args=("b", b, None))]
            [t.start() for t in ts]
            [t.join() for t in ts]
            assert not errors and (got["a"], got["b"]) == ref


def test_encode_api_takes_names_cameras_and_bytes(random_splats, tmp_path):
    s = random_splats(300, sh_degree=1, seed=5)
    stats = encode_gsz(s, tmp_path / "a.gsz", "medium")  # a preset by name
    data = (tmp_path / "a.gsz").read_bytes()
    assert stats["pipeline"] == "medium" and stats["total_bytes"] == len(data)
    assert encode_bytes(s, Pipeline.preset("medium")) == data
    assert decode_bytes(data).same_as(decode_bytes(encode_bytes(s, "medium")))
    # cameras= is what the importance stage scores from (it was reachable only through state=)
    compact = Pipeline.preset("compact", "pipeline.stages.importance.views=4")  # (one override as a str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sphere, given = encode_bytes(s, compact), encode_bytes(s, compact, cameras=_cams())
        assert given != sphere and given == encode_bytes(s, compact, state=SimpleNamespace(cameras=_cams()))
    with pytest.raises(GscompError, match="not a list"):
        encode_bytes(s, compact, state=_cams())
    with pytest.raises(GscompError, match="cameras must be a non-empty list of gscomp.Camera"):
        encode_bytes(s, compact, cameras=["c0"])
    with pytest.warns(Note, match="no importance stage"):
        encode_bytes(s, "high", cameras=_cams())
    with pytest.raises(GscompError, match="encode_gsz writes .gsz files; save_splats writes .ply"):
        encode_gsz(s, tmp_path / "out.ply", "high")
    assert not (tmp_path / "out.ply").exists()
    with pytest.raises(GscompError, match="unknown pipeline preset 'nope'"):
        encode_bytes(s, "nope")


def test_presets_leave_the_callers_hydra_alone(tmp_path):
    """Pipeline.preset cleared a user's own initialised Hydra (their next compose failed), and
    gscomp.hydra_app.compose refused to run inside one."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gscomp.hydra_app import compose as gscomp_compose

    (tmp_path / "config.yaml").write_text("lr: 0.1\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        assert compose("config").lr == 0.1
        Pipeline.preset("high")
        assert gscomp_compose("train", ["train.steps=7"]).train.steps == 7
        assert GlobalHydra.instance().is_initialized() and compose("config").lr == 0.1
    assert not GlobalHydra.instance().is_initialized()


def test_presets_compose_in_threads(tmp_path):
    """Composing a preset swapped Hydra's process-wide state with no lock: two threads at once
    failed 1-3% of their calls ("bad pipeline config: <class GlobalHydra>") and left Hydra
    initialised, or the caller's own Hydra replaced (qa36_A). Composing is now one thread at a
    time, and a built-in preset is composed once (a copy each call)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gscomp.commands import compress

    (tmp_path / "config.yaml").write_text("lr: 0.1\n")
    errors, done = [], []

    def work(t):
        try:
            for i in range(12):  # distinct overrides: each one composed, none from the cache
                p = Pipeline.preset("high", f"pipeline.stages.positions.bits={10 + (12 * t + i) % 9}")
                done.append(p)
        except Exception as e:  # (reported below)
            errors.append(repr(e))

    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == [] and len(done) == 36
        assert compose("config").lr == 0.1  # the caller's own Hydra, intact
    assert not GlobalHydra.instance().is_initialized()
    a = compress.compose_pipeline(["pipeline=compact"])
    a["stages"]["importance"]["views"] = 1  # a caller's change does not reach the cached preset
    assert compress.compose_pipeline(["pipeline=compact"])["stages"]["importance"]["views"] == 16
    assert ("+pipeline=compact",) in compress._COMPOSED


def test_one_pipeline_codes_each_scene_as_a_fresh_one_would(random_splats):
    """Post-hoc c3dgs fits its colour field and R-VQ codebooks to the scene it codes; they were
    kept on the pipeline's stages, so its next scene was coded with the first one's."""
    ov = ["+pipeline.stages.colorfield.fit_steps=20", "pipeline.stages.importance.views=2",
          "pipeline.stages.rvq.kmeans_iters=2"]
    pipe = Pipeline.preset("c3dgs", ov)
    a, b = random_splats(300, sh_degree=3, seed=1), random_splats(400, sh_degree=3, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encode_bytes(a, pipe)
        assert encode_bytes(b, pipe) == encode_bytes(b, Pipeline.preset("c3dgs", ov))
