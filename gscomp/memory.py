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
_YES, _NO = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def memory_check_off() -> bool:
    """Whether GSCOMP_NO_MEMORY_CHECK asks to skip the memory checks: 1, true, yes or on (any case)
    do; unset, empty, 0, false, no or off do not; anything else is a one-line error (a `=True` or a
    typo silently kept the check before, a `=2` would as silently drop it)."""
    raw = os.environ.get(NO_MEMORY_CHECK, "")
    v = raw.strip().lower()
    if v in _YES or v in _NO:
        return v in _YES
    raise GscompError(f"{NO_MEMORY_CHECK} must be 1 (or true, yes, on) to skip the memory checks, or 0 (false, no, off), "
                      f"got {raw!r:.40}")


def available_memory() -> int | None:
    """Bytes this machine can give a process now: Linux MemAvailable (else the physical memory),
    less where a cgroup (a container, a Slurm job) allows less; None when nothing can be read."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            pass
    room = _cgroup_room()
    return room if avail is None else avail if room is None else min(avail, room)


def _cgroup_room(root: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> int | None:
    """The least room (limit less use) over this process's memory cgroup and its parents (v2:
    memory.max - memory.current; v1: memory.limit_in_bytes - memory.usage_in_bytes), or None
    with no limit set or no cgroup to read. (A container sees its own cgroup as the root.)"""
    try:
        with open(self_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    places = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2
            places.append((root, path, "memory.max", "memory.current"))
        elif "memory" in controllers.split(","):
            places.append((os.path.join(root, "memory"), path, "memory.limit_in_bytes", "memory.usage_in_bytes"))
    room = None
    for base, path, limit_file, used_file in places:
        parts = [p for p in path.split("/") if p]
        for k in range(len(parts), -1, -1):  # the cgroup, then each parent up to the root
            d = os.path.join(base, *parts[:k])
            try:
                with open(os.path.join(d, limit_file)) as f:
                    text = f.read().strip()
                if text == "max" or int(text) >= 1 << 60:  # (v1 writes "no limit" as a huge number)
                    continue
                with open(os.path.join(d, used_file)) as f:
                    left = max(0, int(text) - int(f.read().strip()))
            except (OSError, ValueError):
                continue
            room = left if room is None else min(room, left)
    return room


# Decoding holds the float32 Splats and more in the reader's own arrays. Peaks over the import
# baseline, measured at 1M SH 3 (qa38_R): .gsz `high` 1.47x the Splats, `compact` 1.58x, SPZ
# 2.9x, SOG 4.5x. The check asks for 1.25x, below all of them: what it refuses could not decode.
DECODE_FACTOR = 1.25
MIN_CHECKED = 1 << 30  # needs below 1 GB are not checked (not worth reading /proc)


def splats_bytes(n: int, sh_degree: int) -> int:
    """Bytes of a float32 `Splats` of ``n`` Gaussians: means 3, quats 4, scales 3, opacity 1 and
    3 (sh_degree + 1)^2 colour coefficients."""
    return 4 * n * (11 + 3 * (sh_degree + 1) ** 2)


def check_decode_memory(n: int, sh_degree: int, what: str) -> None:
    """Refuse to decode ``n`` Gaussians of ``sh_degree`` when even the least that takes is more than
    the memory available (``what`` names the file in the error)."""
    need = int(DECODE_FACTOR * splats_bytes(n, sh_degree))
    if need < MIN_CHECKED or memory_check_off():
        return
    avail = available_memory()
    if avail is not None and need > avail:
        raise GscompError(f"{what}: {n:,} Gaussians of SH degree {sh_degree} need at least {need / 1e9:.1f} GB to "
                          f"decode, more than the {avail / 1e9:.1f} GB this machine has available (a corrupt or "
                          f"hostile file can declare any count); {NO_MEMORY_CHECK}=1 tries anyway")


__all__ = ["NO_MEMORY_CHECK", "available_memory", "check_decode_memory", "memory_check_off", "splats_bytes"]
