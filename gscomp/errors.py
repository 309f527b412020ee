"""User-facing errors.

Anything a user can cause (bad file, bad config, missing images) raises ``GscompError`` with a
one-line message. The CLI prints ``error: <message>`` and exits with status 2; it never shows a
traceback for these.
"""
from __future__ import annotations

import math
from typing import Any


class GscompError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


class FormatError(GscompError):
    """A file is malformed, truncated, corrupt or of an unsupported kind."""


class LayoutError(GscompError):
    """A scene folder does not hold the layout of the scene kind asked for (`load_scene` adds a
    hint naming the kind that would load it)."""


class Note(UserWarning):
    """Something about the user's data that is no error but changes what they get (a value
    clamped, a field dropped): a warning to library users, one ``note: ...`` line in the CLI."""


class DataWarning(UserWarning):
    """Something that looks wrong with the user's data or settings, so that the result is likely
    poor (views that show nothing of a model, damaged images, a grid too coarse for the scene):
    a warning to library users, one ``warning: ...`` line in the CLI."""


def one_line(e: BaseException, limit: int | None = None) -> str:
    """An exception's message squeezed onto one line (its type name when it has none), cut to
    ``limit`` characters."""
    return (" ".join(str(e).split()) or type(e).__name__)[:limit]


def check_int(name: str, v: Any, lo: int, hi: int, *, floats: bool = False) -> int:
    """``v`` checked to be an integer in lo..hi, else a one-line error naming ``name``; with
    ``floats``, an integral float (8.0) counts too. (A decoded file's stage params come from its
    header through the stages' constructors, which check them with these: their bounds also cap
    what a crafted header can make the decoder allocate, so stage params never take floats.)"""
    if floats and isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        span = "" if lo == -math.inf and hi == math.inf else f" >= {lo}" if hi == math.inf else f" in {lo}..{hi}"
        raise GscompError(f"{name} must be an integer{span}, got {v!r}")
    return v


def check_number(name: str, v: Any, lo: float, hi: float = math.inf, *, lo_open: bool = False,
                 hi_open: bool = False) -> float:
    """``v`` checked to be a finite number in [lo, hi] (either end open on request), else a
    one-line error; ``hi`` = inf: no upper bound."""
    try:  # (an int too large for a float is no valid number either)
        ok = (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
              and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi))
    except OverflowError:
        ok = False
    if not ok:
        if hi == math.inf:
            span = f"{'>' if lo_open else '>='} {lo:g}"
        else:
            span = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise GscompError(f"{name} must be a number {span}, got {v!r}")
    return float(v)


def check_bool(name: str, v: Any) -> bool:
    """``v`` checked to be true or false (not 0/1 or a string), else a one-line error."""
    if not isinstance(v, bool):
        raise GscompError(f"{name} must be true or false, got {v!r}")
    return v


def check_schedule(name: str, v: Any, *, allow_none: bool = False) -> int | float | None:
    """A schedule value as the trainer reads it: an int is an absolute step (>= 0), a float in [0, 1]
    a fraction of ``train.steps``."""
    if v is None and allow_none:
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (isinstance(v, float) and v > 1):
        raise GscompError(f"{name} must be a step (an integer >= 0) or a fraction of the run in [0, 1], got {v!r}")
    return v


def at_step(value: int | float | None, max_steps: int) -> int:
    """A schedule value (see `check_schedule`) as a step of a run of ``max_steps``: a float is a
    fraction of the run, an int an absolute step; None is step 0."""
    if value is None:
        return 0
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise GscompError(f"schedule fraction {value} is outside [0, 1] (use an int for an absolute step)")
        return int(round(value * max_steps))
    return int(value)
