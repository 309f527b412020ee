"""`gscomp decode IN.gsz OUT.ply|.spz|.splat`: decode a .gsz to a standard splat file."""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import GscompError

USAGE = "usage: gscomp decode IN.gsz OUT.ply|OUT.spz|OUT.splat"


def run(argv: list[str]) -> int:
    if len(argv) != 2 or any(a.startswith("-") for a in argv):
        raise GscompError(USAGE)
    src, dst = Path(argv[0]), Path(argv[1])
    if dst.suffix.lower() not in (".ply", ".spz", ".splat"):
        raise GscompError(f"output must end in .ply, .spz or .splat, got {dst.name!r}")
    from ..codec import decode_gsz
    from ..io import save_splats

    t0 = time.perf_counter()
    splats = decode_gsz(src)  # fully decoded and validated before anything is written
    dt = time.perf_counter() - t0
    save_splats(dst, splats)
    print(f"decoded {len(splats):,} Gaussians (SH {splats.sh_degree}) in {dt:.2f} s -> {dst}")
    return 0
