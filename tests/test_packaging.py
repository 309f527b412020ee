"""A regular (non-editable) install carries what gscomp reads at run time: the Hydra configs and
the C++ sources of the native extensions. Before, `pip install .` gave a gscomp whose every
preset was unknown ("available: ") and whose coders fell back for a missing source."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_a_wheel_holds_the_configs_and_the_native_sources(tmp_path):
    pytest.importorskip("setuptools", reason="building a wheel here needs setuptools")
    src = tmp_path / "src"  # (a copy: building writes build/ and egg-info beside setup.py)
    for name in ("gscomp", "configs", "cuda"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "setup.py", src / "setup.py")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    names = set(zipfile.ZipFile(next((tmp_path / "dist").glob("gscomp-*.whl"))).namelist())
    want = {f"gscomp/_configs/{p.relative_to(REPO / 'configs').as_posix()}" for p in (REPO / "configs").rglob("*.yaml")}
    want |= {f"gscomp/_cuda/{p.name}" for p in (REPO / "cuda").iterdir() if p.is_file()}
    assert "gscomp/_configs/pipeline/compact.yaml" in want and "gscomp/_cuda/rasterize_cpu.cpp" in want
    assert want <= names, sorted(want - names)


def test_installed_copies_are_found_first(tmp_path, monkeypatch):
    """An installed package reads gscomp/_configs and gscomp/_cuda, not whatever `configs` or
    `cuda` folder sits beside it in site-packages."""
    import gscomp
    from gscomp import hydra_app, native

    assert hydra_app.CONFIG_DIR == REPO / "configs" and native.ROOT == REPO / "cuda"  # (a checkout)
    pkg = tmp_path / "site" / "gscomp"
    (pkg / "_configs").mkdir(parents=True)
    (pkg / "_cuda").mkdir()
    (tmp_path / "site" / "configs").mkdir()  # someone else's
    monkeypatch.setattr(gscomp, "__file__", str(pkg / "__init__.py"))
    assert gscomp.data_dir("configs") == pkg / "_configs" and gscomp.data_dir("cuda") == pkg / "_cuda"


def test_setup_script_refuses_unknown_options_and_combines_known_ones(tmp_path):
    # it parses its options before installing anything: a typo is an error (it was ignored, and the
    # core install ran), --help prints the usage, and --cuda --bench keeps both
    from conftest import ROOT

    script = ROOT / "tools" / "setup.sh"
    r = subprocess.run(["bash", str(script), "--bnech"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr == "gscomp setup: error: unknown option --bnech (options: --cuda, --bench)\n"
    r = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--bench" in r.stdout and "set -e" not in r.stdout
    # a copy whose pip only logs its arguments: which extras does --cuda --bench install?
    fake = tmp_path / "repo"
    (fake / "tools").mkdir(parents=True)
    shutil.copy(script, fake / "tools" / "setup.sh")
    py = fake / ".venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'log'}\n")
    py.chmod(0o755)
    r = subprocess.run(["bash", str(fake / "tools" / "setup.sh"), "--cuda", "--bench"], capture_output=True,
                       text=True, timeout=60)
    log = (tmp_path / "log").read_text()
    assert r.returncode == 0, r.stderr
    assert "--no-deps gsplat" in log and ".[test,viewer,bench]" in log
