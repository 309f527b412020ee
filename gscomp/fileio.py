"""Atomic output files: every file gscomp writes appears complete or not at all."""
from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

from .errors import GscompError

# mkstemp makes its files 0600; outputs get the mode a plain open() would give (0666 less the
# umask), read once here since reading the umask means setting it (racy in threads)
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
STALE_TEMP_AGE = 60.0  # seconds: a temp this old whose writer holds no lock on it is left by a killed run

try:
    import fcntl
except ImportError:  # not POSIX: no locks, and no sweeping of stale temps
    fcntl = None


def _temp_prefix(dest: Path) -> str:
    # (the name cut short: a temp name longer than the file system allows would fail; "gscomp-"
    # marks it as ours, so the sweep below never takes a user's own .NAME.something.tmp)
    return f".{dest.name[:32]}.gscomp-"


def _open_for_lock(path: Path | str) -> int:
    """An fd to flock ``path`` with: read-write, since NFS emulates flock with locks that need a
    file open for writing, else read-only (a temp that keeps a read-only output's mode, or
    another user's); non-blocking, since opening a FIFO of that name would wait for a writer."""
    flags = os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, os.O_RDWR | flags)
    except PermissionError:
        return os.open(path, os.O_RDONLY | flags)


def _remove_stale_temps(dest: Path) -> None:
    """Remove the temps of earlier writes to ``dest`` whose process died (SIGKILL, the OOM killer,
    a power cut: no handler ran), which would otherwise lie hidden next to it, as big as the
    output. A live writer holds an exclusive lock on its temp from creation to rename, so a temp
    that can be locked, and is older than STALE_TEMP_AGE, has no writer left."""
    if fcntl is None:
        return
    pattern = re.compile(re.escape(_temp_prefix(dest)) + r"[a-z0-9_]{8}\.tmp")
    try:
        names = [e.name for e in os.scandir(dest.parent or ".") if pattern.fullmatch(e.name)]
    except OSError:
        return
    for name in names:
        tmp = dest.parent / name
        try:
            fd = _open_for_lock(tmp)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or time.time() - st.st_mtime < STALE_TEMP_AGE:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(tmp)
        except OSError:  # locked (a live writer), or gone, or not ours to remove
            pass
        finally:
            os.close(fd)


def _target(path: Path, make_parents: bool) -> tuple[Path, Path, Path]:
    """(path, the file a write replaces, its folder), after the checks `atomic_open` makes before
    writing: a link must lead to a file, the folder must exist (or is made), OUT must be no
    folder, pipe or device."""
    dest = path
    if path.is_symlink():
        try:
            path.stat()
        except OSError as e:  # (cp refuses a dangling link too: it could create a file anywhere)
            raise GscompError(f"{path}: a symbolic link that leads to no file ({e.strerror or e}); it is not written "
                              "through, as cp does not: remove it or give another name") from None
        # the file replaced: the link's target, so the link (and what else points there) stays
        dest = Path(os.path.realpath(path))
    parent = dest.parent if str(dest.parent) else Path(".")
    if make_parents:
        parent.mkdir(parents=True, exist_ok=True)
    elif not parent.is_dir():
        raise GscompError(f"{path}: directory {parent} does not exist")
    # (checked through ``path``, which follows every link: a link to /dev/stdout resolves to
    # /proc/self/fd/1 and on to a pipe's pseudo-name, which realpath gives as a missing file)
    if path.is_dir():
        raise GscompError(f"{path}: is a directory")
    if path.exists() and not path.is_file():  # (a rename would put a file where /dev/null was)
        raise GscompError(f"{path}: not a regular file (a pipe, device or socket); give a file name")
    return path, dest, parent


def _new_temp(path: Path, dest: Path, parent: Path) -> tuple[int, str]:
    """An empty temp beside ``dest`` (fd, name), to write OUT into; a one-line error if none can be made."""
    try:
        return tempfile.mkstemp(prefix=_temp_prefix(dest), suffix=".tmp", dir=parent)
    except OSError as e:
        raise GscompError(f"cannot write {path}: {e.strerror or e}") from None


def check_output(path: str | os.PathLike) -> None:
    """Refuse an output file that `atomic_open` would refuse, before a long job rather than after
    it: the checks above, a name longer than the file system takes, and a folder that takes no new
    file (read-only, no permission), found by making and removing an empty temp there."""
    path, dest, parent = _target(Path(path), False)
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = None
    if name_max and len(os.fsencode(dest.name)) > name_max:
        raise GscompError(f"cannot write {path}: {os.strerror(errno.ENAMETOOLONG)}")
    fd, tmp = _new_temp(path, dest, parent)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, *, make_parents: bool = False, sweep: bool = True) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for binary writing; on success it is fsynced and
    replaces ``path`` (os.replace), on error it is removed and ``path`` is untouched. A missing
    parent directory is an error unless ``make_parents``. A symbolic link is written through,
    as ``cp`` does: its target is replaced and the link kept; one that leads to no file (dangling,
    a loop) is refused, as ``cp`` refuses it. ``sweep``: first remove the temps
    that killed writes to ``path`` left (one listing of the folder: a cache writing thousands of
    small files into one folder turns it off)."""
    path, dest, parent = _target(Path(path), make_parents)
    if sweep:
        _remove_stale_temps(dest)
    fd, tmp = _new_temp(path, dest, parent)
    lock = None
    f = None
    try:
        if fcntl is not None:  # on an fd of its own, held past the close and the rename: the temp has a live writer
            with contextlib.suppress(OSError):
                lock = _open_for_lock(tmp)
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # a file replaced keeps its mode (a private 0600 output stays private); a new one gets FILE_MODE
        os.fchmod(fd, stat.S_IMODE(dest.stat().st_mode) if dest.is_file() else FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as e:
        if f is None:  # (failed before the file object took the fd over)
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        # disk full, name too long, ... (torch.save's writer says "unexpected pos", the
        # OSError it met being its context)
        os_err = e if isinstance(e, OSError) else e.__context__ if type(e) is RuntimeError else None
        if isinstance(os_err, OSError):
            raise GscompError(f"cannot write {path}: {os_err.strerror or os_err}") from None
        raise
    finally:
        if lock is not None:
            os.close(lock)


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
    if fcntl is None:  # not POSIX: unlocked
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


def check_not_input(src: Path, dst: Path) -> None:
    """Refuse an output that is the input itself, by another name or through a symlink: the
    atomic write would replace it (a hard link is safe: the rename gives OUT a new file)."""
    if dst.exists() and src.resolve() == dst.resolve():
        raise GscompError("input and output are the same file")


def input_file(path: str | os.PathLike) -> Path:
    """``path`` as an existing file, else a one-line error saying what it is instead."""
    p = Path(path)
    if p.is_dir():
        raise GscompError(f"{p}: is a directory")
    check_regular(p)
    if not p.is_file():
        raise missing_input(p)
    return p


def missing_input(p: Path) -> GscompError:
    """The error for an input that is not there: a symbolic link that leads nowhere (dangling, a
    loop) is named as such ("no such file" hid that it is a link)."""
    if p.is_symlink():
        return GscompError(f"{p}: a symbolic link that leads to no file")
    return GscompError(f"no such file: {p}")


def check_regular(path: Path) -> None:
    """Refuse an input that exists but is no file or folder on disk (a FIFO, /dev/zero, a
    process substitution): the readers read a file whole, so such a stream would fill memory,
    or block forever on a FIFO with no writer."""
    try:
        if path.exists() and not (path.is_file() or path.is_dir()):
            raise GscompError(f"{path}: not a regular file (a pipe, device or socket); give a file on disk")
    except OSError:  # (an unreadable name: the reader says what is wrong)
        pass
