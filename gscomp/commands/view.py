"""`gscomp view FILE`: interactive browser viewer for .gsz/.ply/.spz/.splat/.ksplat/SOG (see docs/viewer.md)."""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from .. import signals
from ..errors import GscompError


class _ArgParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line via the CLI's GscompError path, not argparse's exit
        raise GscompError(f"view: {message}")


def build_parser() -> argparse.ArgumentParser:
    from ..viewer.prepare import UP_AXES

    p = _ArgParser(prog="gscomp view", description="Interactive 3D viewer (viser, in your browser).")
    p.add_argument("file", help=".gsz (decoded on the fly), .ply, .spz, .splat, .ksplat, compressed.ply or SOG")
    p.add_argument("--host", default="127.0.0.1", help="interface to serve on (default: localhost only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; the next free one if taken)")
    p.add_argument("--up", default="-y", choices=list(UP_AXES),
                   help="world up direction (default -y: COLMAP/3DGS captures; +z for Blender scenes)")
    p.add_argument("--compare", metavar="PATH",
                   help="second file to toggle against (default for X.gsz: point_cloud.ply in a train-and-compress "
                        "folder, else X.ply, X.spz or X.splat next to it, if present)")
    p.add_argument("--exact", action="store_true", help="start in exact mode (server-side gscomp render)")
    p.add_argument("--exact-max-side", type=int, default=512, help="exact-mode image size cap in pixels")
    p.add_argument("--max-splats", type=int, default=0, metavar="N",
                   help="send at most N Gaussians (the most visible) to the browser, for slow clients; 0 = all")
    p.add_argument("--backend", default="cpu", choices=("cpu", "torch", "gsplat"),
                   help="rasterizer for exact mode (default cpu)")
    return p


def _join_negative_up(argv: list[str]) -> list[str]:
    """argparse reads `--up -y` as a missing value followed by an unknown option `-y`."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--up" and i + 1 < len(argv) and argv[i + 1] in ("-x", "-y", "-z"):
            out.append(f"--up={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(_join_negative_up(list(argv)))
    if not 0 <= args.port <= 65535:
        raise GscompError(f"--port must be in 0..65535, got {args.port}")
    if not 16 <= args.exact_max_side <= 8192:
        raise GscompError(f"--exact-max-side must be in 16..8192, got {args.exact_max_side}")
    if args.backend == "gsplat":
        import torch

        if not torch.cuda.is_available():  # (else every exact render would fail, one by one)
            raise GscompError("--backend gsplat needs a CUDA GPU; use --backend cpu")
    if args.max_splats < 0:
        raise GscompError(f"--max-splats must be >= 0, got {args.max_splats}")
    port = _free_port(args.host, _check_host(args.host), args.port)
    from ..viewer.load import load_view_file

    # Ctrl-C and `kill` (SIGTERM) both stop cleanly, while the files load too. SIGINT is set
    # explicitly because a process started in the background by a non-interactive shell inherits
    # it as ignored.
    old_handlers = (signal.signal(signal.SIGINT, signal.default_int_handler),
                    signal.signal(signal.SIGTERM, signals.raise_stop))
    viewer = None
    try:
        # Everything that can fail because of the input happens before the server starts.
        t0 = time.perf_counter()
        _say_loading(args.file)
        main = load_view_file(args.file)
        compare = load_compare(main, args.compare)
        load_s = time.perf_counter() - t0
        try:
            import viser  # noqa: F401
        except ImportError:
            raise GscompError("the viewer needs viser: pip install 'gscomp[viewer]' (or pip install viser)") from None

        from ..viewer.app import Viewer

        with signals.deferred():  # (a stop while the server is set up acts once `viewer` can close it quietly)
            viewer = Viewer(main, compare, host=args.host, port=port, up=args.up, exact=args.exact,
                            exact_max_side=args.exact_max_side, backend=args.backend, max_splats=args.max_splats)
        host = "localhost" if args.host in ("0.0.0.0", "::", "") else args.host
        host = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
        what = f"{main.name} ({len(main.splats):,} Gaussians, loaded in {load_s:.1f} s)"
        if compare is not None:
            what += f", compare with {compare.name}"
        print(f"gscomp view: {what} at http://{host}:{viewer.port}/  (Ctrl-C to stop)", flush=True)
        if any(v is not None and v.splats.antialiased for v in (main, compare)):
            print("note: a scene made for the antialiased render mode: the browser's splats draw it in the classic "
                  "mode; the exact render shows it as it is", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        # a second Ctrl-C (or kill) while the server shuts down (~0.3 s) is the same request:
        # it must not cut the shutdown short and turn a clean stop into an interrupted exit
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if viewer is not None:
            viewer.close()
        print("gscomp view: stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, old_handlers[0])
        signal.signal(signal.SIGTERM, old_handlers[1])


BIG_LOAD = 100_000_000  # bytes: a file this large takes seconds to load (6M Gaussians: ~10 s), so say so first


def _say_loading(path) -> None:
    from ..io import stored_size

    try:
        size = stored_size(path)
    except (OSError, GscompError):  # (loading it says what is wrong)
        return
    if size >= BIG_LOAD:
        print(f"gscomp view: loading {Path(path).name} ({size / 1e6:,.0f} MB) ...", file=sys.stderr, flush=True)


def load_compare(main, compare: str | None):
    """The scene to compare with: ``--compare PATH``, else the first source a .gsz sits next to
    (`find_sources`) that loads and is not the .gsz decoded: a guess, so one that does not fit
    is skipped with a note, not fatal."""
    from ..viewer.load import find_sources, load_view_file

    if compare:
        if _same_file(Path(compare), main.path):
            print(f"note: not comparing {main.name} with itself", file=sys.stderr)
            return None
        _say_loading(compare)
        return load_view_file(Path(compare))
    for sibling in find_sources(main.path):
        _say_loading(sibling)
        try:
            other = load_view_file(sibling)
        except GscompError as e:
            print(f"note: not comparing with {sibling.name} ({e})", file=sys.stderr)
            continue
        if other.splats.same_as(main.splats):
            print(f"note: not comparing with {sibling.name}: it is {main.name} decoded (give the original with "
                  "--compare PATH)", file=sys.stderr)
            continue
        return other
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:  # (one is missing: loading it says so)
        return False


def _check_host(host: str) -> int:
    """Fail early on an address we cannot listen on (viser would otherwise retry and hang); its
    address family."""
    import socket

    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind(addr)
    except OSError as e:
        raise GscompError(f"--host {host}: cannot listen there ({e.strerror or e})") from None
    return family


def _free_port(host: str, family: int, port: int, tries: int = 100) -> int:
    """``port``, or the next free one after it (viser's own search runs past 65535 and hangs).
    Tested as the server binds, with SO_REUSEADDR: a port whose last connection is only in
    TIME_WAIT (the viewer just stopped) is free, or a restart moved to the next port for a minute."""
    import socket

    if port == 0:
        return 0
    for p in range(port, min(port + tries, 65536)):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, p))
                return p
            except OSError:
                continue
    raise GscompError(f"--port {port}: no free port from {port} to {min(port + tries, 65536) - 1}")


__all__ = ["run", "build_parser"]
