"""Run a gscomp verb as a real Hydra app (overrides, ``--cfg job``, ``-m`` multirun, launchers).

    run_hydra("train", task_fn, argv) -> exit code

``task_fn(cfg) -> int | None`` runs once per job. Conventions shared by every verb:
- configs live in the repository's ``configs/`` folder (absolute path, so any working dir works);
- Hydra does not change the working directory, log to files, or write ``.hydra/`` folders: each
  verb writes its own resolved ``config.yaml`` next to its outputs (see `output_dir`);
- an exception inside a job is re-raised after Hydra returns, so the CLI prints one line
  ``error: ...`` (exit 2 for a `GscompError`, or 1 for an internal error) where Hydra would
  print a traceback;
- config errors (unknown key, bad group option, bad override syntax) of a single run are one
  ``error: ...`` line and exit status 2, and so are a sweep's (``-m``; each value of a sweep over
  a config group is composed before Hydra launches a job, `check_sweep`); with other Hydra flags
  they are Hydra's short messages, exit 2, never a traceback wall (unless ``HYDRA_FULL_ERROR=1``);
- a failed sweep whose folder we created and in which no job left anything removes it, with
  Hydra's ``multirun.yaml``;
- a single run that fails removes the ``out`` folder (and parents) it created while still empty;
- ``--config-dir DIR`` adds a folder of one's own configs (``DIR/pipeline/NAME.yaml`` is
  ``pipeline=NAME``) to Hydra's search path, for every verb (`take_config_dir`).
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Callable

import gscomp

from .errors import GscompError
from .fileio import FolderBusy

CONFIG_DIR = gscomp.data_dir("configs")


def output_dir(cfg) -> Path:
    """The job's output folder: Hydra's runtime output dir inside a Hydra app (``out`` for a single
    run, ``out/N`` for job N of a multirun), else ``cfg.out``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        pass
    return Path(str(cfg.get("out") or "outputs")).expanduser()


CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def take_option(argv: list[str], flags: tuple[str, ...], need: str) -> tuple[list[str], str | None]:
    """Split ``FLAG VALUE`` / ``FLAG=VALUE`` (FLAG any of ``flags``, named as the first in errors)
    off the arguments: (the rest, VALUE or None). ``need`` says what VALUE is."""
    rest, found, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        flag, eq, value = a.partition("=")
        if flag in flags:
            if found is not None:
                raise GscompError(f"{flags[0]} given twice")
            if not eq:
                value = argv[i + 1] if i + 1 < len(argv) else ""
                i += 1
            if not value:  # missing, or empty (`--cameras=` would look for a COLMAP model under ".")
                raise GscompError(f"{flags[0]} needs {need}")
            found = value
        else:
            rest.append(a)
        i += 1
    return rest, found


def take_config_dir(argv: list[str]) -> tuple[list[str], Path | None]:
    """Split ``--config-dir DIR`` (``-cd DIR``, ``--config-dir=DIR``) off the arguments; DIR comes
    back checked (`check_config_dir`), or None."""
    rest, found = take_option(argv, CONFIG_DIR_FLAGS, "a folder: --config-dir DIR (DIR/pipeline/NAME.yaml is pipeline=NAME)")
    found = None if found is None else Path(found).expanduser()
    if found is not None and any(a.partition("=")[0].lstrip("+~") == "hydra.searchpath" for a in rest):
        raise GscompError("give --config-dir or hydra.searchpath=..., not both")
    return rest, None if found is None else check_config_dir(found)


def check_config_dir(path) -> Path:
    """``path`` as a folder of one's own configs, absolute; refused when it is no folder, or holds
    a config that one of gscomp's own would hide (Hydra's search path puts gscomp's ``configs/``
    first, so a user's ``pipeline/high.yaml`` would be silently ignored)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise GscompError(f"--config-dir: no such folder: {path}")
    for yml in sorted([*path.glob("*.yaml"), *path.glob("*/*.yaml")]):
        rel = yml.relative_to(path)
        if (CONFIG_DIR / rel).is_file():
            raise GscompError(f"{yml} has the name of gscomp's own configs/{rel.as_posix()}, which Hydra "
                              "would use instead: give yours another name")
    return path.resolve()


def _overrides_first(argv: list[str]) -> list[str]:
    """The overrides, then Hydra's options (with their values): Hydra's command line takes the
    overrides as one run of arguments, so ``x=1 -m a=1,2`` would be refused as it stands."""
    from .commands.common import HYDRA_INFO_TOPICS, HYDRA_VALUE_FLAGS

    overrides, opts, i = [], [], 0
    while i < len(argv):
        a, nxt = argv[i], argv[i + 1] if i + 1 < len(argv) else None
        if not a.startswith("-"):
            overrides.append(a)
            i += 1
            continue
        take = 2 if nxt is not None and (a in HYDRA_VALUE_FLAGS or (a in ("--info", "-i") and nxt in HYDRA_INFO_TOPICS)) else 1
        opts += argv[i:i + take]
        i += take
    return overrides + opts


def searchpath_override(config_dir: Path) -> str:
    """The Hydra override that adds ``config_dir`` to the config search path."""
    return "hydra.searchpath=[" + quote_value("file://" + str(config_dir)) + "]"  # (not as_uri: Hydra does not undo %-escapes)


# Hydra's state is process-wide: two threads composing at once took each other's (a thread-pool
# service failed 1-3% of its encodes and was left with gscomp's Hydra state, qa36_A)
_HYDRA_LOCK = threading.RLock()


@contextlib.contextmanager
def own_hydra(version_base: str | None = "1.3"):
    """Hydra initialised on gscomp's configs for the ``with`` block, and the caller's own Hydra
    state (a running ``@hydra.main`` app, an ``initialize()`` of theirs, their version base) put
    back after it, untouched: library calls that compose a config must not reset the user's.
    One thread at a time (a lock): Hydra's state is the process's. A thread of the caller's that
    uses Hydra while one of gscomp's blocks runs sees gscomp's state, so services that compose
    configs of their own in other threads should build their `Pipeline`s once, up front."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.singleton import Singleton
    from hydra.version import VersionBase

    own = (GlobalHydra, VersionBase)  # (initialize_config_dir refuses an initialised GlobalHydra)
    with _HYDRA_LOCK:
        saved = {k: Singleton._instances.pop(k) for k in own if k in Singleton._instances}
        try:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=version_base):
                yield
        finally:
            for k in own:
                Singleton._instances.pop(k, None)
            Singleton._instances.update(saved)


def compose(config_name: str, overrides: list[str] | None = None, hydra_config: bool = False):
    """Compose a config from Python (tests, notebooks, other verbs) without running an app
    (``hydra_config``: with its ``hydra`` node)."""
    from hydra import compose as _compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with own_hydra():
            return _compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=hydra_config)
    # (ValueError: Hydra's checks of an override's value, "Config group override must be a string ...")
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise config_error(e) from None


def config_error(e: BaseException, prefix: str = "") -> GscompError:
    """A Hydra/OmegaConf error as one line: its first two lines (the second is often Hydra's fix,
    "To append to your config use +KEY=..."). A missing interpolation key, such as the importance
    stage's copy of a removed stage's param, also says which key to set."""
    from hydra.errors import OverrideParseException
    from omegaconf.errors import InterpolationKeyError

    lines = [line.strip() for line in str(e).strip().split("\n")]
    if len(lines) > 1 and lines[1].startswith("To append to your config use +"):
        key = lines[1].split("+", 1)[1].split("=", 1)[0]
        if key.split(".")[0] not in OPEN_ROOTS:  # (the hint would add a key nothing reads: `check_additions`)
            lines[1] = "No such setting (`--cfg job` lists them)."
    msg = " ".join(lines[:2]).strip() or type(e).__name__
    if lines[0].startswith("Ambiguous value"):  # a comma: its list, string and sweep readings
        msg = " ".join(lines[:4])
    if isinstance(e, OverrideParseException):  # (its second line is a link to the grammar)
        msg = (f"cannot parse the override {e.override!r}: {lines[0]} (a value with spaces, brackets, "
               f"commas, quotes or '=' is taken literally when quoted: \"KEY='VALUE'\")")
    key = getattr(e, "full_key", None)
    if isinstance(e, InterpolationKeyError):
        msg = lines[0]  # (its full_key may be a key that copies the broken one, not the broken one)
        if key and "'pipeline.stages." in lines[0]:  # a copy of a removed stage's param
            msg = f"{key} copies a key that is not there ({lines[0]}): set {key}=VALUE yourself"
    return GscompError(prefix + msg)


def _make_out_dir(out: Path) -> list[Path]:
    """Make the run's (or sweep's) folder, as Hydra would before the job runs, but with a failure
    as one line (Hydra's is a traceback). Returns the folders made, deepest first."""
    created = _missing_dirs(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GscompError(f"cannot create the output folder {out}: {e.strerror or e}") from None
    return created


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    for p in (path.absolute(), *path.absolute().parents):
        if p.exists():
            break
        missing.append(p)
    return missing


_GRAMMAR = set("[]{}()'\"\\=")


def quote_value(s: str) -> str:
    """``s`` as a single-quoted Hydra override value (any characters, taken literally)."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_literal_value(arg: str) -> str:
    """``key=value`` with the value single-quoted where Hydra's override grammar would not take it
    as the plain string it is:
    - a path that exists on disk, with a space, comma or grammar character in it
      (``data.path=/scans/scene (1)``: as for positional arguments, what exists is a path);
    - a value with non-ASCII characters (``data.path=/scans/café``), which the grammar only takes
      quoted; a sweep ``a,b`` has each item quoted;
    - a value starting with ``~`` (``data.path=~/scans/garden``), expanded to the home folder as
      the shell does for ``out=~/x`` but not for a dotted key; the grammar has no unquoted ``~``
      (in a sweep ``~/a,~/b``, each such item).
    Other values with grammar characters (lists, quotes, escapes, interpolations) are left as
    they are."""
    if arg.startswith("-") or "=" not in arg:
        return arg
    key, value = arg.split("=", 1)
    if value.startswith("~") and "," not in value:
        return key + "=" + quote_value(os.path.expanduser(value))
    if "," in value and not _GRAMMAR & set(value) and any(v.startswith("~") for v in value.split(",")):
        return key + "=" + ",".join(quote_value(os.path.expanduser(v)) if v.startswith("~") else v
                                    for v in value.split(","))
    if value[:1] not in ("'", '"') and (_GRAMMAR | set(" ,")) & set(value) and _exists(value):
        return key + "=" + quote_value(value)
    if value.isascii() or _GRAMMAR & set(value):
        return arg
    return key + "=" + ",".join(quote_value(v) for v in value.split(","))


def _exists(path: str) -> bool:
    try:
        return Path(path).expanduser().exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


# Where '+KEY=VALUE' may add a key: a stage's params and a loader's options are checked by their
# readers (a typo there is refused by name); anywhere else an added key is read by nothing, so a
# typo that Hydra's own hint ("To append to your config use +train.step=10") turned into an
# addition passed in silence, and config.yaml recorded it.
OPEN_ROOTS = ("pipeline", "data", "hydra")


def check_additions(config_name: str, argv: list[str], prog: str, config_dir: Path | None = None) -> None:
    """Refuse '+KEY=VALUE' / '++KEY=VALUE' overrides outside `OPEN_ROOTS` (one line), unless KEY
    names a config group (``+experiment=short`` from ``--config-dir``) or a setting that is there
    (``++train.steps=3`` sets it)."""
    from omegaconf import OmegaConf

    base = None
    for a in argv:
        if not (a.startswith("+") and "=" in a):
            continue
        key = a.lstrip("+").split("=", 1)[0]
        name = key.split("@")[0]
        if name.split(".")[0] in OPEN_ROOTS or _is_group(name, config_dir):
            continue
        if base is None:
            base = _compose_as_given(config_name, [o for o in argv if not o.startswith(("-", "+"))])
        if OmegaConf.select(base, name, default=_ABSENT) is _ABSENT:
            raise GscompError(f"{key}: no such setting, so '+' would add a key that nothing reads (only pipeline.*, "
                              f"data.* and hydra.* take new keys; `{prog} --cfg job` lists the settings)")


_ABSENT = object()


def _is_group(name: str, config_dir: Path | None) -> bool:
    """Whether an override's key ``name`` is a config group (``pipeline``, ``hydra/launcher``)."""
    return "/" in name or any((d / name).is_dir() for d in (CONFIG_DIR, config_dir) if d is not None)


def _compose_as_given(config_name: str, overrides: list[str]):
    """The config with ``overrides``, or without them when they do not compose (a sweep's
    ``a,b``, a config of one's own): what keys there are, not whether the run is valid."""
    try:
        return compose(config_name, overrides)
    except GscompError:
        return compose(config_name, [])


def run_hydra(config_name: str, task_fn: Callable, argv: list[str], prog: str | None = None) -> int:
    """Run ``task_fn`` as the Hydra app ``config_name`` with command-line ``argv``."""
    prog = prog or f"gscomp {config_name}"
    argv, config_dir = take_config_dir(argv)
    check_additions(config_name, argv, prog, config_dir)
    argv = _overrides_first([quote_literal_value(a) for a in argv])
    if config_dir is not None:
        argv.insert(0, searchpath_override(config_dir))
    created: list[Path] = []  # the output folders this run creates
    if not any(a.startswith("-") for a in argv):
        # plain single run: compose once up front so a config error (unknown key, bad group option)
        # is one `error: ...` line; sweeps and Hydra flags (-m, --cfg, --help) go to Hydra as they are
        cfg = compose(config_name, argv)
        out = cfg.get("out")
        if out:
            created = _make_out_dir(Path(str(out)).expanduser())
            argv.append(f"out={quote_value(str(out))}")  # (the folder made: Hydra's ${now:...} would be later)
    elif all(a in SWEEP_FLAGS or not a.startswith("-") for a in argv):
        # a sweep and nothing else of Hydra's: its config errors are one `error: ...` line too,
        # before Hydra launches anything or writes out/multirun.yaml
        sweep_dir = check_sweep(config_name, argv, config_dir)
        if sweep_dir is not None:
            created = _make_out_dir(sweep_dir)
            first_opt = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
            argv.insert(first_opt, f"hydra.sweep.dir={quote_value(str(sweep_dir))}")  # (the folder made, as above)
    elif any(a in ("-h", "--help") for a in argv):
        # Hydra's help is headed "<app_name> is powered by Hydra"; by default the app name is this
        # module's (hydra_app): name the verb instead.
        argv = [f"hydra.help.app_name='{prog}'", *argv]
    code = 1
    try:
        code = _run_app(config_name, task_fn, argv, prog)
        return code
    except FolderBusy:  # out is another run's now (two runs started at once): not ours to remove
        created = []
        raise
    finally:
        if code != 0:
            # a failed run (bad data path, bad value) leaves no empty output folder behind; only
            # folders it created and that are still empty go (rmdir refuses any other). A sweep
            # folder of ours that holds nothing but Hydra's multirun.yaml (every job failed) is empty.
            if created and created[0].is_dir() and [p.name for p in created[0].iterdir()] == ["multirun.yaml"]:
                (created[0] / "multirun.yaml").unlink()
            for d in created:
                try:
                    d.rmdir()
                except OSError:
                    break


SWEEP_FLAGS = ("-m", "--multirun")
# Each value of a sweep over a config group (pipeline=a,b,c) is composed, as each may be missing;
# any other sweep is composed with its first value only (a key's name is what composing checks).
MAX_SWEEP_CHECKS = 64


def check_sweep(config_name: str, argv: list[str], config_dir: Path | None = None) -> Path | None:
    """A sweep's overrides composed up front, so that an unknown key or a missing group option is
    one `error: ...` line (Hydra would print its several lines per job and leave multirun.yaml).
    Only choice and range sweeps are expanded; others (interval, glob, a sweeper plugin's own)
    are left to Hydra. Returns the sweep's folder (``hydra.sweep.dir``), or None when unknown."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer
    from hydra.errors import HydraException

    overrides = [a for a in argv if a not in SWEEP_FLAGS]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise config_error(e) from None
    fixed, sweeps, intervals = [], [], []  # sweeps: (override text of each value, is it a config group?)
    for o in parsed:
        if not o.is_sweep_override():
            fixed.append(o.input_line)
            continue
        if o.key_or_group == "out":
            raise GscompError(f"{o.input_line}: a sweep writes job N to out/N, so it takes one out")
        if isinstance(o.value(), IntervalSweep):
            intervals.append(o.input_line)
        if not isinstance(o.value(), (ChoiceSweep, RangeSweep)):
            continue
        try:
            values = [str(v) for v in o.sweep_iterator(transformer=Transformer.encode)]
        except HydraException:  # (a glob nested in a choice needs Hydra's config loader)
            continue
        head = o.get_key_element() + "="  # (with its +, ++ or ~, and @package)
        if values:
            sweeps.append(([head + v for v in values], _is_group(o.key_or_group, config_dir)))
    firsts = [texts[0] for texts, _ in sweeps]
    cfg = compose(config_name, fixed + firsts, hydra_config=True)
    if intervals and str(cfg.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper"):  # (Hydra: a traceback)
        raise GscompError(f"{intervals[0]}: an interval is sampled by a sweeper plugin (such as hydra/sweeper=optuna); "
                          "Hydra's basic sweeper takes a,b,c, choice(...), range(...) and glob(...)")
    checks = 1
    for i, (texts, group) in enumerate(sweeps):
        for text in texts[1:] if group else ():
            if checks >= MAX_SWEEP_CHECKS:
                break
            compose(config_name, fixed + firsts[:i] + [text] + firsts[i + 1:])
            checks += 1
    try:
        return Path(str(cfg.hydra.sweep.dir)).expanduser()
    except Exception:  # (an interpolation only a running job can resolve)
        return None


def _failed_job(e: Exception) -> Exception:
    """In a sweep, a job that failed: its output folder goes if it is still empty, and a user
    error names the job (the other jobs run on; the sweep exits with this error)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
    except ValueError:  # not inside a Hydra job
        return e
    if hc.mode != RunMode.MULTIRUN:
        return e
    try:
        if not isinstance(e, FolderBusy):  # (then it is another run's folder)
            Path(hc.runtime.output_dir).rmdir()  # only when empty
    except OSError:
        pass
    if isinstance(e, GscompError):
        return type(e)(f"job {hc.job.num} ({' '.join(hc.overrides.task)}): {e}")
    return e


def _first_of(errors: list[BaseException]) -> BaseException:
    """The error to report: the first, saying how many other sweep jobs failed too."""
    e = errors[0]
    if len(errors) > 1 and isinstance(e, GscompError):
        return type(e)(f"{e} (and {len(errors) - 1} more failed job{'s' if len(errors) > 2 else ''})")
    return e


def _run_app(config_name: str, task_fn: Callable, argv: list[str], prog: str) -> int:
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    errors: list[BaseException] = []
    codes: list[int] = []

    @hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")
    def _app(cfg) -> None:
        try:
            codes.append(int(task_fn(cfg) or 0))
        except KeyboardInterrupt as e:
            errors.append(e)
            raise
        except Exception as e:
            # Keep Hydra from formatting it as a traceback; the CLI reports it in one line (user
            # errors and the file system's as such, anything else as an internal error).
            errors.append(_failed_job(e))

    old_argv = sys.argv
    sys.argv = [prog, *argv]
    try:
        _app()
    except SystemExit as e:  # Hydra's own error path (config errors, --help) ends in sys.exit
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if errors and not isinstance(errors[0], KeyboardInterrupt):
            raise _first_of(errors) from None
        return 0 if code == 0 else 2
    except KeyboardInterrupt:
        if errors:
            raise errors[0] from None
        raise
    except ValueError as e:  # Hydra's own checks of its flags ("Only one of --run, --multirun, --cfg ...")
        if errors:
            raise _first_of(errors) from None
        raise GscompError(str(e).strip().split("\n")[0]) from None
    finally:
        sys.argv = old_argv
        GlobalHydra.instance().clear()  # allow another app in the same process (tests, demo)
    if errors:
        raise _first_of(errors)
    return max(codes) if codes else 0


__all__ = ["run_hydra", "compose", "own_hydra", "output_dir", "take_config_dir", "check_config_dir", "searchpath_override", "CONFIG_DIR"]
