"""Atomic output files: every file gscomp writes appears complete or not at all."""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import GscompError

# mkstemp makes its files 0600; outputs get the mode a plain open() would give (0666 less the
# umask), read once here since reading the umask means setting it (racy in threads)
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, *, make_parents: bool = False) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for binary writing; on success it is fsynced and
    replaces ``path`` (os.replace), on error it is removed and ``path`` is untouched. A missing
    parent directory is an error unless ``make_parents``. A symbolic link is written through,
    as ``cp`` does: its target is replaced and the link kept."""
    path = Path(path)
    # the file replaced: the link's target, so the link (and what else points there) stays
    dest = Path(os.path.realpath(path)) if path.is_symlink() else path
    parent = dest.parent if str(dest.parent) else Path(".")
    if make_parents:
        parent.mkdir(parents=True, exist_ok=True)
    elif not parent.is_dir():
        raise GscompError(f"{path}: directory {parent} does not exist")
    if dest.is_dir():
        raise GscompError(f"{path}: is a directory")
    if dest.exists() and not dest.is_file():  # (a rename would put a file where /dev/null was)
        raise GscompError(f"{path}: not a regular file (a pipe, device or socket); give a file name")
    try:  # (the name cut short: a temp name longer than the file system allows would fail)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name[:32]}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise GscompError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        # a file replaced keeps its mode (a private 0600 output stays private); a new one gets FILE_MODE
        os.fchmod(fd, stat.S_IMODE(dest.stat().st_mode) if dest.is_file() else FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        # disk full, name too long, ... (torch.save's writer says "unexpected pos", the
        # OSError it met being its context)
        os_err = e if isinstance(e, OSError) else e.__context__ if type(e) is RuntimeError else None
        if isinstance(os_err, OSError):
            raise GscompError(f"cannot write {path}: {os_err.strerror or os_err}") from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, make_parents: bool = False) -> None:
    with atomic_open(path, make_parents=make_parents) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, make_parents: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), make_parents=make_parents)


class FolderBusy(GscompError):
    """Another run holds the output folder: the refused run must leave it as it is (not remove it
    as a failed run removes the empty folders it created: that one may be the other run's)."""


@contextlib.contextmanager
def run_folder(path: Path) -> Iterator[Path]:
    """The output folder of a training run, created if missing and held for the block with an
    exclusive lock on the folder itself (no lock file; the kernel drops it if the process dies):
    a second run into the same folder would interleave its files with this one's."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: unlocked
        yield path
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a folder one may write but not read (mode -wx): unlocked
        yield path
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(f"{path} is the output folder of another gscomp run still going; wait for it "
                             f"or give another out=") from None
        except OSError:  # a file system without locks: unlocked
            pass
        yield path
    finally:
        os.close(fd)


def output_file(arg: str) -> Path:
    """A command line's output file name; one ending in a slash names a folder, which Path()
    would silently turn into a file of that name."""
    if arg.endswith(("/", os.sep)):
        raise GscompError(f"{arg}: names a directory; give a file name")
    return Path(arg)


def input_file(path: str | os.PathLike) -> Path:
    """``path`` as an existing file, else a one-line error saying what it is instead."""
    p = Path(path)
    if p.is_dir():
        raise GscompError(f"{p}: is a directory")
    check_regular(p)
    if not p.is_file():
        raise GscompError(f"no such file: {p}")
    return p


def check_regular(path: Path) -> None:
    """Refuse an input that exists but is no file or folder on disk (a FIFO, /dev/zero, a
    process substitution): the readers read a file whole, so such a stream would fill memory,
    or block forever on a FIFO with no writer."""
    try:
        if path.exists() and not (path.is_file() or path.is_dir()):
            raise GscompError(f"{path}: not a regular file (a pipe, device or socket); give a file on disk")
    except OSError:  # (an unreadable name: the reader says what is wrong)
        pass
