"""What this machine can hold: refusing up front what could only end in the OOM killer.

A few kilobytes of input can declare millions of Gaussians (a gzip or WebP of zeros, a `.gsz`
padded to the payload rule); decoding them takes the memory that many Gaussians take, however
small the file. Readers of such formats call `check_decode_memory` once they know the count, so
that a count this machine cannot hold is one clear error before any allocation, not minutes of
swapping and a killed process. Scene loaders check images the same way (`gscomp.data.images`).
"""
from __future__ import annotations

import os

from .errors import GscompError

NO_MEMORY_CHECK = "GSCOMP_NO_MEMORY_CHECK"  # =1: go ahead whatever the estimate (the OOM killer decides)


def available_memory() -> int | None:
    """Bytes this machine can give a process now (Linux MemAvailable; else the physical memory),
    or None when neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


# Decoding holds the float32 Splats and at least as much again in the reader's own arrays (measured
# peaks: 2.7x the Splats for SPZ, 5x for `.gsz`, at SH 3): twice the Splats is the least it needs.
DECODE_COPIES = 2


def splats_bytes(n: int, sh_degree: int) -> int:
    """Bytes of a float32 `Splats` of ``n`` Gaussians: means 3, quats 4, scales 3, opacity 1 and
    3 (sh_degree + 1)^2 colour coefficients."""
    return 4 * n * (11 + 3 * (sh_degree + 1) ** 2)


def check_decode_memory(n: int, sh_degree: int, what: str) -> None:
    """Refuse to decode ``n`` Gaussians of ``sh_degree`` when even the least that takes is more than
    the memory available (``what`` names the file in the error)."""
    need = DECODE_COPIES * splats_bytes(n, sh_degree)
    if need < 1 << 30 or os.environ.get(NO_MEMORY_CHECK) == "1":  # (under 1 GB: not worth reading /proc)
        return
    avail = available_memory()
    if avail is not None and need > avail:
        raise GscompError(f"{what}: {n:,} Gaussians of SH degree {sh_degree} need at least {need / 1e9:.1f} GB to "
                          f"decode, more than the {avail / 1e9:.1f} GB this machine has available (a corrupt or "
                          f"hostile file can declare any count); {NO_MEMORY_CHECK}=1 tries anyway")


__all__ = ["NO_MEMORY_CHECK", "available_memory", "check_decode_memory", "splats_bytes"]
