"""Stop signals: SIGTERM and SIGHUP act like Ctrl-C.

`kill`, `timeout`, `docker stop`, Slurm and systemd send SIGTERM, a closed terminal SIGHUP. By
default Python dies on them at once: a half-written temporary output stays on disk, training
saves no checkpoint, a created output folder stays behind. With `install` (the CLI calls it)
they raise `Stopped`, a KeyboardInterrupt, so every Ctrl-C path (temporary files removed,
training checkpointed, one line printed) serves them too. A signal that is ignored when the
process starts (SIGHUP under `nohup`) stays ignored.
"""
from __future__ import annotations

import contextlib
import signal
import threading


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(signal.Signals(signum).name)


def raise_stop(signum, _frame) -> None:
    """A signal handler: KeyboardInterrupt for SIGINT, `Stopped` for the others."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Stopped(signum)


def stop_signals() -> list[int]:
    """SIGINT, SIGTERM and SIGHUP (where the platform has it) that are not ignored."""
    sigs = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    return [s for s in sigs if signal.getsignal(s) is not signal.SIG_IGN]


def install() -> None:
    """SIGTERM and SIGHUP raise `Stopped` (main thread only; not where they are ignored)."""
    for sig in stop_signals():
        if sig != signal.SIGINT and signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, raise_stop)


@contextlib.contextmanager
def deferred():
    """Stop signals that arrive inside are acted on when it ends. For imports: a KeyboardInterrupt
    raised inside numpy's or torch's import leaves a half-initialised module that fails later
    with an AttributeError (reported as an internal error) or a traceback wall."""
    got: list[int] = []
    old = {sig: signal.signal(sig, lambda s, _f: got.append(s)) for sig in stop_signals()}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if got:
        raise_stop(got[0], None)


@contextlib.contextmanager
def kept():
    """Python's handlers of the stop signals are the same after as before: a native library that
    installs its own on import (pycolmap's glog prints a stack dump on SIGTERM) is undone. Only
    in the main thread, the one that handles signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.getsignal(sig) for sig in stop_signals()}
    try:
        yield
    finally:
        for sig, handler in old.items():
            if handler is not None:
                signal.signal(sig, handler)


__all__ = ["Stopped", "install", "deferred", "kept", "raise_stop", "stop_signals"]
