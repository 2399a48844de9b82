"""Where the queue backends, the service, the bot and the CLI meet.

- safety flags travel over Redis (the worker's result carries them, strictly checked);
- the bot says in words which images the safety filter hid;
- a bot with `QUEUE_URL=redis://…` starts without the model's weights (its workers have them);
- the CLI runs only the jobs it submits, even in a running bot's DATA_DIR.

Fake executors stand in for the GPU; Redis is a real redis-server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot import render
from bot.config import load_settings
from bot.service import Tessera
from engine.errors import ModelError
from engine.jobs.executor import BatchControl, WorkItem, WorkResult
from engine.jobs.model import Job, JobKind, JobState
from engine.jobs.redis_wire import (
    BatchPayload,
    JobPayload,
    PayloadError,
    ResultPayload,
    parse_batch,
    parse_result,
)
from engine.jobs.worker import Worker
from storage.api import Storage
from storage.models import GuildSettings
from tests.bot_helpers import Bot, StepExecutor, start_bot
from tests.discord_harness import GUILD_ID, USER_ID
from tests.fixtures.redis_server import RedisServer, redis_server
from tests.queue_helpers import FakeExecutor, create_job, make_request

HIDDEN = "Image 2 was hidden by this server's safety filter."
HUB_ID = "tessera-tests/not-in-any-cache"  # a hub id this machine has no files of
_databases = itertools.count(1)


def flag_second(items: Sequence[WorkItem], results: list[WorkResult]) -> list[WorkResult]:
    """What the safety filter does to a job that asked for it: image 2 becomes the notice."""
    for item, result in zip(items, results, strict=True):
        if result.images and item.request is not None and item.request.safety_check:
            result.flagged = [1]
    return results


class FlaggingExecutor(FakeExecutor):
    """The queue tests' fake GPU, with a filter that flags image 2, and a 'loaded model' whose
    profile a worker reports in its heartbeat (as a real worker's EngineExecutor does)."""

    def __init__(self, ref: str = HUB_ID) -> None:
        super().__init__(steps=2)
        from engine.diffusion.models import ModelProfile

        self.model = SimpleNamespace(ref=ref, profile=ModelProfile("sd1", 64, 2, 5.0))

    def run(self, items: Sequence[WorkItem], control: BatchControl) -> list[WorkResult]:
        return flag_second(items, super().run(items, control))


class FlaggingStepExecutor(StepExecutor):
    def run(self, items: Sequence[WorkItem], control: BatchControl) -> list[WorkResult]:
        return flag_second(items, super().run(items, control))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as running:
        yield running


@pytest.fixture
def redis_url(server: RedisServer) -> str:
    """A database of its own per test (the service uses the default key namespace)."""
    return f"redis://127.0.0.1:{server.port}/{next(_databases)}"


@pytest.fixture
def small_model(tiny_models: dict[str, Path], tmp_path: Path) -> Path:
    """The tiny SD 1.5 folder (never loaded here) with a 64 px, 2-step profile."""
    folder = tmp_path / "tiny-sd15"
    folder.mkdir()
    for child in tiny_models["sd15"].iterdir():
        (folder / child.name).symlink_to(child)
    (folder / "tessera.json").write_text(json.dumps({"native": 64, "steps": 2, "guidance": 6}))
    return folder


async def start_worker(url: str, executor: FakeExecutor, model_ref: str,
                       worker_id: str = "w0") -> tuple[Worker, asyncio.Task]:
    worker = Worker(url, executor, worker_id=worker_id, visibility_timeout_s=1.0, poll_s=0.05, model_ref=model_ref)
    return worker, asyncio.create_task(worker.run())


async def stop_worker(worker: Worker, task: asyncio.Task) -> None:
    worker.request_stop()
    await asyncio.gather(task, return_exceptions=True)


# ----- 1. the wire: flags and the safety switch ------------------------------------------------------
def _batch(**request_changes: object) -> bytes:
    request = {**make_request(safety_check=True).to_json(), **request_changes}
    for name, value in request_changes.items():
        if value is ...:
            del request[name]
    return BatchPayload(batch_id="b1", token="t1", reply_to="tessera:results:x", events="tessera:events:x",
                        timeout_s=60.0, max_attempts=3, jobs=(JobPayload("job1", "imagine", request),)).to_bytes()


def test_a_batch_must_say_whether_its_jobs_are_checked() -> None:
    assert parse_batch(_batch()).jobs[0].request["safety_check"] is True
    for bad in (..., "yes", 1, None):  # missing (...), or not a boolean: the filter must not be skipped silently
        with pytest.raises(PayloadError, match=r"jobs\[0\]\.request\.safety_check must be true or false"):
            parse_batch(_batch(safety_check=bad))


def test_result_flags_round_trip_and_are_checked() -> None:
    pngs = (b"\x89PNG1", b"\x89PNG2", b"\x89PNG3", b"\x89PNG4")
    good = ResultPayload("job1", "t1", "w0", "done", images=pngs, flagged=(0, 3))
    assert parse_result(good.to_bytes()).flagged == (0, 3)
    assert parse_result(ResultPayload("job1", "t1", "w0", "done", images=pngs).to_bytes()).flagged == ()
    raw = json.loads(good.to_bytes())
    for flagged, message in (([4], "from 0 to 3"), ([-1], "from 0 to 3"), ([True], "whole number"),
                             (["1"], "whole number"), ([1.0], "whole number"), ([1, 1], "twice"),
                             ("0", "list of image indexes"), (list(range(17)), "list of image indexes")):
        with pytest.raises(PayloadError, match=message):
            parse_result(json.dumps({**raw, "flagged": flagged}))


# ----- 2. the bot says which images were hidden ------------------------------------------------------
def test_the_safety_notice_names_the_hidden_images() -> None:
    assert render.safety_notice([]) == ""
    assert render.safety_notice([1]) == HIDDEN
    assert render.safety_notice([3, 0, 2]) == "Images 1, 3 and 4 were hidden by this server's safety filter."
    assert render.safety_notice([0, 1]) == "Images 1 and 2 were hidden by this server's safety filter."
    assert render.safety_notice([0], single=True) == "The image was hidden by this server's safety filter."
    job = Job(id="j1", kind=JobKind.IMAGINE, state=JobState.DONE, user_id=5, prompt_text="a harbour",
              prompt_json=None, request_json=None, seed=3, model="tiny", guild_id=None, channel_id=None,
              message_id=None, parent_id=None, parent_index=None, options={}, priority=0, attempts=1, error=None,
              created_at=datetime.now(UTC), queued_at=None, started_at=None, finished_at=None)
    text = render.done_text(job, ("--v 6",), (1,))
    assert text.splitlines()[1] == HIDDEN and "--v" in text and text.endswith("-# job `j1`")
    assert "hidden" not in render.done_text(job, ("--v 6",))


@pytest.fixture
async def flagging_bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir, executor=FlaggingStepExecutor())
    yield running
    await running.close()


async def test_the_result_message_says_an_image_was_hidden(flagging_bot: Bot) -> None:
    bot = flagging_bot

    async def imagine(prompt: str) -> str:
        before = {job.id for job in await bot.jobs()}
        interaction = await bot.h.run_command("imagine", {"prompt": prompt})
        [job] = [job for job in await bot.jobs() if job.id not in before]
        assert (await bot.finished(job.id)).state is JobState.DONE
        final = [c for c in bot.http.for_token(interaction.token) if c.files and c.method == "PATCH"][-1]
        return final.content or ""

    unchecked = await imagine("a quiet harbour --seed 3")  # this server has no filter: nothing hidden
    assert "hidden" not in unchecked and "a quiet harbour" in unchecked
    await bot.service.storage.settings.save_guild(GuildSettings(GUILD_ID, safety_checker=True))
    checked = await imagine("a quiet harbour --seed 4")
    assert HIDDEN in checked.splitlines() and f"<@{USER_ID}>" in checked


# ----- 3. a Redis bot needs no weights; flags come back from the worker --------------------------------
async def test_a_redis_bot_starts_without_the_model_and_its_jobs_run_on_a_worker(
        redis_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from engine.diffusion.models import check_model_ref

    with pytest.raises(ModelError):  # what a bot with the in-process queue would stop on
        check_model_ref(HUB_ID)
    settings = load_settings(queue_url=redis_url, model_id=HUB_ID, data_dir=data_dir, device="cpu",
                             safety_checker=True, safety_checker_model="tessera-tests/no-checker-either")
    service = await Tessera.start(settings)
    executor = FlaggingExecutor()
    worker, task = await start_worker(redis_url, executor, HUB_ID)
    try:
        assert type(service.queue).__name__ == "RedisQueue" and service.executor is None
        [job] = await service.imagine(user_id=7, prompt_text="a paper boat --seed 21")  # waits for the worker's profile
        event = (await service.wait_for_jobs([job.id], timeout=30))[job.id]
        assert event.kind == "done", event.error
        assert executor.batches == [[job.id]] and service.queue.worker_of[job.id] == "w0"  # type: ignore[attr-defined]
        assert job.request_json["width"] == 64 and job.request_json["safety_check"] is True  # the worker's profile
        assert event.flagged == (1,)  # the worker's safety flags reached the bot
        assert len(event.images) == 4 and all(r.path.is_relative_to(data_dir) for r in event.images)
    finally:
        await stop_worker(worker, task)
        await service.close()


# ----- 4. the CLI leaves a running bot's jobs alone --------------------------------------------------
async def _store_bots_jobs(data_dir: Path) -> tuple[str, str]:
    """A running bot's jobs in its DATA_DIR: one waiting, one on its GPU right now."""
    async with await Storage.open(data_dir) as storage:
        waiting = await create_job(storage, 99, request=make_request(seed=1))
        running = await create_job(storage, 98, request=make_request(seed=2))
        await storage.jobs.transition(running.id, JobState.RUNNING)
    return waiting.id, running.id


@pytest.mark.parametrize("backend", ["in-process", "redis"])
async def test_the_cli_runs_only_its_own_jobs_in_a_bots_data_dir(
        backend: str, small_model: Path, data_dir: Path, tmp_path: Path, redis_url: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    from bot.subcommands._submit import ProgressBars, run_jobs, write_grid

    waiting, running = await _store_bots_jobs(data_dir)
    executor = FlaggingExecutor(ref=str(small_model))
    overrides: dict = {"queue_url": redis_url} if backend == "redis" else {}
    settings = load_settings(model_id=str(small_model), data_dir=data_dir, device="cpu", safety_checker=True,
                             **overrides)

    async def submit(service: Tessera) -> list[Job]:
        return await service.imagine(user_id=0, prompt_text="a paper boat --seed 21")

    worker = None
    if backend == "redis":
        worker = await start_worker(redis_url, executor, settings.model_id)
    try:
        code = await run_jobs("imagine", settings, submit, write_grid, tmp_path / "out",
                              executor=None if worker else executor, bars=ProgressBars(enabled=False))
    finally:
        if worker is not None:
            await stop_worker(*worker)
    out, err = capsys.readouterr()
    assert code == 0, err
    [result] = [json.loads(line) for line in out.splitlines()]
    assert executor.batches == [[result["job_id"]]]  # the CLI's job, and only it, ran
    assert result["flagged"] == [1] and len(result["files"]) == 4
    async with await Storage.open(data_dir) as storage:
        assert (await storage.jobs.require(waiting)).state is JobState.QUEUED  # still the bot's to run
        still = await storage.jobs.require(running)
        assert still.state is JobState.RUNNING and still.attempts == 1  # not re-queued, not started again

    # The bot itself (resume=True) does pick its waiting job up on its next start.
    bot_executor = FakeExecutor()
    service = await Tessera.start(load_settings(model_id=str(small_model), data_dir=data_dir, device="cpu"),
                                  executor=bot_executor)
    try:
        finals = await service.wait_for_jobs([waiting, running], timeout=30)
        assert {e.kind for e in finals.values()} == {"done"}
        assert sorted(itertools.chain.from_iterable(bot_executor.batches)) == sorted([waiting, running])
    finally:
        await service.close()
