"""Argument and output helpers shared by the verbs (not a verb itself)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ..errors import GscompError

HELP_FLAGS = ("-h", "--help")

# Hydra's options that take a value: `--cfg job` is one option, not an option and a positional
# argument `job` (which would be read as MODEL, IN or OUT).
HYDRA_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp",
                      "--config-dir", "-cd", "--experimental-rerun"}
# `--info` takes a value only when one of these follows (Hydra: nargs="?", const="all").
HYDRA_INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def own_command() -> str:
    """How to run this gscomp again from the user's shell, for the hints commands print: `gscomp`
    when that is this installation on PATH, else the path it was started by (a virtual environment
    that is not activated: `.venv/bin/gscomp`), else `python -m gscomp` with this interpreter.
    From the interpreter's own command line (a Hydra app's sys.argv names the verb instead): a
    console script runs as `PYTHON SCRIPT ARGS...`."""
    args = getattr(sys, "orig_argv", [])
    script = args[1] if len(args) > 1 else ""
    if Path(script).name != "gscomp":
        return f"{sys.executable} -m gscomp"
    found = shutil.which("gscomp")
    if found and Path(found).resolve() == Path(script).resolve():
        return "gscomp"
    return script if os.sep in script else "gscomp"


def split_args(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Split command-line arguments into (positionals, options, Hydra overrides), order kept.

    - An argument starting with ``-`` is an option; Hydra's options that take a value keep it.
    - An argument that exists on disk is a positional path, even when it looks like an override
      (a sweep's ``lr=0.01/point_cloud.ply``, a file named ``~x.ply``).
    - Otherwise ``key=value`` and Hydra's delete syntax ``~key`` are overrides; the rest are
      positionals (an output that does not exist yet, or a missing input the verb reports).
    """
    pos: list[str] = []
    opts: list[str] = []
    overrides: list[str] = []
    i, n_opts = 0, len(options_part(argv))
    while i < len(argv):
        a = argv[i]
        i += 1
        if i - 1 == n_opts:  # the `--` itself
            continue
        if a.startswith("-") and i <= n_opts:
            opts.append(a)
            nxt = argv[i] if i < len(argv) else None
            if nxt is not None and (a in HYDRA_VALUE_FLAGS or (a in ("--info", "-i") and nxt in HYDRA_INFO_TOPICS)):
                opts.append(nxt)
                i += 1
        elif _on_disk(a):
            pos.append(a)
        elif "=" in a or a.startswith("~"):
            overrides.append(a)
        else:
            pos.append(a)
    return pos, opts, overrides


def options_part(argv: list[str]) -> list[str]:
    """The arguments before a first ``--``: after it nothing is an option (`-- -x.ply`)."""
    return argv[:argv.index("--")] if "--" in argv else argv


def file_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(positionals, options) of a file verb (`decode`, `info`), a ``--`` ending the options."""
    head = options_part(argv)
    return [a for a in head if not a.startswith("-")] + argv[len(head) + 1:], [a for a in head if a.startswith("-")]


def _on_disk(a: str) -> bool:
    try:
        return Path(a).exists()
    except OSError:  # a name too long for the file system (a long override) is no path
        return False


def wants_help(argv: list[str]) -> bool:
    return any(a in HELP_FLAGS for a in options_part(argv))


def usage_error(usage: str, opts: list[str] = ()) -> GscompError:
    """The one-line error for a bad command line, naming the first unknown option if any."""
    if opts and _on_disk(opts[0]):  # a file whose name starts with a dash
        return GscompError(f"unknown option {opts[0]} (a file of that name: put `--` before it, or write ./{opts[0]}); {usage}")
    return GscompError(f"unknown option {opts[0]}; {usage}" if opts else usage)


def stdout_console():
    """A rich console on stdout. Where stdout is a file or a pipe, rich would wrap at 80 columns
    and split a message (or a table's title) over lines, and cut a table's cells short ("…");
    there each message stays one line and tables get 200 columns."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich's own handler exits with status 1; the CLI's (BrokenPipeError: the reader
            # has all it wanted, e.g. `gscomp info x.gsz | head -1`) exits 0 like the reader
            self.quiet = True
            raise BrokenPipeError

    console = _Console(file=sys.stdout)
    if not console.is_terminal:
        console.soft_wrap = True
        console.width = max(console.width, 200)
    return console


__all__ = ["split_args", "file_args", "options_part", "wants_help", "usage_error", "stdout_console", "HELP_FLAGS"]
