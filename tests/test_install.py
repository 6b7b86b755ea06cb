"""fastopt installed as a user installs it: into a fresh virtual environment, run from outside
the source tree (where ``python -m pytest`` cannot put the checkout first on ``sys.path``).

The fast case (in CI) installs the package, runs ``fastopt info`` and optimizer steps, then
reinstalls it editable and runs them again: compiled kernels must never be cached inside the
installed package, where pip's uninstall leaves them behind and the leftover folder shadows the
next install. The slow cases run the README's two set-up commands in either order in a venv of
their own, then every command of the "run it" line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastopt

ROOT = Path(__file__).resolve().parent.parent

# A few steps through the functional API and an optimizer class (one multi-tensor launch),
# serial and parallel kernels; prints where fastopt was imported from.
STEPS = """
import numpy as np, fastopt
for n in (7, 1 << 15):
    p = np.ones(n, np.float32); g = np.full(n, 0.5, np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    fastopt.adam_step(p, g, m, v, step=1, lr=0.1)
    assert np.allclose(p, 0.9), p[:3]
ws = [np.ones(5, np.float32), np.ones((3, 4), np.float32)]
opt = fastopt.SGD(ws, lr=0.5, momentum=0.9)
opt.step([np.ones_like(w) for w in ws])
assert all(np.allclose(w, 0.5) for w in ws)
print("FASTOPT_FILE", fastopt.__file__)
"""


def _copy_source(dest: Path) -> Path:
    """The checkout's files (what a fresh clone has), without build outputs or caches."""
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "dist",
                                    ".pytest_cache", ".hypothesis", ".benchmarks",
                                    ".mypy_cache", "*.nbi", "*.nbc", "results")
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def _env(tmp: Path, venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NUMBA_CACHE_DIR", "PYTHONPATH", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["XDG_CACHE_HOME"] = str(tmp / "user-cache")   # the per-user kernel cache goes here
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(args)} exited {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc.stdout


def _site_packages(venv: Path) -> Path:
    (path,) = (venv / "lib").glob("python*/site-packages")
    return path


def _kernel_cache_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.suffix in (".nbi", ".nbc")]


def _check_installed_run(venv: Path, tmp: Path, env: dict[str, str], expect_under: Path) -> None:
    outside = tmp / "elsewhere"
    outside.mkdir(exist_ok=True)
    info = _run([str(venv / "bin" / "fastopt"), "info"], outside, env, timeout=300)
    assert f"fastopt {fastopt.__version__}" in info
    cache = Path(env["XDG_CACHE_HOME"]) / "fastopt" / fastopt.__version__
    assert f"kernel cache: {cache}" in info
    out = _run([str(venv / "bin" / "python"), "-c", STEPS], outside, env, timeout=300)
    imported = Path(out.split("FASTOPT_FILE", 1)[1].strip())
    assert expect_under in imported.parents, imported
    # The kernels were cached in the user's cache folder, none inside the environment.
    assert _kernel_cache_files(cache)
    assert not _kernel_cache_files(venv)


def test_installed_then_editable_outside_the_source_tree(tmp_path):
    """`pip install .`, run, then `pip install -e .`, run again: both import the right copy."""
    src = _copy_source(tmp_path / "src")
    venv = tmp_path / "venv"
    # System site-packages provide NumPy, Numba and the build backend (installed here): no
    # downloads. This interpreter's pip installs into the venv (which has none of its own, so
    # nothing older shadows the system's setuptools).
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True, timeout=120)
    env = _env(tmp_path, venv)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
           "--no-deps", "--no-build-isolation", "--quiet"]
    _run(pip + [str(src)], tmp_path, env, timeout=300)
    site = _site_packages(venv)
    _check_installed_run(venv, tmp_path, env, expect_under=site / "fastopt")

    _run(pip + ["-e", str(src)], tmp_path, env, timeout=300)
    assert not (site / "fastopt").exists(), sorted(map(str, (site / "fastopt").rglob("*")))
    _check_installed_run(venv, tmp_path, env, expect_under=src / "fastopt")


def test_no_writable_cache_folder_compiles_in_memory(tmp_path):
    """Where no cache folder can be made, kernels still run (compiled in each process)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(blocker / "below-a-file")  # cannot be created, even by root
    env["PYTHONPATH"] = str(ROOT)
    out = _run([sys.executable, "-c", STEPS], tmp_path, env, timeout=300)
    assert "FASTOPT_FILE" in out
    assert not _kernel_cache_files(ROOT / "kernels")


def _fresh_venv(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    src = _copy_source(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    return src, venv, _env(tmp_path, venv)


RUN_IT = 'pip install ".[demo]"'
TEST_IT = "bash ci/install.sh && bash ci/test.sh tests/test_validation.py -q -x"


@pytest.mark.slow
@pytest.mark.parametrize("order", [(RUN_IT, TEST_IT), (TEST_IT, RUN_IT)],
                         ids=["run-then-test", "test-then-run"])
def test_readme_commands_in_either_order(tmp_path, order):
    """The README's two commands in a fresh venv (the test command on one test file, to keep
    this bounded), then `fastopt info`, `check`, `bench --quick` and `demo` from elsewhere."""
    readme = (ROOT / "README.md").read_text()
    assert RUN_IT in readme and "bash ci/install.sh && bash ci/test.sh" in readme
    src, venv, env = _fresh_venv(tmp_path)
    for command in order:
        _run(["bash", "-c", command], src, env, timeout=1800)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    fastopt_cli = str(venv / "bin" / "fastopt")
    assert "backends:" in _run([fastopt_cli, "info"], outside, env, timeout=600)
    assert ", 0 failed" in _run([fastopt_cli, "check", "--backends", "numba"], outside, env,
                                timeout=1200)
    assert "roofline" in _run([fastopt_cli, "bench", "--quick"], outside, env, timeout=600)
    assert "test accuracy" in _run([fastopt_cli, "demo"], outside, env, timeout=900)
    assert not _kernel_cache_files(venv)
