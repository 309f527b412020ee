"""`tools/bench_codec.py` end to end on a small scene: the JSON it prints, and the own-camera
scoring (the orbit alone flatters `compact` on scenes seen from inside)."""
import importlib.util
import json

import pytest

from conftest import ROOT
from gscomp.data.cameras import save_cameras_json
from gscomp.io import save_splats
from gscomp.stages.importance import sphere_cameras


def _bench():
    spec = importlib.util.spec_from_file_location("bench_codec", ROOT / "tools" / "bench_codec.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
            "--res", "40", "--views", "2"]
    assert bench.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    plain, own = report["inputs"]  # the second one finds model/cameras.json on its own (auto)
    assert plain["cameras"] is None and own["cameras"] == str(model / "cameras.json")
    by = [{r["codec"]: r for r in e["results"]} for e in (plain, own)]
    assert set(by[0]) == set(by[1]) == {"gsz:medium", "gsz:compact", "gscomp-io:spz"}
    for r in by[0].values():
        assert r["psnr_vs_source"] > 20 and "psnr_own_views" not in r
    for r in by[1].values():
        assert r["psnr_vs_source"] > 20 and r["psnr_own_views"] > 20
    assert by[0]["gsz:medium"]["bytes"] == by[1]["gsz:medium"]["bytes"]  # no importance stage: same file
    assert by[0]["gsz:medium"]["psnr_vs_source"] == by[1]["gsz:medium"]["psnr_vs_source"]
    assert by[0]["gsz:compact"]["bytes"] != by[1]["gsz:compact"]["bytes"]  # ranked from the given views
    with pytest.raises(SystemExit):
        bench.main(["--inputs", ply, "--cameras", "none", "none"])


def test_bench_memory_reports_each_flow(capsys):
    """`tools/bench_memory.py`: a child process per flow, each with its peak memory, and a failed
    flow reported with its error line and exit status 1."""
    spec = importlib.util.spec_from_file_location("bench_memory", ROOT / "tools" / "bench_memory.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--n", "3000", "--sh", "1", "--presets", "high", "nosuchpreset"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 3000 and report["baseline"]["maxrss_bytes"] > 50e6
    ok, bad = report["runs"][:2], report["runs"][2:]
    assert [(r["preset"], r["flow"]) for r in ok] == [("high", "compress"), ("high", "decode")]
    assert all("error" not in r and r["maxrss_bytes"] > 50e6 and "kb_per_gaussian" in r for r in ok)
    assert ok[0]["gsz_bytes"] > 0
    assert "error" in bad[0] and "nosuchpreset" in bad[0]["error"]


def test_bench_rd_plot_names_every_run_in_a_legend(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    spec = importlib.util.spec_from_file_location("bench_rd", ROOT / "tools" / "bench_rd.py")
    rd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rd)
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
