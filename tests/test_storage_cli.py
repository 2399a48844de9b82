"""`tessera jobs`, `seed`, `doctor` and `prune` against a real data folder."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from bot.cli import main as cli
from engine.jobs.model import JobKind, JobState, NewJob
from storage import Storage


@pytest.fixture
def env(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no developer .env
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    return data_dir


def build(data_dir: Path, plan: list[tuple[int, str, int]]) -> list[tuple[str, list[Path]]]:
    """Jobs per (user, final state, images); returns (job id, image paths)."""

    async def go() -> list[tuple[str, list[Path]]]:
        storage = await Storage.open(data_dir)
        made = []
        try:
            for n, (user, state, images) in enumerate(plan):
                job = await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=user, prompt_text=f"prompt {n}"))
                paths = []
                if state != "queued":
                    await storage.jobs.transition(job.id, JobState.RUNNING)
                    await storage.jobs.set_request(job.id, {}, 1000 + n, "tiny")
                    for i in range(images):
                        paths.append((await storage.images.add(job.id, i, f"{job.id}:{i}".encode() * 100, 64, 64)).path)
                    if state != "running":
                        await storage.jobs.transition(job.id, JobState(state))
                made.append((job.id, paths))
        finally:
            await storage.close()
        return made

    return asyncio.run(go())


def test_jobs_lists_and_filters(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made = build(env, [(1, "done", 0), (2, "queued", 0), (1, "failed", 0)])
    assert cli(["jobs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["id", "kind", "state"]
    assert [line.split()[0] for line in out[1:]] == [made[2][0], made[1][0], made[0][0]]
    assert cli(["jobs", "--user", "1", "--state", "done"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[1:]] == [made[0][0]] and "1000" in out[1]
    assert cli(["jobs", "--json", "--state", "queued"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(j["id"], j["state"], j["user_id"]) for j in listed] == [(made[1][0], "queued", 2)]


def test_seed_prints_the_seed(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made = build(env, [(1, "done", 0), (1, "queued", 0)])
    assert cli(["seed", f" {made[0][0].upper()} "]) == 0
    assert capsys.readouterr().out == "1000\n"
    assert cli(["seed", made[1][0]]) == 1
    assert "has no seed yet" in capsys.readouterr().err
    assert cli(["seed", "nosuchj"]) == 1
    assert "no job with id 'nosuchj'" in capsys.readouterr().err


def test_doctor_finds_missing_orphan_and_temp_files_and_fixes(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made = build(env, [(1, "done", 2)])
    assert cli(["doctor", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "integrity: ok" in out and "all well" in out

    old = time.time() - 7200
    orphan = env / "images" / "ab" / "cd" / ("ab" + "cd" + "0" * 60 + ".png")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"nobody points at me")
    temp = env / "images" / "ab" / "cd" / ".tmp-0123-dead"
    temp.write_bytes(b"half a fi")
    fresh = env / "images" / "ab" / "fresh.png"
    fresh.write_bytes(b"being written right now")
    for path in (orphan, temp):
        os.utime(path, (old, old))
    made[0][1][0].unlink()  # a row now points at a missing file
    made[0][1][1].write_bytes(b"truncated")  # and one at a damaged file

    assert cli(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "rows whose file is missing: 1" in out and made[0][0] in out
    assert "rows whose file is damaged: 1" in out
    assert "files with no row (orphans): 1" in out and orphan.name in out
    assert "temporary files left by a crash: 1" in out
    assert "left alone): 1" in out and "problems found" in out

    assert cli(["doctor", "--fix"]) == 1  # missing and damaged files cannot be fixed by deleting
    out = capsys.readouterr().out
    assert "removed 2 files" in out
    assert not orphan.exists() and not temp.exists() and fresh.exists()


def test_prune_deletes_old_unshared_images_only(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made = build(env, [(1, "done", 2), (1, "done", 2), (1, "done", 1), (1, "running", 1)])
    (_old_job, old_paths), (shared_job, shared_paths), (new_job, new_paths), (running_job, running_paths) = made

    async def share() -> None:
        storage = await Storage.open(env)
        await storage.gallery.share(shared_job, 1, author_id=1, title=None, guild_id=None, prompt_text="x")
        await storage.close()

    asyncio.run(share())
    con = sqlite3.connect(env / "tessera.sqlite3")
    with con:
        con.execute("UPDATE images SET created_at = created_at - 40 * 86400 WHERE job_id != ?", (new_job,))
    con.close()
    doomed = [*old_paths, shared_paths[0]]
    expected = sum(p.stat().st_size for p in doomed)

    assert cli(["prune", "--older-than", "30d", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would delete 3 images (3 files), would free 2.6 KiB ({expected} bytes)" in out
    assert all(p.exists() for p in doomed)

    assert cli(["prune", "--older-than", "30d"]) == 0
    out = capsys.readouterr().out
    assert f"deleted 3 images (3 files), freed 2.6 KiB ({expected} bytes)" in out
    assert "kept 1 old images that are shared" in out
    assert not any(p.exists() for p in doomed)
    assert all(p.exists() for p in [shared_paths[1], *new_paths, *running_paths])
    con = sqlite3.connect(env / "tessera.sqlite3")
    rows = sorted(con.execute("SELECT job_id, idx FROM images").fetchall())
    assert rows == sorted([(shared_job, 1), (new_job, 0), (running_job, 0)])
    assert con.execute("SELECT count(*) FROM jobs").fetchone()[0] == 4  # job rows (and seeds) stay
    con.close()

    assert cli(["prune", "--older-than", "12h"]) == 0
    assert "deleted 0 images" in capsys.readouterr().out
    assert cli(["prune", "--older-than", "30 days"]) == 1
    assert "like 30d, 12h or 90m" in capsys.readouterr().err


def test_prune_deletes_old_suggestions_and_keeps_new_and_reoffered_ones(env: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    old_keys = [f"s:{n:016x}" for n in range(1201)] + ["d:" + "a" * 64 + ":0"]  # more than two prune chunks
    young_keys = ["s:" + "f" * 16, "d:" + "b" * 64 + ":3"]
    reoffered = "s:" + "e" * 16  # old, then the same answer given again: its button is new

    async def save(keys: list[str]) -> None:
        storage = await Storage.open(env)
        try:
            for key in keys:
                await storage.suggestions.save(key, [f"a prompt for {key}", "another"])
        finally:
            await storage.close()

    asyncio.run(save([*old_keys[-2:], *young_keys, reoffered]))
    con = sqlite3.connect(env / "tessera.sqlite3")
    with con:  # the rest in bulk (1,200 durable saves would take seconds)
        con.executemany("INSERT INTO suggested_prompts (key, prompts, created_at) VALUES (?, '[\"x\"]', ?)",
                        [(key, time.time()) for key in old_keys[:-2]])
        con.execute("UPDATE suggested_prompts SET created_at = created_at - 40 * 86400 WHERE key NOT IN (?, ?)",
                    young_keys)
    con.close()
    asyncio.run(save([reoffered]))

    def kept() -> set[str]:
        con = sqlite3.connect(env / "tessera.sqlite3")
        found = {row[0] for row in con.execute("SELECT key FROM suggested_prompts")}
        con.close()
        return found

    assert cli(["prune", "--older-than", "30d", "--dry-run"]) == 0
    assert "would delete 1202 old /describe and /shorten suggestions" in capsys.readouterr().out
    assert len(kept()) == 1205

    assert cli(["prune", "--older-than", "30d"]) == 0
    assert "deleted 1202 old /describe and /shorten suggestions" in capsys.readouterr().out
    assert kept() == {*young_keys, reoffered}

    async def read_back() -> list[tuple[str, ...] | None]:
        storage = await Storage.open(env)
        try:
            return [await storage.suggestions.get(key) for key in (old_keys[0], young_keys[0])]
        finally:
            await storage.close()

    assert asyncio.run(read_back()) == [None, (f"a prompt for {young_keys[0]}", "another")]
    assert cli(["prune", "--older-than", "30d"]) == 0
    assert "deleted 0 old /describe and /shorten suggestions" in capsys.readouterr().out
