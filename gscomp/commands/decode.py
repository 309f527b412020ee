"""`gscomp decode IN OUT.ply|.compressed.ply|.spz|.splat`: decode a .gsz to a standard splat file
(a name ending in .compressed.ply gets PlayCanvas's compressed layout, any other .ply INRIA's).
IN may also be any splat file gscomp reads (.spz, .splat, .ksplat, compressed.ply, SOG, .ply):
the same verb converts between formats."""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

from ..errors import GscompError
from ..fileio import check_not_input, check_output, input_file, output_file
from .common import file_args, usage_error, wants_help

USAGE = ("usage: gscomp decode IN OUT.ply|OUT.compressed.ply|OUT.spz|OUT.splat [--json]\n"
         "  IN: a .gsz, or any splat file gscomp reads (.ply, .spz, .splat, .ksplat, compressed.ply, SOG)\n"
         "  --json: the summary as JSON on stdout")


BIG_WRITE = 1_000_000  # Gaussians: above this, a line says the output is being written


def run(argv: list[str]) -> int:
    if wants_help(argv):
        print(USAGE)
        return 0
    args, opts = file_args(argv)
    as_json = "--json" in opts
    opts = [o for o in opts if o != "--json"]
    if opts or len(args) != 2:
        raise usage_error(USAGE, opts)
    src = Path(args[0])
    src = src if src.is_dir() else input_file(src)  # (a SOG scene may be a folder)
    dst = output_file(args[1])
    if dst.suffix.lower() not in (".ply", ".spz", ".splat"):
        raise GscompError(f"output must end in .ply (.compressed.ply), .spz or .splat, got {args[1]!r}")
    check_not_input(src, dst)
    check_output(dst)  # (now, not after the decode)
    from .. import native
    from ..io import LossySaveWarning, load_splats, save_splats

    native.warm("rans")  # (a first build is not decode time)
    t0 = time.perf_counter()
    splats = load_splats(src)  # fully decoded and validated before anything is written
    dt = time.perf_counter() - t0
    n = len(splats)
    if n >= BIG_WRITE:  # (writing .spz or .compressed.ply takes ~5 s per million Gaussians: not in silence)
        print(f"decoded {n:,} Gaussians in {dt:.2f} s; writing {dst.name} ...", file=sys.stderr, flush=True)
    t1 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:  # said below, after the summary line
        warnings.simplefilter("always", LossySaveWarning)
        save_splats(dst, splats)
    wt = time.perf_counter() - t1
    if as_json:
        print(json.dumps({"input": str(src), "output": str(dst), "n": n, "sh_degree": splats.sh_degree,
                          "antialiased": bool(splats.antialiased), "output_bytes": dst.stat().st_size,
                          "decode_seconds": round(dt, 4), "write_seconds": round(wt, 4)}, indent=2))
    else:
        print(f"decoded {n:,} Gaussian{'' if n == 1 else 's'} (SH {splats.sh_degree}) in {dt:.2f} s, written in "
              f"{wt:.2f} s -> {dst}")
    if not n:
        print(f"note: the scene holds no Gaussians; {dst.name} is valid, but many viewers refuse an empty file",
              file=sys.stderr)
    if splats.antialiased and dst.suffix.lower() == ".ply" and not dst.name.lower().endswith(".compressed.ply"):
        print("note: the scene is made for the antialiased render mode, which this .ply records in a header comment "
              "that only gscomp reads: other viewers draw it in the classic mode", file=sys.stderr)
    for w in caught:  # what the output format could not hold (.ply keeps everything)
        if issubclass(w.category, LossySaveWarning):
            print(f"note: {str(w.message).removeprefix(dst.name + ': ')}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return 0
