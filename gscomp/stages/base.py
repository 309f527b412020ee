"""The stage interface: one compression idea from one paper, on both the training and coding side.

A *pipeline* is an ordered list of stages (see `gscomp.stages.pipeline`); every `Splats` field
("means", "quats", "scales", "opacities", "sh0", "shN") is *owned* by exactly one stage, which writes
it into the `.gsz` and rebuilds it at decode time. Stages are built from config dicts
(``{"type": NAME, **params}``) and their params are stored in the `.gsz` header, so the decoder can
rebuild the same stage objects from the file alone.

Training side (all optional; the trainer calls them, see `gscomp.train.trainer`):
    attach(state)                 add parameters: per-Gaussian ones via ``state.add_gaussian_param``
                                  (they follow densification/pruning automatically) and global ones
                                  (hash grids, MLPs, codebooks) via ``state.add_module``
    transform(splats, step)       the splats actually rendered this step (mask, VQ, field colour)
    loss(splats, step, state)     extra loss term (mask loss, rate loss, smoothness) or None
    on_step_end(step, state)      hooks at step boundaries (hard prune, start VQ, re-sort)

Coding side:
    bake(splats, state)           final splats to code (prune masked, snap to codebooks, colours from
                                  the field); default: ``transform(splats, step=-1)`` (step < 0: after training)
    reorder(splats)               optional permutation of the Gaussians (Morton order, 2D grid sort)
    reordered(perm)               told of each such permutation (row i is now row perm[i]): a stage
                                  that keeps per-Gaussian values from its bake permutes them
    progress                      set before bake: the encode's ``progress(what, done, total)`` or None
    needs() / provides            what it reads from / adds to ``ctx.attrs`` (checked order)
    check_input(sh_degree)        refuse an SH degree it cannot code, before any work
    encode(splats, ctx)           -> list[Section] for the fields in ``owns``
    decode(sections, ctx)         -> {field: tensor} for the fields in ``owns``

Determinism contract: ``decode`` must be a pure function of the section bytes, the stage params and
``ctx.attrs`` (fields decoded by earlier stages), evaluated in float32 on the CPU in a fixed order,
so any machine reproduces it bit for bit. The pipeline encoder calls ``decode`` right after
``encode`` and passes the *decoded* fields on to later stages, so a stage that conditions on
positions (hash-grid field, context model) sees the same quantized positions as the decoder.
"""
from __future__ import annotations

import inspect

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from ..splats import Splats


@dataclass
class Section:
    """One payload in the `.gsz`: ``name`` is unique in the file, ``codec`` names how the bytes are
    coded (documented in docs/gsz-format.md)."""

    name: str
    codec: str
    payload: bytes


@dataclass
class CodingContext:
    """Shared state while a pipeline encodes or decodes one scene."""

    n: int  # number of Gaussians being coded (after bake and pruning)
    sh_degree: int  # SH degree being coded
    attrs: dict[str, torch.Tensor] = field(default_factory=dict)  # fields decoded so far
    header: dict[str, Any] = field(default_factory=dict)  # the file's stage_header: reserved for values stages share; {} today
    # encoder only: progress(what, done, total) for slow work (a progress bar in the CLI), or None
    progress: Callable[[str, int, int], None] | None = None
    # encoder only: what an earlier stage learned that later ones may use to choose their symbols
    # but that is not in the file (e.g. the importance stage's per-field render sensitivities)
    hints: dict[str, Any] = field(default_factory=dict)


class Stage:
    """Base class; subclasses set ``type`` and ``owns`` and override what they need."""

    type: ClassVar[str] = ""
    owns: tuple[str, ...] = ()
    provides: ClassVar[tuple[str, ...]] = ()  # ``ctx.attrs`` keys its decode adds besides its fields
    # what post-hoc compress (no training) tells the user when this stage then does nothing
    posthoc_note: ClassVar[str | None] = None
    # params that steer only training or encoding: a decoder reads none of them, so a .gsz whose
    # header holds a value today's checks refuse (an older gscomp's wider range) still decodes
    encoder_params: ClassVar[tuple[str, ...]] = ()
    progress: Callable | None = None  # (set on the encode's own copy before bake)

    def __init__(self, **params: Any):
        self.params = dict(params)

    def needs(self) -> dict[str, str]:
        """The ``ctx.attrs`` keys this stage reads from earlier stages (a field such as "means", or
        another stage's ``provides``), each with the error to give when no earlier stage has it.
        The pipeline checks its order against these when it is built, before any work."""
        return {}

    def check_input(self, sh_degree: int) -> None:
        """Raise a `GscompError` when this stage cannot code splats of ``sh_degree`` (the degree
        the pipeline codes); called before training or loading, and again when encoding."""

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description stored in the header; ``build_stage`` inverts it."""
        return {"type": self.type, **self.params}

    # ---------------------------------------------------------------- training side
    def attach(self, state) -> None:
        pass

    def transform(self, splats: Splats, step: int) -> Splats:
        return splats

    def loss(self, splats: Splats, step: int, state) -> torch.Tensor | None:
        return None

    def on_step_end(self, step: int, state) -> None:
        pass

    # ---------------------------------------------------------------- coding side
    def bake(self, splats: Splats, state=None) -> Splats:
        return self.transform(splats, step=-1)

    def reorder(self, splats: Splats) -> torch.Tensor | None:
        return None

    def reordered(self, perm: torch.Tensor) -> None:
        pass

    def encode(self, splats: Splats, ctx: CodingContext) -> list[Section]:
        return []

    def decode(self, sections: dict[str, Section], ctx: CodingContext) -> dict[str, torch.Tensor]:
        return {}

    def min_payload(self, n: int, sections: list[Section]) -> int:
        """The total payload bytes a file must hold for this stage to decode n Gaussians from
        ``sections`` (its own, local names): a stage whose decoding work grows faster than its
        bytes (an MLP run per Gaussian) bounds that work by the file's size, so that a small
        crafted file cannot ask for hours. The writer pads up to it; readers refuse less before
        decoding anything (`gscomp info` too), unless GSCOMP_NO_WORK_LIMIT=1."""
        return 0


def as_np32(t: torch.Tensor) -> np.ndarray:
    """A tensor as a contiguous float32 numpy array on the CPU (what the codecs quantize)."""
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def need_section(sections: dict[str, Section], name: str, *codecs: str) -> Section:
    """The section ``name`` with one of the expected codecs, else a one-line FormatError."""
    from ..errors import FormatError

    sec = sections.get(name)
    if sec is None:
        raise FormatError(f"missing section {name!r}")
    if sec.codec not in codecs:
        raise FormatError(f"section {name!r} has codec {sec.codec!r}, expected {' or '.join(codecs)}")
    return sec


STAGES: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage buildable by its ``type`` name."""
    if not cls.type:
        raise ValueError(f"{cls.__name__} has no type name")
    old = STAGES.get(cls.type)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        # a file names its stages' types: one name must mean one stage (a reload may re-register)
        raise ValueError(f"stage type {cls.type!r} is taken by {old.__module__}.{old.__qualname__}")
    STAGES[cls.type] = cls
    return cls


PLUGIN_GROUP = "gscomp.stages"  # entry-point group of installed packages' stages
PLUGIN_ENV = "GSCOMP_STAGES"  # comma-separated modules to import for stages of one's own
_plugins_loaded = False


def load_stage_plugins() -> None:
    """Import the stage modules outside gscomp, once: those named in $GSCOMP_STAGES (importable
    modules, e.g. on PYTHONPATH) and installed packages' ``gscomp.stages`` entry points. Their
    ``@register`` makes their types known to every verb, `gscomp decode` and `info` included.
    Only what the user installed or named is imported, never anything a file names."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import importlib
    import os
    from importlib.metadata import entry_points

    from ..errors import GscompError, one_line

    for name in filter(None, (m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except Exception as e:
            raise GscompError(f"{PLUGIN_ENV}: cannot import {name!r} ({type(e).__name__}: {one_line(e, 200)})") from None
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as e:
            raise GscompError(f"entry point {ep.name!r} ({ep.value}) of group {PLUGIN_GROUP}: cannot load it "
                              f"({type(e).__name__}: {one_line(e, 200)})") from None


def build_stage(desc: dict[str, Any]) -> Stage:
    from ..errors import GscompError

    desc = dict(desc)
    kind = desc.pop("type", None)
    if not isinstance(kind, str):  # (a list said "unhashable type: 'list'")
        raise GscompError(f"a stage's type must be a name, got {kind!r:.80}")
    if kind not in STAGES:
        load_stage_plugins()
    if kind not in STAGES:
        known = ", ".join(sorted(STAGES)) or "none"
        raise GscompError(f"unknown stage type {kind!r} (known: {known}; a stage of your own: name its module "
                          f"in {PLUGIN_ENV}, or install it with a {PLUGIN_GROUP!r} entry point)")
    try:
        return STAGES[kind](**desc)
    except (TypeError, ValueError, OverflowError) as e:  # unknown keys, or a value of the wrong kind
        known = [p.name for p in inspect.signature(STAGES[kind].__init__).parameters.values()
                 if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = sorted(set(desc) - set(known))
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(STAGES[kind].__init__).parameters.values()):
            raise GscompError(f"stage type {kind!r} has no parameter {', '.join(map(repr, unknown))} (its parameters: "
                              f"{', '.join(known)})") from None
        raise GscompError(f"bad parameters for stage {kind!r}: {e}") from None
