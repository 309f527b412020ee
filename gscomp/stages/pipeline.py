"""A pipeline: ordered, named stages that together own every `Splats` field exactly once.

Config shape (one Hydra file per preset in configs/pipeline/):

    name: high
    sh_degree: null            # null = keep the input's degree, else reduce/pad to this
    stages:                    # a dict keyed by stage name, so `pipeline.stages.positions.bits=14`
      positions: {type: positions, bits: 16}
      attributes: {type: attributes, quat_step: 0.004, ...}

Encoding: bake every stage in order, apply every reorder permutation, then per stage encode and
immediately decode its sections, putting the *reconstructed* fields into ``ctx.attrs`` so later
stages condition on exactly what the decoder will see. Section names are namespaced as
``<stage name>/<section name>`` in the file.
"""
from __future__ import annotations

import copy
import inspect
import json
import os
import re
import warnings
from typing import Any, Sequence

import torch

from ..errors import FormatError, GscompError, Note
from ..memory import check_decode_memory
from ..splats import FIELDS, OPACITY_LOGIT_MAX, Splats, first_nonfinite_row, num_sh_rest, take_rows
from ..codec.posgrid import CORE_DEFAULT
from .base import PLUGIN_ENV, PLUGIN_GROUP, STAGES, CodingContext, Section, Stage, build_stage, load_stage_plugins

MAX_N = 1 << 28
# codec "padding": zero bytes that keep n <= 4096 + 8 * payload bytes, and the stages' min_payload
PAD_SECTION = "_pad/zeros"


def max_n_for_payload(payload_bytes: int) -> int:
    """Sanity rule checked before any allocation: a file may hold at most 4096 Gaussians plus 8 per
    payload byte (real data costs far more than 1 bit per Gaussian; the writer pads the rare
    degenerate file, e.g. thousands of identical Gaussians, with a padding section)."""
    return min(MAX_N, 4096 + 8 * payload_bytes)


# Set to 1 to decode a file that breaks a stage's work bound (Stage.min_payload), as PIL's
# MAX_IMAGE_PIXELS can be lifted: for a trusted file whose scene asks for that much work.
NO_WORK_LIMIT = "GSCOMP_NO_WORK_LIMIT"


def _by_stage(pipe: "Pipeline", sections: list[Section]) -> dict[str, dict[str, Section]]:
    """Each stage's sections under their local names (the padding section belongs to none)."""
    out: dict[str, dict[str, Section]] = {nm: {} for nm in pipe.names}
    for s in sections:
        if s.name == PAD_SECTION and s.codec == "padding":
            continue
        stage_name, _, local = s.name.partition("/")
        out[stage_name][local] = Section(local, s.codec, s.payload)
    return out


def _build(desc: dict[str, Any], name: str | None = None) -> Stage:
    """The stage ``desc`` describes; an error about it names the stage when its name is not its
    type (two `rvq` stages, `rvq2` added beside `rvq`)."""
    try:
        return build_stage(desc)
    except GscompError as e:
        if name is None or name == desc.get("type"):
            raise
        raise GscompError(f"stage {name!r}: {e}") from None


class StageNotInstalled(FormatError):
    """A .gsz names a stage type this installation does not have: the file need not be damaged
    (`gscomp info` still shows its sizes), but it cannot be decoded here."""

    def __init__(self, kind: str):
        self.kind = kind
        super().__init__(f"this file uses stage type {kind!r}, which is not installed here (a stage of "
                         f"someone's own: name its module in {PLUGIN_ENV}, or install its package with a "
                         f"{PLUGIN_GROUP!r} entry point)"[:300])


def _build_for_decoding(desc: dict[str, Any]) -> Stage:
    """`_build` for a .gsz header: a value of an encoder-only param (`Stage.encoder_params`) that
    today's checks refuse, written by an older gscomp with a wider range, plays no part in
    decoding and does not make the file unreadable; nor does a param this stage type does not
    know (the spec: a decoder ignores all but its own). They are kept as written in ``params``.
    A stage type not installed here is said as such: the file need not be damaged."""
    kind = desc.get("type")
    if isinstance(kind, str) and kind not in STAGES:
        try:
            load_stage_plugins()
        except GscompError as e:  # (a GSCOMP_STAGES module that does not import)
            raise FormatError(str(e)) from None
        if kind not in STAGES:
            raise StageNotInstalled(kind)
    try:
        return _build(desc)
    except GscompError:
        cls = STAGES.get(kind) if isinstance(kind, str) else None
        sig = inspect.signature(cls.__init__).parameters if cls is not None else {}
        open_ended = any(a.kind is inspect.Parameter.VAR_KEYWORD for a in sig.values())
        skip = [k for k in desc if k != "type" and (k in getattr(cls, "encoder_params", ())
                                                    or (cls is not None and not open_ended and k not in sig))]
        if not skip:
            raise
        st = _build({k: v for k, v in desc.items() if k not in skip})  # (an error here is a decoder param's)
        st.params.update({k: desc[k] for k in skip})
        return st


def check_header_counts(header: dict[str, Any], sections: list[Section]) -> tuple[int, int, dict[str, Any], int]:
    """The checks of `Pipeline.check_header` that need no stage type: (n, SH degree, pipeline
    description, payload bytes), n within what the payload bytes can hold."""
    n = header.get("n")
    deg = header.get("sh_degree")
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_N:
        raise FormatError(f"bad Gaussian count {n!r} in the header"[:200])
    if not isinstance(deg, int) or isinstance(deg, bool) or not 0 <= deg <= 3:
        raise FormatError(f"bad SH degree {deg!r} in the header"[:200])
    desc = header.get("pipeline")
    if not isinstance(desc, dict) or not isinstance(desc.get("stages"), list):
        raise FormatError("the header has no pipeline description")
    payload = sum(len(s.payload) for s in sections)
    if n > max_n_for_payload(payload):
        raise FormatError(f"header claims {n} Gaussians but the file holds only {payload} payload bytes")
    return n, deg, desc, payload


def _plain(obj):
    """OmegaConf containers -> plain python (dict/list), leaving plain values alone."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return obj


def _owned(nm: str, st: Stage, decoded: dict[str, Any]) -> dict[str, Any]:
    """A stage's decoded fields, checked to be its own: a Splats field it does not own would
    silently replace its owner's (other keys are side information for later stages)."""
    foreign = sorted(k for k in decoded if k in FIELDS and k not in st.owns)
    if foreign:
        raise GscompError(f"stage {nm!r} ({st.type}) decoded {', '.join(foreign)}, which it does not own")
    return decoded


def field_shapes(n: int, sh_degree: int) -> dict[str, tuple[int, ...]]:
    """The shape of each decoded Splats field."""
    return {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,), "sh0": (n, 1, 3),
            "shN": (n, num_sh_rest(sh_degree), 3)}


STAGE_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _check_permutation(perm: torch.Tensor, n: int, kind: str) -> None:
    """A stage's reorder must return each index 0..n-1 exactly once (else Gaussians vanish or repeat)."""
    perm = torch.as_tensor(perm)
    ok = (perm.dim() == 1 and len(perm) == n and not perm.is_floating_point()
          and (n == 0 or (int(perm.min()) >= 0 and int(perm.max()) < n
                          and bool((torch.bincount(perm.long(), minlength=n) == 1).all()))))
    if not ok:
        raise GscompError(f"stage {kind!r}: reorder must return a permutation of 0..{n - 1}")


class Pipeline:
    """An ordered list of named stages in which every `Splats` field has exactly one owner: what a
    `.gsz` is coded by, and described in its header (so the decoder rebuilds it from the file).

    Build one with `Pipeline.preset` (a Hydra preset of configs/pipeline/, with overrides) or
    `Pipeline.from_config` (a mapping of the same shape); `gscomp.codec.encode_gsz` codes with it.
    ``sh_degree``: None keeps the input's SH degree, 0..3 reduces (or zero-pads) to that degree.
    Encoding does not change the pipeline, so one may serve several threads at once."""

    def __init__(self, stages: list[Stage], names: list[str] | None = None, name: str = "custom",
                 sh_degree: int | None = None):
        self.stages = list(stages)
        self._noted = False  # (coding_notes said)
        self.names = list(names) if names is not None else [s.type for s in self.stages]
        self.name = name
        if sh_degree is not None and not (isinstance(sh_degree, int) and not isinstance(sh_degree, bool)
                                          and 0 <= sh_degree <= 3):
            raise GscompError(f"pipeline sh_degree must be null or 0..3, got {sh_degree!r}")
        self.sh_degree = sh_degree
        if len(self.names) != len(self.stages) or len(set(self.names)) != len(self.names):
            raise GscompError(f"pipeline stage names must be unique, got {self.names}")
        for nm, st in zip(self.names, self.stages):
            if not isinstance(nm, str) or not STAGE_NAME_RE.match(nm):  # (a section's name starts with it)
                raise GscompError(f"bad stage name {nm!r}: use 1-64 letters, digits, '_', '.' or '-'"[:200])
            if (reserved := sorted({"name", "type"} & set(st.params))):
                raise GscompError(f"stage {nm!r}: a parameter may not be called {' or '.join(reserved)} (the header "
                                  "names each stage and its type with these keys)")
            try:  # what goes into the header, checked now rather than after a whole encode
                json.dumps(st.describe(), allow_nan=False)
            except (TypeError, ValueError) as e:
                raise GscompError(f"stage {nm!r}: params must be plain JSON values (finite numbers, strings, "
                                  f"lists, dicts): {e}") from None
        self._check_owners()
        have: set[str] = set()  # what the stages before each one hand on through ctx.attrs
        for i, st in enumerate(self.stages):
            for key, msg in st.needs().items():
                if key not in have:
                    if any(key in (*later.owns, *later.provides) for later in self.stages[i + 1:]):
                        msg += " (stages run in the order they are listed; one added by an override or after a " \
                               "defaults: preset comes last)"
                    raise GscompError(msg)
            have.update((*st.owns, *st.provides))
        # The file keeps one order, that of the last stage that reorders (`positions` codes its
        # Morton order and the decoder rebuilds it without a permutation): a second reordering
        # stage either loses its order or breaks that coding.
        sorting = [nm for nm, st in zip(self.names, self.stages) if type(st).reorder is not Stage.reorder]
        if len(sorting) > 1:
            raise GscompError(f"stages {', '.join(map(repr, sorting))} each reorder the Gaussians, but a .gsz keeps one "
                              "order: a stage that sorts them (a grid sort) must own and code means itself")

    def check_input(self, sh_degree: int, source: str = "the input has SH degree") -> None:
        """Before any work: this pipeline can code splats of SH degree ``sh_degree`` (reduced or
        padded to its own ``sh_degree`` when it sets one; a pipeline that sets one was checked when
        built). ``source`` says where the degree comes from (train-and-compress: "train.sh_degree is")."""
        deg = sh_degree if self.sh_degree is None else self.sh_degree
        if deg > 0 and "shN" not in self.owner:
            raise GscompError(f"{source} {deg} but no stage owns shN (set pipeline.sh_degree=0 to drop it)")
        for st in self.stages:
            st.check_input(deg)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: dict) -> "Pipeline":
        """A pipeline from a config mapping ``{name, sh_degree, stages: {stage name: {type:
        stage type, param: value, ...}}}`` (a composed Hydra config or a plain dict), in the
        stages' order; a stage given as None is left out."""
        cfg = _plain(cfg)
        if not isinstance(cfg, dict):
            raise GscompError("pipeline config must be a mapping with name, sh_degree and stages")
        unknown = set(cfg) - {"name", "sh_degree", "stages"}
        if unknown:
            raise GscompError(f"unknown pipeline config keys: {sorted(unknown)}")
        stages_cfg = cfg.get("stages")
        if not isinstance(stages_cfg, dict) or not stages_cfg:
            raise GscompError("pipeline config needs a non-empty `stages` mapping {name: {type: ...}}")
        for nm, desc in stages_cfg.items():
            if desc is not None and (not isinstance(desc, dict) or "type" not in desc):
                raise GscompError(f"pipeline stage {nm!r} needs a `type`")
        # `~pipeline.stages.x` or `x: null` removes a stage. Built last to first: the importance
        # stage of compact and c3dgs copies (by interpolation) the params of the stages after it, so
        # a bad value is then named by the key the user set (positions.core, not importance.pos_core).
        built = [(str(nm), _build(dict(desc), str(nm))) for nm, desc in reversed(stages_cfg.items()) if desc is not None]
        names, stages = [nm for nm, _ in built[::-1]], [st for _, st in built[::-1]]
        sh = cfg.get("sh_degree")
        return cls(stages, names, name=str(cfg.get("name", "custom")), sh_degree=sh)

    @classmethod
    def preset(cls, name: str = "high", overrides: Sequence[str] = (), config_dir=None) -> "Pipeline":
        """A preset of configs/pipeline/ (lossless-ish, high, medium, low, compact, c3dgs), or of
        ``config_dir``/pipeline/ (`gscomp compress --config-dir`), with ``gscomp compress``'s
        overrides, e.g. ``["pipeline.stages.positions.bits=12"]``."""
        from ..commands.compress import compose_pipeline  # (Hydra composes the presets)
        from ..hydra_app import check_config_dir

        if not isinstance(name, str):
            raise GscompError(f"preset: the name must be a string, got {name!r:.80}")
        if isinstance(overrides, str):
            overrides = [overrides]  # (one override, not a sequence of one-character ones)
        if not all(isinstance(o, str) for o in overrides):
            raise GscompError(f"preset: overrides must be strings key=value, got {list(overrides)!r:.120}")

        cdir = None if config_dir is None else check_config_dir(config_dir)
        return cls.from_config(compose_pipeline([f"pipeline={name}", *overrides], cdir))

    def describe(self) -> dict[str, Any]:
        """What the `.gsz` header stores of this pipeline: name, sh_degree and each stage's type
        and params (`from_description` rebuilds it)."""
        return {
            "name": self.name,
            "sh_degree": self.sh_degree,
            "stages": [{"name": nm, **st.describe()} for nm, st in zip(self.names, self.stages)],
        }

    @classmethod
    def from_description(cls, desc: dict[str, Any]) -> "Pipeline":
        try:
            stages, names = [], []
            for d in desc["stages"]:
                d = dict(d)
                names.append(str(d.pop("name")))
                stages.append(_build_for_decoding(d))
            return cls(stages, names, name=str(desc.get("name", "")), sh_degree=desc.get("sh_degree"))
        except FormatError:
            raise
        except (GscompError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise FormatError(f"bad pipeline description in the .gsz header: {e}") from None

    def _check_owners(self, sh_degree: int | None = None) -> None:
        owner: dict[str, str] = {}
        for nm, st in zip(self.names, self.stages):
            for f in st.owns:
                if f not in FIELDS:
                    raise GscompError(f"stage {nm!r} claims unknown field {f!r}")
                if f in owner:
                    raise GscompError(f"field {f!r} is owned by both stage {owner[f]!r} and {nm!r}")
                owner[f] = nm
        deg = self.sh_degree if sh_degree is None else sh_degree
        missing = [f for f in FIELDS if f not in owner and not (f == "shN" and deg in (None, 0))]
        if missing:
            raise GscompError(f"no stage owns {', '.join(missing)} (every Splats field needs exactly one owner)")
        self.owner = owner

    # ------------------------------------------------------------------ coding
    def encode(self, splats: Splats, state=None, progress=None,
               consume: bool = False) -> tuple[dict[str, Any], list[Section]]:
        """``consume``: the caller hands ``splats`` over and does not use it again (`gscomp
        compress`). Each reordered field then replaces its field in ``splats`` as soon as it is
        made, so the scene in its input order is freed field by field instead of staying alive
        beside the reordered copy (0.25 KB per Gaussian at SH 3).

        The pipeline itself is not changed: stages keep what one encode hands from `bake` to
        `encode` on themselves, so each call works on its own shallow copies of them (one Pipeline
        may encode in several threads at once)."""
        if not isinstance(splats, Splats):
            raise GscompError(f"encode: expected a Splats, got {type(splats).__name__}")
        splats.validate("input splats")  # (shapes and finite values, in the caller's dtype and device)
        given = splats if consume else None
        wide = splats.means.dtype != torch.float32
        splats = splats.detach().to("cpu", torch.float32)
        for name, t in splats.items() if wide else ():  # (float64 values beyond float32's range became inf)
            if (bad := first_nonfinite_row(t)) is not None:
                raise GscompError(f"input splats: {name} has values beyond float32's range (first at Gaussian {bad})")
        if (far := int((splats.opacities.abs() > OPACITY_LOGIT_MAX).sum())):
            warnings.warn(f"{far:,} opacity logits beyond +-{OPACITY_LOGIT_MAX:g} are coded as +-{OPACITY_LOGIT_MAX:g} "
                          "(the same render)", Note, stacklevel=2)
            splats = splats.replace(opacities=splats.opacities.clamp(-OPACITY_LOGIT_MAX, OPACITY_LOGIT_MAX))
        if self.sh_degree is not None:
            splats = splats.with_sh_degree(self.sh_degree)
        deg = splats.sh_degree
        self.check_input(deg)
        self.coding_notes()
        stages = [copy.copy(st) for st in self.stages]
        for i, (nm, st) in enumerate(zip(self.names, stages)):
            if progress is not None:  # (a post-hoc colour field fits itself here: a minute on a big scene)
                progress(f"preparing: {nm}", i, len(stages))
            st.progress = progress
            splats = st.bake(splats, state)
            if given is not None:  # (a bake that prunes or reorders: the input's fields are let go)
                for f in FIELDS:
                    setattr(given, f, getattr(splats, f))
        for st in stages:
            perm = st.reorder(splats)
            if perm is None:
                continue
            _check_permutation(perm, len(splats), st.type)
            for other in stages:
                other.reordered(perm)
            splats = splats.replace()  # changed field by field below: a bake may return an object held elsewhere
            for f in FIELDS:
                new = take_rows(getattr(splats, f), perm)
                setattr(splats, f, new)
                if given is not None:
                    setattr(given, f, new)  # the last holder of the field in the old order lets go
        n = len(splats)
        if n > MAX_N:
            raise GscompError(f"{n} Gaussians exceed the .gsz limit of {MAX_N}")
        ctx = CodingContext(n=n, sh_degree=deg, progress=progress)
        shapes = field_shapes(n, deg)  # (what the decoder will check)
        sections: list[Section] = []
        need = 0  # payload bytes the file must hold (the writer pads up to it)
        for i, (nm, st) in enumerate(zip(self.names, stages)):
            if progress is not None:
                progress(f"encoding: {nm}", i, len(stages))
            secs = st.encode(splats, ctx)
            for s in secs:  # (the container checks the characters; an empty name the decoder refuses)
                if not isinstance(s, Section) or not isinstance(s.name, str) or not s.name:
                    raise GscompError(f"stage {nm!r} returned {s!r:.80}: encode must return Sections with non-empty names")
            if i + 1 < len(stages):  # only later stages read ctx.attrs: skip it for the last
                decoded = _owned(nm, st, st.decode({s.name: s for s in secs}, ctx))  # what the decoder sees
                for f in FIELDS:  # (a file the decoder would refuse: finite stored values, e.g. an
                    # MLP's weights, can still compute an infinity)
                    if f in decoded and tuple(decoded[f].shape) != shapes[f]:
                        raise GscompError(f"stage {nm!r} decodes {f} of shape {tuple(decoded[f].shape)}, not {shapes[f]}: "
                                          "the decoder would refuse the file")
                    if f in decoded and (bad := first_nonfinite_row(decoded[f])) is not None:
                        raise GscompError(f"stage {nm!r} would decode {f} to non-finite values (first at "
                                          f"Gaussian {bad}), which no file may hold")
                ctx.attrs.update(decoded)
            sections += [Section(f"{nm}/{s.name}", s.codec, s.payload) for s in secs]
            need = max(need, st.min_payload(n, secs))
        payload = sum(len(s.payload) for s in sections)
        if n > max_n_for_payload(payload):
            need = max(need, -(-(n - 4096) // 8))
        if need > payload:
            sections.append(Section(PAD_SECTION, "padding", bytes(need - payload)))
        lo, hi = splats.bounds()
        header = {
            "format": "gsz",
            "n": n,
            "sh_degree": deg,
            "bounds": [lo.tolist(), hi.tolist()],
            "pipeline": self.describe(),
            "stage_header": ctx.header,
        }
        if splats.antialiased:  # (absent = classic: files of classic scenes are as before, version 1.0)
            header["antialiased"] = True
        try:  # the checks a reader makes before decoding (a stage of one's own can fail them)
            Pipeline.check_header(json.loads(json.dumps(header)), sections)
        except FormatError as e:
            raise GscompError(f"this pipeline would write a file that no decoder reads: {e}") from None
        return header, sections

    def coding_notes(self) -> None:
        """Notes on a pipeline of one's own that codes what nothing uses, or scores for other
        steps than it codes with (the presets tie them by interpolation); once per pipeline, so
        train-and-compress says them before training and not again when it encodes."""
        if self._noted:
            return
        self._noted = True
        for i, (nm, st) in enumerate(zip(self.names, self.stages)):
            if st.provides and not any(k in later.needs() for later in self.stages[i + 1:] for k in st.provides):
                warnings.warn(f"stage {nm!r} ({st.type}) hands on {', '.join(st.provides)}, which no stage after it "
                              "uses: its sections cost bytes for nothing", Note, stacklevel=3)
        imp = next((st for st in self.stages if st.type == "importance"), None)
        if imp is None:
            return
        pos = next((st for st in self.stages if st.type == "positions"), None)
        att = next((st for st in self.stages if st.type == "attributes"), None)
        core = CORE_DEFAULT  # (stored only when changed)
        pairs = [("pos_bits", imp.params.get("pos_bits"), pos, "bits", pos and pos.params.get("bits")),
                 ("pos_core", imp.params.get("pos_core", core), pos, "core", pos and pos.params.get("core", core))]
        for f, field in (("quat", "quats"), ("scale", "scales"), ("opacity", "opacities"), ("sh0", "sh0"), ("shN", "shN")):
            if att is not None and field in att.owns:  # (another stage's steps, e.g. R-VQ's, are its own)
                pairs.append((f"{f}_step", imp.params.get(f"{f}_step"), att, f"{f}_step", att.params.get(f"{f}_step")))
        differ = [f"importance.{a}={x} but {other.type}.{b}={y}" for a, x, other, b, y in pairs
                  if other is not None and x is not None and y is not None and x != y]
        if differ:
            warnings.warn(f"{'; '.join(differ)}: the importance scores weigh errors of other steps than those "
                          "coded (the presets set them equal: ${pipeline.stages.positions.bits}, ...)", Note, stacklevel=3)

    @classmethod
    def check_header(cls, header: dict[str, Any], sections: list[Section]) -> tuple["Pipeline", int, int, dict]:
        """Validate a read header against its sections without decoding any payload (what `gscomp
        info` trusts, and where decoding starts): (pipeline, n, SH degree, stage header)."""
        n, deg, desc, payload = check_header_counts(header, sections)
        pipe = cls.from_description(desc)
        try:
            pipe._check_owners(deg)
        except GscompError as e:
            raise FormatError(f"bad pipeline in the header: {e}") from None
        stage_header = header.get("stage_header", {})
        if not isinstance(stage_header, dict):
            raise FormatError("bad stage_header in the header")
        if not isinstance(header.get("antialiased", False), bool):
            raise FormatError(f"bad antialiased {json.dumps(header['antialiased'])} in the header (true or false)"[:200])
        for s in sections:
            stage_name, _, local = s.name.partition("/")
            if not (s.name == PAD_SECTION and s.codec == "padding") and (stage_name not in pipe.names or not local):
                raise FormatError(f"section {s.name!r} belongs to no stage of the pipeline")
        by_stage = _by_stage(pipe, sections)
        for nm, st in zip(pipe.names, pipe.stages):
            least = st.min_payload(n, list(by_stage[nm].values()))
            if payload < least and os.environ.get(NO_WORK_LIMIT) != "1":
                raise FormatError(f"stage {nm!r}: decoding {n} Gaussians takes work for a file of at least {least} "
                                  f"payload bytes, not {payload} (a crafted file? {NO_WORK_LIMIT}=1 decodes it anyway)")
        return pipe, n, deg, stage_header

    @classmethod
    def decode(cls, header: dict[str, Any], sections: list[Section], what: str = "file") -> Splats:
        """The `Splats` of a read header and its sections (`gscomp.codec.decode_gsz` reads them
        from a file), by the pipeline the header describes; ``what`` names the file in the error
        when this machine's memory cannot hold them."""
        pipe, n, deg, stage_header = cls.check_header(header, sections)
        check_decode_memory(n, deg, what)
        ctx = CodingContext(n=n, sh_degree=deg, header=stage_header)
        by_stage = _by_stage(pipe, sections)
        for nm, st in zip(pipe.names, pipe.stages):
            try:
                ctx.attrs.update(_owned(nm, st, st.decode(by_stage[nm], ctx)))
            except (GscompError, MemoryError):
                raise
            except Exception as e:  # a stage choking on corrupt data is still a format problem
                raise FormatError(f"stage {nm!r} could not decode its sections: {type(e).__name__}: {e}") from None
        if deg == 0 and "shN" not in ctx.attrs:
            ctx.attrs["shN"] = torch.zeros(n, 0, 3)
        shapes = field_shapes(n, deg)
        out = {}
        for f in FIELDS:
            t = ctx.attrs.get(f)
            if t is None or tuple(t.shape) != shapes[f]:
                got = None if t is None else tuple(t.shape)
                raise FormatError(f"decoded {f} has shape {got}, expected {shapes[f]}")
            out[f] = t.to(torch.float32).contiguous()
            # every value must be a finite float32: a file whose steps, codebooks or weights make
            # inf or NaN (only a crafted one: the encoder refuses such input) is invalid (spec §1)
            if (bad := first_nonfinite_row(out[f])) is not None:
                raise FormatError(f"decoded {f} has non-finite values (first at Gaussian {bad})")
        return Splats(**out, antialiased=header.get("antialiased", False))


__all__ = ["Pipeline"]
