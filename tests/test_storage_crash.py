"""Crash safety: a writer killed with SIGKILL at random moments loses nothing it reported.

The child prints a job id only after `create` (or the move to "done") has returned, which is
the moment the bot would tell the user. After each kill the database must pass
`PRAGMA integrity_check`, hold every reported job, and no image row may point at a missing
or partial file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from storage import Storage
from storage.maintenance import doctor

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 22

CHILD = r"""
import asyncio, os, random, sys
from pathlib import Path
from storage import Storage
from engine.jobs.model import JobKind, JobState, NewJob

async def main() -> None:
    storage = await Storage.open(Path(sys.argv[1]))
    rng = random.Random(int(sys.argv[2]))
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        job = await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=n % 7, prompt_text=f"crash {n} 🦊"))
        print("job", job.id, flush=True)
        await storage.jobs.transition(job.id, JobState.RUNNING)
        for i in range(2):
            await storage.images.add(job.id, i, os.urandom(rng.randrange(1, 200_000)), 64, 64)
        await storage.jobs.transition(job.id, JobState.DONE)
        if n % 3 == 0:
            entry = await storage.gallery.share(job.id, 0, author_id=1, title=None, guild_id=None,
                                                prompt_text=f"crash {n}")
            await storage.gallery.toggle_like(entry.id, n)
        print("done", job.id, flush=True)

asyncio.run(main())
"""


def check(data_dir: Path, jobs: set[str], done: set[str]) -> None:
    con = sqlite3.connect(data_dir / "tessera.sqlite3")
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        stored = dict(con.execute("SELECT id, state FROM jobs").fetchall())
        assert jobs <= stored.keys(), f"lost jobs: {jobs - stored.keys()}"
        assert all(stored[j] == "done" for j in done)
        images = con.execute("SELECT job_id, path, sha256, bytes FROM images").fetchall()
        per_job: dict[str, int] = {}
        for job_id, rel, sha, size in images:
            data = (data_dir / "images" / rel).read_bytes()  # raises if missing
            assert len(data) == size and hashlib.sha256(data).hexdigest() == sha, f"partial file {rel}"
            per_job[job_id] = per_job.get(job_id, 0) + 1
        assert all(per_job.get(j) == 2 for j in done)
    finally:
        con.close()
    # No partial file under a final name either (only ".tmp-*" files may be incomplete).
    for path in (data_dir / "images").rglob("*"):
        if path.is_file() and not path.name.startswith(".tmp-"):
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem


def test_sigkill_at_random_moments_loses_nothing_reported(data_dir: Path) -> None:
    rng = random.Random(1234)
    reported: set[str] = set()
    finished: set[str] = set()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kills_mid_work = 0
    for round_ in range(ROUNDS):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(data_dir), str(round_)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        try:
            first = child.stdout.readline()
            assert first == b"ready\n", child.stderr.read().decode()
            time.sleep(rng.uniform(0.02, 0.3))
        finally:
            child.send_signal(signal.SIGKILL)
            out, _ = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        lines = out.decode().split("\n")[:-1]  # the last piece has no newline: maybe cut
        new = {line.split()[1] for line in lines if line.startswith("job ")}
        kills_mid_work += bool(new - {line.split()[1] for line in lines if line.startswith("done ")})
        reported |= new
        finished |= {line.split()[1] for line in lines if line.startswith("done ")}
        check(data_dir, reported, finished)
    assert len(reported) > ROUNDS  # the child did real work between kills
    assert kills_mid_work >= ROUNDS // 3  # and was often killed in the middle of a job

    async def reopen() -> None:
        storage = await Storage.open(data_dir)
        try:
            report = await doctor(storage, grace_s=0)
            assert report.healthy and report.missing_files == [] and report.damaged_files == []
            resumable = {j.id for j in await storage.jobs.resumable()}
            unfinished = {j for j in reported if not (await storage.jobs.get(j)).state.finished}
            assert unfinished and unfinished <= resumable and not resumable & finished
        finally:
            await storage.close()

    asyncio.run(reopen())
