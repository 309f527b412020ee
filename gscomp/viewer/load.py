"""Load a file for viewing: splats plus the facts the side panel shows.

All validation happens here, before any server starts, so a bad file is one clear error line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import FormatError, GscompError
from ..splats import Splats


@dataclass
class ViewFile:
    path: Path
    splats: Splats
    file_bytes: int
    # (attribute, bits per Gaussian) from `gscomp.codec.gsz_info`; empty for non-.gsz files
    bits: list[tuple[str, float]] = field(default_factory=list)
    pipeline: str = ""  # the .gsz's compression pipeline

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_gsz(self) -> bool:
        return self.path.suffix.lower() == ".gsz"

    def summary_markdown(self) -> str:
        n = len(self.splats)
        lines = [
            f"**{_md_escape(self.name)}**",
            "",
            "| | |",
            "|---|---|",
            f"| Gaussians | {n:,} |",
            f"| file size | {_human_bytes(self.file_bytes)} |",
            f"| bits / Gaussian | {8 * self.file_bytes / max(n, 1):.1f} |",
            f"| SH degree | {self.splats.sh_degree} |",
        ]
        if self.pipeline:
            lines.append(f"| pipeline | {_md_escape(self.pipeline)} |")
        if self.bits:
            lines += ["", "bits per Gaussian by attribute:", "", "| attribute | bits |", "|---|---|"]
            lines += [f"| {_md_escape(k)} | {v:.2f} |" for k, v in self.bits]
        return "\n".join(lines)


def load_view_file(path: str | Path) -> ViewFile:
    """Read ``path`` (.gsz decoded on the fly, or anything `gscomp.io.load_splats` reads)."""
    p = Path(path)
    if not p.exists():
        raise GscompError(f"{p}: no such file or directory")
    from ..io import load_splats, stored_size

    splats = load_splats(p).detach().map(lambda t: t.to("cpu", torch.float32)).validate(str(p))
    if len(splats) == 0:
        raise FormatError(f"{p}: contains no Gaussians")
    size = stored_size(p)
    bits: list[tuple[str, float]] = []
    pipeline = ""
    if p.suffix.lower() == ".gsz":
        from ..codec import gsz_info

        info = gsz_info(p)
        bits = bits_rows(info)
        pipeline = str(info["pipeline"].get("name", ""))
    return ViewFile(p, splats, size, bits, pipeline)


def find_sources(path: Path) -> list[Path]:
    """The files that may be the original a .gsz was made from, most likely first: in a
    train-and-compress folder (report.json beside it) the trained model, point_cloud.ply (its
    scene.ply is the .gsz decoded); else the files next to it with the same stem (.ply, .spz, .splat)."""
    if path.suffix.lower() != ".gsz":
        return []
    from ..metrics import is_report

    trained = path.with_name("point_cloud.ply")
    if trained.is_file() and is_report(path.with_name("report.json")):
        return [trained]
    return [c for c in (path.with_suffix(".ply"), path.with_suffix(".spz"), path.with_suffix(".splat")) if c.is_file()]


def bits_rows(info: dict) -> list[tuple[str, float]]:
    """(attribute, bits per Gaussian) rows of a `gsz_info` dict (none for a scene of no Gaussians)."""
    return [(str(k), float(v)) for k, v in info["bits_per_gaussian_per_attribute"].items() if _is_num(v)]


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n} B"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


__all__ = ["ViewFile", "load_view_file", "find_sources", "bits_rows"]
