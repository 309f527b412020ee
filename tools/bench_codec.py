"""Codec benchmark: bytes/Gaussian, encode/decode throughput and render PSNR vs the source, per
preset, with peers side by side (JSON to stdout).

    .venv/bin/python tools/bench_codec.py [--inputs A B] [--presets high medium compact] [--res 256 1024]
        [--views 8] [--peers gaussforge,gscomp-spz,splat-transform,gsplat] [--splat-transform BIN]
        [--gaussforge-formats spz,compressed.ply,sog] [--cameras PATH|auto|none ...]
        [--background SHARE:REACH]

PSNR: both scenes rendered with gscomp.render(backend="cpu") from a fixed orbit of cameras around
the scene's median point (looking at it from 20 degrees above the horizon, y-down world), colours
clamped to [0,1], PSNR over all pixels of all views (``psnr_vs_source``, at the first ``--res``;
with more sizes, ``psnr_vs_source_by_res`` has one per size: small Gaussians that hide in small
views show in large ones). An input with cameras
(``--cameras``, one entry per input, or a trained model's cameras.json found as `gscomp compress`
finds it) is also scored from ``--views`` of them, at most the first ``--res`` px (``psnr_own_views``), and
`compact` ranks its Gaussians from them, as `gscomp compress --cameras` does. The orbit flatters
scenes seen from inside (a room, a floor): read ``psnr_own_views`` for those. Decode timing = best of 3 runs of
decode_gsz(path) (file read + checks + entropy decode + dequantization); encode timing = best of 2
runs of encode_gsz (one run when it takes over 5 s), including the atomic write and its fsync.
A PSNR of null: identical renders (``--synthetic`` scenes are not scored: throughput only). An input that cannot be read, or whose views see nothing of it,
gets an ``error`` entry; the exit status is 1 when an input or one of gscomp's presets failed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gscomp.metrics import finite  # noqa: E402  (JSON has no Infinity: non-finite numbers as null)
SHARED = Path(os.environ.get("GSCOMP_SHARED_DATA", ROOT.parent / "shared" / "data"))
DEFAULT_INPUTS = ["splats/biker.compressed.ply", "splats/playbot/0_0"]


def synthetic_splats(n: int, deg: int):
    """Random scene with trained-like statistics (clustered points, Laplacian SH)."""
    from gscomp import Splats

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(max(1, n // 2000), 3, generator=g)
    means = centers[torch.randint(0, len(centers), (n,), generator=g)] + 0.05 * torch.randn(n, 3, generator=g)
    k = (deg + 1) ** 2 - 1
    u = torch.rand(n, k, 3, generator=g) - 0.5  # Laplace(0, 0.05) by inverse CDF, from the seeded generator
    lap = -0.05 * torch.sign(u) * torch.log1p(-2 * u.abs().clamp(max=0.4999999))
    return Splats(means=means, quats=torch.randn(n, 4, generator=g), scales=torch.randn(n, 3, generator=g) * 0.5 - 4,
                  opacities=torch.randn(n, generator=g) * 2, sh0=torch.randn(n, 1, 3, generator=g) * 0.8,
                  shN=lap)


def with_background(splats, share: float, reach: float):
    """The scene plus a synthetic far background, as an unbounded capture has: share x n
    Gaussians in all directions at 3..reach times the scene's 90th-percentile radius
    (log-uniform), sized in proportion to their distance, smooth colours (seeded)."""
    from gscomp import Splats

    g = torch.Generator().manual_seed(1)
    m = splats.means.double()
    c = m.median(0).values
    r = torch.quantile((m - c).norm(dim=1)[:200000].float(), 0.9).item()
    k = max(1, int(len(splats) * share))
    d = torch.randn(k, 3, generator=g, dtype=torch.float64)
    d /= d.norm(dim=1, keepdim=True)
    dist = 3 * r * torch.exp(torch.rand(k, generator=g, dtype=torch.float64) * math.log(reach / 3))
    col = 0.5 + 0.3 * d.float() + 0.1 * torch.randn(k, 3, generator=g)
    bg = Splats(means=(c + dist[:, None] * d).float(), quats=torch.randn(k, 4, generator=g),
                scales=torch.log(dist * 0.04).float()[:, None] + 0.3 * torch.randn(k, 3, generator=g),
                opacities=torch.full((k,), 2.0), sh0=((col - 0.5) / 0.28209479).reshape(k, 1, 3),
                shN=torch.zeros(k, splats.shN.shape[1], 3))
    return Splats.cat([splats.detach(), bg])


def orbit_cameras(splats, views: int, res: int):
    from gscomp.camera import Camera

    m = splats.means.double()
    center = m.median(0).values
    r = torch.quantile((m - center).norm(dim=1)[:200000].float(), 0.9).item()
    dist = 2.2 * max(r, 1e-3)
    cams = []
    for i in range(views):
        a = 2 * math.pi * i / views
        el = math.radians(20)
        eye = center + dist * torch.tensor([math.cos(a) * math.cos(el), -math.sin(el), math.sin(a) * math.cos(el)], dtype=torch.float64)
        cams.append(Camera.look_at(eye, center, (0.0, -1.0, 0.0), 50.0, res, res, name=f"orbit{i}"))
    return cams


def render_views(splats, cams) -> torch.Tensor:
    from gscomp.render import render  # (the gscomp.render attribute is shadowed by the subpackage)

    with torch.no_grad():
        out = []
        for c in cams:  # one view at a time keeps peak memory low (views may differ in size)
            out.append(render(splats, [c], backend="cpu").colors.clamp(0, 1).reshape(-1))
        return torch.cat(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


class Views:
    """The views a decoded scene is scored from: the fixed orbit (``psnr_vs_source``) and, when the
    input has cameras, ``views`` of them (``psnr_own_views``), each against the source's render."""

    def __init__(self, splats, views: int, res: list[int], own: list | None = None):
        from gscomp.errors import GscompError

        self.orbits = {r: orbit_cameras(splats, views, r) for r in res}  # (the same orbit at each size)
        self.orbit_refs = {r: render_views(splats, cams) for r, cams in self.orbits.items()}
        self.own = [c.scaled(min(1.0, res[0] / max(c.width, c.height))) for c in own] if own else []
        self.own_ref = render_views(splats, self.own) if self.own else None
        # blank references would score every codec as perfect (identical blank renders)
        if not self.orbit_refs[res[0]].any():
            raise GscompError("the orbit views see nothing of the scene (every pixel is background)")
        if self.own and not self.own_ref.any():
            raise GscompError("the given cameras see nothing of the scene (every pixel is background): "
                              "are they this scene's, in its coordinate frame?")

    def quality(self, out) -> dict:
        by_res = {str(r): psnr(render_views(out, cams), self.orbit_refs[r]) for r, cams in self.orbits.items()}
        q = {"psnr_vs_source": next(iter(by_res.values()))}
        if len(by_res) > 1:
            q["psnr_vs_source_by_res"] = by_res
        if self.own:
            q["psnr_own_views"] = psnr(render_views(out, self.own), self.own_ref)
        return q


def size_of(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def bench_preset(splats, preset: str, views: Views | None, tmp: Path, src: Path | None = None,
                 cameras: str | None = None, overrides: list[str] = ()) -> dict:
    """``src``/``cameras``: as `gscomp compress SRC OUT --cameras CAMERAS` (a found cameras.json
    when None): the views `compact`'s importance stage scores from. ``overrides``: `--set`."""
    from gscomp.codec import decode_gsz, encode_gsz
    from gscomp.commands.compress import _cameras_state, compose_pipeline
    from gscomp.stages.pipeline import Pipeline

    cfg = compose_pipeline([f"pipeline={preset}", *overrides])
    pipe = Pipeline.from_config(cfg)
    ranks = any(st.type == "importance" for st in pipe.stages)
    state = _cameras_state(pipe, src, cameras) if src is not None and ranks else None
    path = tmp / f"{preset}.gsz"
    enc = enc_cpu = float("inf")
    for _ in range(2):  # best of 2 (the first run also pays one-time imports); slow encodes run once
        t, c = time.perf_counter(), time.process_time()
        stats = encode_gsz(splats, path, Pipeline.from_config(cfg), state=state)
        enc, enc_cpu = min(enc, time.perf_counter() - t), min(enc_cpu, time.process_time() - c)
        if enc > 5.0:
            break
    dec, dec_cpu = [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        out = decode_gsz(path)
        dec.append(time.perf_counter() - t)
        dec_cpu.append(time.process_time() - c)
    n = len(splats)
    kept = {"kept_gaussians": stats["n"]} if stats["n"] != n else {}  # (importance.prune)
    return {
        "codec": f"gsz:{preset}",
        "bytes": stats["total_bytes"],
        "bytes_per_gaussian": stats["total_bytes"] / n,  # (per input Gaussian; the attributes' bits per kept one)
        **kept,
        "bits_per_gaussian_per_attribute": {k: round(v, 3) for k, v in stats["bits_per_gaussian_per_attribute"].items()},
        "encode_gaussians_per_s": n / enc,
        "decode_gaussians_per_s": stats["n"] / min(dec),
        # CPU seconds of this process (all threads): robust to other load on a shared machine
        "encode_cpu_s": enc_cpu,
        "decode_cpu_s": min(dec_cpu),
        **(views.quality(out) if views else {"psnr_vs_source": None}),
    }


class _quiet_stdout:
    """Silence a native library's prints on fd 1 (they would corrupt the JSON on stdout)."""

    def __enter__(self):
        sys.stdout.flush()
        self.saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self.saved, 1)
        os.close(self.saved)


def bench_gaussforge(ply_bytes: bytes, n: int, fmt: str, views: Views, tmp: Path) -> dict:
    with _quiet_stdout():
        return _bench_gaussforge(ply_bytes, n, fmt, views, tmp)


def _bench_gaussforge(ply_bytes: bytes, n: int, fmt: str, views: Views, tmp: Path) -> dict:
    import gaussforge

    from gscomp.errors import Note
    from gscomp.io import load_splats

    gf = gaussforge.GaussForge()
    t = time.perf_counter()
    res = gf.convert(ply_bytes, "ply", fmt)
    enc = time.perf_counter() - t
    if "error" in res:
        return {"codec": f"gaussforge:{fmt}", "error": str(res["error"])}
    data = res["data"]
    name = {"spz": "x.spz", "compressed.ply": "x.compressed.ply", "sog": "x.sog", "splat": "x.splat"}[fmt]
    p = tmp / name
    p.write_bytes(data)
    t = time.perf_counter()
    back = gf.convert(data, fmt, "ply")  # read back with the peer itself (its own axis conventions)
    dec = time.perf_counter() - t
    if "error" in back:
        return {"codec": f"gaussforge:{fmt}", "bytes": len(data), "error": f"read back: {back['error']}"}
    q = tmp / "back.ply"
    q.write_bytes(back["data"])
    with warnings.catch_warnings():  # (it writes alpha 1 as an infinite logit: read as +30, noted)
        warnings.simplefilter("ignore", Note)
        out = load_splats(q)
    return {
        "codec": f"gaussforge:{fmt}",
        "bytes": len(data),
        "bytes_per_gaussian": len(data) / n,
        "encode_gaussians_per_s": n / enc,
        "decode_gaussians_per_s (to ply)": n / dec,
        **views.quality(out),
    }


def bench_gscomp_spz(splats, views: Views, tmp: Path) -> dict:
    from gscomp.io import load_splats, save_splats

    p = tmp / "x.spz"
    t = time.perf_counter()
    save_splats(p, splats)
    enc = time.perf_counter() - t
    out = load_splats(p)
    n = len(splats)
    return {"codec": "gscomp-io:spz", "bytes": p.stat().st_size, "bytes_per_gaussian": p.stat().st_size / n,
            "encode_gaussians_per_s": n / enc, **views.quality(out)}


def bench_splat_transform(exe: str, ply: Path, n: int, views: Views, tmp: Path, timeout: int) -> list[dict]:
    from gscomp.io import load_splats

    out = []
    for ext in ("compressed.ply", "sog"):
        dst = tmp / f"st.{ext}"
        t = time.perf_counter()
        try:
            r = subprocess.run([exe, "-w", str(ply), str(dst)], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            out.append({"codec": f"splat-transform:{ext}", "error": f"timed out after {timeout} s on CPU"})
            continue
        enc = time.perf_counter() - t
        if r.returncode != 0 or not dst.exists():
            last = (r.stderr or r.stdout).strip().splitlines()[-1:]
            out.append({"codec": f"splat-transform:{ext}", "error": last[0] if last else f"exit status {r.returncode}"})
            continue
        try:
            back = load_splats(dst)
            q = views.quality(back)
        except Exception as e:
            q = {"psnr_vs_source": f"read back failed: {e}"}
        out.append({"codec": f"splat-transform:{ext}", "bytes": size_of(dst), "bytes_per_gaussian": size_of(dst) / n,
                    "encode_gaussians_per_s": n / enc, **q})
    return out


def bench_gsplat(splats, views: Views, tmp: Path) -> dict:
    """gsplat's PngCompression with sorting off (its PLAS sort needs CUDA): 8-bit PNG attribute
    images, 16-bit positions (after its log transform) and k-means SH rest. It drops the
    lowest-opacity Gaussians to make the count a square, so its PSNR includes that loss."""
    import contextlib

    from gscomp import Splats

    name = "gsplat:PngCompression(use_sort=False)"
    try:
        from gsplat.compression import PngCompression
        import imageio  # noqa: F401
    except Exception as e:
        return {"codec": name, "error": f"not importable ({type(e).__name__}: {e}); pip install --no-deps gsplat imageio"}
    params = {f: getattr(splats, f).detach().float().clone() for f in ("means", "quats", "scales", "opacities", "sh0", "shN")}
    if params["shN"].shape[1] == 0:
        del params["shN"]  # SH0 scene: nothing for its k-means (which would fail on an empty tensor)
    else:
        try:
            import torchpq  # noqa: F401
        except Exception:
            return {"codec": name, "error": "SH degree > 0: its shN k-means needs torchpq + cupy (CUDA); skipped"}
    d = tmp / "gsplat_png"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    n = len(splats)
    with contextlib.redirect_stdout(sys.stderr):  # it prints a warning when it crops Gaussians
        t = time.perf_counter()
        PngCompression(use_sort=False, verbose=False).compress(str(d), dict(params))
        enc = time.perf_counter() - t
        t = time.perf_counter()
        back = PngCompression(use_sort=False, verbose=False).decompress(str(d))
        dec = time.perf_counter() - t
    m = len(back["means"])
    shn = back["shN"].reshape(m, -1, 3) if "shN" in back else torch.zeros(m, 0, 3)
    out = Splats(means=back["means"].float(), quats=back["quats"].float(), scales=back["scales"].float(),
                 opacities=back["opacities"].float().reshape(m), sh0=back["sh0"].float().reshape(m, 1, 3),
                 shN=shn.float())
    size = sum(f.stat().st_size for f in d.iterdir())
    return {"codec": name, "bytes": size, "bytes_per_gaussian": size / n, "kept_gaussians": m,
            "encode_gaussians_per_s": n / enc, "decode_gaussians_per_s": n / dec, **views.quality(out)}


PEERS = ("gaussforge", "gscomp-spz", "splat-transform", "gsplat", "none")


def check_args(ap: argparse.ArgumentParser, args) -> None:
    """Bad arguments end here with argparse's usage line and one error line (exit 2)."""
    from gscomp.commands.compress import compose_pipeline
    from gscomp.errors import GscompError

    if not args.inputs and not args.synthetic:
        ap.error("nothing to run: give --inputs or --synthetic")
    if len(args.cameras) > len(args.inputs):
        ap.error("--cameras has more entries than --inputs")
    if not all(16 <= r <= 4096 for r in args.res) or args.views < 1:
        ap.error("--res must be in 16..4096 and --views at least 1")
    args.res = list(dict.fromkeys(args.res))  # (each size once, the first first)
    if args.st_timeout < 1:
        ap.error("--st-timeout must be at least 1 (seconds)")
    for preset in args.presets:
        try:
            compose_pipeline([f"pipeline={preset}", *args.set])
        except GscompError as e:
            ap.error(f"--presets/--set: {e}")
    unknown = set(filter(None, args.peers.split(","))) - set(PEERS)
    if unknown:
        ap.error(f"--peers: unknown {sorted(unknown)} (known: {', '.join(PEERS)})")
    synthetic = []
    for spec in args.synthetic:  # "N:DEGREE", e.g. 1000000:3
        try:
            n, deg = (int(v) for v in spec.split(":"))
        except ValueError:
            ap.error(f"--synthetic takes N:DEGREE, got {spec!r}")
        if n < 1 or not 0 <= deg <= 3:
            ap.error(f"--synthetic {spec}: N must be at least 1 and DEGREE in 0..3")
        synthetic.append((n, deg))
    args.synthetic = synthetic
    if args.background:
        try:
            share, reach = (float(v) for v in args.background.split(":"))
        except ValueError:
            ap.error(f"--background takes SHARE:REACH, got {args.background!r}")
        if not (0 < share <= 1 and 3 <= reach < math.inf):
            ap.error("--background: SHARE must be in (0, 1] and REACH at least 3 (times the scene's radius)")
        args.background_share_reach = (share, reach)
    for cam in args.cameras:
        if cam not in ("auto", "none") and not Path(cam).exists():
            ap.error(f"--cameras: {cam} does not exist")


def main(argv=None) -> int:
    from gscomp.cli import notes_as_lines

    notes_as_lines()  # gscomp's notes and warnings as the CLI prints them (one line each)
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--inputs", nargs="*", default=DEFAULT_INPUTS)
    ap.add_argument("--presets", nargs="+", default=["lossless-ish", "high", "medium", "low", "compact"])
    ap.add_argument("--synthetic", nargs="*", default=[], help="N:DEGREE random scenes for throughput")
    ap.add_argument("--res", type=int, nargs="+", default=[256, 1024],
                    help="orbit view sizes in px: psnr_vs_source is at the first, psnr_vs_source_by_res at each "
                         "(a codec tuned on small views can lose at large ones); the own cameras at most the first")
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--peers", default="gaussforge,gscomp-spz,splat-transform,gsplat")
    ap.add_argument("--gaussforge-formats", default="spz,compressed.ply,sog",
                    help="gaussforge exports to run (its SOG export of 500k splats takes many minutes)")
    ap.add_argument("--splat-transform", default=os.environ.get("SPLAT_TRANSFORM", "/tmp/st/node_modules/.bin/splat-transform"))
    ap.add_argument("--st-timeout", type=int, default=120)
    ap.add_argument("--cameras", nargs="*", default=[],
                    help="per input, in order: its cameras (cameras.json, COLMAP model or capture folder), 'auto' "
                         "(default: a trained model's cameras.json, as gscomp compress finds it) or 'none'")
    ap.add_argument("--background", default=None, metavar="SHARE:REACH",
                    help="add a synthetic far background to every input (e.g. 0.05:300: 5%% more Gaussians at "
                         "3..300 times its radius), the way an unbounded capture looks")
    ap.add_argument("--set", action="append", default=[], metavar="pipeline.KEY=VALUE",
                    help="an override for every gscomp preset run, as gscomp compress takes it (repeatable; e.g. "
                         "pipeline.stages.positions.core=0: the box grid)")
    args = ap.parse_args(argv)
    check_args(ap, args)
    from gscomp.data.cameras import find_cameras_json
    from gscomp.errors import GscompError

    torch.manual_seed(0)
    report = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "res": args.res, "views": args.views,
              "overrides": args.set, "inputs": []}
    peers = set(filter(None, args.peers.split(",")))
    for n, deg in args.synthetic:  # throughput only (no PSNR)
        splats = synthetic_splats(n, deg)
        with tempfile.TemporaryDirectory() as td:
            res = [bench_preset(splats, p, None, Path(td), overrides=args.set) for p in args.presets]
        report["inputs"].append({"input": f"synthetic:{n}:{deg}", "n": n, "sh_degree": deg, "results": res})
        print(json.dumps(report["inputs"][-1]), file=sys.stderr)
    for i, rel in enumerate(args.inputs):
        src = Path(rel) if Path(rel).exists() else SHARED / rel
        if not src.exists():
            report["inputs"].append({"input": rel, "error": "not found"})
            continue
        cam_arg = args.cameras[i] if i < len(args.cameras) else "auto"
        cam_path = (find_cameras_json(src) if cam_arg == "auto" else None if cam_arg == "none" else Path(cam_arg))
        try:
            report["inputs"].append(bench_input(args, rel, src, cam_path, peers))
        except (GscompError, OSError, ValueError) as e:  # an unreadable input or cameras, views that miss the scene
            report["inputs"].append({"input": rel, "error": one_line(e)})
            print(f"{rel}: error: {report['inputs'][-1]['error']}", file=sys.stderr)
    # exit 1 when an input or one of gscomp's own presets failed (a missing peer is not a failure)
    failed = any("error" in e or any("error" in r and r["codec"].startswith("gsz:") for r in e.get("results", []))
                 for e in report["inputs"])
    print(json.dumps(finite(report), indent=2))
    return 1 if failed else 0


def one_line(e: BaseException) -> str:
    """An error's first line (its type when it has no message), for an ``error`` entry."""
    return str(e).splitlines()[0] if str(e).strip() else type(e).__name__


def bench_input(args, rel: str, src: Path, cam_path: Path | None, peers: set) -> dict:
    """One input's entry: every preset, then the peers, side by side on the same views."""
    from gscomp.errors import GscompError
    from gscomp.io import load_splats, save_splats

    splats = load_splats(src)
    if not len(splats):
        raise GscompError("the scene has no Gaussians")
    if not args.background:
        return _bench_scene(args, rel, src, splats, cam_path, peers)
    with tempfile.TemporaryDirectory() as made:  # removed however the input ends
        splats = with_background(splats, *args.background_share_reach)
        save_splats(Path(made) / "with_background.ply", splats)  # its size, and peers read it
        return _bench_scene(args, rel, Path(made) / "with_background.ply", splats, cam_path, peers)


def _bench_scene(args, rel: str, src: Path, splats, cam_path: Path | None, peers: set) -> dict:
    from gscomp.data.cameras import load_cameras
    from gscomp.errors import GscompError
    from gscomp.io import save_splats, stored_size

    n = len(splats)
    views = Views(splats, args.views, args.res, load_cameras(cam_path, args.views) if cam_path else None)
    entry = {"input": rel + (f" + background {args.background}" if args.background else ""), "n": n, "sh_degree": splats.sh_degree, "source_bytes": stored_size(src),
             "cameras": str(cam_path) if cam_path else None, "results": []}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for preset in args.presets:
            # encoded as `gscomp compress` would, with the same cameras (none: sphere views); a
            # preset that fails (e.g. its cameras) is its own error, the others still run
            try:
                entry["results"].append(bench_preset(splats, preset, views, tmp, src if cam_path else None,
                                                     str(cam_path) if cam_path else None, args.set))
            except (GscompError, OSError, ValueError) as e:
                entry["results"].append({"codec": f"gsz:{preset}", "error": one_line(e)})
            print(json.dumps(finite(entry["results"][-1])), file=sys.stderr)
        ply = tmp / "source.ply"
        if peers & {"gaussforge", "splat-transform"}:
            save_splats(ply, splats)
        if "gscomp-spz" in peers:
            entry["results"].append(bench_gscomp_spz(splats, views, tmp))
        if "gaussforge" in peers:
            try:
                import gaussforge  # noqa: F401

                data = ply.read_bytes()
                for fmt in [f for f in args.gaussforge_formats.split(",") if f]:
                    entry["results"].append(bench_gaussforge(data, n, fmt, views, tmp))
                    print(json.dumps(finite(entry["results"][-1])), file=sys.stderr)
            except ImportError:
                entry["results"].append({"codec": "gaussforge", "error": "not installed (pip install gaussforge)"})
        if "splat-transform" in peers:
            exe = args.splat_transform if Path(args.splat_transform).exists() else shutil.which("splat-transform")
            if exe:
                entry["results"] += bench_splat_transform(exe, ply, n, views, tmp, args.st_timeout)
            else:
                entry["results"].append({"codec": "splat-transform", "error": "not installed (npm install @playcanvas/splat-transform)"})
        if "gsplat" in peers:
            entry["results"].append(bench_gsplat(splats, views, tmp))
            print(json.dumps(finite(entry["results"][-1])), file=sys.stderr)
    return entry


if __name__ == "__main__":
    sys.exit(main())
