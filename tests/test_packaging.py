"""talora installs beside a user's stack: its wheel declares ranges, and installing it keeps the torch build there."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"  # the build the Makefile installs first, from local disk


def _run(*cmd, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=1200, **kw)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stdout}\n{done.stderr}"
    return done


def _torch_file(python: Path) -> tuple[str, str, int]:
    out = _run(
        python, "-c", "import os, torch; print(torch.__version__, torch.__file__, os.stat(torch.__file__).st_mtime_ns)"
    )
    version, path, mtime = out.stdout.split()
    return version, path, int(mtime)


@pytest.mark.slow
def test_wheel_installs_beside_an_existing_torch(tmp_path):
    # Build from a copy, so that the working tree gets no build/ or egg-info of this test's making.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "talora", src / "talora", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", src)
    (wheel,) = (tmp_path / "dist").glob("talora-*.whl")

    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        shipped = set(z.namelist())
    data = [p for p in (REPO / "talora").rglob("*") if p.is_file() and p.suffix in (".yaml", ".json")]
    missing = [str(p.relative_to(REPO)) for p in data if p.relative_to(REPO).as_posix() not in shipped]
    assert len(data) > 10 and not missing, f"package data left out of the wheel: {missing}"
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("torch") for r in core) and any(r.startswith("transformers") for r in core)
    assert not [r for r in core if "==" in r], f"exact pins belong in constraints.txt: {core}"
    for extra in ("hub", "serve", "tensorboard", "gemma"):
        assert any(f'extra == "{extra}"' in r for r in requires), extra

    venv = tmp_path / "user-env"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", TORCH)
    before = _torch_file(python)

    install = _run(python, "-m", "pip", "install", "-c", REPO / "constraints.txt", wheel)
    assert not re.search(r"Uninstalling torch-|Successfully installed.* torch-", install.stdout), install.stdout
    assert _torch_file(python) == before  # same version, same file, untouched
    _run(python, "-m", "pip", "check")
    version = _run(venv / "bin" / "talora", "--version").stdout
    assert version.startswith("talora ") and f"torch {before[0]}" in version
