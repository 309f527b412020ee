"""Compression stages (see `gscomp.stages.base` for the interface and docs/stages.md for a guide).

Importing this package registers every built-in stage type (the list below), so
`build_stage({"type": ...})` and the decoder find them; stage types of one's own come from
`load_stage_plugins` ($GSCOMP_STAGES, entry points)."""
from .base import STAGES, CodingContext, Section, Stage, build_stage, register
from . import importance, posthoc, masking, rvq, colorfield  # noqa: F401,E402  (register the built-in stages)

__all__ = ["STAGES", "CodingContext", "Section", "Stage", "build_stage", "register"]
