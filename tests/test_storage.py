"""Storage: jobs, images, settings, migrations, concurrency and untrusted text."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import pytest

from engine.errors import StorageError, TesseraError
from engine.jobs.model import JobKind, JobState, NewJob
from storage import Storage
from storage.ids import ALPHABET, ID_LENGTH
from storage.models import GuildSettings, UserSettings
from storage.sqlite import schema_version

UNTRUSTED = [
    "it's a \"quoted\" prompt; DROP TABLE jobs; --",
    "nul \x00 byte inside",
    "emoji 🦊🌊 and ZWJ 👩‍🚀 and RTL \u202e text",
    "x" * 6000,
    "'); DELETE FROM images; SELECT ('",
    "\\ backslash % percent _ underscore",
]


@pytest.fixture
async def storage(data_dir: Path):
    opened = await Storage.open(data_dir)
    yield opened
    await opened.close()


def imagine(user: int = 1, text: str = "a lighthouse at dusk", **extra) -> NewJob:
    return NewJob(kind=JobKind.IMAGINE, user_id=user, prompt_text=text, **extra)


async def finished(storage: Storage, user: int = 1, images: int = 0, state: JobState = JobState.DONE):
    job = await storage.jobs.create(imagine(user))
    await storage.jobs.transition(job.id, JobState.RUNNING)
    for i in range(images):
        await storage.images.add(job.id, i, f"{job.id}-{i}".encode(), 64, 64)
    return await storage.jobs.transition(job.id, state)


async def test_layout_and_pragmas(storage: Storage, data_dir: Path) -> None:
    assert (data_dir / "tessera.sqlite3").is_file()
    assert (data_dir / "images").is_dir()
    assert (await storage.db.fetchone("PRAGMA journal_mode"))[0] == "wal"
    assert (await storage.db.fetchone("PRAGMA foreign_keys"))[0] == 1
    assert (await storage.db.fetchone("PRAGMA synchronous"))[0] == 1  # NORMAL (+ our WAL fsyncs)
    assert (await storage.db.fetchone("PRAGMA busy_timeout"))[0] >= 1000


async def test_create_and_read_back_every_field(storage: Storage) -> None:
    parent = await finished(storage, images=1)
    new = NewJob(kind=JobKind.UPSCALE, user_id=42, prompt_text="fox", prompt_json={"a": [1, "ü"]},
                 request_json={"steps": 4}, seed=2**32 - 1, model="m", guild_id=7, channel_id=8,
                 parent_id=parent.id.upper(), parent_index=0, options={"scale": 4}, priority=5)
    job = await storage.jobs.create(new)
    assert len(job.id) == ID_LENGTH and set(job.id) <= set(ALPHABET)
    assert job.state is JobState.QUEUED and job.attempts == 0
    again = await storage.jobs.get(job.id)
    assert again == job
    assert (again.kind, again.user_id, again.prompt_json, again.request_json, again.seed, again.options) == (
        JobKind.UPSCALE, 42, {"a": [1, "ü"]}, {"steps": 4}, 2**32 - 1, {"scale": 4})
    assert (again.parent_id, again.parent_index, again.priority, again.guild_id) == (parent.id, 0, 5, 7)
    assert again.created_at.tzinfo is not None and again.queued_at == again.created_at
    assert [c.id for c in await storage.jobs.children(parent.id)] == [job.id]


async def test_ids_are_unique_and_collisions_are_retried(storage: Storage) -> None:
    ids = {(await storage.jobs.create(imagine())).id for _ in range(200)}
    assert len(ids) == 200
    first = next(iter(ids))
    draws = iter([first, first, "zzzzzzz"])
    storage.jobs._new_id = lambda: next(draws)
    assert (await storage.jobs.create(imagine())).id == "zzzzzzz"


async def test_unknown_parent_is_refused(storage: Storage) -> None:
    with pytest.raises(StorageError, match="no job with id"):
        await storage.jobs.create(NewJob(kind=JobKind.REROLL, user_id=1, prompt_text="x", parent_id="aaaaaaa"))


async def test_require_and_resolve_job_ref(storage: Storage) -> None:
    job = await storage.jobs.create(imagine(channel_id=5))
    await storage.jobs.set_message(job.id, 5, 1234567890123456789)
    assert (await storage.jobs.require(f"  {job.id.upper()}\n")).id == job.id
    for ref in ("https://discord.com/channels/111/5/1234567890123456789",
                "<https://ptb.discord.com/channels/111/5/1234567890123456789>", "1234567890123456789"):
        assert (await storage.jobs.resolve_job_ref(ref)).id == job.id
    assert (await storage.jobs.find_by_message(1234567890123456789)).id == job.id
    with pytest.raises(StorageError, match="no job with id 'abcdefg'") as caught:
        await storage.jobs.require("abcdefg")
    assert isinstance(caught.value, TesseraError) and "k3m9qra" in str(caught.value)
    with pytest.raises(StorageError, match="not one of Tessera's jobs"):
        await storage.jobs.resolve_job_ref("https://discord.com/channels/1/2/3333333333333333333")
    with pytest.raises(StorageError):
        await storage.jobs.require("'; DROP TABLE jobs; --")
    assert await storage.jobs.get(job.id) is not None


async def test_transitions_follow_the_state_machine(storage: Storage) -> None:
    job = await storage.jobs.create(imagine())
    running = await storage.jobs.transition(job.id, JobState.RUNNING)
    assert running.attempts == 1 and running.started_at is not None and running.finished_at is None
    requeued = await storage.jobs.transition(job.id, JobState.QUEUED, error="worker lost")
    assert requeued.state is JobState.QUEUED and requeued.error == "worker lost"
    again = await storage.jobs.transition(job.id, JobState.RUNNING)
    assert again.attempts == 2 and again.error is None
    failed = await storage.jobs.transition(job.id, JobState.FAILED, error="out of memory")
    assert failed.finished_at is not None and failed.error == "out of memory"
    for target in JobState:
        with pytest.raises(StorageError, match="is failed and cannot become"):
            await storage.jobs.transition(job.id, target)
    assert (await storage.jobs.get(job.id)).state is JobState.FAILED

    other = await storage.jobs.create(imagine())
    with pytest.raises(StorageError, match="from queued it can become: cancelled, failed, running"):
        await storage.jobs.transition(other.id, JobState.DONE)
    cancelled = await storage.jobs.transition(other.id, JobState.CANCELLED)
    assert cancelled.state is JobState.CANCELLED
    with pytest.raises(StorageError, match="no job with id"):
        await storage.jobs.transition("zzzzzzz", JobState.RUNNING)


async def test_resumable_counts_lists_and_last(storage: Storage) -> None:
    a = await storage.jobs.create(imagine(1))
    b = await storage.jobs.create(imagine(2))
    c = await storage.jobs.create(imagine(1))
    done = await finished(storage, 1)
    await storage.jobs.transition(b.id, JobState.RUNNING)
    assert [j.id for j in await storage.jobs.resumable()] == [a.id, b.id, c.id]
    assert await storage.jobs.count_active(1) == (2, 0)
    assert await storage.jobs.count_active(2) == (0, 1)
    assert await storage.jobs.count_active(3) == (0, 0)
    assert [j.id for j in await storage.jobs.recent_for_user(1)] == [done.id, c.id, a.id]
    assert [j.id for j in await storage.jobs.recent_for_user(1, limit=1)] == [done.id]
    assert (await storage.jobs.last_for_user(1)).id == done.id
    assert await storage.jobs.last_for_user(99) is None
    assert [j.id for j in await storage.jobs.list(state=JobState.RUNNING)] == [b.id]
    assert [j.id for j in await storage.jobs.list(user_id=1, state=JobState.QUEUED)] == [c.id, a.id]
    assert len(await storage.jobs.list()) == 4


async def test_set_request_and_message(storage: Storage) -> None:
    job = await storage.jobs.create(imagine(channel_id=3))
    updated = await storage.jobs.set_request(job.id, {"width": 512}, 77, "sd15")
    assert (updated.request_json, updated.seed, updated.model) == ({"width": 512}, 77, "sd15")
    moved = await storage.jobs.set_message(job.id, None, 999)
    assert (moved.channel_id, moved.message_id) == (3, 999)
    with pytest.raises(StorageError):
        await storage.jobs.set_request("zzzzzzz", {}, 1, "m")
    with pytest.raises(StorageError, match="out of range"):
        await storage.jobs.set_request(job.id, {}, 2**64, "m")


async def test_images_are_content_addressed_atomic_and_shared(storage: Storage, data_dir: Path) -> None:
    job = await finished(storage)
    data = b"\x89PNG fake image bytes"
    record = await storage.images.add(job.id, 0, data, 64, 32)
    sha = hashlib.sha256(data).hexdigest()
    assert record.path == data_dir.resolve() / "images" / sha[:2] / sha[2:4] / f"{sha}.png"
    assert record.path.read_bytes() == data
    assert (record.sha256, record.bytes, record.width, record.height, record.format) == (sha, len(data), 64, 32, "PNG")
    assert not [p for p in record.path.parent.iterdir() if p.name.startswith(".tmp")]
    inode = record.path.stat().st_ino
    twin = await storage.images.add(job.id, 1, data, 64, 32)  # same content: same file, not rewritten
    assert twin.path == record.path and record.path.stat().st_ino == inode
    assert [r.index for r in await storage.images.for_job(job.id)] == [0, 1]
    assert await storage.images.get(job.id, 1) == twin
    assert await storage.images.get(job.id, 2) is None
    # Deleting one row keeps the shared file; deleting the job removes it.
    other = await storage.images.add(job.id, 2, b"other", 8, 8)
    await storage.jobs.delete(job.id)
    assert await storage.jobs.get(job.id) is None and await storage.images.for_job(job.id) == []
    assert not record.path.exists() and not other.path.exists()


async def test_re_adding_an_index_replaces_the_row_and_drops_the_old_file(storage: Storage) -> None:
    job = await finished(storage)
    first = await storage.images.add(job.id, 0, b"first try", 64, 64)
    second = await storage.images.add(job.id, 0, b"second try", 64, 64)
    assert await storage.images.for_job(job.id) == [second]
    assert not first.path.exists() and second.path.read_bytes() == b"second try"


async def test_image_for_unknown_job_or_bad_shape_leaves_no_file(storage: Storage, data_dir: Path) -> None:
    with pytest.raises(StorageError, match="no job"):
        await storage.images.add("zzzzzzz", 0, b"orphan?", 64, 64)
    job = await finished(storage)
    with pytest.raises(StorageError):
        await storage.images.add(job.id, -1, b"bad", 64, 64)
    with pytest.raises(StorageError):
        await storage.images.add(job.id, 0, b"bad", 0, 64)
    with pytest.raises(StorageError, match="unsupported image format"):
        await storage.images.add(job.id, 0, b"bad", 64, 64, fmt="TIFF")
    assert [p for p in (data_dir / "images").rglob("*") if p.is_file()] == []


async def test_settings_get_or_default_and_save(storage: Storage) -> None:
    assert await storage.settings.user(5) == UserSettings(user_id=5)
    saved = await storage.settings.save_user(UserSettings(5, quality=0.5, aspect="16:9", stylize=250,
                                                          sampler="dpmpp_2m", model="sdxl", private=True))
    assert saved == await storage.settings.user(5) and saved.private is True and saved.quality == 0.5
    assert await storage.settings.save_user(UserSettings(5)) == UserSettings(5)
    assert await storage.settings.guild(9) == GuildSettings(guild_id=9)
    guild = GuildSettings(9, allowed_channels=(1, 2), max_queued_per_user=3, banned_words=("gore", "ünïcode"),
                          safety_checker=True, gallery_channel_id=4, priority_role_id=6)
    assert await storage.settings.save_guild(guild) == guild == await storage.settings.guild(9)


@pytest.mark.parametrize("text", UNTRUSTED)
async def test_untrusted_prompt_text_round_trips(storage: Storage, text: str) -> None:
    job = await storage.jobs.create(imagine(text=text, prompt_json={"source": text}, options={"note": text}))
    again = await storage.jobs.get(job.id)
    assert again.prompt_text == text and again.prompt_json == {"source": text} and again.options == {"note": text}
    assert len(await storage.jobs.list()) == 1


async def test_fifty_concurrent_coroutines_no_lock_errors_no_lost_updates(storage: Storage) -> None:
    async def life(n: int) -> str:
        job = await storage.jobs.create(imagine(n % 5, text=f"job {n}"))
        await storage.jobs.transition(job.id, JobState.RUNNING)
        await storage.images.add(job.id, 0, f"image {n}".encode(), 64, 64)
        await storage.jobs.set_message(job.id, 1, 10_000 + n)
        await storage.jobs.transition(job.id, JobState.DONE)
        return job.id

    ids = await asyncio.gather(*(life(n) for n in range(50)))
    assert len(set(ids)) == 50
    for n, job_id in enumerate(ids):
        job = await storage.jobs.get(job_id)
        assert (job.state, job.attempts, job.message_id) == (JobState.DONE, 1, 10_000 + n)
        assert len(await storage.images.for_job(job_id)) == 1

    # Fifty coroutines racing to start the same job: exactly one wins.
    contested = await storage.jobs.create(imagine())
    outcomes = await asyncio.gather(*(storage.jobs.transition(contested.id, JobState.RUNNING) for _ in range(50)),
                                    return_exceptions=True)
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, StorageError) for o in outcomes if isinstance(o, BaseException))
    assert (await storage.jobs.get(contested.id)).attempts == 1


async def test_two_connections_in_one_process_do_not_see_locked(data_dir: Path) -> None:
    first = await Storage.open(data_dir)
    second = await Storage.open(data_dir)  # like `tessera prune` next to the bot
    try:
        made = await asyncio.gather(*(s.jobs.create(imagine()) for s in (first, second) for _ in range(20)))
        assert len({j.id for j in made}) == 40
        assert len(await first.jobs.list(limit=100)) == 40
    finally:
        await first.close()
        await second.close()


async def test_migrates_an_empty_file(data_dir: Path) -> None:
    (data_dir / "tessera.sqlite3").write_bytes(b"")
    opened = await Storage.open(data_dir)
    assert await opened.db.user_version() == schema_version() >= 2
    await opened.close()


@pytest.mark.parametrize("version", range(1, schema_version()))
async def test_migrates_from_each_earlier_version(data_dir: Path, version: int) -> None:
    old = await Storage.open(data_dir, migrate_to=version)
    assert await old.db.user_version() == version
    job = await old.jobs.create(imagine(text="made before the upgrade"))
    await old.jobs.transition(job.id, JobState.RUNNING)
    await old.images.add(job.id, 0, b"old image", 64, 64)
    await old.jobs.transition(job.id, JobState.DONE)
    await old.close()

    new = await Storage.open(data_dir)
    try:
        assert await new.db.user_version() == schema_version()
        assert (await new.jobs.get(job.id)).prompt_text == "made before the upgrade"
        assert len(await new.images.for_job(job.id)) == 1
        entry = await new.gallery.share(job.id, 0, author_id=1, title=None, guild_id=None,
                                        prompt_text="made before the upgrade")
        assert [e.id for e in await new.gallery.search("upgrade")] == [entry.id]
        assert (await new.db.fetchone("PRAGMA integrity_check"))[0] == "ok"
    finally:
        await new.close()


async def test_newer_database_refuses_to_start(data_dir: Path) -> None:
    con = sqlite3.connect(data_dir / "tessera.sqlite3")
    con.execute(f"PRAGMA user_version = {schema_version() + 1}")
    con.close()
    with pytest.raises(StorageError, match="newer Tessera"):
        await Storage.open(data_dir)


async def test_a_file_that_is_not_a_database_is_a_clear_error(data_dir: Path) -> None:
    (data_dir / "tessera.sqlite3").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="cannot open the database"):
        await Storage.open(data_dir)


async def test_a_failing_migration_is_rolled_back(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from storage import sqlite as database

    real = database.migrations()
    broken = [*real[:1], (2, "0002_broken.sql", "CREATE TABLE half_done (x);\nTHIS IS NOT SQL;")]
    monkeypatch.setattr(database, "migrations", lambda: broken)
    with pytest.raises(StorageError, match=r"migration 0002_broken\.sql failed .* left unchanged at schema version 1"):
        await Storage.open(data_dir)
    con = sqlite3.connect(data_dir / "tessera.sqlite3")
    assert con.execute("PRAGMA user_version").fetchone()[0] == 1
    assert con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0
    con.close()


async def test_edit_jobs_are_stored_after_upgrading_from_version_3(data_dir: Path) -> None:
    old = await Storage.open(data_dir, migrate_to=3)
    job = await old.jobs.create(imagine(text="before edits existed"))
    await old.images.add(job.id, 0, b"old image", 64, 64)
    await old.close()
    new = await Storage.open(data_dir)
    try:
        edit = await new.jobs.create(NewJob(kind=JobKind.EDIT, user_id=1, prompt_text="zoomed", parent_id=job.id,
                                            parent_index=0, options={"edit": "zoom", "factor": 2.0}))
        assert (await new.jobs.require(edit.id)).kind is JobKind.EDIT
        assert len(await new.images.for_job(job.id)) == 1  # nothing cascaded away
        with pytest.raises(sqlite3.IntegrityError):  # the check still refuses unknown kinds
            await new.db.write("UPDATE jobs SET kind = 'shell' WHERE id = ?", (edit.id,))
        assert (await new.db.fetchone("PRAGMA integrity_check"))[0] == "ok"
    finally:
        await new.close()
