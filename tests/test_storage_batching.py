"""Storage write batching: statements that arrive together share a commit and an fsync, yet
each succeeds or fails alone; a job's images are stored all at once or not at all."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

import storage.sqlite as database
from engine.errors import StorageError
from engine.jobs.model import JobKind, JobState, NewImage, NewJob
from storage import Storage


@pytest.fixture
async def storage(data_dir: Path):
    opened = await Storage.open(data_dir)
    yield opened
    await opened.close()


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the batches the connection thread ran."""
    sizes: list[int] = []
    real = database._execute_batch

    def counting(conn, batch, fsync):
        sizes.append(len(batch))
        return real(conn, batch, fsync)

    monkeypatch.setattr(database, "_execute_batch", counting)
    return sizes


async def running_job(storage: Storage, user: int = 1):
    job = await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=user, prompt_text="a fox"))
    return await storage.jobs.transition(job.id, JobState.RUNNING)


def grid(tag: str, count: int = 4) -> list[NewImage]:
    return [NewImage(i, f"{tag}-{i}".encode(), 64, 32) for i in range(count)]


async def test_a_failing_statement_in_a_batch_fails_alone(storage: Storage, batches: list[int]) -> None:
    db = storage.db
    await db.write("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    await db.write("INSERT INTO t VALUES (1, 'one')")
    batches.clear()
    results = await asyncio.gather(
        db.write("INSERT INTO t VALUES (2, 'two') RETURNING k", durable=False),
        db.write("INSERT INTO t VALUES (1, 'again')", durable=False),  # primary key taken
        db.write("INSERT INTO t VALUES (3, NULL)", durable=False),  # NOT NULL
        db.write("UPDATE t SET v = 'uno' WHERE k = 1 RETURNING v"),
        db.fetchall("SELECT k FROM t ORDER BY k"),
        return_exceptions=True,
    )
    assert max(batches) == 5  # one trip, one transaction
    assert [r[0] for r in results[0]] == [2]
    assert isinstance(results[1], sqlite3.IntegrityError) and isinstance(results[2], sqlite3.IntegrityError)
    assert [r[0] for r in results[3]] == ["uno"]
    assert [r[0] for r in results[4]] == [1, 2]  # later statements see earlier ones, not failed ones
    assert [tuple(r) for r in await db.fetchall("SELECT k, v FROM t ORDER BY k")] == [(1, "uno"), (2, "two")]
    assert not storage.db._conn.in_transaction


async def test_durable_writes_are_committed_then_fsynced_before_they_return(
        storage: Storage, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = storage.db
    await db.write("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    seen: list[list[int]] = []

    def fsync() -> None:  # what another process sees when the fsync happens
        other = sqlite3.connect(data_dir / "tessera.sqlite3")
        seen.append([r[0] for r in other.execute("SELECT k FROM t ORDER BY k")])
        other.close()

    monkeypatch.setattr(db._wal, "_fsync", fsync)
    await db.write("INSERT INTO t VALUES (1)", durable=False)
    assert seen == []
    await asyncio.gather(db.write("INSERT INTO t VALUES (2)"), db.write("INSERT INTO t VALUES (3)", durable=False))
    assert seen == [[1, 2, 3]]  # one fsync for the batch, after its commit


async def test_a_failed_fsync_fails_only_the_durable_writes(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    db = storage.db
    await db.write("CREATE TABLE t (k INTEGER PRIMARY KEY)")

    def broken() -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(db._wal, "_fsync", broken)
    durable, bookkeeping = await asyncio.gather(db.write("INSERT INTO t VALUES (1)"),
                                                db.write("INSERT INTO t VALUES (2) RETURNING k", durable=False),
                                                return_exceptions=True)
    assert isinstance(durable, OSError)
    assert [r[0] for r in bookkeeping] == [2]


async def test_add_many_stores_a_grid_in_one_go(storage: Storage, data_dir: Path, batches: list[int]) -> None:
    job = await running_job(storage)
    batches.clear()
    records = await storage.images.add_many(job.id, list(reversed(grid("a"))))
    assert [r.index for r in records] == [3, 2, 1, 0]  # in the order given
    assert len(batches) == 1  # every row in one statement
    assert await storage.images.for_job(job.id) == sorted(records, key=lambda r: r.index)
    assert all(r.path.read_bytes() == f"a-{r.index}".encode() and (r.width, r.height) == (64, 32) for r in records)
    assert await storage.images.add_many(job.id, []) == []


async def test_add_many_replaces_a_re_run_and_drops_its_old_files(storage: Storage) -> None:
    job = await running_job(storage)
    first = await storage.images.add_many(job.id, grid("first", 2))
    shared = await storage.images.add(job.id, 3, b"second-0", 8, 8)  # same bytes as the new index 0
    second = await storage.images.add_many(job.id, grid("second", 2))
    assert await storage.images.for_job(job.id) == [*second, shared]
    assert not any(r.path.exists() for r in first)
    assert second[0].path == shared.path and shared.path.exists()


async def test_add_many_is_all_or_nothing(storage: Storage, data_dir: Path) -> None:
    fresh = await running_job(storage)
    rerun = await running_job(storage)
    old = await storage.images.add(rerun.id, 0, b"old", 64, 64)
    await storage.db.write("CREATE TRIGGER no_third BEFORE INSERT ON images WHEN new.idx = 2 "
                           "BEGIN SELECT RAISE(ABORT, 'the disk said no'); END")
    for job in (fresh, rerun):
        with pytest.raises(sqlite3.IntegrityError, match="the disk said no"):
            await storage.images.add_many(job.id, grid(job.id))
    assert await storage.images.for_job(fresh.id) == []
    assert await storage.images.for_job(rerun.id) == [old] and old.path.read_bytes() == b"old"
    files = sorted(p.name for p in (data_dir / "images").rglob("*") if p.is_file())
    assert files == [old.path.name]  # the new files went with their rows


async def test_add_many_refuses_bad_input_before_writing_anything(storage: Storage, data_dir: Path) -> None:
    job = await running_job(storage)
    with pytest.raises(StorageError, match="no job"):
        await storage.images.add_many("zzzzzzz", grid("orphan"))
    with pytest.raises(StorageError, match="its own index"):
        await storage.images.add_many(job.id, [NewImage(0, b"a", 8, 8), NewImage(0, b"b", 8, 8)])
    with pytest.raises(StorageError, match="positive"):
        await storage.images.add_many(job.id, [NewImage(0, b"a", 8, 8), NewImage(1, b"b", 0, 8)])
    with pytest.raises(StorageError, match="unsupported image format"):
        await storage.images.add_many(job.id, [NewImage(0, b"a", 8, 8), NewImage(1, b"b", 8, 8, "TIFF")])
    assert [p for p in (data_dir / "images").rglob("*") if p.is_file()] == []
    assert await storage.images.for_job(job.id) == []
