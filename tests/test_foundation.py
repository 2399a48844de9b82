"""The foundation: entry points, configuration errors, CLI help, logging, tiny-model fixtures."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot import cli
from bot.config import ConfigError, load_settings
from bot.logs import JsonFormatter, TextFormatter
from engine.jobs.joblog import for_job

ROOT = Path(__file__).resolve().parent.parent


def _run_bot(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"DISCORD_TOKEN", "MODEL_ID", "DEVICE"}}
    clean.update(env)
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path, env=clean, capture_output=True,
                          text=True, timeout=60)


def test_bot_without_token_explains_and_exits_2(tmp_path: Path) -> None:
    result = _run_bot(tmp_path)
    assert result.returncode == 2
    assert "DISCORD_TOKEN is not set" in result.stderr
    assert ".env" in result.stderr and "discord.com/developers" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MODEL_ID", "/no/such/model/folder", "does not exist"),
        ("MODEL_ID", "not a model id", "Hugging Face model id"),
        ("DEVICE", "gpu", "auto, cpu, mps, cuda or cuda:N"),
        ("QUEUE_URL", "http://example", "Redis URL"),
    ],
)
def test_invalid_setting_fails_start_with_one_line(tmp_path: Path, name: str, value: str, expected: str) -> None:
    result = _run_bot(tmp_path, DISCORD_TOKEN="secret-token-value", **{name: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{name}=" in lines[0] and expected in lines[0]
    assert "secret-token-value" not in result.stderr


def test_token_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "super-secret")
    settings = load_settings(_env_file=None)
    assert settings.discord_token is not None
    assert settings.discord_token.get_secret_value() == "super-secret"
    assert "super-secret" not in repr(settings) and "super-secret" not in str(settings.model_dump())


def test_settings_parse_lists_and_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BANNED_WORDS", " gore, , blood ")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    settings = load_settings(_env_file=None)
    assert settings.banned_words == ["gore", "blood"]
    assert settings.weights_dir == tmp_path / "weights"
    assert settings.database_path == tmp_path / "tessera.sqlite3"


def test_bad_number_names_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_MAX_PER_USER", "lots")
    with pytest.raises(ConfigError, match="QUEUE_MAX_PER_USER='lots'"):
        load_settings(_env_file=None)


def test_env_example_documents_every_setting() -> None:
    from bot.config import Settings

    documented = {line.split("=", 1)[0].strip() for line in (ROOT / ".env.example").read_text().splitlines()
                  if "=" in line and not line.startswith("#")}
    assert documented == {name.upper() for name in Settings.model_fields}


def test_readme_and_ci_share_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_block = readme.split("Test command:", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    command = test_block.strip()
    assert command == "./scripts/test.sh"
    assert command in [line.strip() for line in ci.splitlines()]  # verbatim, not a drifting copy
    assert "./scripts/run.sh" in readme


@pytest.mark.parametrize("sub", [None, *cli.SUBCOMMANDS])
def test_cli_help(sub: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"] if sub is None else [sub, "--help"])
    assert exit_info.value.code == 0
    assert "usage: tessera" in capsys.readouterr().out


def test_job_id_on_every_log_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("tessera.test.joblog")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        handler.setFormatter(JsonFormatter())
        for_job(logger, "abc1234").warning("step %d failed", 3)
        record = json.loads(stream.getvalue().strip())
        assert record["job_id"] == "abc1234" and record["message"] == "step 3 failed"
        stream.truncate(0)
        stream.seek(0)
        handler.setFormatter(TextFormatter())
        for_job(logger, "abc1234").warning("done")
        assert "[job abc1234] done" in stream.getvalue()
    finally:
        logger.removeHandler(handler)


def test_tiny_models_load_offline_through_diffusers(tiny_models: dict[str, Path]) -> None:
    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(tiny_models["sd15"]))
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.vae_scale_factor == 8
    assert len(pipe.tokenizer("a red bird").input_ids) > 5  # a real vocabulary, not 2 tokens
    sdxl = DiffusionPipeline.from_pretrained(str(tiny_models["sdxl"]))
    assert type(sdxl).__name__ == "StableDiffusionXLPipeline"
    for key in ("x4", "x2"):
        state = torch.load(tiny_models[key], map_location="cpu", weights_only=True)["params_ema"]
        assert {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_up1.weight",
                "conv_up2.weight", "conv_hr.weight", "conv_last.weight"} <= set(state)


def test_bad_queue_url_hides_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_URL", "http://:hunter2@redis.internal:6379/0")
    with pytest.raises(ConfigError) as error:
        load_settings(_env_file=None)
    assert "hunter2" not in str(error.value) and "QUEUE_URL='http://***@redis.internal:6379/0'" in str(error.value)


def test_upscale_max_side_is_bounded_by_what_results_may_carry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSCALE_MAX_SIDE", "16384")
    with pytest.raises(ConfigError, match="UPSCALE_MAX_SIDE"):
        load_settings()
