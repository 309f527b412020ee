"""Rate-distortion benchmark: vanilla 3DGS training vs train-and-compress pipelines (default: c3dgs),
same data, same step budget. Prints JSON (one record per run + a summary) and writes a PNG plot of
file size (log) vs test PSNR.

    .venv/bin/python tools/bench_rd.py --scenes lego sodacan --steps 3000 --out bench_rd_out
    .venv/bin/python tools/bench_rd.py --scenes lego --steps 1000 --variant small \\
        pipeline.stages.colorfield.log2_hashmap_size=12 --jobs 2

Scenes (from ../shared/data): lego = NeRF-synthetic lego at 200x200 (downscale 4), sodacan = COLMAP
sodacan at downscale 4. Every run is a separate `gscomp train` / `gscomp compress` process
(``--jobs`` of them at once, ``--threads`` torch threads each), so the numbers are exactly what a
user gets from the CLI. Target: c3dgs file >= 25x smaller than the vanilla .ply, PSNR within 0.3 dB.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GSCOMP_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import SCENES  # noqa: E402  (same scenes and overrides as the training benchmark)


def is_pipeline_override(o: str) -> bool:
    """pipeline=..., pipeline.x=..., +pipeline.x=..., ~pipeline.x: for the compressed runs only."""
    return o.lstrip("+~").split("=", 1)[0].split(".", 1)[0] == "pipeline"


def run_one(scene: str, method: str, overrides: list[str], steps: int, out: Path, threads: int,
            settings: list[str]) -> dict:
    """One CLI run; returns its record (size, PSNR, SSIM, #Gaussians, seconds). ``settings``: the
    overrides both the vanilla and the compressed runs get (data.*, seed=, train.*), kept in the
    record: a compressed run is only compared with a vanilla run of the same settings."""
    run_dir = out / f"{scene}_{method}"
    common = SCENES[scene] + [f"train.steps={steps}", *settings, f"out={run_dir}", "progress=false"]
    if method == "vanilla":
        cmd = ["train", *common]
    else:
        cmd = ["compress", *common, *overrides]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "gscomp", *cmd], capture_output=True, text=True, env=env)
    secs = time.perf_counter() - t0
    rec = {"scene": scene, "method": method, "steps": steps, "settings": settings, "seconds": round(secs, 1),
           "cmd": "gscomp " + " ".join(cmd)}
    if r.returncode != 0:
        rec["error"] = (r.stderr or r.stdout)[-1500:]
        return rec
    if method == "vanilla":
        m = json.loads((run_dir / "metrics.json").read_text())
        rec.update(bytes=m["ply_bytes"], psnr=m["psnr"], ssim=m["ssim"], n_gaussians=m["n_gaussians"],
                   file=str(run_dir / "point_cloud.ply"))
    else:
        m = json.loads((run_dir / "report.json").read_text())
        rec.update(bytes=m["gsz_bytes"], psnr=m["psnr"], ssim=m["ssim"], n_gaussians=m["n_gaussians"],
                   sections=m["sections"], psnr_before_coding=m["trained"]["psnr"], file=str(run_dir / "scene.gsz"))
    return rec


def plot(records: list[dict], path: Path) -> str | None:
    """The R-D plot at ``path`` (its name), or None without matplotlib (the `bench` extra:
    tools/setup.sh --bench): the results are not lost over a missing plotting library."""
    try:
        import matplotlib
    except ImportError:
        print("note: no rd.png: matplotlib is not installed (bash tools/setup.sh --bench)", file=sys.stderr)
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    # colour by method, marker by scene, named in a legend beside the axes (labels written at the
    # points ran into each other where two runs land close)
    methods = sorted({r["method"] for r in records})
    scenes = sorted({r["scene"] for r in records})
    for r in (r for r in records if "bytes" in r):
        ax.scatter(r["bytes"] / 1e6, r["psnr"], color=f"C{methods.index(r['method']) % 10}",
                   marker="os^Dv<>p*h"[scenes.index(r["scene"]) % 10], label=f"{r['scene']}/{r['method']}")
    ax.set_xscale("log")
    # plain numbers on the log axis (matplotlib's default minor labels, "2x10^-1", run into each
    # other)
    from matplotlib.ticker import FuncFormatter

    def label(v, _):  # 1, 2 and 5 times a power of ten
        return f"{v:g}" if v > 0 and f"{v:.0e}"[0] in "125" and math.isclose(v, float(f"{v:.0e}")) else ""
    ax.xaxis.set_major_formatter(FuncFormatter(label))
    ax.xaxis.set_minor_formatter(FuncFormatter(label))
    ax.margins(x=0.1, y=0.1)
    ax.set_xlabel("file size (MB, log)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title("gscomp rate-distortion: vanilla .ply vs trained pipelines")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    return str(path)


def earlier(db: Path) -> list[dict]:
    """The run records of an earlier bench_rd in the same --out (none without its results.json)."""
    old = json.loads(db.read_text()) if db.exists() else []
    if not (isinstance(old, list) and all(isinstance(r, dict) and {"scene", "method"} <= r.keys() for r in old)):
        raise ValueError("not a list of run records")
    return old


def main(argv: list[str] | None = None) -> int:
    from gscomp.cli import notes_as_lines

    notes_as_lines()  # gscomp's notes and warnings as the CLI prints them (one line each)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", default=["lego", "sodacan"],
                    help="scenes, by spaces or commas (as bench_train): " + ", ".join(sorted(SCENES)))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=Path("bench_rd_out"))
    ap.add_argument("--pipeline", default="c3dgs", help="pipeline preset for the compressed runs")
    ap.add_argument("--variant", default=None, help="name for this compressed run (default: the preset)")
    ap.add_argument("--no-vanilla", action="store_true", help="reuse an earlier vanilla run in --out")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides: pipeline.* ones for the compressed runs, "
                    "the others (data.*, seed=N, train.*) for the vanilla runs too")
    a = ap.parse_args(argv)
    a.scenes = [s.strip() for arg in a.scenes for s in arg.split(",") if s.strip()]
    bad = [s for s in a.scenes if s not in SCENES]
    if bad or not a.scenes:
        ap.error(f"{f'unknown scene(s) {bad}' if bad else '--scenes names no scene'}; choose from {sorted(SCENES)}")
    for flag in ("steps", "jobs", "threads"):
        if getattr(a, flag) < 1:
            ap.error(f"--{flag} must be at least 1")
    if a.out.exists() and not a.out.is_dir():
        ap.error(f"--out {a.out} is a file, not a folder")
    # the earlier records this run adds to: read (and checked) before hours of runs, not after
    db = a.out / "results.json"
    try:
        earlier(db)
    except (OSError, ValueError) as e:
        ap.error(f"cannot read the earlier results {db}: {e} (move it away to start afresh)")
    from gscomp.commands.compress import compose_pipeline
    from gscomp.errors import GscompError

    try:  # a bad preset or override fails now, not after the vanilla runs
        compose_pipeline([f"pipeline={a.pipeline}", *(o for o in a.overrides if is_pipeline_override(o))])
    except GscompError as e:
        ap.error(str(e))
    try:
        a.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        ap.error(f"cannot create --out {a.out}: {e.strerror or e}")
    method = a.variant or a.pipeline
    settings = [o for o in a.overrides if not is_pipeline_override(o)]
    coding = [o for o in a.overrides if is_pipeline_override(o)]
    jobs, skipped = [], []
    for scene in a.scenes:
        if scene != "synthetic" and not (SHARED / "scenes" / scene).exists():
            skipped.append({"scene": scene, "skipped": "shared data not found"})
            continue
        if not a.no_vanilla:
            jobs.append((scene, "vanilla", []))
        jobs.append((scene, method, [f"pipeline={a.pipeline}", *coding]))
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        records = list(pool.map(lambda j: run_one(j[0], j[1], j[2], a.steps, a.out, a.threads, settings), jobs))
    failed = any("error" in r for r in records)
    # merge with earlier records in the same folder (other variants, reused vanilla runs)
    # read again now: another run into the same --out may have added its records meanwhile
    try:
        old = earlier(db)
    except (OSError, ValueError) as e:
        print(f"note: {db} became unreadable ({e}); it is rewritten with this run's records", file=sys.stderr)
        old = []
    keys = {(r["scene"], r["method"]) for r in records}
    records = [r for r in old if (r["scene"], r["method"]) not in keys] + records
    summary = []
    for r in records:
        if r["method"] == "vanilla" or "bytes" not in r:
            continue
        # only a vanilla run of the same scene, step budget and settings is a fair reference
        van = next((v for v in records if v["scene"] == r["scene"] and v["method"] == "vanilla" and "bytes" in v
                    and v.get("steps") == r.get("steps") and v.get("settings", []) == r.get("settings", [])), None)
        scene = r["scene"]
        if van is None:
            summary.append({"scene": scene, "method": r["method"], "steps": r.get("steps"),
                            "note": "no vanilla run of this scene with the same steps and settings in --out"})
            continue
        ratio = van["bytes"] / r["bytes"]
        dpsnr = r["psnr"] - van["psnr"]
        summary.append({"scene": scene, "method": r["method"], "steps": r["steps"], "ratio_vs_ply": round(ratio, 2),
                        "delta_psnr_db": round(dpsnr, 3), "target_met": bool(ratio >= 25 and dpsnr >= -0.3)})
    summary.sort(key=lambda x: x["scene"])
    tmp = db.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=2) + "\n")
    os.replace(tmp, db)
    png = plot(records, a.out / "rd.png")
    print(json.dumps({"records": records, "summary": summary, "skipped": skipped, "plot": png}, indent=2))
    return 1 if failed else 0  # a run that failed (its record says why)


if __name__ == "__main__":
    sys.exit(main())
