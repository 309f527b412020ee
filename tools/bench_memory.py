"""Peak memory and wall time of the user flows on a large scene, each run in its own process:
`gscomp compress IN X.gsz pipeline=P` per preset, then `gscomp decode X.gsz OUT.ply` (JSON to stdout).

    .venv/bin/python tools/bench_memory.py [--n 3000000] [--sh 3] [--presets high compact] [--input PLY]

Without --input, a synthetic scene of --n Gaussians (`bench_codec.synthetic_splats`) is written to a
temporary .ply first. Per run: wall seconds and the process's peak resident memory (its VmHWM at
exit), also per Gaussian after subtracting ``baseline``: the same for a process that only imports
gscomp's codec and readers (the interpreter and torch). A 24 GB machine holds a scene of about
24e9 / kb_per_gaussian / 1e3 Gaussians in the flow that needs the most.
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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


# Each child reports its own high-water mark (VmHWM) at exit: ru_maxrss from wait4 would also count
# the pages it shared with this process when forked (Linux keeps that peak across exec).
_WRAP = """import atexit, os, runpy, sys
def _hwm():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM"))
    with open(os.environ["GSCOMP_HWM_FILE"], "w") as f:
        f.write(kb)
atexit.register(_hwm)
if sys.argv[1:]:
    sys.argv = ["gscomp"] + sys.argv[1:]
    runpy.run_module("gscomp", run_name="__main__", alter_sys=True)
else:
    import torch, gscomp.codec, gscomp.io
"""


def run(args: list[str], tmp: Path) -> dict:
    """Wall seconds and peak RSS (bytes) of `python -m gscomp ARGS` in its own process (no ARGS:
    only the imports)."""
    hwm = tmp / "hwm.txt"
    hwm.unlink(missing_ok=True)
    env = dict(os.environ, GSCOMP_HWM_FILE=str(hwm),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _WRAP, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    out = {"wall_s": round(time.perf_counter() - t, 3),
           "maxrss_bytes": int(hwm.read_text()) * 1024 if hwm.exists() else None}
    if p.returncode:
        out["error"] = (p.stderr.decode(errors="replace").strip().splitlines() or [f"exit {p.returncode}"])[-1]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--n", type=int, default=3_000_000)
    ap.add_argument("--sh", type=int, default=3, choices=range(4))
    ap.add_argument("--presets", nargs="+", default=["high", "compact"])
    ap.add_argument("--input", default=None, help="a splat file instead of the synthetic scene")
    a = ap.parse_args(argv)
    if a.n < 1:
        ap.error("--n must be at least 1")
    if a.input is not None and not Path(a.input).is_file():
        ap.error(f"--input: {a.input} is not a file")
    from gscomp.commands.compress import compose_pipeline
    from gscomp.errors import GscompError

    for preset in a.presets:  # before writing a scene of --n Gaussians for them
        try:
            compose_pipeline([f"pipeline={preset}"])
        except GscompError as e:
            ap.error(f"--presets: {e}")
    with tempfile.TemporaryDirectory(prefix="gscomp_bench_memory_") as td:
        tmp = Path(td)
        if a.input:
            src = Path(a.input)
            from gscomp.io import load_splats

            try:
                n = len(load_splats(src))
            except GscompError as e:
                ap.error(f"--input: {e}")
            if not n:
                ap.error(f"--input: {src} has no Gaussians")
        else:
            from bench_codec import synthetic_splats

            from gscomp.io import save_splats

            src, n = tmp / "scene.ply", a.n
            save_splats(src, synthetic_splats(n, a.sh))
        base = run([], tmp)
        report = {"input": str(a.input or f"synthetic {n} SH{a.sh}"), "n": n, "input_bytes": src.stat().st_size,
                  "baseline": base, "runs": []}
        for preset in a.presets:
            gsz, ply = tmp / f"{preset}.gsz", tmp / f"{preset}.ply"
            for flow, args in (("compress", ["compress", str(src), str(gsz), f"pipeline={preset}"]),
                               ("decode", ["decode", str(gsz), str(ply)])):
                if flow == "decode" and not gsz.exists():
                    break  # its compress failed (reported): nothing to decode
                r = {"preset": preset, "flow": flow, **run(args, tmp)}
                if "error" not in r and r["maxrss_bytes"] and base["maxrss_bytes"]:
                    r["kb_per_gaussian"] = round((r["maxrss_bytes"] - base["maxrss_bytes"]) / n / 1e3, 3)
                if flow == "compress" and gsz.exists():
                    r["gsz_bytes"] = gsz.stat().st_size
                report["runs"].append(r)
                ply.unlink(missing_ok=True)
    print(json.dumps(report, indent=1))
    return 1 if any("error" in r for r in report["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
