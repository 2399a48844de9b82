"""/describe and /shorten as queue jobs: their answers on the wire, in the queue and in SQLite.

A job that answers text has no request and no images: a Redis worker gets its picture as bytes
(or its words as bounded strings) and sends back JSON, which the bot checks against the job's
kind before it is stored (`Job.result_json`) and shown. A forged or broken answer fails the
job; it never reaches a member or the database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from engine.diffusion.shorten import SHORTEN_MAX_WORDS, ShortenTask
from engine.errors import PromptError
from engine.jobs.answers import check_answer
from engine.jobs.executor import BatchControl, WorkItem, WorkResult
from engine.jobs.model import JobKind, JobState, NewJob
from engine.jobs.queue import INTERNAL_ERROR, InProcessQueue, QueueEvent
from engine.jobs.redis_wire import (
    MAX_ANSWER_BYTES,
    BatchPayload,
    JobPayload,
    PayloadError,
    ResultPayload,
    parse_batch,
    parse_result,
)
from engine.jobs.worker import _work_item
from engine.prompt import parse
from storage.api import Storage
from tests.queue_helpers import wait_for

DESCRIPTION = {"prompts": ["a fox, an oil painting, golden hour, moody --ar 3:2"] * 4, "aspect": "3:2"}
SHORTENING = {"words": [{"word": "fox", "weight": 1.0}, {"word": "red", "weight": 0.25}], "prompts": ["fox"]}


def batch(job: JobPayload, files: dict[str, bytes]) -> bytes:
    return BatchPayload(batch_id="b1", token="t1", reply_to="tessera:results:x", events="tessera:events:x",
                        timeout_s=60.0, max_attempts=3, jobs=(job,), files=files).to_bytes()


def key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----- the wire ------------------------------------------------------------------------------------


def test_a_describe_job_sends_its_picture_as_bytes_and_the_worker_reads_it_as_a_path() -> None:
    picture = b"the kept picture"
    parsed = parse_batch(batch(JobPayload("job1", "describe", None, {"source": key(picture), "offset": 3}),
                               {key(picture): picture}))
    item = _work_item(parsed.jobs[0], {key(picture): "/w/p.img"})
    assert (item.kind, item.request, item.options) == ("describe", None, {"source": "/w/p.img", "offset": 3})


def test_a_shorten_job_carries_its_words_and_the_worker_parses_nothing() -> None:
    task = ShortenTask.from_expansion(parse("https://a.example/p.png a red fox in snow --ar 16:9").expansions[0])
    parsed = parse_batch(batch(JobPayload("job1", "shorten", None, task.to_options()), {}))
    assert ShortenTask.from_options(_work_item(parsed.jobs[0], {}).options) == task
    assert task.front == "https://a.example/p.png" and task.back == "--ar 16:9"


@pytest.mark.parametrize(("job", "message"), [
    (JobPayload("j", "describe", None, {"source": "0" * 64}), "options.source must name a file sent with the batch"),
    (JobPayload("j", "describe", None, {"source": "KEY", "offset": 1001}), "options.offset must be from 0 to 1000"),
    (JobPayload("j", "describe", None, {"source": "KEY", "offset": True}), "options.offset must be a whole number"),
    (JobPayload("j", "shorten", None, {"words": "w " * 4001}), "options.words must be a string of at most 8000"),
    (JobPayload("j", "shorten", None, {"words": 7}), "options.words must be a string"),
    (JobPayload("j", "shorten", {"prompts": []}, {"words": "a fox"}), "request must be null for a shorten job"),
])
def test_bad_text_jobs_are_refused_before_anything_runs(job: JobPayload, message: str) -> None:
    picture = b"p"
    options = {k: (key(picture) if v == "KEY" else v) for k, v in job.options.items()}
    with pytest.raises(PayloadError, match=message):
        parse_batch(batch(JobPayload(job.job_id, job.kind, job.request, options), {key(picture): picture}))


def test_a_worker_may_not_smuggle_more_words_than_shorten_measures() -> None:
    options = {"words": " ".join(["word"] * (SHORTEN_MAX_WORDS + 1)), "front": "", "back": ""}
    parse_batch(batch(JobPayload("j", "shorten", None, options), {}))  # well-formed on the wire...
    with pytest.raises(PromptError, match=f"up to {SHORTEN_MAX_WORDS} words"):
        ShortenTask.from_options(options)  # ...but refused before any encoder runs


def test_an_answer_travels_without_images_and_is_bounded() -> None:
    answer = ResultPayload("job1", "t1", "w1", "done", data=DESCRIPTION)
    assert parse_result(answer.to_bytes()).data == DESCRIPTION
    with pytest.raises(PayloadError, match="sent without images"):
        parse_result(ResultPayload("job1", "t1", "w1", "done", images=(b"png",), data=DESCRIPTION).to_bytes())
    with pytest.raises(PayloadError, match=f"at most {MAX_ANSWER_BYTES} bytes"):
        parse_result(ResultPayload("job1", "t1", "w1", "done", data={"prompts": ["x" * MAX_ANSWER_BYTES]}).to_bytes())
    with pytest.raises(PayloadError, match="images or an answer"):
        parse_result(ResultPayload("job1", "t1", "w1", "done").to_bytes())


@pytest.mark.parametrize(("kind", "data"), [
    ("describe", {"prompts": [], "aspect": "1:1"}),
    ("describe", {"prompts": ["a"] * 5, "aspect": "1:1"}),
    ("describe", {"prompts": ["a"], "aspect": "1:1; DROP TABLE"}),
    ("describe", {"prompts": ["x" * 1001], "aspect": "1:1"}),
    ("shorten", {"words": [{"word": "a", "weight": 2}], "prompts": []}),
    ("shorten", {"words": [], "prompts": []}),
    ("shorten", {"words": [{"word": "a", "weight": 1}], "prompts": ["a"] * 6}),
    ("shorten", "not an object"),
    ("imagine", DESCRIPTION),
])
def test_malformed_answers_are_refused(kind: str, data: object) -> None:
    with pytest.raises(ValueError):
        check_answer(kind, data)


def test_well_formed_answers_come_back_canonical() -> None:
    assert check_answer("describe", DESCRIPTION) == DESCRIPTION
    assert check_answer("shorten", SHORTENING) == SHORTENING


# ----- the queue and SQLite -------------------------------------------------------------------------


class Answering:
    """Answers each text job with `answers[job_id]` (a dict, None for nothing, or an error)."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, items: Sequence[WorkItem], control: BatchControl) -> list[WorkResult]:
        results = []
        for item in items:
            answer = self.answers[item.job_id]
            if isinstance(answer, BaseException):
                results.append(WorkResult(error=answer))
            else:
                results.append(WorkResult(data=answer))  # type: ignore[arg-type]
        return results


async def text_job(storage: Storage, kind: JobKind, user_id: int = 1) -> str:
    options = {"source": "/nowhere.png", "digest": "0" * 64, "offset": 0} if kind is JobKind.DESCRIBE \
        else {"words": "a red fox", "front": "", "back": ""}
    job = await storage.jobs.create(NewJob(kind=kind, user_id=user_id, prompt_text="/describe", options=options))
    return job.id


async def test_answers_are_stored_with_the_job_and_forged_ones_fail_it(data_dir: Path) -> None:
    storage = await Storage.open(data_dir)
    good_describe = await text_job(storage, JobKind.DESCRIBE)
    good_shorten = await text_job(storage, JobKind.SHORTEN)
    forged = await text_job(storage, JobKind.DESCRIBE)
    silent = await text_job(storage, JobKind.SHORTEN)
    refused = await text_job(storage, JobKind.SHORTEN)
    answers: dict[str, object] = {good_describe: DESCRIPTION, good_shorten: SHORTENING,
                                  forged: {"prompts": "<@everyone>", "aspect": "1:1"}, silent: None,
                                  refused: PromptError("/shorten needs a prompt with words")}
    queue = InProcessQueue(storage, Answering(answers))
    events: list[QueueEvent] = []
    queue.subscribe(events.append)
    await queue.start()  # the stored jobs are resumed, oldest first
    try:
        await wait_for(lambda: len({e.job_id for e in events if e.kind in ("done", "failed", "cancelled")}) == 5)
        finals = {e.job_id: e for e in events if e.kind in ("done", "failed", "cancelled")}
    finally:
        await queue.stop()
    try:
        assert finals[good_describe].result == DESCRIPTION and finals[good_shorten].result == SHORTENING
        assert (await storage.jobs.require(good_describe)).result_json == DESCRIPTION
        assert (await storage.jobs.require(good_shorten)).state is JobState.DONE
        for job_id in (forged, silent):
            stored = await storage.jobs.require(job_id)
            assert finals[job_id].kind == "failed" and finals[job_id].error == INTERNAL_ERROR.format(job_id=job_id)
            assert stored.state is JobState.FAILED and stored.result_json is None
        assert finals[refused].error == "/shorten needs a prompt with words"
        assert await storage.images.for_job(good_describe) == []
    finally:
        await storage.close()


async def test_a_database_from_before_text_jobs_takes_them_after_the_upgrade(data_dir: Path) -> None:
    old = await Storage.open(data_dir, migrate_to=6)
    with pytest.raises(Exception, match="CHECK constraint failed"):
        await old.jobs.create(NewJob(kind=JobKind.DESCRIBE, user_id=1, prompt_text="/describe"))
    await old.close()
    new = await Storage.open(data_dir)
    try:
        job_id = await text_job(new, JobKind.SHORTEN)
        await new.jobs.transition(job_id, JobState.RUNNING)
        with pytest.raises(ValueError, match="only a job becoming done"):
            await new.jobs.transition(job_id, JobState.FAILED, result=SHORTENING)
        done = await new.jobs.transition(job_id, JobState.DONE, result=SHORTENING)
        assert done.kind is JobKind.SHORTEN and done.result_json == SHORTENING
        assert (await new.jobs.require(job_id)).result_json == SHORTENING
    finally:
        await new.close()


# ----- what a hostile review found --------------------------------------------------------------


def test_a_captioner_that_cannot_load_is_not_loaded_again_for_every_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.jobs.answers as answers_module
    from engine.errors import ModelError

    loads: list[str] = []

    class Broken:
        def __init__(self, ref: str, **_: object) -> None:
            loads.append(ref)
            raise ModelError("/describe is not available on this bot right now")

    picture = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(picture)
    monkeypatch.setattr(answers_module, "Describer", Broken)
    answers = answers_module.TextAnswers("some/captioner", device="cpu")
    for _ in range(5):
        with pytest.raises(ModelError, match="not available"):
            answers.describe({"source": str(picture), "offset": 0})
    assert loads == ["some/captioner"]  # one load tried; the next four jobs failed at once
    monkeypatch.setattr(answers_module.time, "monotonic", lambda: 10**9)  # LOAD_RETRY_S later
    with pytest.raises(ModelError):
        answers.describe({"source": str(picture), "offset": 0})
    assert len(loads) == 2


async def test_a_jobs_table_whose_kind_check_reads_differently_stops_migration_0007(data_dir: Path) -> None:
    import sqlite3

    from engine.errors import StorageError

    old = await Storage.open(data_dir, migrate_to=6)
    await old.close()
    con = sqlite3.connect(data_dir / "tessera.sqlite3")
    con.execute("PRAGMA writable_schema = ON")
    con.execute("""UPDATE sqlite_schema SET sql = replace(sql, '''edit''))', '''edit'' ))')
                   WHERE type = 'table' AND name = 'jobs'""")
    con.commit()
    con.close()
    with pytest.raises(StorageError, match="jobs_kind_check_was_not_loosened"):
        await Storage.open(data_dir)
    con = sqlite3.connect(data_dir / "tessera.sqlite3")
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 6  # left as it was
        assert "result_json" not in [row[1] for row in con.execute("PRAGMA table_info(jobs)")]
    finally:
        con.close()


async def test_one_upload_in_the_making_per_person(data_dir: Path, tiny_models: dict[str, Path]) -> None:
    import asyncio
    import io

    from PIL import Image

    from bot.service import Tessera
    from engine.errors import QueueLimitError
    from tests.queue_helpers import FakeExecutor
    from tests.test_service import make_settings

    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 20, 30)).save(buffer, "PNG")
    service = await Tessera.start(make_settings(data_dir, tiny_models["sd15"], caption_model="some/captioner"),
                                  executor=FakeExecutor())
    try:
        results = await asyncio.gather(*(service.describe(user_id=3, image_bytes=buffer.getvalue())
                                         for _ in range(4)), return_exceptions=True)
        refused = [r for r in results if isinstance(r, QueueLimitError)]
        assert refused and all("still being prepared" in str(r) for r in refused) and len(refused) < 4
        assert len(await service.storage.jobs.list(user_id=3)) == 4 - len(refused)
    finally:
        await service.close()


async def test_a_describe_that_runs_out_of_gpu_memory_is_told_so_in_its_own_words(data_dir: Path) -> None:
    class OutOfMemory(Answering):
        def run(self, items: Sequence[WorkItem], control: BatchControl) -> list[WorkResult]:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    storage = await Storage.open(data_dir)
    job_id = await text_job(storage, JobKind.DESCRIBE)
    queue = InProcessQueue(storage, OutOfMemory({}))
    events: list[QueueEvent] = []
    queue.subscribe(events.append)
    await queue.start()
    try:
        await wait_for(lambda: any(e.kind == "failed" for e in events))
    finally:
        await queue.stop()
        await storage.close()
    (failed,) = [e for e in events if e.kind == "failed"]
    assert failed.job_id == job_id and "out of memory for this /describe" in (failed.error or "")
    assert "--ar" not in (failed.error or "")  # not the grid's advice
