"""`gscomp info FILE [--json]`: of a .gsz, its version, counts, bytes per section and bits per
Gaussian; of any other splat file, its format, count, SH degree and bytes per Gaussian."""
from __future__ import annotations

import json
from pathlib import Path

from ..fileio import input_file
from .common import file_args, stdout_console, usage_error, wants_help

USAGE = ("usage: gscomp info FILE [--json]   (a .gsz: its sections and bits per attribute; any other splat file gscomp "
         "reads: its format, count and size)")


def run(argv: list[str]) -> int:
    if wants_help(argv):
        print(USAGE)
        return 0
    rest, opts = file_args(argv)
    as_json = "--json" in opts
    opts = [a for a in opts if a != "--json"]
    if opts or len(rest) != 1:
        raise usage_error(USAGE, opts)
    from ..codec import gsz_info
    from ..codec.container import NotGsz
    from ..io import FormatError, detect_format, splat_file_info

    if Path(rest[0]).is_dir():  # a SOG scene's folder
        return _show_splat_file(splat_file_info(rest[0]), as_json)
    src = input_file(rest[0])
    unknown = None
    try:  # by its name, as decode reads it (an empty .ply was "a truncated .gsz")
        fmt = detect_format(src)
    except FormatError as e:  # an unknown extension: a .gsz by another name, else what the other verbs say
        fmt, unknown = "gsz", e
    if fmt != "gsz":
        return _show_splat_file(splat_file_info(src), as_json)
    try:
        info = gsz_info(src)
    except NotGsz:
        if unknown is not None:  # ("not a .gsz" misled for a .yaml, qa39_W)
            raise unknown from None
        raise
    info["format"] = "gsz"
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.markup import escape as e  # (file names and header strings are not markup: "[/b]" raised)
    from rich.table import Table

    n = info["n"]
    c = stdout_console()
    pipe = info.get("pipeline") or {}
    types = ", ".join(str(s.get("type", "?")) for s in pipe.get("stages", []))
    c.print(f"[b]{e(str(info['path']))}[/b]: .gsz version {info['version']}, {n:,} Gaussians, SH degree {info['sh_degree']}, "
            + ("antialiased render mode, " if info.get("antialiased") else "")
            + f"pipeline {e(_clip(repr(pipe.get('name', '?'))))} ({e(_clip(types))})")
    t = Table()
    for col in ("section", "codec", "bytes", "bits/Gaussian"):
        t.add_column(col, justify="right" if col in ("bytes", "bits/Gaussian") else "left")
    for name, b in info["sections"].items():
        t.add_row(e(_clip(name)), e(_clip(info["codecs"][name])), f"{b:,}", f"{8 * b / n:.2f}" if n else "-")
    t.add_row("header+table", "", f"{info['header_bytes']:,}", f"{8 * info['header_bytes'] / n:.2f}" if n else "-")
    t.add_row("[b]total", "", f"[b]{info['total_bytes']:,}", f"[b]{info['bits_per_gaussian']:.2f}" if n else "-")
    c.print(t)
    per = ", ".join(f"{k} {v:.2f}" for k, v in info["bits_per_gaussian_per_attribute"].items()) if n else "- (no Gaussians)"
    c.print(f"bits per Gaussian by attribute: {per}")
    return 0


def _clip(text: str, limit: int = 160) -> str:
    """A header string cut for a terminal: a file's header may hold megabytes of pipeline name
    (15 MB took rich 13 s to lay out); `--json` gives it whole."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _show_splat_file(info: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.markup import escape as e

    n, total = info["n"], info["total_bytes"]
    per = f" ({total / n:.2f} B, {info['bits_per_gaussian']:.1f} bits per Gaussian)" if n else ""
    line = (f"[b]{e(info['path'])}[/b]: {FORMAT_NAMES.get(info['format'], info['format'])}, {n:,} Gaussians, "
            f"SH degree {info['sh_degree']}, " + ("antialiased render mode, " if info["antialiased"] else "")
            + f"{total:,} bytes{per}")
    if info["bounds"] is not None:
        lo, hi = info["bounds"]
        line += f"; means within ({', '.join(f'{v:.4g}' for v in lo)}) .. ({', '.join(f'{v:.4g}' for v in hi)})"
    stdout_console().print(line)
    return 0


FORMAT_NAMES = {"ply": "INRIA .ply", "compressed-ply": "PlayCanvas compressed .ply", "spz": "Niantic SPZ",
                "splat": "antimatter15 .splat", "ksplat": "mkkellogg .ksplat", "sog": "PlayCanvas SOG"}
