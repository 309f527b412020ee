"""Loading the native extensions survives what killed processes leave in the build cache."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gscomp import native

REPO = Path(__file__).resolve().parents[1]
LOAD = "from gscomp import native; native.load('rans'); print('ok')"


def _cached_build(tmp_path: Path) -> Path:
    """A copy of this machine's cached rANS build, in a cache of its own under tmp_path."""
    try:
        mod = native.load("rans")
    except Exception as e:  # no compiler here
        pytest.skip(f"native coder unavailable: {e}")
    src = Path(mod.__file__).parent
    dst = tmp_path / "cache" / "native" / src.name
    shutil.copytree(src, dst)
    return dst


def _run(cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, GSCOMP_CACHE=str(cache), PYTHONPATH=os.pathsep.join(
        [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    return subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=240)


def _cli(**env_vars):
    """`gscomp ARGS...` in a fresh process with these environment variables."""
    env = dict(os.environ, **env_vars, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))

    def gscomp(*args):
        return subprocess.run([sys.executable, "-m", "gscomp", *args], env=env, capture_output=True, text=True,
                              timeout=240)
    return gscomp


def test_stale_torch_lock_does_not_hang(tmp_path):
    """torch's `lock` file, left by a process killed while loading, made every later process wait
    forever (torch's FileBaton); a built module is now imported directly."""
    build = _cached_build(tmp_path)
    (build / "lock").touch()
    r = _run(tmp_path / "cache")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
    assert "compiling" not in r.stderr


def test_half_written_module_is_rebuilt(tmp_path):
    """A truncated .so (a process killed while linking) is rebuilt, not a crash or a hang."""
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler")
    build = _cached_build(tmp_path)
    so = next(build.glob("gscomp_rans_cpu_*.so"))
    so.write_bytes(so.read_bytes()[:4096])
    (build / "lock").touch()
    r = _run(tmp_path / "cache")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
    assert "compiling" in r.stderr and not (build / "lock").exists()


def test_a_cached_module_that_does_not_load_is_rebuilt(tmp_path):
    """A stamped .so of the right size that the loader refuses (damaged in place, or built on a
    node with other libraries under a shared home) was an internal error on every run, or a
    silent fallback to the slower coder: it is rebuilt once, saying why."""
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler")
    build = _cached_build(tmp_path)
    so = next(build.glob("gscomp_rans_cpu_*.so"))
    so.write_bytes(bytes(so.stat().st_size))  # zeros: the stamp (its size) still matches
    r = _run(tmp_path / "cache")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
    assert "does not load" in r.stderr and "rebuilding" in r.stderr and "unavailable" not in r.stderr, r.stderr
    assert so.read_bytes()[:4] == b"\x7fELF"


def test_an_unusable_cache_folder_says_so(tmp_path, random_splats):
    """A build cache that cannot be made (read-only, or under a file) was a bare OS error line for
    compact and train, and a "could not decode" blamed on the .gsz for a colour field; the
    fallbacks advised installing the compiler that was there. Each now names the cache and
    GSCOMP_CACHE."""
    from gscomp.io import save_splats

    src = tmp_path / "in.ply"
    save_splats(src, random_splats(200, 1, seed=3))
    (tmp_path / "file").write_text("x")
    gscomp = _cli(GSCOMP_CACHE=str(tmp_path / "file" / "cache"))
    r = gscomp("compress", str(src), str(tmp_path / "a.gsz"), "pipeline=medium")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "using constriction" in r.stderr and "set GSCOMP_CACHE to a writable folder" in r.stderr, r.stderr
    r = gscomp("compress", str(src), str(tmp_path / "b.gsz"), "pipeline=compact")
    err = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(err) == 1 and "build cache" in err[0] and "GSCOMP_CACHE" in err[0], r.stderr
    with pytest.raises(native.NativeBuildError, match="its source .* is missing"):  # (a broken install)
        saved = native.ROOT
        try:
            native.ROOT = tmp_path
            native._modules.pop("hashgrid", None)
            native.load("hashgrid")
        finally:
            native.ROOT = saved
            native._failed.pop("hashgrid", None)


def test_without_a_compiler(tmp_path, random_splats):
    """No compiler: .gsz coding falls back to constriction with one line saying why, and compact
    (whose importance stage needs the native rasterizer) fails with one line naming the way out."""
    from gscomp.io import save_splats

    src = tmp_path / "in.ply"
    save_splats(src, random_splats(200, 1, seed=3))
    gscomp = _cli(GSCOMP_CACHE=str(tmp_path / "cache"), CXX="/nonexistent/c++")
    r = gscomp("compress", str(src), str(tmp_path / "a.gsz"), "pipeline=medium")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert "WARNING" not in r.stderr and len(lines) <= 3, r.stderr  # "compiling ..." and the fallback note
    assert any("using constriction" in ln and "not found" in ln for ln in lines), r.stderr
    r = gscomp("compress", str(src), str(tmp_path / "b.gsz"), "pipeline=compact")
    err = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(err) == 1 and "importance stage" in err[0] and "high, medium, low" in err[0], r.stderr
    assert not (tmp_path / "b.gsz").exists()


def test_a_full_disk_is_not_a_missing_compiler(tmp_path, random_splats):
    """A build that failed for want of disk space advised installing a C++ compiler."""
    from gscomp.io import save_splats

    src = tmp_path / "in.ply"
    save_splats(src, random_splats(50, 0, seed=3))
    cxx = tmp_path / "c++"  # a compiler whose assembler meets a full disk
    cxx.write_text("#!/bin/sh\ncase \"$*\" in *.cpp*) echo \"/tmp/ccQO.s: Fatal error: can't write 9 bytes to "
                   "section .text of /tmp/ccQO.s: 'No space left on device'\" >&2; exit 1;;\n"
                   "*) exec c++ \"$@\";; esac\n")  # (torch's version probes get the real one)
    cxx.chmod(0o755)
    r = _cli(GSCOMP_CACHE=str(tmp_path / "cache"), CXX=str(cxx))("compress", str(src), str(tmp_path / "a.gsz"),
                                                                    "pipeline=medium")
    assert r.returncode == 0, r.stderr[-2000:]
    note = [ln for ln in r.stderr.splitlines() if "using constriction" in ln]
    assert len(note) == 1 and "No space left on device" in note[0] and "free disk space" in note[0], r.stderr
    assert "compiler with OpenMP" not in note[0]


def test_old_builds_are_pruned(tmp_path):
    """A new build removes other builds not loaded for UNUSED_DAYS and unfinished ones left for a
    day; recent builds, fresh unfinished ones and one another process holds stay."""
    import fcntl

    root = tmp_path / "native"
    old = time.time() - (native.UNUSED_DAYS + 1) * native.DAY

    def build(name: str, stamp_age: float | None, dir_age: float = 0.0) -> Path:
        d = root / name
        d.mkdir(parents=True)
        (d / "x.so").write_bytes(b"so")
        if stamp_age is not None:
            (d / "x.so.ok").write_text("2")
            os.utime(d / "x.so.ok", (stamp_age, stamp_age))
        os.utime(d, (dir_age or time.time(),) * 2)
        return d

    keep = build("new", time.time())
    stale = build("stale", old)
    recent = build("recent", time.time() - 5 * native.DAY)
    unfinished_old = build("unfinished_old", None, time.time() - 2 * native.DAY)
    unfinished_new = build("unfinished_new", None)
    busy = build("busy", old)
    with open(busy / "build.lock", "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # as a process loading it (flock is per open file)
        native._prune(root, keep)
    assert sorted(p.name for p in root.iterdir()) == ["busy", "new", "recent", "unfinished_new"]
    assert not stale.exists() and not unfinished_old.exists() and keep.exists() and recent.exists()
    assert unfinished_new.exists()


def test_loading_marks_a_build_used(tmp_path):
    """The stamp's mtime is when its build was last loaded (touched at most once a day)."""
    stamp = tmp_path / "x.so.ok"
    stamp.write_text("1")
    t = time.time() - 3 * native.DAY
    os.utime(stamp, (t, t))
    native._mark_used(stamp)
    assert time.time() - stamp.stat().st_mtime < 60
    t = time.time() - 3600
    os.utime(stamp, (t, t))
    native._mark_used(stamp)
    assert abs(stamp.stat().st_mtime - t) < 1


@pytest.mark.parametrize("env, expect", [({}, "10000"), ({"GOMP_SPINCOUNT": "5"}, "5"),
                                         ({"OMP_WAIT_POLICY": "ACTIVE"}, "None")])
def test_openmp_spin_default_yields_to_other_processes(env, expect):
    """Importing gscomp first caps GNU OpenMP's busy-wait (a 2-core machine shared with other work
    ran training 2x faster); a user's own OpenMP wait settings are left alone."""
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    code = "import os, gscomp; print(os.environ.get('GOMP_SPINCOUNT'))"
    r = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == expect, r.stderr[-2000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the compilers are adopted through Linux's prctl")
def test_a_stopped_build_stops_its_compilers(tmp_path, random_splats):
    """`kill PID` during a first-use build stopped gscomp, but ninja's compilers ran on (~40 s,
    writing into the cache): they are now killed with it."""
    from gscomp.io import save_splats

    src = tmp_path / "in.ply"
    save_splats(src, random_splats(50, 0, seed=3))
    pidfile = tmp_path / "cc1.pid"
    cxx = tmp_path / "c++"  # a compiler driver whose compiler proper (here a sleep) takes long
    cxx.write_text(f"#!/bin/sh\ncase \"$*\" in *.cpp*) sh -c 'echo $$ > {pidfile}; exec sleep 300' & wait;;\n"
                   "*) exec c++ \"$@\";; esac\n")
    cxx.chmod(0o755)
    env = dict(os.environ, GSCOMP_CACHE=str(tmp_path / "cache"), CXX=str(cxx), PYTHONPATH=os.pathsep.join(
        [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    p = subprocess.Popen([sys.executable, "-m", "gscomp", "compress", str(src), str(tmp_path / "a.gsz"),
                          "pipeline=medium"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (pidfile.exists() and pidfile.read_text().strip()) and p.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert pidfile.exists(), p.communicate(timeout=60)[1][-2000:]
        cc1 = int(pidfile.read_text())
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0 and "stopped (SIGTERM)" in err, err[-2000:]

    def running(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    try:
        assert not running(cc1), "the compiler outlived the stopped build"
    finally:
        with contextlib.suppress(OSError):
            os.kill(cc1, signal.SIGKILL)
    assert not (tmp_path / "a.gsz").exists()
