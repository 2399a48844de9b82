"""Hostile input against the new features (edits, /describe, /shorten): what a review found.

A member must never read the operator's model paths in an answer, cannot pile pictures up in
memory by pressing 🔄 again and again, cannot make the bot load a model for a /shorten it will
refuse, and cannot start thirty edit canvases at once.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.service import AUX_WAITING_MAX, Tessera
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


async def test_describe_presses_past_the_waiting_room_are_refused_without_decoding(service: Tessera,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[int] = []
    import bot.service as service_module

    real_decode = service_module.decode_image

    def counting_decode(*args: Any, **kwargs: Any) -> Image.Image:
        decoded.append(1)
        return real_decode(*args, **kwargs)

    class SlowDescriber:
        def describe(self, image: Image.Image, offset: int = 0) -> Any:
            raise PromptError("described")

    async def aux_model(kind: str) -> Any:
        return SlowDescriber()

    monkeypatch.setattr(service_module, "decode_image", counting_decode)
    monkeypatch.setattr(service, "_aux_model", aux_model)
    await service._aux_lock.acquire()  # a long /describe is running
    try:
        waiting = [asyncio.ensure_future(service.describe(image_bytes=png())) for _ in range(AUX_WAITING_MAX + 3)]
        await asyncio.sleep(0.2)
        refused = [task for task in waiting if task.done()]
        assert len(refused) == 3 and all(isinstance(task.exception(), QueueLimitError) for task in refused)
        assert decoded == []  # the waiting presses hold no decoded picture
    finally:
        service._aux_lock.release()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert sum(isinstance(r, PromptError) and str(r) == "described" for r in results) == AUX_WAITING_MAX


async def test_shorten_counts_the_words_before_any_model_is_loaded(service: Tessera,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_model(kind: str) -> Any:
        raise AssertionError("a model was loaded for a prompt /shorten refuses")

    monkeypatch.setattr(service, "_aux_model", no_model)
    with pytest.raises(PromptError, match="up to 60 words"):
        await service.shorten(prompt_text=" ".join(["word"] * 61))


async def test_one_edit_canvas_at_a_time_per_person(service: Tessera) -> None:
    job = (await service.imagine(user_id=7, prompt_text="a lighthouse --seed 3"))[0]
    await service.wait_for_jobs([job.id], timeout=60)
    results = await asyncio.gather(*(service.square(user_id=7, job_id=job.id, index=0) for _ in range(5)),
                                   return_exceptions=True)
    refused = [r for r in results if isinstance(r, QueueLimitError)]
    assert refused and all("still being prepared" in str(r) for r in refused)
    assert len(refused) < 5  # the first one was built and queued
