#!/usr/bin/env python
"""Training benchmark: test PSNR / SSIM, #Gaussians, wall time and peak memory per scene (JSON).

Each scene is trained by the real CLI (`gscomp train ...`, default configuration) in its own
subprocess, so peak RSS is that run's alone:

    python tools/bench_train.py                       # lego + sodacan, default steps
    python tools/bench_train.py --scenes lego --steps 3000
    python tools/bench_train.py --scenes synthetic --steps 500 --set train=fast

Scenes: lego (../shared/data/scenes/lego, Blender, downscale 4 = 200x200, every 8th view held out),
sodacan (scenes/sodacan, COLMAP, downscale 4), synthetic (embedded procedural scene).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GSCOMP_SHARED_DATA", ROOT.parent / "shared" / "data"))
SCENES = {
    "lego": ["data=blender", f"data.path={SHARED / 'scenes/lego'}", "data.downscale=4"],
    "sodacan": ["data=colmap", f"data.path={SHARED / 'scenes/sodacan'}", "data.downscale=4"],
    "synthetic": ["data=synthetic"],
}


def bench_scene(name: str, steps: int | None, extra: list[str], out_root: Path, timeout: int) -> dict:
    out = out_root / name
    cmd = [sys.executable, "-m", "gscomp", "train", *SCENES[name], f"out={out}", "progress=false", *extra]
    if steps is not None:
        cmd.append(f"train.steps={steps}")
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"scene": name, "error": f"timed out after {timeout} s"}
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"scene": name, "error": (r.stderr.strip().splitlines() or ["?"])[-1], "returncode": r.returncode}
    m = json.loads((out / "metrics.json").read_text())
    return {
        "scene": name,
        "overrides": cmd[cmd.index("train") + 1:],
        "steps": m["steps"],
        "resolution": m.get("resolution"),
        "psnr": m["psnr"],
        "ssim": m["ssim"],
        "lpips": m["lpips"],
        "n_gaussians": m["n_gaussians"],
        "train_seconds": m["train_seconds"],
        "wall_seconds": round(wall, 1),
        "peak_rss_mb": m.get("peak_rss_mb"),
        "steps_per_second": m.get("steps_per_second"),
        "out": str(out),
    }


def main(argv: list[str] | None = None) -> int:
    from gscomp.cli import notes_as_lines

    notes_as_lines()  # gscomp's notes and warnings as the CLI prints them (one line each)
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--scenes", nargs="+", default=["lego,sodacan"],
                    help="scenes, by spaces or commas (as bench_rd): " + ", ".join(SCENES))
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    ap.add_argument("--set", action="append", default=[], help="extra Hydra override (repeatable)")
    ap.add_argument("--out", default=None, help="keep outputs here (default: a temp dir)")
    ap.add_argument("--timeout", type=int, default=3600)
    args = ap.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        ap.error("--steps must be at least 1")
    names = [s.strip() for arg in args.scenes for s in arg.split(",") if s.strip()]
    bad = [s for s in names if s not in SCENES]
    if bad:
        ap.error(f"unknown scene(s) {bad}; choose from {list(SCENES)}")
    if not names:
        ap.error(f"--scenes names no scene; choose from {list(SCENES)} (e.g. lego sodacan)")
    import torch

    results = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "scenes": []}
    with tempfile.TemporaryDirectory() as tmp:
        out_root = Path(args.out) if args.out else Path(tmp)
        for name in names:
            if name != "synthetic" and not Path(SCENES[name][1].split("=", 1)[1]).exists():
                results["scenes"].append({"scene": name, "skipped": "shared data not found"})
                continue
            results["scenes"].append(bench_scene(name, args.steps, args.set, out_root, args.timeout))
            print(json.dumps(results["scenes"][-1]), file=sys.stderr)
    print(json.dumps(results, indent=2))
    return 1 if any("error" in r for r in results["scenes"]) else 0  # a run that failed (its record says why)


if __name__ == "__main__":
    sys.exit(main())
