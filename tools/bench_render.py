"""Render benchmark: forward and forward+backward time of the `cpu` and `torch` backends.

Prints one JSON object. Scenes are synthetic but shaped like a trained scene: Gaussians spread
through the view frustum, anisotropic, log-normal sizes with a median sigma of 1 px (the 1-sigma ellipse covers ~3 px),
mixed opacities, SH degree 3. Both backends render the very same scene.

    python tools/bench_render.py            # full: N = 10k, 100k, 1M at 256x256 and 800x800
    python tools/bench_render.py --quick    # 10k@128x128 (cpu vs torch) and 100k@256x256 (cpu)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch

from gscomp import Splats
from gscomp.camera import Camera
from gscomp.render import render

TORCH_MEM_LIMIT_GB = 6.0  # the reference keeps (pixels x hits) tensors per tile for autograd
TORCH_TIME_LIMIT_S = 120.0


def make_scene(n: int, width: int, height: int, seed: int = 0, sigma_px: float = 1.0):
    """A camera at the origin looking down +z and ``n`` Gaussians filling its frustum (z in [2, 8])."""
    g = torch.Generator().manual_seed(seed)
    fov_x = math.radians(60.0)
    fx = 0.5 * width / math.tan(fov_x / 2)
    fy = fx
    cam = Camera(fx, fy, width / 2, height / 2, width, height, torch.eye(4), name="bench")
    z = 2.0 + 6.0 * torch.rand(n, generator=g)
    u = (torch.rand(n, generator=g) * 1.1 - 0.05) * width
    v = (torch.rand(n, generator=g) * 1.1 - 0.05) * height
    means = torch.stack([(u - width / 2) / fx * z, (v - height / 2) / fy * z, z], -1)
    # World size for a median sigma of sigma_px pixels at that depth, log-normal spread per axis.
    base = torch.log(sigma_px * z / fx).unsqueeze(-1)
    scales = base + 0.5 * torch.randn(n, 3, generator=g)
    return Splats(
        means=means,
        quats=torch.randn(n, 4, generator=g),
        scales=scales,
        opacities=torch.randn(n, generator=g) * 1.5,
        sh0=torch.randn(n, 1, 3, generator=g) * 0.8,
        shN=torch.randn(n, 15, 3, generator=g) * 0.05,
    ), cam


def intersections(splats: Splats, cam: Camera) -> int:
    """Tile-Gaussian pairs (what the reference's memory scales with), from the cpu projection."""
    with torch.no_grad():
        out = render(splats, cam, backend="cpu")
    r = out.info["radii"][0].double()
    m = out.info["means2d"][0].double()
    tx, ty = math.ceil(cam.width / 16), math.ceil(cam.height / 16)
    x0 = torch.clamp(torch.floor((m[:, 0] - r) / 16), 0, tx)
    x1 = torch.clamp(torch.ceil((m[:, 0] + r) / 16), 0, tx)
    y0 = torch.clamp(torch.floor((m[:, 1] - r) / 16), 0, ty)
    y1 = torch.clamp(torch.ceil((m[:, 1] + r) / 16), 0, ty)
    return int(((x1 - x0) * (y1 - y0) * (r > 0)).sum())


def time_backend(splats: Splats, cam: Camera, backend: str, reps: int) -> dict:
    bg = torch.tensor([0.1, 0.2, 0.3])

    def fwd():
        with torch.no_grad():
            render(splats, cam, background=bg, backend=backend)

    def fwd_bwd():
        s = splats.map(lambda t: t.detach().requires_grad_(True))
        out = render(s, cam, background=bg, backend=backend)
        out.info["means2d"].retain_grad()
        (out.colors.sum() + out.alphas.sum() + 0.1 * out.depths.sum()).backward()

    res = {}
    for name, fn in (("forward", fwd), ("forward_backward", fwd_bwd)):
        fn()  # warm-up (and the one-time native build)
        ts, cs = [], []
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
            cs.append((time.process_time() - c0) * 1e3)
        # Wall time is the target; process CPU time (all threads) shows how much of it is contention
        # when other jobs share the machine.
        res[f"{name}_ms"] = round(sorted(ts)[len(ts) // 2], 2)
        res[f"{name}_cpu_ms"] = round(sorted(cs)[len(cs) // 2], 2)
    return res


def bench_case(n: int, res: int, backends: list[str], reps: int) -> dict:
    splats, cam = make_scene(n, res, res)
    case = {"n": n, "width": res, "height": res, "intersections": intersections(splats, cam)}
    for b in backends:
        if b == "torch":
            # Rough autograd footprint of the reference: ~30 float32 (pixel x hit) tensors per tile.
            est_gb = case["intersections"] * 256 * 4 * 30 / 1e9
            if est_gb > TORCH_MEM_LIMIT_GB:
                case["torch"] = {"skipped": f"reference would need ~{est_gb:.0f} GB for autograd (limit {TORCH_MEM_LIMIT_GB} GB)"}
                continue
            est_s = case["intersections"] * 256 * 2e-8 * 3
            if est_s > TORCH_TIME_LIMIT_S:
                case["torch"] = {"skipped": f"reference would take ~{est_s:.0f} s per iteration"}
                continue
        case[b] = time_backend(splats, cam, b, reps if b == "cpu" else max(1, reps // 3))
    return case


def stage_times(n: int, res: int, reps: int = 3) -> dict:
    """Process CPU time of each native stage (projection, rasterization, their backwards) for one
    camera: with OMP_NUM_THREADS=1 this is the single-core cost, independent of machine load."""
    from gscomp import native
    from gscomp.render.cpu import _cam_arrays

    ext = native.load()
    s, cam = make_scene(n, res, res)
    (vm,), (cp,), (k,) = _cam_arrays([cam], torch.float32)
    opac = torch.sigmoid(s.opacities).contiguous()
    bg = torch.zeros(3)
    out = {}

    def t(name, fn):
        fn()
        c0 = time.process_time()
        for _ in range(reps):
            r = fn()
        out[name] = round((time.process_time() - c0) / reps * 1e3, 2)
        return r

    m2, con, col, dep, rad = t("project_cpu_ms", lambda: ext.project_forward(s.means, s.quats, s.scales, s.sh0, s.shN, 3, vm, cp, *k, False)[:5])
    fo = t("rasterize_cpu_ms", lambda: ext.rasterize_forward(m2, con, col, opac, dep, rad, bg, res, res))
    gi, ga, gd = torch.ones(res, res, 3), torch.ones(res, res), torch.ones(res, res)
    t("rasterize_backward_cpu_ms",
      lambda: ext.rasterize_backward(m2, con, col, opac, dep, rad, bg, res, res, *fo[2:], gi, ga, gd))
    z = [torch.empty_like(x) for x in (s.means, s.quats, s.scales, s.sh0, s.shN)]
    t("project_backward_cpu_ms", lambda: ext.project_backward(s.means, s.quats, s.scales, s.sh0, s.shN, 3, vm, cp,
                                                              *k, rad, con, m2, con, col, dep, True, *z))
    out["total_cpu_ms"] = round(sum(out.values()), 2)
    return {"n": n, "width": res, "height": res, "omp_threads": torch.get_num_threads(), **out}


def rss_child(n: int, res: int) -> dict:
    """Run one cpu forward+backward in a fresh process and report its peak RSS."""
    code = (
        "import sys, resource, time; sys.path.insert(0, %r)\n"
        "from bench_render import make_scene, time_backend\n"
        "s, c = make_scene(%d, %d, %d)\n"
        "r = time_backend(s, c, 'cpu', 1)\n"
        "import json; print(json.dumps({**r, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    ) % (os.path.dirname(os.path.abspath(__file__)), n, res, res)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--quick", action="store_true", help="small subset (about a minute)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--stages", action="store_true",
                    help="only the per-stage CPU time at 100k@256 (run with OMP_NUM_THREADS=1 for one core)")
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    if args.stages:
        print(json.dumps(stage_times(100_000, 256, args.reps), indent=1))
        return 0
    from gscomp import native

    native.load()  # build outside the timings
    result = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
              # the compositing kernels' SIMD build: auto (AVX where the CPU has it) or sse2 (forced)
              "raster_simd": os.environ.get("GSCOMP_RASTER_SIMD", "auto"),
              "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}

    # Side by side on one scene: the speed-up target is measured here.
    ratio_case = bench_case(10_000, 128, ["cpu", "torch"], args.reps)
    result["ratio_10k_128"] = {
        "case": ratio_case,
        "forward_speedup": round(ratio_case["torch"]["forward_ms"] / ratio_case["cpu"]["forward_ms"], 1),
        "forward_backward_speedup": round(
            ratio_case["torch"]["forward_backward_ms"] / ratio_case["cpu"]["forward_backward_ms"], 1
        ),
    }
    if args.quick:
        grid = [(100_000, 256)]
    else:
        grid = [(n, r) for n in (10_000, 100_000, 1_000_000) for r in (256, 800)]
    result["cases"] = [bench_case(n, r, ["cpu", "torch"], args.reps if n < 1_000_000 else 3) for n, r in grid]
    if not args.quick:
        result["rss_1m_800"] = rss_child(1_000_000, 800)
    result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
