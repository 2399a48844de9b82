"""A full disk and a read-only DATA_DIR: one clear message naming the folder, no hang, no litter.

How the faults are made, honestly and without privileges:
- SQLite "full": `PRAGMA max_page_count` on the service's own connection, after a VACUUM (so
  there is no free page to reuse). Writes that need a new page then fail with SQLite's real
  SQLITE_FULL, exactly as on a full disk.
- A full disk under the image writer: `storage.files._write_all` (the one place image bytes
  reach the disk) raises `OSError(ENOSPC)`, as `os.write` does on a full disk.
- Read-only: a folder with mode 0555. Tests may run as root, and root's capabilities ignore
  modes, so the CLI runs in a child process that gives up all its capabilities before exec
  (root may always do that; it is what `setpriv --bounding-set=-all` does); as any other
  user the mode applies as it is.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.service import Tessera
from engine.errors import StorageError
from engine.jobs.model import JobKind, JobState, NewJob
from storage import faults, files
from storage.api import Storage
from tests.queue_helpers import FakeExecutor

ROOT = Path(__file__).resolve().parent.parent
# Long enough that the job's row spills to overflow pages: rewriting it needs new pages.
LONG_PROMPT = "a lighthouse at dusk " * 200


async def fill_up(storage: Storage) -> None:
    """Make the database "full": no free page, and no new page allowed."""
    await storage.db.fetchall("VACUUM")
    pages = (await storage.db.fetchone("PRAGMA page_count"))[0]
    await storage.db.fetchall(f"PRAGMA max_page_count = {pages}")


async def make_room(storage: Storage) -> None:
    await storage.db.fetchall("PRAGMA max_page_count = 1073741823")


async def test_creating_a_job_on_a_full_disk_names_the_folder(data_dir: Path) -> None:
    storage = await Storage.open(data_dir)
    try:
        await fill_up(storage)
        with pytest.raises(StorageError) as caught:
            await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=1, prompt_text=LONG_PROMPT))
        assert f"DATA_DIR {data_dir.resolve()} is full" in str(caught.value)
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)  # a real SQLITE_FULL
        assert await storage.jobs.list() == []
        await make_room(storage)
        assert (await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=1, prompt_text=LONG_PROMPT))).state \
            == JobState.QUEUED
    finally:
        await storage.close()


async def test_image_write_on_a_full_disk_leaves_no_temporary_file(data_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.jobs.model import NewImage

    storage = await Storage.open(data_dir)
    try:
        job = await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=1, prompt_text="a cat"))
        await storage.jobs.transition(job.id, JobState.RUNNING)
        calls = []

        def full(fd: int, data: bytes) -> None:
            calls.append(len(data))
            if len(calls) == 2:  # the second of four: two files may already be complete
                raise OSError(errno.ENOSPC, "No space left on device")
            os.write(fd, data)

        monkeypatch.setattr(files, "_write_all", full)
        images = [NewImage(i, f"image {i}".encode() * 50, 8, 8) for i in range(4)]
        with pytest.raises(faults.DiskFullError, match=f"DATA_DIR {data_dir.resolve()} is full"):
            await storage.images.add_many(job.id, images)
        on_disk, temps = files.scan(storage.images.root)
        assert len(calls) == 4 and temps == [] and on_disk == []  # nothing half-written, no orphan
        assert await storage.images.for_job(job.id) == []
    finally:
        await storage.close()


async def test_full_disk_while_storing_results_ends_the_job_failed_without_hanging(
        data_dir: Path, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The image write fails (ENOSPC) and so does marking the job failed (SQLITE_FULL): the waiter
    still gets "failed" with the reason at once, and once there is room the row says so too."""
    settings = load_settings(model_id=str(tiny_models["sd15"]), device="cpu", data_dir=data_dir)
    service = await Tessera.start(settings, executor=FakeExecutor(steps=1))
    service.queue.settle_retry_s = 0.05  # type: ignore[attr-defined]
    reached, proceed = threading.Event(), threading.Event()

    def full(fd: int, data: bytes) -> None:
        reached.set()
        proceed.wait(30)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_write_all", full)
    try:
        [job] = await service.imagine(user_id=1, prompt_text=LONG_PROMPT)
        assert await asyncio.to_thread(reached.wait, 30)
        await fill_up(service.storage)  # the disk is now full for the database too
        proceed.set()
        event = (await service.wait_for_jobs([job.id], timeout=30))[job.id]
        assert event.kind == "failed" and f"DATA_DIR {data_dir.resolve()} is full" in (event.error or "")
        # Marking it failed could not be stored: the row still says running.
        assert (await service.storage.jobs.require(job.id)).state == JobState.RUNNING
        on_disk, temps = files.scan(service.storage.images.root)
        assert temps == [] and on_disk == []

        await make_room(service.storage)  # space is back: the retry records the failure
        for _ in range(200):
            stored = await service.storage.jobs.require(job.id)
            if stored.state == JobState.FAILED:
                break
            await asyncio.sleep(0.05)
        assert stored.state == JobState.FAILED and "is full" in (stored.error or "")
    finally:
        proceed.set()
        await service.close()


# --- read-only DATA_DIR ------------------------------------------------------------------------

@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder anyone may enter (pytest's own tmp folder is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="tessera-ro-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for folder in [path, *path.rglob("*")]:
            if folder.is_dir():
                folder.chmod(0o755)
        shutil.rmtree(path)


def _as_unprivileged() -> None:
    """In the child, before exec: as root, give up every capability (the bounding set too, or
    exec would hand them back to uid 0). Root then is an ordinary owner and mode 0555 binds."""
    if os.geteuid() != 0:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for capability in range(64):
        libc.prctl(pr_capbset_drop, capability, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def tessera_as_user(data_dir: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "DATA_DIR": str(data_dir),
           "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(cwd), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main())", *argv],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
                          preexec_fn=_as_unprivileged)


def test_read_only_data_dir_is_one_clear_line(open_dir: Path) -> None:
    cwd = open_dir / "cwd"
    cwd.mkdir(mode=0o755)
    empty = open_dir / "empty"
    empty.mkdir()
    existing = open_dir / "existing"
    existing.mkdir()
    asyncio.run(_make_database(existing))
    parent = open_dir / "locked"
    parent.mkdir()
    for folder in (empty, existing, parent):
        folder.chmod(0o555)

    for folder in (empty, existing):
        result = tessera_as_user(folder, cwd, "jobs")
        assert result.returncode == 1, result.stderr
        [line] = result.stderr.splitlines()  # one line, no traceback
        assert f"DATA_DIR {folder} is not writable by this user" in line, line
        assert "is it a Tessera database" not in line

    missing = parent / "data"
    result = tessera_as_user(missing, cwd, "doctor")
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert f"cannot create DATA_DIR {missing}: its parent {parent} is not writable" in line, line
    assert not missing.exists()


async def _make_database(folder: Path) -> None:
    storage = await Storage.open(folder)
    await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=1, prompt_text="kept"))
    await storage.close()
    for child in folder.rglob("*"):
        child.chmod(0o755 if child.is_dir() else 0o644)


@pytest.mark.parametrize(("code", "words"), [(errno.ENOSPC, "is full"), (errno.EDQUOT, "is full"),
                                             (errno.EROFS, "read-only file system"),
                                             (errno.EACCES, "not writable by this user")])
def test_disk_errors_name_the_folder_and_the_cause(code: int, words: str, tmp_path: Path) -> None:
    error = faults.from_oserror(OSError(code, os.strerror(code)), tmp_path)
    assert error is not None and str(tmp_path) in str(error) and words in str(error)
    assert faults.from_oserror(OSError(errno.ENOENT, "gone"), tmp_path) is None  # not a disk fault: a bug


def test_cli_job_on_a_full_database_is_one_line(data_dir: Path, tmp_path: Path, tiny_models: dict[str, Path],
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`tessera imagine` when the job cannot be stored: one line naming DATA_DIR, exit status 1."""
    from bot.subcommands._submit import run_command, run_jobs, write_grid
    from storage.sqlite import Database

    real = Database._configure

    async def configure_then_fill(self: Database) -> None:
        await real(self)
        await self.fetchall("VACUUM")
        pages = (await self.fetchone("PRAGMA page_count"))[0]
        await self.fetchall(f"PRAGMA max_page_count = {pages}")

    asyncio.run(_make_database(data_dir))
    monkeypatch.setattr(Database, "_configure", configure_then_fill)
    settings = load_settings(model_id=str(tiny_models["sd15"]), device="cpu", data_dir=data_dir)

    async def submit(service: Tessera) -> list:
        return await service.imagine(user_id=0, prompt_text=LONG_PROMPT, confirmed=True)

    code = run_command("imagine", lambda: run_jobs("imagine", settings, submit, write_grid, tmp_path,
                                                   executor=FakeExecutor(steps=1)))
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("tessera imagine: DATA_DIR") and f"{data_dir.resolve()} is full" in line
