"""The import-layer contracts in pyproject.toml hold, and would catch an upward import.

`scripts/test.sh` runs `lint-imports` before pytest; these tests show that the contracts it
checks are real: the tree as it is passes, and a copy of the tree with one throwaway module
importing upward fails, naming the contract it breaks. Without the second half, a contract
that matched nothing (a typo in a package name) would pass for ever.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "commands", "engine", "storage")
TOP = "commands -> bot -> storage -> engine"
ENGINE = "engine: jobs -> upscale|diffusion|vision -> imaging -> base"


def _lint_imports() -> str:
    """The `lint-imports` of the Python running the tests (installed by the dev extra)."""
    beside = Path(sys.executable).with_name("lint-imports")
    found = str(beside) if beside.exists() else shutil.which("lint-imports")
    assert found, "lint-imports is missing: install the dev extra (import-linter)"
    return found


def _run(root: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports puts its working directory first on sys.path, so it reads `root`'s
    # packages; PYTHONPATH is dropped so nothing else could shadow them.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([_lint_imports(), "--no-logo", "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the four packages and pyproject.toml, to break on purpose."""
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_import_contract() -> None:
    result = _run(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{TOP} KEPT" in result.stdout
    assert f"{ENGINE} KEPT" in result.stdout


def test_every_feature_the_bot_loads_is_held_independent() -> None:
    """A feature added to `bot.client.FEATURES` but not to the independence contract could
    import another feature unnoticed (/prefer, /loras and the pictures feature once were)."""
    import tomllib

    from bot.client import FEATURES

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (independent,) = [c for c in contracts if c["type"] == "independence"]
    assert sorted(independent["modules"]) == sorted(FEATURES)


def test_engine_importing_storage_breaks_the_layers(tree: Path) -> None:
    assert _run(tree).returncode == 0  # the copy itself is clean
    (tree / "engine" / "_probe.py").write_text("import storage.models  # deliberately upward\n")
    result = _run(tree)
    assert result.returncode != 0
    assert f"{TOP} BROKEN" in result.stdout
    assert "engine is not allowed to import storage" in result.stdout
    assert "engine._probe -> storage.models" in result.stdout


def test_storage_importing_bot_breaks_the_layers(tree: Path) -> None:
    (tree / "storage" / "_probe.py").write_text("from bot import config  # deliberately upward\n")
    result = _run(tree)
    assert result.returncode != 0
    assert f"{TOP} BROKEN" in result.stdout
    assert "storage is not allowed to import bot" in result.stdout


def test_imaging_importing_the_job_system_breaks_the_engine_layers(tree: Path) -> None:
    (tree / "engine" / "imaging" / "_probe.py").write_text(
        "from engine.jobs import queue  # deliberately upward\n")
    result = _run(tree)
    assert result.returncode != 0
    assert f"{ENGINE} BROKEN" in result.stdout
    assert "engine.imaging is not allowed to import engine.jobs" in result.stdout
