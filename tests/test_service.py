"""bot.service.Tessera: the checks before anything is stored, and the job kinds end to end.

Most tests use the fake executor (the service and queue are the units); one runs the tiny
real SD 1.5 model and the tiny Real-ESRGAN through imagine → upscale → vary → reroll.
"""

from __future__ import annotations

import asyncio
import http.server
import io
import json
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from PIL import Image

from bot.authorization import Actor
from bot.config import load_settings
from bot.service import NeedsConfirmation, Tessera, find_banned_word, peek_profile
from engine.errors import (
    ImageFetchError,
    PromptError,
    QueueLimitError,
    StorageError,
    TesseraError,
    UpscaleError,
)
from engine.jobs.model import JobKind, JobState
from engine.jobs.queue import QueueEvent
from engine.request import GenerationRequest
from storage.models import GuildSettings, UserSettings
from tests.queue_helpers import FakeExecutor, wait_for


@pytest.fixture(scope="module")
def small_model(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD 1.5 folder with a profile override: 128² native, 2 steps (fast on a CPU)."""
    folder = tmp_path_factory.mktemp("model") / "sd15"
    shutil.copytree(tiny_models["sd15"], folder)
    (folder / "tessera.json").write_text(json.dumps({"native": 128, "steps": 2, "guidance": 5.0}))
    return folder


def make_settings(data_dir: Path, model: Path, **overrides: object):
    values: dict = dict(model_id=str(model), device="cpu", data_dir=data_dir, queue_max_per_user=6,
                        queue_max_total=50, queue_batch_size=4, banned_words="dragon, red panda")
    values.update(overrides)
    return load_settings(**values)


class Recorder:
    def __init__(self, service: Tessera) -> None:
        self.events: list[QueueEvent] = []
        service.subscribe(self.events.append)

    def final(self, job_id: str) -> QueueEvent | None:
        for event in reversed(self.events):
            if event.job_id == job_id and event.kind in ("done", "failed", "cancelled"):
                return event
        return None

    async def wait(self, *job_ids: str, timeout: float = 60) -> list[QueueEvent]:
        await wait_for(lambda: all(self.final(j) for j in job_ids), timeout=timeout)
        return [self.final(j) for j in job_ids]  # type: ignore[misc]


@pytest.fixture
async def fake(data_dir: Path, small_model: Path) -> AsyncIterator[tuple[Tessera, FakeExecutor, Recorder]]:
    executor = FakeExecutor()
    service = await Tessera.start(make_settings(data_dir, small_model), executor=executor)
    recorder = Recorder(service)
    yield service, executor, recorder
    await service.close()


def test_peek_profile_reads_the_folder_without_loading(small_model: Path, tiny_models: dict[str, Path]) -> None:
    profile = peek_profile(str(small_model))
    assert profile is not None and (profile.family, profile.native, profile.steps) == ("sd1", 128, 2)
    xl = peek_profile(str(tiny_models["sdxl"]))
    assert xl is not None and xl.family == "sdxl" and xl.native == 1024
    assert peek_profile("/nonexistent/folder") is None


def test_find_banned_word_matches_whole_words_only() -> None:
    assert find_banned_word("A Red Panda in snow", ["red panda"]) == "red panda"
    assert find_banned_word("dragonfly over a pond", ["dragon"]) is None
    assert find_banned_word("a dragon, flying", ["dragon"]) == "dragon"


async def test_imagine_resolves_queues_and_runs(fake: tuple[Tessera, FakeExecutor, Recorder]) -> None:
    service, _, recorder = fake
    jobs = await service.imagine(user_id=1, prompt_text="a lighthouse at dusk --ar 2:1 --v 6", guild_id=5, channel_id=6)
    assert len(jobs) == 1
    job = jobs[0]
    assert job.kind == JobKind.IMAGINE and job.state == JobState.QUEUED and job.prompt_text.startswith("a lighthouse")
    request = GenerationRequest.from_json(job.request_json or {})
    assert (request.width, request.height, request.steps) == (192, 64, 2) and request.model == service.settings.model_id
    assert job.seed == request.seed and job.guild_id == 5 and job.channel_id == 6
    (done,) = await recorder.wait(job.id)
    assert done.kind == "done" and len(done.images) == 4 and any("--v" in p for p in done.ignored)
    upload = await service.result_upload(job.id)
    assert upload.data[:2] == b"\xff\xd8"


async def test_user_defaults_apply(fake: tuple[Tessera, FakeExecutor, Recorder]) -> None:
    service, _, _ = fake
    await service.storage.settings.save_user(UserSettings(user_id=2, aspect="1:2", quality=2.0))
    (job,) = await service.imagine(user_id=2, prompt_text="a quiet harbour")
    request = GenerationRequest.from_json(job.request_json or {})
    assert (request.width, request.height, request.steps) == (64, 192, 4)
    (job,) = await service.imagine(user_id=2, prompt_text="a quiet harbour --ar 1:1 --q .5")
    request = GenerationRequest.from_json(job.request_json or {})
    assert (request.width, request.height, request.steps) == (128, 128, 1)


async def test_banned_words_are_refused_naming_the_word(fake: tuple[Tessera, FakeExecutor, Recorder]) -> None:
    service, _, _ = fake
    await service.storage.settings.save_guild(GuildSettings(guild_id=9, banned_words=("teapot",)))
    for text, word, guild in [("a NUDE statue", "nude", None), ("a dragon at sea", "dragon", None),
                              ("a big teapot", "teapot", 9)]:
        with pytest.raises(PromptError, match=f"“{word}” is not allowed"):
            await service.imagine(user_id=3, prompt_text=text, guild_id=guild)
    assert (await service.imagine(user_id=3, prompt_text="a big teapot", guild_id=10))  # other servers allow it
    assert len(await service.storage.jobs.list(user_id=3)) == 1


async def test_many_jobs_need_confirmation(fake: tuple[Tessera, FakeExecutor, Recorder]) -> None:
    service, _, recorder = fake
    with pytest.raises(NeedsConfirmation) as info:
        await service.imagine(user_id=4, prompt_text="a {red, blue, green} bird --repeat 2")
    assert info.value.count == 6 and "6 jobs" in str(info.value)
    assert await service.storage.jobs.list(user_id=4) == []
    with pytest.raises(QueueLimitError, match="at most 6 jobs waiting"):
        await service.imagine(user_id=4, prompt_text="a {red, blue, green} bird --repeat 3", confirmed=True)
    jobs = await service.imagine(user_id=4, prompt_text="a {red, blue, green} bird --repeat 2", confirmed=True)
    assert len(jobs) == 6 and len({j.seed for j in jobs}) == 6
    assert {j.prompt_text for j in jobs} == {"a red bird --repeat 2", "a blue bird --repeat 2", "a green bird --repeat 2"}
    await recorder.wait(*[j.id for j in jobs])


async def test_prompt_errors_store_nothing(fake: tuple[Tessera, FakeExecutor, Recorder]) -> None:
    service, _, _ = fake
    with pytest.raises(PromptError):
        await service.imagine(user_id=5, prompt_text="a cat --chaos 150")
    assert await service.storage.jobs.list(user_id=5) == []


async def test_cancel_rules(fake: tuple[Tessera, FakeExecutor, Recorder]) -> None:
    service, executor, recorder = fake
    executor.gate.clear()
    (running,) = await service.imagine(user_id=6, prompt_text="a slow one --ar 3:1")
    await wait_for(executor.started.is_set)
    (waiting,) = await service.imagine(user_id=6, prompt_text="a waiting one")
    with pytest.raises(TesseraError, match="not yours"):
        await service.cancel(actor=Actor(7), job_id=waiting.id)
    cancelled = await service.cancel(actor=Actor(6), job_id=waiting.id.upper())
    assert cancelled.state == JobState.CANCELLED
    with pytest.raises(TesseraError, match="already cancelled"):
        await service.cancel(actor=Actor(6), job_id=waiting.id)
    await service.cancel(actor=Actor(6), job_id=running.id)
    (final,) = await recorder.wait(running.id)
    assert final.kind == "cancelled"
    executor.gate.set()


async def test_upscale_vary_reroll_checks(fake: tuple[Tessera, FakeExecutor, Recorder]) -> None:
    service, _, recorder = fake
    (job,) = await service.imagine(user_id=8, prompt_text="a windmill --ar 2:1")
    with pytest.raises(StorageError, match="only finished jobs"):
        await service.upscale(user_id=8, job_id=job.id, index=0)
    await recorder.wait(job.id)
    with pytest.raises(StorageError, match="no image 5"):
        await service.upscale(user_id=8, job_id=job.id, index=4)
    with pytest.raises(UpscaleError, match="×3"):
        await service.upscale(user_id=8, job_id=job.id, index=0, scale=3)
    service.settings.upscale_max_side = 512
    with pytest.raises(UpscaleError, match="768×256"):
        await service.upscale(user_id=8, job_id=job.id, index=0, scale=4)
    up = await service.upscale(user_id=8, job_id=job.id, index=1, scale=2)
    assert up.kind == JobKind.UPSCALE and up.priority >= 1 and up.parent_index == 1 and up.options["scale"] == 2
    varied = await service.vary(user_id=9, job_id=job.id, index=2, strength="strong")
    request = GenerationRequest.from_json(varied.request_json or {})
    parent_request = GenerationRequest.from_json(job.request_json or {})
    image = await service.storage.images.get(job.id, 2)
    assert request.init_image == str(image.path) and request.variation == "strong"
    assert (request.width, request.height) == (parent_request.width, parent_request.height)
    rerolled = await service.reroll(user_id=9, job_id=job.id)
    assert rerolled.kind == JobKind.REROLL and rerolled.seed != job.seed
    await recorder.wait(up.id, varied.id, rerolled.id)
    # A variation of an upscaled image uses the original request with the big image as init.
    from_up = await service.vary(user_id=9, job_id=up.id, index=0, strength="subtle", prompt_text="a windmill at night")
    request = GenerationRequest.from_json(from_up.request_json or {})
    assert request.width == parent_request.width and "night" in request.prompts[0].text
    await recorder.wait(from_up.id)


async def test_vary_upload_and_bad_upload(fake: tuple[Tessera, FakeExecutor, Recorder]) -> None:
    service, _, recorder = fake
    buffer = io.BytesIO()
    Image.new("RGB", (90, 45), (200, 100, 50)).save(buffer, format="JPEG")
    job = await service.vary_upload(user_id=10, image_bytes=buffer.getvalue(), prompt_text="oil painting")
    request = GenerationRequest.from_json(job.request_json or {})
    assert request.init_image and Path(request.init_image).is_file()
    assert Path(request.init_image).parent == service.inputs_dir.resolve() and request.width > request.height
    await recorder.wait(job.id)
    with pytest.raises(ImageFetchError):
        await service.vary_upload(user_id=10, image_bytes=b"not an image")


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[str]:
    folder = tmp_path / "www"
    folder.mkdir()
    Image.new("RGB", (40, 40), (0, 128, 255)).save(folder / "blue.png")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_image_prompts_are_fetched_and_stored(fake: tuple[Tessera, FakeExecutor, Recorder], image_server: str) -> None:
    service, _, recorder = fake
    # The test server is on loopback, which image links may not reach unless the operator allows it.
    port = int(image_server.rsplit(":", 1)[1])
    service.settings = service.settings.model_copy(update={"image_fetch_allowed_hosts": ["127.0.0.1"],
                                                           "image_fetch_ports": [port]})
    (job,) = await service.imagine(user_id=11, prompt_text=f"{image_server}/blue.png a blue lagoon")
    request = GenerationRequest.from_json(job.request_json or {})
    assert request.init_image and Path(request.init_image).is_file() and request.strength is not None
    (attached,) = await service.imagine(user_id=11, prompt_text="a blue lagoon", image_url=f"{image_server}/blue.png")
    assert GenerationRequest.from_json(attached.request_json or {}).init_image == request.init_image
    with pytest.raises(ImageFetchError):
        await service.imagine(user_id=11, prompt_text=f"{image_server}/missing.png a lagoon")
    await recorder.wait(job.id, attached.id)


async def test_end_to_end_with_the_tiny_model(data_dir: Path, small_model: Path, tiny_models: dict[str, Path]) -> None:
    """The real engine: imagine → upscale ×2 → vary → reroll, then a restart keeps buttons working."""
    import torch

    torch.set_num_threads(1)
    settings = make_settings(data_dir, small_model, upscaler_weights_dir=tiny_models["x4"].parent)
    service = await Tessera.start(settings)
    recorder = Recorder(service)
    try:
        assert await service.wait_ready(120)
        jobs = await service.imagine(user_id=1, prompt_text="a red cube --seed 42 --no blue", confirmed=True)
        twin = await service.imagine(user_id=2, prompt_text="a red cube --seed 42 --no blue")
        events = await recorder.wait(jobs[0].id, twin[0].id, timeout=120)
        assert [e.kind for e in events] == ["done", "done"], [e.error for e in events]
        done = events[0]
        assert len(done.images) == 4 and done.upload is not None
        # Same seed and request in one batch or alone: the same pixels.
        assert [r.sha256 for r in done.images] == [r.sha256 for r in events[1].images]
        assert any(e.kind == "progress" and e.job_id == jobs[0].id for e in recorder.events)
        up = await service.upscale(user_id=1, job_id=jobs[0].id, index=0, scale=2)
        vary = await service.vary(user_id=1, job_id=jobs[0].id, index=1, strength="subtle")
        reroll = await service.reroll(user_id=1, job_id=jobs[0].id)
        finals = await recorder.wait(up.id, vary.id, reroll.id, timeout=120)
        assert [e.kind for e in finals] == ["done", "done", "done"], [e.error for e in finals]
        with Image.open(finals[0].images[0].path) as image:
            assert image.size == (256, 256) and "tessera" in image.text
        assert len(finals[1].images) == 4 and len(finals[2].images) == 4
    finally:
        await service.close()
    again = await Tessera.start(settings)
    try:
        upload = await again.result_upload(jobs[0].id)
        assert Image.open(io.BytesIO(upload.data)).size == (256, 256)
    finally:
        await again.close()
    await asyncio.sleep(0)


async def test_wait_for_jobs_returns_final_events_even_after_the_fact(
        fake: tuple[Tessera, FakeExecutor, Recorder]) -> None:
    service, executor, _ = fake
    jobs = await service.imagine(user_id=12, prompt_text="a {calm, stormy} sea")
    finals = await service.wait_for_jobs([j.id for j in jobs], timeout=30)
    assert [finals[j.id].kind for j in jobs] == ["done", "done"] and len(finals[jobs[0].id].images) == 4
    again = await service.wait_for_jobs([jobs[0].id], timeout=5)
    assert again[jobs[0].id].kind == "done" and again[jobs[0].id].upload is not None
    executor.gate.clear()  # it is waiting or held on its first step when the cancel comes
    (cancelled,) = await service.imagine(user_id=12, prompt_text="a quiet sea")
    await service.cancel(actor=Actor(12), job_id=cancelled.id)
    executor.gate.set()
    assert (await service.wait_for_jobs([cancelled.id], timeout=5))[cancelled.id].kind == "cancelled"
