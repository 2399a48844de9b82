"""Scale-out end to end: a real redis-server, two `tessera worker` processes with the tiny model.

The bot side runs in the test (through `bot.service.Tessera` with QUEUE_URL set, or a bare
`RedisQueue`); the workers load the tiny SD 1.5 pipeline once and share the jobs. The last
test SIGKILLs a worker in the middle of a job and checks the other one finishes it, once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from PIL import Image

from engine.jobs.fairness import Limits
from engine.jobs.model import JobState
from engine.jobs.queue import QueueEvent
from engine.jobs.redis_queue import RedisQueue
from storage.api import Storage
from tests.fixtures.redis_server import RedisServer, die_with_parent, redis_server
from tests.queue_helpers import create_job, make_request, wait_for

ROOT = Path(__file__).resolve().parent.parent
WORKER_IDS = ("wa", "wb")
STARTUP_TIMEOUT_S = 180.0  # two workers importing torch and diffusers on a busy machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis"), password="test-secret") as running:
        yield running


@pytest.fixture(scope="module")
def small_model(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD 1.5 pipeline with a 64 px, 3-step profile, so grids take a blink on CPU."""
    folder = tmp_path_factory.mktemp("models") / "sd15-small"
    folder.mkdir()
    for entry in tiny_models["sd15"].iterdir():
        (folder / entry.name).symlink_to(entry)
    (folder / "tessera.json").write_text(json.dumps({"native": 64, "steps": 3, "guidance": 5.0}))
    return folder


@pytest.fixture(scope="module")
def worker_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker-logs")


@pytest.fixture(scope="module")
def workers(server: RedisServer, small_model: Path, worker_logs: Path,
            tiny_models: dict[str, Path]) -> Iterator[dict[str, subprocess.Popen]]:
    logs = worker_logs
    env = {**os.environ, "MODEL_ID": str(small_model), "DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
           "CAPTION_MODEL": str(tiny_models["blip"]),
           "DATA_DIR": str(logs / "unused"), "LOG_LEVEL": "INFO", "OMP_NUM_THREADS": "1"}
    env.pop("QUEUE_URL", None)
    running: dict[str, subprocess.Popen] = {}
    for worker_id in WORKER_IDS:
        out = (logs / f"{worker_id}.log").open("wb")
        running[worker_id] = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker", "--queue", server.url, "--id", worker_id,
             "--visibility-timeout", "2"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent)
    yield running
    for process in running.values():
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
    for process in running.values():
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


class Bot:
    def __init__(self, queue: RedisQueue, storage: Storage) -> None:
        self.queue = queue
        self.storage = storage
        self.events: list[QueueEvent] = []
        queue.subscribe(self.events.append)

    def kinds(self, job_id: str) -> list[str]:
        return [e.kind for e in self.events if e.job_id == job_id]

    async def wait(self, *job_ids: str, timeout: float = 60.0) -> None:
        await wait_for(lambda: all(any(k in ("done", "failed", "cancelled") for k in self.kinds(j)) for j in job_ids),
                       timeout)


async def wait_for_workers(queue: RedisQueue, workers: dict[str, subprocess.Popen], count: int = 2) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while len(queue.workers()) < count:
        dead = [name for name, p in workers.items() if p.poll() is not None]
        assert not dead or count < len(workers), f"worker {dead} exited with {workers[dead[0]].returncode}"
        assert time.monotonic() < deadline, "the workers did not start in time"
        await asyncio.sleep(0.1)


@pytest.fixture
async def bot(server: RedisServer, workers: dict[str, subprocess.Popen], data_dir: Path) -> AsyncIterator[Bot]:
    storage = await Storage.open(data_dir)
    queue = RedisQueue(storage, server.url, limits=Limits(max_per_user=10, max_running_per_user=2, max_total=50,
                                                          batch_size=1), job_timeout_s=120.0, worker_poll_s=0.1)
    await queue.start()
    await wait_for_workers(queue, workers)
    yield Bot(queue, storage)
    await queue.stop()
    await storage.close()


async def test_the_service_with_queue_url_runs_prompts_on_the_workers(
        server: RedisServer, workers: dict[str, subprocess.Popen], small_model: Path, data_dir: Path) -> None:
    from bot.config import load_settings
    from bot.service import Tessera

    settings = load_settings(queue_url=server.url, model_id=str(small_model), device="cpu", data_dir=data_dir,
                             queue_batch_size=1)
    service = await Tessera.start(settings)
    try:
        assert type(service.queue).__name__ == "RedisQueue"
        await wait_for_workers(service.queue, workers)  # type: ignore[arg-type]
        events: list[QueueEvent] = []
        service.subscribe(events.append)
        jobs = [*await service.imagine(user_id=1, prompt_text="a red fox in snow --seed 11"),
                *await service.imagine(user_id=2, prompt_text="a lighthouse at dusk --seed 12")]
        await wait_for(lambda: sum(e.kind in ("done", "failed") for e in events) == 2, 60)
        done = {e.job_id: e for e in events if e.kind == "done"}
        assert set(done) == {j.id for j in jobs}
        for job in jobs:
            assert (await service.storage.jobs.require(job.id)).state == JobState.DONE
            records = done[job.id].images
            assert len(records) == 4 and all(r.path.is_relative_to(data_dir) for r in records)
            with Image.open(records[0].path) as image:
                assert image.size == (64, 64) and "tessera" in image.text  # metadata added by the bot
            assert done[job.id].upload is not None and done[job.id].upload.data
        # The two jobs were handed over together and ran at the same time, one per worker.
        assert {service.queue.worker_of[j.id] for j in jobs} == set(WORKER_IDS)  # type: ignore[attr-defined]
    finally:
        await service.close()


async def test_describe_and_shorten_run_on_the_workers_and_their_answers_come_back(
        server: RedisServer, workers: dict[str, subprocess.Popen], small_model: Path, tiny_models: dict[str, Path],
        data_dir: Path) -> None:
    """The bot loads no captioner and no text encoder: the picture travels to a worker as bytes,
    the words as strings, and each answer comes back as JSON, checked and stored with its job."""
    import io

    from bot.config import load_settings
    from bot.service import Tessera

    settings = load_settings(queue_url=server.url, model_id=str(small_model), device="cpu", data_dir=data_dir,
                             caption_model=str(tiny_models["blip"]), queue_batch_size=1)
    service = await Tessera.start(settings)
    try:
        await wait_for_workers(service.queue, workers)  # type: ignore[arg-type]
        buffer = io.BytesIO()
        Image.new("RGB", (96, 64), (200, 120, 40)).save(buffer, "PNG")
        described = await service.describe(user_id=1, image_bytes=buffer.getvalue())
        shortened = await service.shorten(user_id=2, prompt_text="a small red fox in deep snow --ar 3:2")
        description = await service.answer_of(described, timeout=120)
        shortening = await service.answer_of(shortened, timeout=120)
        assert len(description["prompts"]) == 4 and all(p.endswith(" --ar 3:2") for p in description["prompts"])
        assert [w["word"] for w in shortening["words"]] == ["a", "small", "red", "fox", "in", "deep", "snow"]
        assert max(w["weight"] for w in shortening["words"]) == 1.0
        assert shortening["prompts"] and all(p.endswith("--ar 3:2") for p in shortening["prompts"])
        for job, answer in ((described, description), (shortened, shortening)):
            assert service.queue.worker_of[job.id] in WORKER_IDS  # type: ignore[attr-defined]
            stored = await service.require_job(job.id)
            assert stored.state == JobState.DONE and stored.result_json == answer
    finally:
        await service.close()


def test_tessera_imagine_with_queue_url_runs_on_a_worker(
        server: RedisServer, workers: dict[str, subprocess.Popen], small_model: Path, worker_logs: Path,
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    for name, value in {"QUEUE_URL": server.url, "MODEL_ID": str(small_model), "DEVICE": "cpu",
                        "DATA_DIR": str(data_dir)}.items():
        monkeypatch.setenv(name, value)
    code = main(["imagine", "a paper boat --seed 21", "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    [result] = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert result["seed"] == 21 and len(result["files"]) == 4 and Path(result["grid"]).is_file()
    ran_on = [p.stem for p in worker_logs.glob("*.log") if f"[job {result['job_id']}] running job" in p.read_text()]
    assert len(ran_on) == 1 and ran_on[0] in WORKER_IDS  # made by a worker process, not by the CLI


async def test_fair_turns_hold_across_two_workers(bot: Bot, small_model: Path) -> None:
    slow = make_request(steps=12, model=str(small_model))
    hog = [await create_job(bot.storage, 1, request=slow) for _ in range(5)]
    for job in hog:
        await bot.queue.submit(job)
    started = lambda: [e.job_id for e in bot.events if e.kind == "started"]  # noqa: E731
    await wait_for(lambda: len(started()) == 2)  # one job on each worker; the rest waits in the bot
    newcomer = await create_job(bot.storage, 2, request=make_request(steps=2, model=str(small_model)))
    # Behind the hog's next turn only, not behind its three waiting jobs.
    assert await bot.queue.submit(newcomer) == 2
    await bot.wait(newcomer.id, *(j.id for j in hog))
    assert started()[:4] == [hog[0].id, hog[1].id, hog[2].id, newcomer.id]  # the position it was told was true
    assert {bot.queue.worker_of[j.id] for j in hog[:2]} == set(WORKER_IDS)
    for job in [*hog, newcomer]:
        assert bot.kinds(job.id).count("done") == 1
        assert len(await bot.storage.images.for_job(job.id)) == 4


async def test_a_worker_killed_mid_job_is_replaced_and_the_job_completes_once(
        bot: Bot, workers: dict[str, subprocess.Popen], small_model: Path) -> None:
    job = await create_job(bot.storage, 1, request=make_request(steps=40, model=str(small_model)))
    await bot.queue.submit(job)
    await wait_for(lambda: "progress" in bot.kinds(job.id), 60)  # it is running on a worker
    victim = bot.queue.worker_of[job.id]
    os.kill(workers[victim].pid, signal.SIGKILL)
    workers[victim].wait()
    await bot.wait(job.id, timeout=90)
    survivor = next(w for w in WORKER_IDS if w != victim)
    assert bot.kinds(job.id).count("done") == 1 and "failed" not in bot.kinds(job.id)
    assert bot.queue.worker_of[job.id] == survivor
    assert (await bot.storage.jobs.require(job.id)).state == JobState.DONE
    assert len(await bot.storage.images.for_job(job.id)) == 4
    # The killed worker's result never comes; the survivor's is the one and only completion.
    await asyncio.sleep(0.5)
    assert bot.queue.ignored_results == 0 and bot.kinds(job.id).count("done") == 1
