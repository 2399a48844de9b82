"""Shared test fixtures: offline Hugging Face, tiny models built once per run, a data dir."""

from __future__ import annotations

import os
from pathlib import Path

# Never reach the hub from tests: a missing path must fail at once, not retry for 30 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Settings come from each test, not from a developer's own .env or environment.
for _name in ("DISCORD_TOKEN", "MODEL_ID", "DEVICE", "QUEUE_URL", "DATA_DIR"):
    os.environ.pop(_name, None)

import pytest  # noqa: E402

from tests.fixtures.tiny_models import build_all  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Built once and reused across runs: the fixture is seeded, so the files never change.
TINY_MODELS_DIR = Path(os.environ.get("TESSERA_TINY_MODELS", ROOT / ".cache" / "tiny-models")).resolve()


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    """Paths of the tiny sd15/sdxl pipelines and Real-ESRGAN x4/x2 weight files."""
    from filelock import FileLock

    TINY_MODELS_DIR.mkdir(parents=True, exist_ok=True)
    with FileLock(str(TINY_MODELS_DIR / ".lock")):
        return build_all(TINY_MODELS_DIR)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
