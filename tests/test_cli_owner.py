"""Jobs asked for by a `tessera` command belong to that process: killed, it leaves stuck jobs
that the bot never runs, `tessera doctor` reports and `--fix` (or the next CLI run) fails."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.cli import main as cli
from bot.config import load_settings
from bot.service import Tessera
from engine.jobs.model import JobKind, JobOwner, JobState, NewJob
from storage.api import Storage
from storage.jobs import STUCK_MESSAGE
from storage.owner import hostname, is_gone, process_start, this_cli
from tests.queue_helpers import FakeExecutor, wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def slow_model(tiny_models: dict[str, Path], tmp_path: Path) -> Path:
    """The tiny SD 1.5 model with many steps, so a job is still unfinished when it is killed."""
    folder = tmp_path / "tiny-sd15"
    folder.mkdir()
    for child in tiny_models["sd15"].iterdir():
        (folder / child.name).symlink_to(child)
    (folder / "tessera.json").write_text(json.dumps({"native": 128, "steps": 200, "guidance": 6}))
    return folder


def _cli_jobs(database: Path) -> list[tuple[str, str, str, int]]:
    if not database.exists():
        return []
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT id, state, requester, owner_pid FROM jobs").fetchall()
    except sqlite3.Error:  # not created or migrated yet
        return []


def test_killed_imagine_is_reported_fixed_and_never_resumed_by_the_bot(
        slow_model: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATA_DIR": str(data_dir), "DEVICE": "cpu",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main())",
                              "imagine", "a lighthouse --seed 3", "--model", str(slow_model), "--out",
                              str(tmp_path / "out")], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (rows := _cli_jobs(data_dir / "tessera.sqlite3")):
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "the command never stored its job"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    [(job_id, state, requester, pid)] = rows
    assert state in ("queued", "running") and requester == "cli" and pid == child.pid

    async def bot_start() -> tuple[list[list[str]], JobState, str]:
        storage = await Storage.open(data_dir)
        bot_job = await storage.jobs.create(NewJob(kind=JobKind.UPSCALE, user_id=5, prompt_text="the bot's"))
        await storage.close()
        executor = FakeExecutor(steps=1)
        settings = load_settings(model_id=str(slow_model), device="cpu", data_dir=data_dir)
        service = await Tessera.start(settings, executor=executor)  # resume=True, as the bot does
        try:
            await wait_for(lambda: bool(executor.batches), timeout=30)
            await asyncio.sleep(0.2)
            assert service.queue.position(job_id) is None
            return executor.batches, (await service.storage.jobs.require(job_id)).state, bot_job.id
        finally:
            await service.close()

    batches, after_bot, bot_job_id = asyncio.run(bot_start())
    assert batches == [[bot_job_id]]  # the bot resumed its own job, not the dead command's
    assert after_bot == JobState(state)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    assert cli(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "1 jobs stuck: started by a `tessera imagine`" in out and job_id in out and "problems found" in out
    assert cli(["doctor", "--fix"]) == 0
    out = capsys.readouterr().out
    assert "marked 1 stuck jobs failed" in out and "all well" in out

    async def stored() -> tuple[JobState, str | None]:
        storage = await Storage.open(data_dir)
        try:
            job = await storage.jobs.require(job_id)
            return job.state, job.error
        finally:
            await storage.close()

    assert asyncio.run(stored()) == (JobState.FAILED, STUCK_MESSAGE)
    assert cli(["doctor"]) == 0
    assert "stuck jobs: 0" in capsys.readouterr().out


def _dead_process() -> JobOwner:
    """The identity of a process that ran on this host and has exited (and been reaped)."""
    sleeper = subprocess.Popen(["sleep", "30"])
    owner = JobOwner("cli", hostname(), sleeper.pid, process_start(sleeper.pid))
    sleeper.kill()
    sleeper.wait()
    return owner


def test_process_identity_tells_gone_from_alive() -> None:
    me = this_cli()
    assert me.start is not None and not is_gone(me)
    assert is_gone(JobOwner("cli", me.host, me.pid, me.start + 1))  # same pid, another process: reused
    assert is_gone(_dead_process())
    assert not is_gone(JobOwner("cli", "some-other-host", 999_999_999, 1))  # cannot check: alive
    assert not is_gone(JobOwner())  # the bot's jobs are never "gone"


async def test_the_next_cli_run_settles_jobs_of_dead_commands_only(data_dir: Path,
                                                                  tiny_models: dict[str, Path]) -> None:
    storage = await Storage.open(data_dir)
    storage.jobs.owner = _dead_process()
    dead = await storage.jobs.create(NewJob(kind=JobKind.UPSCALE, user_id=0, prompt_text="orphaned"))
    storage.jobs.owner = this_cli()  # a command still running (this test)
    alive = await storage.jobs.create(NewJob(kind=JobKind.UPSCALE, user_id=0, prompt_text="still wanted"))
    await storage.close()

    settings = load_settings(model_id=str(tiny_models["sd15"]), device="cpu", data_dir=data_dir)
    executor = FakeExecutor(steps=1)
    service = await Tessera.start(settings, executor=executor, resume=False, requester="cli")
    try:
        assert (await service.storage.jobs.require(dead.id)).state == JobState.FAILED
        assert (await service.storage.jobs.require(dead.id)).error == STUCK_MESSAGE
        assert (await service.storage.jobs.require(alive.id)).state == JobState.QUEUED
        [job] = await service.imagine(user_id=0, prompt_text="a new one")
        assert job.owner == this_cli()  # recorded as this command's
        assert (await service.wait_for_jobs([job.id], timeout=30))[job.id].kind == "done"
        assert executor.batches == [[job.id]]  # the live command's older job was left to it
    finally:
        await service.close()
