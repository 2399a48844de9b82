"""Storage benchmarks: the job write path and gallery search.

- `storage_jobs_per_s`: jobs per second through the real API, each job being one create, four
  state changes (queued → running → queued → running → done, i.e. one crash-retry) and four
  image rows (`images.add_file`). The four image files (2 KiB, distinct content) are written
  with `images.write_file` before the clock starts: file writes are two fsyncs each and
  happen on the encoder's thread in the product; their rate is printed on stderr alongside.
  Eight jobs are in flight at once (a batch of four finishing while four more start); the
  durability is the product's (create and done wait for the WAL fsync). The CPU time per job
  is printed on stderr too: on a machine busy with other work, wall-clock rate mostly measures
  waiting for a CPU.
- `gallery_search_p95_ms`: 95th percentile latency of `gallery.search` (relevance order, first
  page) over 100,000 shared prompts (20,000 with --quick) for a mix of 1–3 word queries,
  phrases, prefixes and OR.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

from bench.common import Result

CONCURRENCY = 8

_SUBJECTS = ("lighthouse", "fox", "castle", "robot", "forest", "city", "dragon", "portrait", "cat", "ship",
             "mountain", "garden", "astronaut", "samurai", "library", "desert", "owl", "train", "bridge",
             "waterfall", "cottage", "knight", "jellyfish", "violin", "temple", "market", "glacier", "tiger")
_STYLES = ("watercolor", "oil painting", "photograph", "anime", "pixel art", "isometric", "charcoal sketch",
           "cinematic", "ukiyo-e", "art nouveau", "low poly", "studio lighting", "35mm film", "matte painting",
           "baroque", "cyberpunk", "vaporwave", "impressionist", "line art", "claymation")
_DETAILS = ("at dusk", "in the rain", "under neon lights", "at golden hour", "in fog", "by the sea",
            "in winter", "at night", "in spring", "with volumetric light", "highly detailed", "soft focus",
            "dramatic clouds", "reflections", "bokeh", "octane render", "trending", "symmetrical", "wide angle")
_QUERIES = ("fox", "lighthouse dusk", '"oil painting"', "robot OR samurai", "cast*", "dragon winter fog",
            "cat", "portrait studio lighting", "neon city", "ship -night", "owl", "glacier", "anime girl",
            "watercolor garden", "tiger at night", "jelly*", "knight castle", "desert", "violin baroque",
            "temple in fog")


def _prompt(rng: random.Random) -> str:
    words = [rng.choice(_SUBJECTS), rng.choice(_DETAILS), rng.choice(_STYLES)]
    if rng.random() < 0.5:
        words.append(rng.choice(_DETAILS))
    words.append(f"v{rng.randrange(100000)}")  # a rare token, as real prompts have
    text = " ".join(words)
    if rng.random() < 0.3:
        text += f" --ar {rng.choice(('16:9', '3:2', '1:1'))}"
    return text


async def _job_throughput(workdir: Path, jobs: int, *, with_files: bool) -> float:
    """Jobs per second; `with_files` also times writing the four files (else written beforehand)."""
    from engine.jobs.model import JobKind, JobState, NewJob
    from storage import Storage

    folder = workdir / "storage-throughput"
    shutil.rmtree(folder, ignore_errors=True)
    storage = await Storage.open(folder)
    payload = os.urandom(2048)

    def image(n: int, i: int) -> bytes:
        return n.to_bytes(8, "big") + bytes([i]) + payload

    async def one(n: int, stored: list | None) -> None:
        job = await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=n % 50, prompt_text=f"bench {n}",
                                               seed=n, guild_id=1, channel_id=2))
        await storage.jobs.transition(job.id, JobState.RUNNING)
        await storage.jobs.transition(job.id, JobState.QUEUED)
        await storage.jobs.transition(job.id, JobState.RUNNING)
        if stored is None:
            await asyncio.gather(*(storage.images.add(job.id, i, image(n, i), 64, 64) for i in range(4)))
        else:
            for i, written in enumerate(stored):
                await storage.images.add_file(job.id, i, written, 64, 64)
        await storage.jobs.transition(job.id, JobState.DONE)

    try:
        total = jobs + CONCURRENCY
        files: list[list | None] = [None] * total
        if not with_files:
            files = [[await storage.images.write_file(image(n, i)) for i in range(4)] for n in range(total)]

        async def worker(k: int) -> None:
            for n in range(k, jobs, CONCURRENCY):
                await one(n, files[n])

        await asyncio.gather(*(one(jobs + i, files[jobs + i]) for i in range(CONCURRENCY)))  # warm up
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"bench_storage: {jobs / elapsed:.0f} jobs/s {'with' if with_files else 'without'} file writes, "
              f"{cpu / jobs * 1000:.2f} ms CPU per job", file=sys.stderr)
    finally:
        await storage.close()
        shutil.rmtree(folder, ignore_errors=True)
    return jobs / elapsed


def _fill_gallery(folder: Path, count: int) -> None:
    """Insert `count` shared prompts directly (the API path is measured above, this is set-up)."""
    rng = random.Random(7)
    con = sqlite3.connect(folder / "tessera.sqlite3")
    now = time.time()
    with con:
        for start in range(0, count, 5000):
            batch = range(start, min(count, start + 5000))
            ids = [f"g{n:06d}" for n in batch]
            prompts = [_prompt(rng) for _ in batch]
            con.executemany(
                "INSERT INTO jobs (id, kind, state, user_id, prompt_text, created_at) VALUES (?, 'imagine', 'done', ?, ?, ?)",
                [(i, n % 500, p, now) for i, n, p in zip(ids, batch, prompts, strict=True)])
            con.executemany(
                "INSERT INTO images (job_id, idx, path, width, height, format, sha256, bytes, created_at) "
                "VALUES (?, 0, ?, 64, 64, 'PNG', ?, 1, ?)",
                [(i, f"x/{i}.png", "0" * 64, now) for i in ids])
            con.executemany(
                "INSERT INTO gallery (job_id, idx, title, author_id, prompt_text, likes, created_at) "
                "VALUES (?, 0, ?, ?, ?, ?, ?)",
                [(i, None, n % 500, p, int(rng.paretovariate(1.5)) - 1, now - n)
                 for i, n, p in zip(ids, batch, prompts, strict=True)])
    con.execute("INSERT INTO gallery_fts (gallery_fts) VALUES ('optimize')")
    con.commit()
    con.close()


async def _search_latency(workdir: Path, count: int, rounds: int) -> list[float]:
    from storage import Storage

    folder = workdir / "storage-gallery"
    shutil.rmtree(folder, ignore_errors=True)
    await (await Storage.open(folder)).close()  # create the schema
    _fill_gallery(folder, count)
    storage = await Storage.open(folder)
    timings: list[float] = []
    try:
        for query in _QUERIES:  # warm the page cache
            await storage.gallery.search(query)
        for _ in range(rounds):
            for query in _QUERIES:
                started = time.perf_counter()
                await storage.gallery.search(query, limit=10)
                timings.append((time.perf_counter() - started) * 1000)
    finally:
        await storage.close()
        shutil.rmtree(folder, ignore_errors=True)
    return timings


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[94]


def run(ctx) -> list[Result]:
    jobs = 300 if ctx.quick else 2000
    rows = 20_000 if ctx.quick else 100_000
    rounds = 5 if ctx.quick else 20
    per_s = asyncio.run(_job_throughput(ctx.workdir, jobs, with_files=False))
    asyncio.run(_job_throughput(ctx.workdir, jobs // 2, with_files=True))  # reported on stderr only
    timings = asyncio.run(_search_latency(ctx.workdir, rows, rounds))
    return [
        Result("storage_jobs_per_s", per_s, "jobs/s", 500, ">="),
        Result("gallery_search_p95_ms", _p95(timings), "ms", 20, "<="),
    ]
