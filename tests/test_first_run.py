"""The first hour of a new operator: start-up failures, the invite link, model downloads, install.

The bot is started as a subprocess (`python -m bot`), exactly as `./scripts/run.sh` does, with a
model that cannot be had (a hub id while HF_HUB_OFFLINE is set) or a Discord that cannot be
reached (DISCORD_API_BASE on a closed loopback port, or one that never answers). Nothing here
contacts any address but 127.0.0.1.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import operator
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import discord
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
FAKE_TOKEN = base64.b64encode(b"123456789012345678").decode().rstrip("=") + ".GxYzAb.not-a-real-secret"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISCORD_TOKEN", "MODEL_ID", "DEVICE", "QUEUE_URL", "DATA_DIR", "DISCORD_API_BASE")}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               DATA_DIR=str(tmp_path / "data"), DISCORD_TOKEN=FAKE_TOKEN, DEVICE="cpu", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_bot_with_a_model_it_cannot_download_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                            text=True, timeout=60)
    output = _lines(result.stdout + result.stderr)
    assert result.returncode == 2, output
    assert not any("Traceback" in line for line in output)
    assert len(output) == 1, output
    assert "cannot start" in output[-1] and "offline" in output[-1]
    assert "tessera models pull stable-diffusion-v1-5/stable-diffusion-v1-5" in output[-1]
    assert "huggingface-cli" not in output[-1]


def test_bot_with_discord_unreachable_stops_at_once_with_the_error_last(tmp_path: Path,
                                                                        tiny_models: dict[str, Path]) -> None:
    port = _closed_port()
    env = _env(tmp_path, MODEL_ID=str(tiny_models["sd15"]), DISCORD_API_BASE=f"http://127.0.0.1:{port}/api/v10")
    result = subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    output = _lines(result.stdout + result.stderr)
    assert result.returncode == 1, output
    assert not any("Traceback" in line for line in output)
    assert "cannot reach Discord" in output[-1] and f"127.0.0.1:{port}" in output[-1], output
    assert not any("engine.diffusion.models: loaded" in line for line in output), output  # no success-looking line
    assert len(output) <= 8, output


def test_ctrl_c_while_the_model_loads_stops_without_waiting_for_it(tmp_path: Path,
                                                                   tiny_models: dict[str, Path]) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        env = _env(tmp_path, MODEL_ID=str(tiny_models["sd15"]), DISCORD_API_BASE=f"http://127.0.0.1:{port}/api/v10")
        process = subprocess.Popen([sys.executable, "-m", "bot"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            assert process.stdout is not None
            seen: list[str] = []
            for line in process.stdout:
                seen.append(line)
                if "logging in" in line:
                    break
            process.send_signal(signal.SIGINT)
            started = time.monotonic()
            rest, _ = process.communicate(timeout=60)
            elapsed = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = _lines("".join(seen) + rest)
    assert process.returncode == 0, output
    assert not any("engine.diffusion.models: loaded" in line for line in output), output
    assert not any("Traceback" in line for line in output), output
    assert elapsed < 10, elapsed


def test_a_bad_discord_api_base_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path,
                            env=_env(tmp_path, DISCORD_API_BASE="discord.example/api"), capture_output=True,
                            text=True, timeout=60)
    output = _lines(result.stderr)
    assert result.returncode == 2 and len(output) == 1
    assert "DISCORD_API_BASE" in output[0] and "http" in output[0]


# ----- the invite link and the one permission list ------------------------------------------------
def test_invite_prints_a_link_whose_permissions_are_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main
    from bot.permissions import REQUIRED

    assert main(["invite", "--client-id", "987654321098765432"]) == 0
    url = capsys.readouterr().out.splitlines()[0]
    query = parse_qs(urlparse(url).query)
    assert urlparse(url).netloc == "discord.com"
    assert query["client_id"] == ["987654321098765432"]
    assert set(query["scope"][0].split()) == {"bot", "applications.commands"}
    expected = functools.reduce(operator.or_, (getattr(discord.Permissions, name).flag for name, _ in REQUIRED))
    assert int(query["permissions"][0]) == expected
    # What the code does with its own account (late results as replies, in threads; gallery embeds with files).
    assert {name for name, _ in REQUIRED} == {"view_channel", "send_messages", "send_messages_in_threads",
                                              "embed_links", "attach_files", "read_message_history"}


def test_invite_reads_the_application_id_from_the_token(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bot.cli", "invite"], cwd=tmp_path, env=_env(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "client_id=123456789012345678" in result.stdout.splitlines()[0]
    assert FAKE_TOKEN not in result.stdout + result.stderr
    none = subprocess.run([sys.executable, "-m", "bot.cli", "invite"], cwd=tmp_path,
                          env=_env(tmp_path, DISCORD_TOKEN="not-a-token"), capture_output=True, text=True, timeout=60)
    assert none.returncode == 2 and "--client-id" in none.stderr and len(_lines(none.stderr)) == 1


class _Guild:
    def __init__(self, name: str, me: object) -> None:
        self.name, self.me = name, me


class _Channel:
    def __init__(self, channel_id: int, name: str, guild: _Guild, granted: discord.Permissions) -> None:
        self.id, self.name, self.guild, self._granted = channel_id, name, guild, granted

    def permissions_for(self, member: object) -> discord.Permissions:
        return self._granted


async def test_start_up_check_names_each_missing_permission(caplog: pytest.LogCaptureFixture) -> None:
    from bot.permissions import REQUIRED, check_at_start, required_permissions

    guild = _Guild("Friends", me=object())
    lacking = required_permissions()
    lacking.attach_files = False
    lacking.embed_links = False
    channels = {1: _Channel(1, "gallery", guild, lacking), 2: _Channel(2, "art", guild, required_permissions())}

    class Client:
        guilds = (guild,)
        service = None
        application_id = 42
        user = None

        def get_channel(self, channel_id: int) -> _Channel | None:
            return channels.get(channel_id)

    with caplog.at_level("WARNING", logger="bot.permissions"):
        await check_at_start(Client(), gallery_channel_id=1)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "#gallery" in warnings[0] and "GALLERY_CHANNEL_ID" in warnings[0]
    assert "Attach Files" in warnings[0] and "Embed Links" in warnings[0] and "Send Messages" not in warnings[0]
    assert len(REQUIRED) == 6


async def test_start_up_logs_the_invite_link_when_in_no_server(caplog: pytest.LogCaptureFixture) -> None:
    from bot.permissions import check_at_start, invite_url

    class Lonely:
        guilds = ()
        application_id = 555555555555555555
        user = None

    with caplog.at_level("INFO", logger="bot.permissions"):
        await check_at_start(Lonely(), gallery_channel_id=None)
    assert any(invite_url(555555555555555555) in r.getMessage() for r in caplog.records)


# ----- models pull / list ----------------------------------------------------------------------
def _listing(name: str) -> tuple[list[str], list[str]]:
    from bot.subcommands.models import pipeline_components

    files = (DATA / f"hub_{name}_files.txt").read_text(encoding="utf-8").split()
    index = json.loads((DATA / f"hub_{name}_model_index.json").read_text(encoding="utf-8"))
    return files, pipeline_components(index)


def test_pull_selects_only_what_the_sd15_pipeline_loads() -> None:
    from bot.subcommands.models import select_files

    files, components = _listing("sd15")
    common = ["feature_extractor/preprocessor_config.json", "model_index.json", "scheduler/scheduler_config.json",
              "text_encoder/config.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
              "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "unet/config.json", "vae/config.json"]
    full, fp16 = select_files(files, components, fp16=False)
    assert not fp16
    assert full == sorted([*common, "text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                           "vae/diffusion_pytorch_model.safetensors"])
    half, fp16 = select_files(files, components, fp16=True)
    assert fp16
    assert half == sorted([*common, "text_encoder/model.fp16.safetensors",
                           "unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors"])


def test_pull_selects_only_what_the_sdxl_pipeline_loads() -> None:
    from bot.subcommands.models import select_files

    files, components = _listing("sdxl")
    half, fp16 = select_files(files, components, fp16=True)
    assert fp16
    weights = [name for name in half if name.endswith(".safetensors")]
    assert weights == ["text_encoder/model.fp16.safetensors", "text_encoder_2/model.fp16.safetensors",
                       "unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors"]
    assert not any(n.startswith(("vae_1_0/", "vae_decoder/", "vae_encoder/")) or "openvino" in n or ("/" not in n
                   and n != "model_index.json") for n in half)
    assert "tokenizer_2/vocab.json" in half and "text_encoder_2/config.json" in half
    # A repository where one component lacks the fp16 file falls back to full precision for all of them.
    partial = [n for n in files if n != "vae/diffusion_pytorch_model.fp16.safetensors"]
    mixed, fp16 = select_files(partial, components, fp16=True)
    assert not fp16 and "vae/diffusion_pytorch_model.safetensors" in mixed and not any(".fp16." in n for n in mixed)


def test_models_pull_offline_is_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bot.cli", "models", "pull", "owner/some-model"], cwd=tmp_path,
                            env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert _lines(result.stderr) == [line for line in _lines(result.stderr) if "HF_HUB_OFFLINE" in line]
    assert len(_lines(result.stderr)) == 1 and "owner/some-model" in result.stderr


def test_models_list_shows_cached_models_and_upscaler_weights(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    cache = tmp_path / "hf" / "hub"
    snapshot = cache / "models--owner--tiny" / "snapshots" / ("a" * 40)
    (snapshot / "unet").mkdir(parents=True)
    (snapshot / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}', encoding="utf-8")
    (snapshot / "unet" / "config.json").write_text("{}", encoding="utf-8")
    (cache / "models--owner--tiny" / "refs").mkdir()
    (cache / "models--owner--tiny" / "refs" / "main").write_text("a" * 40, encoding="utf-8")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "RealESRGAN_x4plus.pth").write_bytes(tiny_models["x4"].read_bytes())
    env = _env(tmp_path, HF_HUB_CACHE=str(cache), UPSCALER_WEIGHTS_DIR=str(weights), MODEL_ID="owner/tiny")
    result = subprocess.run([sys.executable, "-m", "bot.cli", "models", "list"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert re.search(r"owner/tiny .*models--owner--tiny.*<- MODEL_ID", result.stdout), result.stdout
    assert "RealESRGAN_x4plus.pth" in result.stdout and "not the official release" in result.stdout


@pytest.mark.parametrize("argv", [["invite", "--help"], ["models", "--help"], ["models", "pull", "--help"],
                                  ["models", "list", "--help"]])
def test_new_commands_have_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: tessera" in capsys.readouterr().out


def test_a_folder_with_only_fp16_weights_loads(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    """What `models pull` fetches for a GPU must load (diffusers needs to be told the variant)."""
    from diffusers import StableDiffusionPipeline

    from engine.diffusion.models import load_model

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_models["sd15"]))
    folder = tmp_path / "fp16-only"
    pipe.save_pretrained(str(folder), variant="fp16")
    assert not (folder / "unet" / "diffusion_pytorch_model.safetensors").exists()
    model = load_model(str(folder), device="cpu")
    assert model.family == "sd1"


# ----- progress while the model loads -------------------------------------------------------------
def test_cli_bar_says_loading_model_until_the_first_step() -> None:
    from bot.subcommands._submit import ProgressBars
    from engine.jobs.queue import QueueEvent

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    loading = [True]
    terminal = Terminal()
    bars = ProgressBars(terminal, loading=lambda: loading[0])
    bars.watch(["job1"])
    bars(QueueEvent("started", "job1"))
    assert "loading model" in terminal.getvalue() and "running" not in terminal.getvalue()
    loading[0] = False
    bars(QueueEvent("progress", "job1", step=1, total=4))
    bars(QueueEvent("progress", "job1", step=2, total=4))
    last = terminal.getvalue().rsplit("\r", 1)[-1]
    assert "2/4" in last and "running" in last and "loading model" not in last


def test_discord_message_says_loading_model() -> None:
    from bot import render
    from engine.jobs.model import Job, JobKind, JobState

    job = Job(id="j1", kind=JobKind.IMAGINE, state=JobState.RUNNING, user_id=5, prompt_text="a harbour",
              prompt_json=None, request_json=None, seed=3, model="tiny", guild_id=None, channel_id=None,
              message_id=None, parent_id=None, parent_index=None, options={}, priority=0, attempts=1, error=None,
              created_at=datetime.now(UTC), queued_at=None, started_at=None, finished_at=None)
    assert "loading model" in render.progress_text(job, 0, None, loading=True)
    assert "loading model" not in render.progress_text(job, 0, None)


# ----- install, scripts, packaging -----------------------------------------------------------------
def test_pyproject_license_is_an_spdx_string() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "MIT"
    requires = project["build-system"]["requires"]
    assert any(re.fullmatch(r"setuptools>=(\d+).*", r) and int(re.match(r"setuptools>=(\d+)", r)[1]) >= 77
               for r in requires)


def test_install_shows_progress_and_says_how_to_reach_tessera(tmp_path: Path) -> None:
    """install.sh against a stand-in venv whose python records what it is asked to do."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "calls.txt"
    fake = venv / "bin" / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n', encoding="utf-8")
    fake.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "TESSERA_VENV": str(venv), "HOME": str(tmp_path)}
    result = subprocess.run(["bash", "-c", f'source "{ROOT}/scripts/install.sh"'], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    install = [line for line in log.read_text().splitlines() if "-e " in line]
    assert install and "--quiet" not in install[0] and "--progress-bar on" in install[0]
    assert "GB" in result.stderr and "minutes" in result.stderr
    assert f"{venv}/bin/tessera" in result.stderr and "activate" in result.stderr


def test_readme_set_up_commands_exist(capsys: pytest.CaptureFixture[str]) -> None:
    """Every `tessera …` the set-up section tells a new operator to run is a real command with --help."""
    from bot.cli import main

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    assert ".venv/bin/tessera" in section and "source .venv/bin/activate" in section
    assert "download.pytorch.org/whl/cpu" in section  # the CPU-only TORCH_SPEC
    commands = set(re.findall(r"tessera ((?:models )?[a-z]+)", section))
    assert {"invite", "models pull", "models list"} <= commands
    for command in sorted(commands):
        with pytest.raises(SystemExit) as exit_info:
            main([*command.split(), "--help"])
        assert exit_info.value.code == 0, command
    capsys.readouterr()


async def test_discord_progress_says_loading_model_while_the_model_loads(tiny_models: dict[str, Path],
                                                                          data_dir: Path) -> None:
    """A job taken by the GPU thread before the model is ready shows "loading model", not "starting"."""
    from tests.bot_helpers import StepExecutor, start_bot

    executor = StepExecutor()
    executor.loaded.clear()  # the model is still loading
    bot = await start_bot(tiny_models["sd15"], data_dir, executor=executor)
    try:
        interaction = await bot.h.run_command("imagine", {"prompt": "an early bird"})
        await bot.until(lambda: any("loading model" in (c.content or "") for c in bot.http.for_token(interaction.token)))
        assert not any("(starting)" in (c.content or "") for c in bot.http.for_token(interaction.token))
        executor.loaded.set()
        job = await bot.only_job()
        await bot.finished(job.id)
    finally:
        await bot.close()
