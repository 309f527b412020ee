"""`gscomp train` / `eval` / `demo` through the real CLI entry (Hydra apps) on tiny scenes."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gscomp.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data=synthetic", "data.n_views=6", "data.resolution=32", "train=fast", "train.steps=30",
        "train.strategy.refine_every=10", "progress=false"]
KEYS = ("psnr", "ssim", "lpips", "n_gaussians", "train_seconds")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *TINY, "train.eval_every=10", f"out={out}"]) == 0
    return out


def test_train_writes_outputs(trained):
    m = json.loads((trained / "metrics.json").read_text())
    for k in KEYS:
        assert k in m
    assert m["n_gaussians"] > 0 and 5 < m["psnr"] < 100 and 0 < m["ssim"] <= 1
    assert m["lpips"] == "unavailable" or isinstance(m["lpips"], float)
    from gscomp.data.cameras import load_cameras  # its views, for `gscomp compress` (importance)

    assert len(load_cameras(trained / "cameras.json")) == 6
    assert (trained / "point_cloud.ply").stat().st_size == m["ply_bytes"]
    assert "data:" in (trained / "config.yaml").read_text()
    assert list((trained / "renders").glob("*.png"))
    progress = [json.loads(line) for line in (trained / "progress.jsonl").read_text().splitlines()]
    assert [p["step"] for p in progress] == [10, 20, 30] and progress[-1]["test_psnr"] > 5
    from gscomp.io import load_splats

    assert len(load_splats(trained / "point_cloud.ply")) == m["n_gaussians"]


def test_eval_on_ply(trained, tmp_path, capsys):
    ply = trained / "point_cloud.ply"
    code = main(["eval", str(ply), "data=synthetic", "data.n_views=6", "data.resolution=32", f"out={tmp_path}"])
    assert code == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    train_m = json.loads((trained / "metrics.json").read_text())
    assert m["psnr"] == pytest.approx(train_m["psnr"], abs=0.05)  # same model, same views
    assert m["n_gaussians"] == train_m["n_gaussians"] and m["lpips"] == train_m["lpips"]
    assert list((tmp_path / "renders").glob("*.png"))


def test_eval_names_data_settings_other_than_the_training_runs(trained, tmp_path, capsys):
    """Eval with other data.* than the run that trained the model scores other test views (views
    it trained on, with data.max_images left out) with no word; the run's config.yaml says so now."""
    ply = trained / "point_cloud.ply"
    args = ["eval", str(ply), "data=synthetic", "data.resolution=32", f"out={tmp_path / 'a'}"]
    assert main([*args, "data.n_views=6"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main([*args, "data.n_views=9"]) == 0
    err = capsys.readouterr().err
    assert "warning: the run that trained this model" in err and "data.n_views=9 here, 6 there" in err
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert len(m["per_view"]) == m["n_views"]
    # data that does not load: its error alone, no warning about settings that decide nothing
    assert main(["eval", str(ply), "data=colmap", f"data.path={tmp_path / 'none'}", f"out={tmp_path / 'b'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.path") and len(err.splitlines()) == 1, err


def test_eval_on_checkpoint_and_missing_model(trained, tmp_path, capsys):
    code = main(["train", *TINY, "train.steps=12", "train.ckpt_every=10", f"out={tmp_path / 'r'}"])
    assert code == 0
    ckpt = next((tmp_path / "r" / "checkpoints").glob("ckpt_*.pt"))
    assert main(["eval", str(ckpt), "data=synthetic", "data.n_views=6", "data.resolution=32",
                 f"out={tmp_path / 'e'}"]) == 0
    assert "psnr" in json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert main(["eval", str(tmp_path / "nope.ply"), "data=synthetic"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_resume_latest(tmp_path, capsys):
    """The last step is checkpointed too (it was not: resume=true redid steps 10..20 of a finished
    run, or, with no checkpoint at all, retrained it from scratch over its model): a finished run
    trains further, and one that kept no checkpoint is refused."""
    out = tmp_path / "r"
    assert main(["train", *TINY, "train.steps=20", "train.ckpt_every=10", f"out={out}"]) == 0
    assert main(["train", *TINY, "train.steps=30", "train.ckpt_every=10", f"out={out}", "resume=true"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["resumed_from"].endswith("ckpt_000020.pt") and m["steps"] == 30
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["ckpt_000020.pt", "ckpt_000030.pt"]
    done = tmp_path / "d"  # (TINY trains with train=fast: ckpt_every 0)
    assert main(["train", *TINY, "train.steps=10", f"out={done}"]) == 0
    ply = (done / "point_cloud.ply").read_bytes()
    capsys.readouterr()
    assert main(["train", *TINY, "train.steps=20", f"out={done}", "resume=true"]) == 2
    assert "holds a finished run (point_cloud.ply) and no checkpoint" in capsys.readouterr().err
    assert (done / "point_cloud.ply").read_bytes() == ply
    # a last step that is no multiple of train.ckpt_every is checkpointed too (it was not, qa39_W)
    odd = tmp_path / "o"
    assert main(["train", *TINY, "train.steps=25", "train.ckpt_every=10", f"out={odd}"]) == 0
    assert sorted(p.name for p in (odd / "checkpoints").glob("*.pt")) == ["ckpt_000020.pt", "ckpt_000025.pt"]  # (ckpt_keep 2)
    # a model trained past the latest checkpoint (resumed, then finished without checkpoints) is not
    # silently rolled back to it
    assert main(["train", *TINY, "train.steps=30", "train.ckpt_every=0", f"out={odd}", "resume=true"]) == 0
    ply = (odd / "point_cloud.ply").read_bytes()
    capsys.readouterr()
    assert main(["train", *TINY, "train.steps=40", f"out={odd}", "resume=true"]) == 2
    err = capsys.readouterr().err
    assert "trained to step 30" in err and "ckpt_000025.pt, is at step 25" in err and len(err.splitlines()) == 1
    assert (odd / "point_cloud.ply").read_bytes() == ply
    # ... but a checkpoint written after that model resumes: a fresh run into the folder, stopped
    # early, leaves the model of the run it replaces beside its own checkpoint (it was refused, qa40_R)
    st = (odd / "metrics.json").stat()
    os.utime(odd / "checkpoints" / "ckpt_000025.pt", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert main(["train", *TINY, "train.steps=40", f"out={odd}", "resume=true"]) == 0
    assert json.loads((odd / "metrics.json").read_text())["resumed_from"].endswith("ckpt_000025.pt")


def test_resume_checks_its_checkpoint(tmp_path, capsys):
    """Only a gscomp checkpoint of this scene resumes, towards a later train.steps; the log and
    train_seconds then cover the whole training (a fresh run into the folder starts a new log)."""
    out = tmp_path / "r"
    assert main(["train", *TINY, "train.steps=20", "train.ckpt_every=10", "train.eval_every=5", f"out={out}"]) == 0
    first = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    assert [r["step"] for r in first] == [5, 10, 15, 20]
    ckpt = out / "checkpoints" / "ckpt_000010.pt"
    capsys.readouterr()
    cases = [(["data.n_views=9"], "was trained on another scene"),  # other views: the order would index past them
             (["train.steps=5"], "is at step 10, past train.steps=5")]
    torch.save((1, 2), tmp_path / "other.pth")  # e.g. another tool's checkpoint
    torch.save({"a": 1}, tmp_path / "other.pt")
    cases += [([], "other.pth: not a gscomp training checkpoint"), ([], "other.pt: not a gscomp training checkpoint")]
    bad = torch.load(ckpt, weights_only=False)  # a damaged model: resume and eval check it alike
    bad["state"]["params"]["means"] = bad["state"]["params"]["means"][:1]
    torch.save(bad, tmp_path / "bad.pt")
    cases += [([], "bad.pt: quats has shape")]
    for i, (extra, msg) in enumerate(cases):
        resume = [ckpt, ckpt, tmp_path / "other.pth", tmp_path / "other.pt", tmp_path / "bad.pt"][i]
        assert main(["train", *TINY, "train.steps=30", *extra, f"out={tmp_path / 'x'}", f"resume={resume}"]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
        if i >= 3:  # (eval reads .pt files as checkpoints)
            assert main(["eval", "data=synthetic", "data.n_views=6", "data.resolution=32", f"model={resume}"]) == 2
            err = capsys.readouterr().err
            assert msg in err and err.count("\n") == 1, err
    assert main(["train", *TINY, "train.steps=30", "train.eval_every=5", f"out={out}", f"resume={ckpt}"]) == 0
    log = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [5, 10, 15, 20, 25, 30] and log[:2] == first[:2]  # 15, 20 trained again
    assert all(a["seconds"] <= b["seconds"] for a, b in zip(log, log[1:]))  # time goes on across the resume
    assert json.loads((out / "metrics.json").read_text())["train_seconds"] >= log[-1]["seconds"] - 0.005  # (rounded to 0.01)
    other = tmp_path / "other"  # resumed into another folder: the log still starts from the first run's
    assert main(["train", *TINY, "train.steps=25", "train.eval_every=5", f"out={other}", f"resume={ckpt}"]) == 0
    assert [json.loads(line) for line in (other / "progress.jsonl").read_text().splitlines()][:2] == first[:2]
    assert main(["train", *TINY, "train.steps=10", "train.eval_every=5", f"out={out}"]) == 0
    assert [json.loads(line)["step"] for line in (out / "progress.jsonl").read_text().splitlines()] == [5, 10]


@pytest.mark.parametrize("override, named", [("train.strategy.refine_every=0", "train.strategy.refine_every"),
                                             ("train.init.max_points=-3", "train.init.max_points"),
                                             ("train.ssim_lambda=2", "train.ssim_lambda"),
                                             ("train.strategy.refine_start=-5", "train.strategy.refine_start"),
                                             ("progress=abc", "progress"), ("data.seed=abc", "seed"),
                                             ("data.resolution=abc", "resolution"),
                                             ("train.init.opacity=1" + "0" * 400, "train.init.opacity must be a number"),
                                             ("train.lr=0.1", "train.lr must be a mapping"),
                                             ("~train.lr.means", "train.lr.means must be a number > 0, got None"),
                                             ("data.seed=1" + "0" * 30, "synthetic: seed must be an integer"),
                                             ("train.steps=${nope}", "bad config: Interpolation key 'nope' not found")])
def test_bad_train_values_are_named(override, named, tmp_path, capsys):
    assert main(["train", *TINY, override, f"out={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_seeds_torch_takes_are_taken(tmp_path):
    for seed in ("-1", "18446744073709551615", "8.0"):
        assert main(["train", *TINY, "train.steps=2", f"seed={seed}", f"out={tmp_path / seed}"]) == 0


def test_bad_key_and_bad_values_are_short_errors(tmp_path, capsys):
    assert main(["train", "data=synthetic", "no_such_key=1", f"out={tmp_path}"]) != 0
    err = capsys.readouterr().err
    assert "no_such_key" in err and "Traceback" not in err and len(err.splitlines()) < 12
    assert main(["train", "data=nope", f"out={tmp_path}"]) != 0
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err
    assert main(["train", "data=colmap", f"out={tmp_path}"]) == 2  # no data.path
    assert "data.path" in capsys.readouterr().err
    assert main(["train", *TINY, "device=tpu", f"out={tmp_path}"]) == 2
    assert "device" in capsys.readouterr().err
    assert main(["train", *TINY, "train.steps=abc", f"out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "train.steps" in err and "Traceback" not in err
    (tmp_path / "a_file").write_text("x")  # Hydra would create `out` itself and print a traceback
    assert main(["train", *TINY, f"out={tmp_path / 'a_file'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot create the output folder") and len(err.splitlines()) == 1, err


def test_cfg_job_and_multirun(tmp_path, capsys):
    assert main(["train", "data=blender", "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert "kind: blender" in out and "steps:" in out
    sweep = tmp_path / "sweep"
    assert main(["train", "-m", *TINY, "train.steps=5,8", f"out={sweep}"]) == 0
    steps = sorted(json.loads((sweep / d / "metrics.json").read_text())["steps"] for d in ("0", "1"))
    assert steps == [5, 8]
    capsys.readouterr()
    sweep = tmp_path / "sweep2"  # a failing job is named, leaves no empty folder, and the others run
    assert main(["train", "-m", *TINY, "train.steps=5,-5", f"out={sweep}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note: ")]  # (job 0's)
    assert len(err) == 1 and err[0].startswith("error: job 1 (") and "train.steps=-5" in err[0], err
    assert (sweep / "0" / "metrics.json").exists() and not (sweep / "1").exists()


def test_a_sweeps_config_errors_are_one_line_and_leave_nothing(tmp_path, capsys):
    """A sweep (-m) with an unknown key or a missing group option printed Hydra's 6-9 lines (the
    group's options, its search path) and left out/multirun.yaml; an interval sweep, a traceback."""
    sweep = tmp_path / "a" / "sweep"
    for bad, says in ((["train.stepz=5,8"], "error: Could not override 'train.stepz'"),
                      (["pipeline=compact,nope"], "error: In 'train': Could not find 'pipeline/nope'"),
                      (["train=fast", "data.nope=1,2"], "error: Could not override 'data.nope'"),
                      (["train.steps=interval(1,2)"], "error: train.steps=interval(1,2): an interval")):
        assert main(["train", "-m", *TINY, *bad, f"out={sweep}"]) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith(says) and len(err.splitlines()) == 1, err
        assert not (tmp_path / "a").exists(), bad
    # every job failing (a value only a job checks): the folder we made goes, multirun.yaml too
    assert main(["train", "-m", *TINY, "train.steps=-1,-2", f"out={sweep}"]) == 2
    assert "error: job 0 (" in capsys.readouterr().err and not (tmp_path / "a").exists()
    (tmp_path / "a").mkdir()  # (a folder that was there stays, with what Hydra wrote)
    assert main(["train", "-m", *TINY, "train.steps=-1,-2", f"out={tmp_path / 'a'}"]) == 2
    assert (tmp_path / "a").is_dir()
    # a folder that cannot be made was a traceback; `out` swept was written to the first out's folder
    (tmp_path / "afile").write_text("")
    capsys.readouterr()
    for bad, says in ((f"out={tmp_path / 'afile'}", "error: cannot create the output folder"),
                      ("out=oa,ob", "error: out=oa,ob: a sweep writes job N to out/N, so it takes one out"),
                      ("pipeline=range(1,3)", "error: Config group override must be a string")):
        assert main(["train", "-m", *TINY, "train.steps=2,3", bad] + ([] if "out=" in bad else [f"out={sweep}"])) == 2
        err = capsys.readouterr().err
        assert err.startswith(says) and len(err.splitlines()) == 1, err
    # '+'/'++' of a sweep keep their prefix (they were doubled: '++++data.seed=1')
    assert main(["train", "-m", *TINY, "train.steps=2", "++data.seed=1,2", f"out={sweep}"]) == 0
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]


def test_the_folder_made_is_the_one_written(tmp_path):
    """The run's folder was made from one composition of the config and written by another, so a
    ${now:...} in `out` (the default: outputs/train/<date_time>) could name two folders a second
    apart, leaving an empty one (qa40_R); a sweep's multirun.yaml could land in another one."""
    assert main(["train", *TINY, f"out={tmp_path / 'r'}_${{now:%f}}"]) == 0
    [run] = tmp_path.iterdir()
    assert (run / "metrics.json").is_file()
    assert main(["train", "-m", *TINY, "train.steps=2,3", f"out={tmp_path / 's'}_${{now:%f}}"]) == 0
    [sweep] = [p for p in tmp_path.iterdir() if p.name.startswith("s_")]
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]


def test_subprocess_bad_key_exit_code(tmp_path):
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    r = subprocess.run([sys.executable, "-m", "gscomp", "train", "data=synthetic", "train.nope=3", f"out={tmp_path}"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 2
    assert "train.nope" in r.stderr and "Traceback" not in r.stderr


def test_demo_small(tmp_path, capsys):
    code = main(["demo", "data.n_views=6", "data.resolution=32", "train.steps=20", "progress=false", f"out={tmp_path}"])
    assert code == 0
    out = capsys.readouterr().out
    assert "PSNR" in out and "scene.gsz" in out and "smaller" in out
    assert (tmp_path / "metrics.json").exists()
    import json

    from gscomp.io import load_splats

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["gsz_bytes"] == (tmp_path / "scene.gsz").stat().st_size
    assert report["gsz_bytes"] < report["trained"]["ply_bytes"]
    decoded = load_splats(tmp_path / "scene.gsz")
    assert len(decoded) == report["n_gaussians"] == len(load_splats(tmp_path / "scene.ply"))


def test_ctrl_c_after_the_last_step_keeps_the_training(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the trained model is evaluated or coded saves a checkpoint of the last step;
    resume=true then goes straight to the coding."""
    from gscomp.commands import train_compress

    out = tmp_path / "tc"
    real = train_compress._code_and_report

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_compress, "_code_and_report", interrupted)
    assert main(["compress", *TINY, "train.steps=12", "pipeline=c3dgs", f"out={out}"]) == 130
    assert (out / "checkpoints" / "ckpt_000012.pt").exists() and not (out / "scene.gsz").exists()
    monkeypatch.setattr(train_compress, "_code_and_report", real)
    capsys.readouterr()
    assert main(["compress", *TINY, "train.steps=12", "pipeline=c3dgs", f"out={out}", "resume=true"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (out / "scene.gsz").stat().st_size == report["gsz_bytes"]
    assert report["train_seconds"] == json.loads((out / "metrics.json").read_text())["train_seconds"]


def test_eval_of_a_pipeline_checkpoint_applies_its_stages(tmp_path, monkeypatch, capsys):
    """A c3dgs checkpoint holds raw parameters beside the stages' own (mask, codebooks, colour
    field): eval scores the model as training rendered it, so the checkpoint of the last step
    scores what metrics.json says of the trained model."""
    from gscomp.commands import train_compress
    from gscomp.train.trainer import checkpoint_model, read_checkpoint

    out = tmp_path / "tc"

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_compress, "_code_and_report", interrupted)
    assert main(["compress", *TINY, "train.steps=12", "pipeline=c3dgs", f"out={out}"]) == 130
    ckpt = out / "checkpoints" / "ckpt_000012.pt"
    model, degree = checkpoint_model(ckpt)
    raw = read_checkpoint(ckpt)[1]
    assert degree == 3 and len(model) == len(raw) and not torch.equal(model.shN, raw.shN)  # the field's colours
    assert main(["eval", str(ckpt), "data=synthetic", "data.n_views=6", "data.resolution=32", f"out={tmp_path / 'e'}"]) == 0
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    trained = json.loads((out / "metrics.json").read_text())
    assert m["sh_degree"] == trained["sh_degree"] == 3
    assert m["psnr"] == pytest.approx(trained["psnr"], abs=1e-4) and m["ssim"] == pytest.approx(trained["ssim"], abs=1e-5)


def test_a_fresh_run_removes_an_earlier_runs_checkpoints(tmp_path, capsys):
    """An abandoned run's checkpoints (here at steps 20 and 30) would outlive a fresh 12-step run
    in the same folder and be what resume=true continues; the fresh run removes them, and resume
    says what it continues."""
    out = tmp_path / "r"
    assert main(["train", *TINY, "train.steps=30", "train.ckpt_every=20", f"out={out}"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["ckpt_000020.pt", "ckpt_000030.pt"]
    capsys.readouterr()
    assert main(["train", *TINY, "train.steps=12", "train.ckpt_every=10", f"out={out}"]) == 0
    assert "note: removed 2 checkpoints of an earlier run" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["ckpt_000010.pt", "ckpt_000012.pt"]
    assert main(["train", *TINY, "train.steps=14", f"out={out}", "resume=true"]) == 0
    assert f"resuming from {out / 'checkpoints' / 'ckpt_000012.pt'} (step 12)" in capsys.readouterr().err


def test_a_second_run_into_a_busy_output_folder_is_refused(tmp_path, capsys):
    """Two train-and-compress runs into one out= both exited 0, leaving one's config.yaml beside
    the other's scene.gsz; the folder is held (flock) while a run goes, then free again."""
    from gscomp.data.synthetic import synthetic_gt
    from gscomp.fileio import run_folder
    from gscomp.io import save_splats

    ply = tmp_path / "m.ply"
    save_splats(ply, synthetic_gt())
    out = tmp_path / "r"
    with run_folder(out):  # (as another process's run would hold it; flock conflicts within one too)
        for verb in ("train", "compress", "eval"):  # (eval overwrote a running training's config.yaml)
            model = [str(ply)] if verb == "eval" else []
            extra = {"compress": ["pipeline=medium"], "train": ["progress=false"], "eval": []}[verb]
            assert main([verb, *model, *TINY[:3], "train.steps=2" if verb != "eval" else "n_renders=0", *extra,
                         f"out={out}"]) == 2, verb
            assert "is the output folder of another gscomp run still going" in capsys.readouterr().err
    assert list(out.iterdir()) == []
    assert main(["train", *TINY, "train.steps=2", f"out={out}"]) == 0


def test_a_refused_run_leaves_the_busy_folder_in_place(tmp_path, monkeypatch, capsys):
    """A run refused for a busy folder removed it as a failed run removes the empty folders it
    created (a sweep job its out/N; two single runs started at once both 'created' out), and the
    running run's lock went with it: a third run was then let in."""
    from gscomp import hydra_app
    from gscomp.fileio import run_folder

    sweep = tmp_path / "s"
    with run_folder(sweep / "0"):  # a run still going (nothing written yet) in job 0's folder
        assert main(["train", "-m", *TINY, "train.steps=2", f"out={sweep}"]) == 2
        assert (sweep / "0").is_dir()
        out = tmp_path / "r"
        with run_folder(out):
            monkeypatch.setattr(hydra_app, "_missing_dirs", lambda p: [out])  # (as if it had created it)
            assert main(["train", *TINY, "train.steps=2", f"out={out}"]) == 2
            assert out.is_dir()
    assert "is the output folder of another gscomp run still going" in capsys.readouterr().err


def test_a_fresh_run_removes_an_earlier_runs_coded_scene(tmp_path, capsys):
    """A plain train into a train-and-compress folder left its scene.gsz and report.json beside
    the new model, reading as its coding; a run that fails before training keeps them."""
    out = tmp_path / "r"
    assert main(["compress", *TINY, "train.steps=4", "pipeline=medium", f"out={out}"]) == 0
    assert main(["train", "data=colmap", f"data.path={tmp_path / 'none'}", f"out={out}"]) == 2
    assert (out / "scene.gsz").is_file() and (out / "report.json").is_file()
    capsys.readouterr()
    assert main(["train", *TINY, "train.steps=4", f"out={out}"]) == 0
    assert "note: removed scene.gsz, scene.ply, report.json, renders_decoded/ of an earlier run" in capsys.readouterr().err
    assert not any((out / n).exists() for n in ("scene.gsz", "scene.ply", "report.json", "renders_decoded"))  # (qa39_W)
    assert (out / "point_cloud.ply").is_file()
    # a resumed run too; a report.json that is no gscomp report (a user's own) stays
    assert main(["compress", *TINY, "train.steps=4", "train.ckpt_every=2", "pipeline=medium", f"out={out}"]) == 0
    assert main(["train", *TINY, "train.steps=4", f"out={out}", "resume=true"]) == 0
    assert not (out / "scene.gsz").exists() and not (out / "report.json").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.json").write_text('{"notes": "my own"}')
    (mine / "scene.ply").write_text("mine")
    assert main(["train", *TINY, "train.steps=2", f"out={mine}"]) == 0
    assert (mine / "report.json").read_text() == '{"notes": "my own"}' and (mine / "scene.ply").read_text() == "mine"


def test_added_keys_that_nothing_reads_are_refused(tmp_path, capsys):
    """Hydra's hint for a mistyped key ("To append to your config use +train.stepz=10") turned the
    typo into an added key that training, eval and config.yaml took in silence (qa39_W). '+' adds
    keys only where their reader checks them (pipeline.*, data.*, hydra.*); the hint is not given
    where it would not help."""
    out = tmp_path / "r"
    for verb, extra in (("train", ["+train.stepz=10"]), ("train", ["+seeed=3"]), ("train", ["++train.lr.mean=1"]),
                        ("train", ["-m", "+train.stepz=1,2"]), ("eval", [str(tmp_path / "m.ply"), "+n_rendrs=0"])):
        capsys.readouterr()
        assert main([verb, *TINY, *extra, f"out={out}"]) == 2, extra
        err = capsys.readouterr().err
        key = extra[-1].lstrip("+").split("=")[0]
        assert err.startswith(f"error: {key}: no such setting") and len(err.splitlines()) == 1, err
    assert main(["train", *TINY, "train.stepz=10", f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert "Could not override 'train.stepz'" in err and "+train" not in err and len(err.splitlines()) == 1, err
    assert not out.exists()
    # '++' on a setting that is there sets it; '+' of a config group of one's own adds it (both
    # were refused, qa40_R); a number for a group is one line (it was an internal error)
    assert main(["train", *TINY, "++train.steps=3", f"out={out}"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3
    mine = tmp_path / "cd"
    (mine / "experiment").mkdir(parents=True)
    (mine / "experiment" / "short.yaml").write_text("# @package _global_\nseed: 7\n")
    assert main(["train", "--config-dir", str(mine), *TINY, "+experiment=short", f"out={out}"]) == 0
    assert "\nseed: 7\n" in (out / "config.yaml").read_text()
    shutil.rmtree(out)
    capsys.readouterr()
    assert main(["train", *TINY, "pipeline=1", f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Config group override must be a string") and len(err.splitlines()) == 1, err
    assert main(["train", *TINY, "+data.pth=3", f"out={out}"]) == 2  # (the loader names it)
    err = capsys.readouterr().err  # (naming the options of every loader too: it listed only its own, qa39_W)
    assert "synthetic scenes take no option 'pth' (options: backend, background, max_images, n_views, resolution, seed, test_every)" in err
