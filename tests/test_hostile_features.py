"""Hostile input against the new features (edits, /describe, /shorten): what a review found.

A member must never read the operator's model paths in an answer, cannot pile pictures up in
memory by pressing 🔄 again and again (each press is a queue job within the member's limits),
cannot queue a /shorten it will refuse, and cannot start thirty edit canvases at once.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.service import Tessera
from engine.diffusion.segment import Segmenter
from engine.errors import ModelError, PromptError, QueueLimitError
from engine.vision.describe import Describer
from tests.queue_helpers import FakeExecutor
from tests.test_service import make_settings, small_model  # noqa: F401  (the fixture)

SECRET_FOLDER = "/srv/operator-only/models/clipseg-private"


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
async def service(data_dir: Path, small_model: Path) -> AsyncIterator[Tessera]:  # noqa: F811
    started = await Tessera.start(make_settings(data_dir, small_model, caption_model="Salesforce/blip-tiny"),
                                  executor=FakeExecutor())
    yield started
    await started.close()


def test_a_region_model_that_cannot_load_names_no_path_to_a_member() -> None:
    with pytest.raises(ModelError) as error:
        Segmenter(SECRET_FOLDER).mask(Image.new("RGB", (32, 32)), "the sky")
    assert "operator-only" not in str(error.value) and "pick cells or upload a mask" in str(error.value)


def test_a_captioning_model_that_cannot_load_names_no_path_to_a_member() -> None:
    for ref in (SECRET_FOLDER, "./operator-only-folder"):
        with pytest.raises(ModelError) as error:
            Describer(ref, device="cpu")
        assert "operator-only" not in str(error.value) and "not available" in str(error.value)


async def test_describe_presses_past_a_members_limit_are_refused_without_decoding(
        data_dir: Path, small_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """/describe is a queue job: 🔄 pressed again and again waits in the member's own line,
    bounded by QUEUE_MAX_PER_USER, and a press past it is refused before its picture is decoded."""
    import bot.service as service_module

    decoded: list[int] = []
    real_store = service_module.Tessera._store_input

    def counting_store(self: Tessera, data: bytes, source: str = "The upload") -> Any:
        decoded.append(1)
        return real_store(self, data, source)

    monkeypatch.setattr(service_module.Tessera, "_store_input", counting_store)
    executor = FakeExecutor()
    executor.gate.clear()  # the first describe holds the GPU
    settings = make_settings(data_dir, small_model, caption_model="Salesforce/blip-tiny", queue_max_per_user=3)
    service = await Tessera.start(settings, executor=executor)
    try:
        jobs = [await service.describe(user_id=5, image_bytes=png())]
        assert await asyncio.to_thread(executor.started.wait, 30)  # running: it no longer counts as waiting
        jobs += [await service.describe(user_id=5, image_bytes=png()) for _ in range(3)]  # three waiting
        decoded.clear()
        for _ in range(5):
            with pytest.raises(QueueLimitError):
                await service.describe(user_id=5, image_bytes=png())
        with pytest.raises(QueueLimitError):
            await service.describe_kept(jobs[0].options["digest"], 1, user_id=5)
        assert decoded == []  # the refused presses decoded and kept nothing
        assert len(await service.storage.jobs.list(user_id=5)) == 4  # and stored no job
        other = await service.describe(user_id=6, image_bytes=png())  # someone else is not held up by it
        assert other.user_id == 6
    finally:
        executor.gate.set()
        await service.close()


async def test_shorten_counts_the_words_before_any_job_is_queued(service: Tessera) -> None:
    with pytest.raises(PromptError, match="up to 60 words"):
        await service.shorten(user_id=5, prompt_text=" ".join(["word"] * 61))
    assert await service.storage.jobs.list(user_id=5) == []


async def test_one_edit_canvas_at_a_time_per_person(service: Tessera) -> None:
    job = (await service.imagine(user_id=7, prompt_text="a lighthouse --seed 3"))[0]
    await service.wait_for_jobs([job.id], timeout=60)
    results = await asyncio.gather(*(service.square(user_id=7, job_id=job.id, index=0) for _ in range(5)),
                                   return_exceptions=True)
    refused = [r for r in results if isinstance(r, QueueLimitError)]
    assert refused and all("still being prepared" in str(r) for r in refused)
    assert len(refused) < 5  # the first one was built and queued


async def test_a_mask_for_someone_elses_job_is_refused_before_it_is_decoded(
        service: Tessera, monkeypatch: pytest.MonkeyPatch) -> None:
    import bot.service as service_module
    from bot.authorization import Actor
    from engine.errors import TesseraError

    job = (await service.imagine(user_id=7, prompt_text="a lighthouse --seed 3", guild_id=10))[0]
    await service.wait_for_jobs([job.id], timeout=60)
    decoded: list[int] = []
    real_decode = service_module.decode_image

    def counting_decode(*args: Any, **kwargs: Any) -> Image.Image:
        decoded.append(1)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(service_module, "decode_image", counting_decode)
    with pytest.raises(TesseraError):
        await service.region(user_id=8, job_id=job.id, index=0, mask_bytes=png(), actor=Actor(8, 20))
    assert decoded == []  # a stranger's mask costs no decode
