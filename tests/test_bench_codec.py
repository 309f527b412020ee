"""`tools/bench_codec.py` end to end on a small scene: the JSON it prints, and the own-camera
scoring (the orbit alone flatters `compact` on scenes seen from inside)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from gscomp.camera import Camera
from gscomp.data.cameras import save_cameras_json
from gscomp.io import save_splats
from gscomp.stages.importance import sphere_cameras


def _tool(name: str):
    """tools/NAME.py as a module (the tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench():
    return _tool("bench_codec")


def test_bench_codec_scores_from_the_inputs_cameras(tmp_path, random_splats, capsys):
    s = random_splats(1500, sh_degree=1)
    model = tmp_path / "model"
    model.mkdir()
    save_splats(model / "point_cloud.ply", s)
    # two views from one side only: a different view set from compact's sphere and the bench's orbit
    save_cameras_json(model / "cameras.json", sphere_cameras(s.means, 8, res=40)[:2])
    ply = str(model / "point_cloud.ply")
    bench = _bench()
    args = ["--inputs", ply, ply, "--cameras", "none", "--presets", "medium", "compact", "--peers", "gscomp-spz",
            "--res", "40", "64", "--views", "2"]
    assert bench.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    plain, own = report["inputs"]  # the second one finds model/cameras.json on its own (auto)
    assert plain["cameras"] is None and own["cameras"] == str(model / "cameras.json")
    by = [{r["codec"]: r for r in e["results"]} for e in (plain, own)]
    assert set(by[0]) == set(by[1]) == {"gsz:medium", "gsz:compact", "gscomp-io:spz"}
    for r in by[0].values():
        assert r["psnr_vs_source"] > 20 and "psnr_own_views" not in r
        # one orbit per size; psnr_vs_source is the first's
        assert list(r["psnr_vs_source_by_res"]) == ["40", "64"] and r["psnr_vs_source_by_res"]["40"] == r["psnr_vs_source"]
        assert r["psnr_vs_source_by_res"]["64"] != r["psnr_vs_source"]
    for r in by[1].values():
        assert r["psnr_vs_source"] > 20 and r["psnr_own_views"] > 20
    assert by[0]["gsz:medium"]["bytes"] == by[1]["gsz:medium"]["bytes"]  # no importance stage: same file
    assert by[0]["gsz:medium"]["psnr_vs_source"] == by[1]["gsz:medium"]["psnr_vs_source"]
    assert by[0]["gsz:compact"]["bytes"] != by[1]["gsz:compact"]["bytes"]  # ranked from the given views
    for bad in (["--inputs", ply, "--cameras", "none", "none"], ["--inputs"], ["--res", "40", "5000"], ["--st-timeout", "0"]):
        with pytest.raises(SystemExit):  # (nothing to run, a --res of 100 MP, a timeout that cannot pass)
            bench.main(bad)


def test_bench_memory_reports_each_flow(capsys):
    """`tools/bench_memory.py`: a child process per flow, each with its peak memory, and a failed
    flow reported with its error line and exit status 1."""
    mod = _tool("bench_memory")
    assert mod.main(["--n", "3000", "--sh", "1", "--presets", "high"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 3000 and report["baseline"]["maxrss_bytes"] > 50e6
    ok = report["runs"]
    assert [(r["preset"], r["flow"]) for r in ok] == [("high", "compress"), ("high", "decode")]
    assert all("error" not in r and r["maxrss_bytes"] > 50e6 and "kb_per_gaussian" in r for r in ok)
    assert ok[0]["gsz_bytes"] > 0
    # a preset that does not exist is refused before the scene is written (3M Gaussians by default)
    with pytest.raises(SystemExit) as e:
        mod.main(["--presets", "high", "nosuchpreset"])
    assert e.value.code == 2 and "nosuchpreset" in capsys.readouterr().err


def test_bench_codec_reports_bad_inputs_and_blank_views_as_errors(tmp_path, random_splats, capsys, monkeypatch):
    """An input that cannot be read, an empty scene and cameras that see nothing of the scene are
    each an ``error`` entry (exit status 1), not a traceback or a perfect score (JSON Infinity);
    --background's scene file is removed however the input ends."""
    import tempfile

    s = random_splats(800, sh_degree=0)
    ply, empty, bad = tmp_path / "s.ply", tmp_path / "empty.ply", tmp_path / "bad.ply"
    save_splats(ply, s)
    save_splats(empty, s[:0])
    bad.write_text("garbage")
    # another scene's cameras: far from this one and looking away from it
    far = [Camera.look_at(torch.tensor([0.0, 0, 1e4 * k]), torch.tensor([0.0, 0, 2e4 * k]), (0.0, -1.0, 0.0), 50.0,
                          40, 40, name=f"far{k}") for k in (1, 2)]
    save_cameras_json(tmp_path / "far.json", far)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # the bench's temporary files go here
    (tmp_path / "tmp").mkdir()
    bench = _bench()
    args = ["--inputs", str(ply), str(bad), str(empty), str(ply), "--cameras", "none", "auto", "auto",
            str(tmp_path / "far.json"), "--presets", "high", "--peers", "none", "--res", "32", "--views", "2",
            "--background", "0.05:10"]
    assert bench.main(args) == 1
    captured = capsys.readouterr()
    assert "Infinity" not in captured.out and "NaN" not in captured.out
    ok, *errs = json.loads(captured.out)["inputs"]
    assert ok["results"][0]["psnr_vs_source"] > 20
    assert [e["error"].split(": ")[-1] for e in errs][1:] == [
        "the scene has no Gaussians",
        "are they this scene's, in its coordinate frame?"]
    assert "not a PLY file" in errs[0]["error"]
    assert not list((tmp_path / "tmp").iterdir())  # no with_background.ply left
    assert bench.finite({"a": [float("inf"), 1.5, float("nan")]}) == {"a": [None, 1.5, None]}


def test_bench_rd_plot_names_every_run_in_a_legend(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    rd = _tool("bench_rd")
    seen = {}
    import matplotlib.figure

    real = matplotlib.figure.Figure.savefig

    def keep(fig, path, **k):
        ax = fig.axes[0]
        seen["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        seen["ticks"] = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
        return real(fig, path, **k)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    recs = [{"scene": "lego", "method": "vanilla", "bytes": 2.3e5, "psnr": 30.0},
            {"scene": "lego", "method": "c3dgs", "bytes": 8.0e4, "psnr": 29.5},
            {"scene": "sodacan", "method": "c3dgs", "bytes": 8.1e4, "psnr": 29.6},
            {"scene": "sodacan", "method": "vanilla", "error": "failed"}]
    rd.plot(recs, tmp_path / "rd.png")
    assert (tmp_path / "rd.png").stat().st_size > 0 and not list(tmp_path.glob("*.tmp*"))
    assert sorted(seen["legend"]) == ["lego/c3dgs", "lego/vanilla", "sodacan/c3dgs"]
    # plain 1/2/5 x 10^k labels (0.2, not 2x10^-1)
    assert seen["ticks"] and all("e" not in t and f"{float(t):.0e}"[0] in "125" for t in seen["ticks"])


def test_bench_rd_checks_its_folder_first_and_prints_json_without_matplotlib(tmp_path, monkeypatch, capsys):
    """bench_rd runs for hours: what would fail at its end (no matplotlib for the plot, an
    unreadable results.json, --out a file, an unknown preset) is a plain error up front or a note,
    never a traceback after the runs with no JSON."""
    monkeypatch.setenv("GSCOMP_SHARED_DATA", str(tmp_path / "none"))  # every scene skipped: nothing runs
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    rd = _tool("bench_rd")
    out = tmp_path / "rd"
    assert rd.main(["--scenes", "lego", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["plot"] is None and report["skipped"][0]["scene"] == "lego"
    assert "matplotlib is not installed" in captured.err
    (out / "results.json").write_text("{broken")
    (tmp_path / "file").write_text("x")
    for args, words in ((["--out", str(out)], "cannot read the earlier results"),
                        (["--out", str(tmp_path / "file")], "is a file"),
                        (["--out", str(tmp_path / "rd2"), "--pipeline", "nosuch"], "nosuch")):
        with pytest.raises(SystemExit) as e:
            rd.main(["--scenes", "lego", *args])
        assert e.value.code == 2 and words in capsys.readouterr().err


def test_bench_codec_keeps_the_other_presets_when_one_fails(tmp_path, random_splats, capsys, monkeypatch):
    from gscomp import codec
    from gscomp.errors import GscompError

    save_splats(tmp_path / "s.ply", random_splats(600, sh_degree=0))
    real = codec.encode_gsz

    def encode(splats, path, pipe, **kw):
        if path.name == "low.gsz":
            raise GscompError("simulated failure")
        return real(splats, path, pipe, **kw)
    monkeypatch.setattr(codec, "encode_gsz", encode)
    args = ["--inputs", str(tmp_path / "s.ply"), "--cameras", "none", "--presets", "high", "low", "--peers", "none",
            "--res", "32", "--views", "2"]
    assert _bench().main(args) == 1
    high, low = json.loads(capsys.readouterr().out)["inputs"][0]["results"]
    assert high["codec"] == "gsz:high" and high["bytes"] > 0
    assert low == {"codec": "gsz:low", "error": "simulated failure"}


def test_bench_rd_gives_data_settings_to_both_runs(tmp_path, monkeypatch, capsys):
    """Extra overrides reached only the compressed run: with data.downscale=2 a 64x64 c3dgs run was
    compared with a 128x128 vanilla run. Now pipeline.* overrides go to the compressed runs and the
    others to both, and a compressed run pairs only with a vanilla run of the same settings."""
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rd = _tool("bench_rd")
    cmds = []

    def fake_run(cmd, **kw):
        cmds.append(cmd)
        out = Path(next(a for a in cmd if a.startswith("out="))[4:])
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({"ply_bytes": 1000, "psnr": 30.0, "ssim": 0.9, "n_gaussians": 9}))
        (out / "report.json").write_text(json.dumps({"gsz_bytes": 40, "psnr": 29.8, "ssim": 0.9, "n_gaussians": 9,
                                                     "sections": {}, "trained": {"psnr": 30.0}}))
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(rd.subprocess, "run", fake_run)
    out = tmp_path / "rd"
    assert rd.main(["--scenes", "synthetic", "--steps", "5", "--out", str(out), "data.downscale=2",
                    "pipeline.stages.masking.lambda_mask=0.001"]) == 0
    van, comp = (c[3:] for c in cmds)  # (python -m gscomp VERB ...)
    assert van[0] == "train" and "data.downscale=2" in van and not any("pipeline" in a for a in van)
    assert comp[0] == "compress" and {"data.downscale=2", "pipeline.stages.masking.lambda_mask=0.001"} <= set(comp)
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary[0]["ratio_vs_ply"] == 25.0
    # a variant with other settings and no vanilla run of them: no ratio against the old vanilla
    assert rd.main(["--scenes", "synthetic", "--steps", "5", "--out", str(out), "--no-vanilla", "--variant", "v2",
                    "data.downscale=4"]) == 0
    summary = {s["method"]: s for s in json.loads(capsys.readouterr().out)["summary"]}
    assert summary["c3dgs"]["ratio_vs_ply"] == 25.0 and "same steps and settings" in summary["v2"]["note"]


def test_bench_rd_and_bench_train_read_scene_lists_alike(capsys):
    """`--scenes` was a space list in bench_rd and a comma list in bench_train: each refused the
    other's form with words about something else. Both now take either."""
    for name in ("bench_rd", "bench_train"):
        mod = _tool(name)
        for scenes in (["lego,nosuch"], ["lego", "nosuch"], ["lego,", "nosuch"]):
            with pytest.raises(SystemExit) as e:
                mod.main(["--scenes", *scenes])
            assert e.value.code == 2 and "unknown scene(s) ['nosuch']" in capsys.readouterr().err, (name, scenes)


def test_bench_codec_set_overrides_every_preset(capsys):
    """The README's box-grid numbers (positions.core=0) took a wrapper script: --set passes a
    pipeline override to the gscomp runs, and the report records it."""
    bench = _bench()
    run = ["--inputs", "--synthetic", "800:0", "--presets", "high", "--peers", "none"]
    assert bench.main(run) == 0
    plain = json.loads(capsys.readouterr().out)
    assert bench.main([*run, "--set", "pipeline.stages.positions.bits=10"]) == 0
    coarse = json.loads(capsys.readouterr().out)
    assert plain["overrides"] == [] and coarse["overrides"] == ["pipeline.stages.positions.bits=10"]
    assert coarse["inputs"][0]["results"][0]["bytes"] < plain["inputs"][0]["results"][0]["bytes"]
    with pytest.raises(SystemExit):  # checked before any run
        bench.main([*run, "--set", "pipeline.stages.nope.x=1"])
