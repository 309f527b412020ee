"""`gscomp` console script: one verb per user flow.

Verbs that take a scene or training settings (`train`, `eval`, `demo`, and `compress` from images,
also spelled `train-and-compress`) are Hydra apps: every `key=value` override, `--cfg job`, and `-m`
multirun work as in any Hydra app. File verbs (`compress IN OUT.gsz`, `decode`, `info`, `view`) take
plain arguments; an argument that exists on disk is a path even when it contains `=`
(see `gscomp.commands.common.split_args`). `gscomp VERB --help` prints the verb's usage on stdout.

User errors (`GscompError`) print one line `error: ...` and exit with status 2. So do errors of
the file system (OSError) and running out of memory. Anything else is a bug of ours: one
`error: internal error ...` line and status 1, with the traceback only when GSCOMP_DEBUG=1.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings

USAGE = """usage: gscomp VERB [ARGS] [key=value ...]

verbs:
  demo                       train-and-compress the embedded synthetic scene, decode, report
  train   [key=value ...]    train a 3DGS scene (data=colmap|blender|ngp|synthetic data.path=DIR out=OUT)
  eval    MODEL [key=value]  PSNR/SSIM(/LPIPS) of a .ply/.gsz/checkpoint on a scene's test views
  compress IN OUT.gsz [pipeline=PRESET]        post-hoc: compress a splat file IN to .gsz; IN is a .ply,
                                               .spz, .splat, .ksplat, PlayCanvas compressed.ply or
                                               SOG (folder, meta.json or .sog)
  compress data=... pipeline=c3dgs out=OUT     train-and-compress from images
  train-and-compress data=... pipeline=c3dgs out=OUT   the same
  decode  IN.gsz OUT.ply|.spz|.splat           decode a .gsz to a standard splat file
                                               (OUT.compressed.ply: PlayCanvas's compressed PLY); IN
                                               may be any file compress reads: a format converter
  info    IN.gsz [--json]                      header, counts, bytes per section and per attribute
  view    FILE                                 interactive viewer for .gsz/.ply/.spz/.splat/.ksplat/SOG

`gscomp VERB --help` shows a verb's usage (a Hydra verb's: its config); `gscomp --version`.
"""

VERBS = ("train", "eval", "demo", "compress", "train-and-compress", "decode", "info", "view")
# verbs whose module under gscomp.commands has another name (`train-and-compress` is `compress`
# from images: the same code, without the post-hoc IN OUT.gsz form)
MODULES = {"train-and-compress": "train_compress"}


def _out_of_memory(e: BaseException) -> bool:
    """A failed allocation: MemoryError, or torch's, which is a RuntimeError (its CPU allocator's
    "can't allocate memory"; torch.OutOfMemoryError on a GPU)."""
    if isinstance(e, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(e, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(e, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(e)


def notes_as_lines() -> None:
    """`errors.Note` warnings print as one ``note: ...`` line (not Python's "file:line: Note: ..."
    and the source line under it), `errors.DataWarning` as one ``warning: ...`` line; other
    warnings as Python prints them."""
    from .errors import DataWarning, Note

    default = warnings.showwarning
    if getattr(default, "gscomp_notes", False):  # (main() run again in one process: wrap once)
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, Note):
            print(f"note: {message}", file=sys.stderr)
        elif issubclass(category, DataWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)
    show.gscomp_notes = True
    warnings.showwarning = show
    # every time, not once per place in the code: the jobs of a sweep run in this one process,
    # and each must say its own (Python's default shows a repeated message once)
    warnings.filterwarnings("always", category=Note)
    warnings.filterwarnings("always", category=DataWarning)


ERROR_MAX = 1000  # characters of an error line


class _Stdout(io.TextIOWrapper):
    """The `gscomp` process's stdout: a failed write (a full disk, /dev/full) raises a GscompError
    that says it was stdout's, not a bare "No space left on device" that reads as the output
    file's; a closed pipe stays a BrokenPipeError (no error: the reader is gone)."""

    def _said(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            from .errors import GscompError

            raise GscompError(f"cannot write to stdout: {e.strerror or e}") from None

    def write(self, s):
        return self._said(super().write, s)

    def flush(self):
        return self._said(super().flush)


def _wrap_stdout() -> None:
    out = sys.stdout
    if type(out) is io.TextIOWrapper and out.buffer is not None:  # (not a test's capture, not None)
        sys.stdout = _Stdout(out.detach(), encoding=out.encoding, errors="backslashreplace",
                             line_buffering=out.line_buffering)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        _wrap_stdout()
    code = _main(list(sys.argv[1:] if argv is None else argv))
    if argv is None:  # the `gscomp` process itself, about to exit with its code: a Ctrl-C now (a
        # second one while `view` shuts down, or one as a run ends) would only put a traceback
        # from torch's exit handlers over the result and turn its exit status into SIGINT's
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                signal.signal(sig, signal.SIG_IGN)
    return code


def _quiet_stdout() -> None:
    """Python's documented recipe after a BrokenPipeError: stdout onto devnull, so that the flush
    at exit does not fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _print_only(text: str) -> int:
    """`gscomp --help` / `--version`: print ``text``; a closed pipe is no error, a failed write one line."""
    from .errors import GscompError

    try:
        print(text, flush=True)
    except BrokenPipeError:
        _quiet_stdout()
    except GscompError as e:  # (`_Stdout`'s "cannot write to stdout")
        print(f"error: {e}", file=sys.stderr)
        _quiet_stdout()
        return 2
    return 0


def _main(argv: list[str]) -> int:
    stdout_closed = sys.stdout is None
    for name in ("stdout", "stderr"):  # closed (`gscomp ... >&-`): Python sets them to None
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))
    for stream in (sys.stdout, sys.stderr):  # an ASCII or Latin-1 terminal and a path in another script
        with contextlib.suppress(AttributeError, ValueError):  # (a stream that cannot be reconfigured)
            stream.reconfigure(errors="backslashreplace")
    if not argv or argv[0] in ("-h", "--help", "help"):
        return _print_only(USAGE)
    if argv[0] in ("-V", "--version"):
        from . import __version__

        return _print_only(f"gscomp {__version__}")
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"error: unknown verb {verb!r}; run `gscomp --help`", file=sys.stderr)
        return 2
    if stdout_closed and (verb == "info" or "--json" in rest):  # (their result is what they print; a
        # file-writing verb without --json still runs, its summary going nowhere)
        what = "`gscomp info`" if verb == "info" else "--json"
        print(f"error: stdout is closed, and {what} prints its result there", file=sys.stderr)
        return 2
    try:
        os.getcwd()
    except FileNotFoundError:  # (torch's MKL then dies on import with "Cannot load libtorch_cpu.so")
        print("error: the current directory no longer exists; cd to one that does", file=sys.stderr)
        return 2
    from omegaconf.errors import OmegaConfBaseException

    from .errors import GscompError, one_line

    # numpy's floating-point warnings on corrupt or absurd input values (the readers and decoders
    # check for non-finite results themselves and say so in their one-line error)
    warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero|underflow) encountered",
                            RuntimeWarning)
    if os.environ.get("GSCOMP_DEBUG") != "1":
        # Hydra prints --info/--cfg through `logging`, whose handlers print a traceback for each
        # record they fail to write (e.g. to a closed pipe: `... --info | head`); drop them quietly
        logging.raiseExceptions = False
    from . import signals

    notes_as_lines()
    signals.install()  # SIGTERM / SIGHUP: as Ctrl-C (temp files removed, training checkpointed)
    try:
        import importlib

        with signals.deferred():  # a Ctrl-C while torch loads is acted on once it has loaded
            import numpy  # noqa: F401
            import torch  # noqa: F401

            module = importlib.import_module(f"gscomp.commands.{MODULES.get(verb, verb)}")
        code = module.run(rest)
        sys.stdout.flush()  # a closed pipe or full disk shows here, not in the interpreter's flush at exit
    except BrokenPipeError:
        # The reader of our stdout stopped (`gscomp info x.gsz --json | head -1`): it has all it
        # wanted, so this is no error and exits quietly with status 0, like the reader
        _quiet_stdout()
        return 0
    except GscompError as e:
        # one line, of a length a terminal can show: a message may quote what a file holds (a
        # 5,000-character texture name, a 100,000-element list)
        msg = one_line(e)
        print(f"error: {msg if len(msg) <= ERROR_MAX else msg[:ERROR_MAX - 3] + '...'}", file=sys.stderr)
        return 2
    except OmegaConfBaseException as e:  # a config value read during the run (an unresolvable ${...})
        from .hydra_app import config_error

        print(f"error: bad config: {config_error(e)}", file=sys.stderr)
        return 2
    except signals.Stopped as e:
        print(f"stopped ({e})", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the file system refused (permissions, name too long, disk full, ...)
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:
        if _out_of_memory(e):
            print("error: out of memory (the input is larger than this machine can hold, or corrupt)", file=sys.stderr)
            return 2
        if os.environ.get("GSCOMP_DEBUG") == "1":
            raise
        print(f"error: internal error ({type(e).__name__}: {one_line(e, 300)}); GSCOMP_DEBUG=1 shows the traceback",
              file=sys.stderr)
        return 1
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
