"""Compression stages (see `gscomp.stages.base` for the interface and docs/stages.md for a guide).

Importing this package registers the trained stages, so `build_stage({"type": ...})` finds them."""
from .base import STAGES, CodingContext, Section, Stage, build_stage, register
from . import masking, rvq, colorfield  # noqa: F401,E402  (register the trained stages)

__all__ = ["STAGES", "CodingContext", "Section", "Stage", "build_stage", "register"]
