"""Operator checks and clean-up: `tessera doctor` and `tessera prune`.

Both work next to a running bot (WAL readers, busy timeout). Clean-up only ever deletes
files no row points at, and only after the rows are gone, so a crash halfway leaves at worst
an orphan file for the next `doctor --fix`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from engine.errors import StorageError
from storage import files, rows
from storage.api import Storage
from storage.inputs import prune_inputs, referenced_names

# A file without a row younger than this may be an image whose row is being inserted right now.
ORPHAN_GRACE_S = 3600.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhm])\s*$", re.IGNORECASE)
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0}


def parse_duration(text: str) -> timedelta:
    """'30d', '12h' or '45m' as a timedelta; StorageError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise StorageError(f"cannot read the duration {text!r}: give a number and a unit, like 30d, 12h or 90m")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass
class DoctorReport:
    schema_version: int = 0
    integrity: list[str] = field(default_factory=list)  # ["ok"] when healthy
    foreign_key_problems: int = 0
    fts_ok: bool = True
    missing_files: list[str] = field(default_factory=list)  # "job/index: path"
    damaged_files: list[str] = field(default_factory=list)  # wrong size or hash
    orphan_files: list[str] = field(default_factory=list)  # files with no row
    temp_files: list[str] = field(default_factory=list)  # left by a crash mid-write
    recent_orphans: int = 0  # orphan/temp files inside the grace period (maybe being written now)
    removed_files: int = 0
    removed_bytes: int = 0
    jobs_by_state: dict[str, int] = field(default_factory=dict)
    stuck_jobs: list[str] = field(default_factory=list)  # "job: state, asked by pid N" of gone CLI commands
    settled_jobs: int = 0  # stuck jobs `fix` marked failed

    @property
    def healthy(self) -> bool:
        """No damage in the database and every row's file intact (orphans are only wasted space)."""
        return (self.integrity == ["ok"] and not self.foreign_key_problems and self.fts_ok
                and not self.missing_files and not self.damaged_files)

    @property
    def clean(self) -> bool:
        """Healthy and nothing left to clean up (stuck jobs count unless `fix` settled them)."""
        return (self.healthy and not self.orphan_files and not self.temp_files
                and len(self.stuck_jobs) == self.settled_jobs)


async def doctor(storage: Storage, *, verify: bool = False, fix: bool = False,
                 grace_s: float = ORPHAN_GRACE_S) -> DoctorReport:
    """Check the database, the image folder and the jobs; with `fix`, delete orphan and
    temporary files and mark failed the jobs whose CLI command is gone (stuck jobs).

    `verify` re-hashes every file (slow on big folders); otherwise sizes are compared.
    """
    db = storage.db
    root = storage.images.root
    report = DoctorReport(schema_version=await db.user_version())
    report.integrity = [r[0] for r in await db.fetchall("PRAGMA integrity_check")]
    report.foreign_key_problems = len(await db.fetchall("PRAGMA foreign_key_check"))
    try:
        await db.fetchall("INSERT INTO gallery_fts (gallery_fts, rank) VALUES ('integrity-check', 1)")
    except Exception:
        report.fts_ok = False
    report.jobs_by_state = {r[0]: r[1] for r in await db.fetchall("SELECT state, count(*) FROM jobs GROUP BY state")}
    stuck = await storage.jobs.stuck()
    report.stuck_jobs = [f"{job.id}: {job.state.value}, asked for by process {job.owner.pid} on "
                         f"{job.owner.host}" for job in stuck]
    if fix and stuck:
        report.settled_jobs = len(await storage.jobs.settle_stuck())

    image_rows = await db.fetchall("SELECT job_id, idx, path, sha256, bytes FROM images")
    on_disk, temps = await asyncio.to_thread(files.scan, root)
    known = {r["path"] for r in image_rows}

    def check_rows() -> tuple[list[str], list[str]]:
        missing, damaged = [], []
        for r in image_rows:
            path = root / r["path"]
            label = f"{r['job_id']}/{r['idx'] + 1}: {r['path']}"
            if not path.is_file():
                missing.append(label)
            elif path.stat().st_size != r["bytes"] or (verify and files.file_sha256(path) != r["sha256"]):
                damaged.append(label)
        return missing, damaged

    report.missing_files, report.damaged_files = await asyncio.to_thread(check_rows)
    cutoff = time.time() - grace_s

    def settled(relatives: list[str]) -> tuple[list[str], int]:
        """The files older than the grace period, and how many younger ones were skipped."""
        old, young = [], 0
        for rel in sorted(relatives):
            try:
                if (root / rel).stat().st_mtime > cutoff:
                    young += 1
                    continue
            except FileNotFoundError:
                continue
            old.append(rel)
        return old, young

    report.orphan_files, young_orphans = await asyncio.to_thread(settled, list(set(on_disk) - known))
    report.temp_files, young_temps = await asyncio.to_thread(settled, temps)
    report.recent_orphans = young_orphans + young_temps

    if fix and (report.orphan_files or report.temp_files):
        # Under the writer lock, so no row for one of these files can appear meanwhile.
        async with db.transaction(durable=False) as tx:
            still = {r["path"] for r in await tx.fetchall("SELECT path FROM images")}
            doomed = [p for p in report.orphan_files if p not in still] + report.temp_files

            def clean() -> tuple[int, int]:
                sizes = [files.remove(root, rel) for rel in doomed]
                return len(sizes), sum(sizes)

            report.removed_files, report.removed_bytes = await asyncio.to_thread(clean)
    return report


@dataclass
class PruneReport:
    images: int = 0  # image rows deleted
    files: int = 0  # files deleted
    bytes_freed: int = 0
    kept_shared: int = 0  # old images kept because they are in the gallery
    suggestions: int = 0  # /describe and /shorten suggestions deleted (or that would be)
    inputs: int = 0  # pictures deleted from DATA_DIR/inputs (or that would be)
    inputs_bytes: int = 0
    inputs_in_use: int = 0  # old pictures kept: a queued, running or shared job refers to them
    inputs_note: str | None = None  # why DATA_DIR/inputs was left alone, if it was
    dry_run: bool = False


async def prune(storage: Storage, older_than: timedelta, *, dry_run: bool = False) -> PruneReport:
    """Delete images (rows, then files) of finished jobs older than `older_than`, unless shared,
    and the prompts /describe and /shorten suggested that were last offered before then.

    Job rows stay, so `/seed` and `tessera jobs` still know old jobs; only the pixels go. The
    suggestions share the age (no setting of their own): a button under an answer as old as
    the images that prune deletes is as stale, and it answers that its prompts are gone.

    The pictures jobs start from (DATA_DIR/inputs: uploads, image prompts, references, edit
    canvases and masks) go by the same age, by file mtime, unless a queued, running or
    gallery-shared job still refers to one (`storage.inputs`). A 🔄 or edit of a job whose
    picture went answers that it is no longer on disk.
    """
    db = storage.db
    cutoff = rows.now() - older_than.total_seconds()
    report = PruneReport(dry_run=dry_run)
    await _prune_inputs(storage, cutoff, report)
    if dry_run:
        report.suggestions = await storage.suggestions.count_older_than(cutoff)
    else:
        report.suggestions = await storage.suggestions.prune(cutoff)
    old = """FROM images AS i JOIN jobs AS j ON j.id = i.job_id
             WHERE i.created_at < :cutoff AND j.state IN ('done', 'failed', 'cancelled')"""
    shared = "EXISTS (SELECT 1 FROM gallery AS g WHERE g.job_id = i.job_id AND g.idx = i.idx AND g.removed = 0)"
    kept = await db.fetchone(f"SELECT count(*) {old} AND {shared}", {"cutoff": cutoff})
    report.kept_shared = int(kept[0]) if kept else 0
    doomed = await db.fetchall(f"SELECT i.job_id, i.idx, i.path, i.bytes {old} AND NOT {shared}", {"cutoff": cutoff})
    report.images = len(doomed)
    if dry_run:
        per_path = Counter(r["path"] for r in doomed)
        sizes = {r["path"]: r["bytes"] for r in doomed}
        unique = sorted(per_path)
        total: dict[str, int] = {}
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            for r in await db.fetchall(f"SELECT path, count(*) FROM images WHERE path IN ({marks}) GROUP BY path",
                                       chunk):
                total[r[0]] = r[1]
        freed = [p for p, n in per_path.items() if total.get(p, 0) == n]
        report.files, report.bytes_freed = len(freed), sum(sizes[p] for p in freed)
        return report
    paths = [r["path"] for r in doomed]
    for start in range(0, len(doomed), 500):
        chunk = doomed[start:start + 500]
        async with db.transaction() as tx:
            await tx.executemany("DELETE FROM images WHERE job_id = ? AND idx = ?",
                                 [(r["job_id"], r["idx"]) for r in chunk])
    before = _count_existing(storage.images.root, paths)
    report.bytes_freed = await storage.images.release_files(paths)
    report.files = before - _count_existing(storage.images.root, paths)
    return report


async def _prune_inputs(storage: Storage, cutoff: float, report: PruneReport) -> None:
    """Old pictures under DATA_DIR/inputs that no queued, running or shared job refers to.

    The jobs are read first and the files checked after: a job queued in between refreshed
    the mtime of every picture it uses before it was stored (`storage.inputs.touch_inputs`),
    so its pictures are young by then and stay."""
    in_use: set[str] = set()
    for row in await storage.db.fetchall(
            """SELECT request_json, options_json FROM jobs WHERE state IN ('queued', 'running')
               OR id IN (SELECT job_id FROM gallery WHERE removed = 0)"""):
        in_use |= referenced_names(rows.load_json(row[0]), rows.load_json(row[1]))
    done = await asyncio.to_thread(prune_inputs, storage.data_dir, cutoff, in_use, dry_run=report.dry_run)
    report.inputs, report.inputs_bytes, report.inputs_in_use = done.files, done.bytes, done.kept_in_use
    report.inputs_note = done.note


def _count_existing(root: Path, relatives: list[str]) -> int:
    return sum(1 for rel in set(relatives) if (root / rel).is_file())
