"""The one SQLite connection, its settings, its single writer path and the migrations.

Why one connection: SQLite allows one writer at a time. If every coroutine opened its own
connection they would race for the write lock and some would see "database is locked". Here
every statement goes through one aiosqlite connection (one thread, so statements are already
serialised) and multi-statement transactions hold an asyncio lock from BEGIN to COMMIT, so no
coroutine ever sees another's half-done transaction. Other processes (`tessera doctor`,
`tessera prune` next to a running bot) are covered by WAL (readers never block the writer)
and a busy timeout.

Why `synchronous=NORMAL`, plus an fsync of the WAL before a durable write returns: in WAL mode
NORMAL never corrupts the database and a crashed *process* loses nothing (the WAL is in the OS
cache at commit), but a power cut may roll back the last commits. A write that acknowledges
something to a user (a new job, a finished job, a saved setting, a share, a like) therefore
does not return until the WAL file is fsynced, which is what `synchronous=FULL` would do at
COMMIT. Doing it ourselves lets writes that arrive together share one commit and one fsync
(group commit): single statements that queue up while the connection is busy go to its
thread as one batch, run in one transaction, and the batch is fsynced once, before its
results come back, if any of them asked for durability (one trip between threads per batch,
which is most of a small write's cost; see `_execute_batch`). Multi-statement transactions
fsync after COMMIT, outside the writer lock, on a worker thread. The WAL is append-only
between checkpoints, so one fsync also makes every earlier NORMAL commit (a job going
"running", the image rows written before "done") durable. Bookkeeping between
acknowledgements skips the fsync.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiosqlite

from engine.errors import StorageError
from storage import faults

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

Params = Sequence[Any] | dict[str, Any]


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration shipped with the code, in order.

    Numbers must run 1, 2, 3... with no gap: a gap would mean a file went missing.
    """
    found: list[tuple[int, str, str]] = []
    for entry in MIGRATIONS_DIR.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    for expected, (version, name, _) in enumerate(found, start=1):
        if version != expected:
            raise RuntimeError(f"storage migrations are not numbered 1..N: {name} should be {expected:04d}_*.sql")
    return found


def schema_version() -> int:
    """The schema version this code writes (the number of the last migration)."""
    return len(migrations())


class Transaction:
    """Statements inside one `BEGIN IMMEDIATE ... COMMIT`; only valid inside `Database.transaction()`."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self._conn.execute_fetchall(sql, params)
        return rows[0] if rows else None  # type: ignore[index]

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        cursor = await self._conn.execute(sql, params)
        count = cursor.rowcount
        await cursor.close()
        return count

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        await self._conn.executemany(sql, rows)


class Database:
    """An open database: one aiosqlite connection plus the lock that makes it the one writer path."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.path = path
        self._wal = _WalSync(Path(f"{path}-wal"))
        self._pending: list[tuple[str, Params, bool, asyncio.Future[list[sqlite3.Row]]]] = []
        self._drainer: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path, *, migrate_to: int | None = None) -> Database:
        """Open (creating if needed) and migrate the database at `path`.

        `migrate_to` stops at an earlier schema version; tests use it to build old databases.
        """
        faults.make_data_dir(path.parent)
        try:
            conn = await aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.DatabaseError as exc:
            raise _open_error(path, exc) from exc
        conn.row_factory = sqlite3.Row
        db = cls(conn, path)
        try:
            await db._configure()
            await db._migrate(migrate_to)
        except sqlite3.DatabaseError as exc:
            await conn.close()
            raise _open_error(path, exc) from exc
        except BaseException:
            await conn.close()
            raise
        return db

    async def _configure(self) -> None:
        conn = self._conn
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        rows = list(await conn.execute_fetchall("PRAGMA journal_mode = WAL"))
        mode = rows[0][0] if rows else None
        if str(mode).lower() != "wal":
            raise StorageError(f"the database {str(self.path)!r} cannot use WAL mode (got {mode!r}); "
                               "put DATA_DIR on a local disk")
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA temp_store = MEMORY")

    async def _migrate(self, target: int | None) -> None:
        available = migrations()
        latest = len(available)
        target = latest if target is None else target
        current = await self.user_version()
        if current > latest:
            raise StorageError(
                f"the database {str(self.path)!r} has schema version {current}, but this Tessera only "
                f"knows versions up to {latest}: it was written by a newer Tessera. Upgrade Tessera, "
                "or restore a backup made with this version."
            )
        pending = [(version, name, sql) for version, name, sql in available if current < version <= target]
        if pending:  # one line, however many steps: a new database takes all of them
            steps = ", ".join(name for _, name, _ in pending)
            if current == 0:
                log.info("creating the database %s (schema version %d: %s)", self.path.name, pending[-1][0], steps)
            else:
                log.info("upgrading the database %s from schema version %d to %d (%s)", self.path.name, current,
                         pending[-1][0], steps)
        for version, name, sql in pending:
            log.debug("applying storage migration %s", name)
            script = f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
            try:
                await self._conn.executescript(script)
            except sqlite3.DatabaseError as exc:
                if self._conn.in_transaction:
                    await self._conn.execute("ROLLBACK")
                disk = faults.from_sqlite(exc, self.path.parent)
                if disk is not None:
                    raise disk from exc
                raise StorageError(f"storage migration {name} failed ({exc}); the database "
                                   f"{str(self.path)!r} was left unchanged at schema version {current}") from exc
            except BaseException:
                if self._conn.in_transaction:
                    await self._conn.execute("ROLLBACK")
                raise
            current = version
            # A migration may edit a table's SQL in place (0004): re-read the schema now.
            await self._conn.execute("PRAGMA writable_schema = RESET")

    async def user_version(self) -> int:
        rows = list(await self._conn.execute_fetchall("PRAGMA user_version"))
        return int(rows[0][0])

    # --- single statements -------------------------------------------------------------------

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self._statement(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return await self._statement(sql, params)

    async def write(self, sql: str, params: Params = (), *, durable: bool = True) -> list[sqlite3.Row]:
        """One statement as its own transaction; returns its rows (for `RETURNING`).

        With `durable` (the default) it returns only once the commit would survive a power cut;
        `durable=False` is for bookkeeping a later durable write will cover (module docstring).
        """
        return await self._statement(sql, params, durable=durable)

    async def _statement(self, sql: str, params: Params, *, durable: bool = False) -> list[sqlite3.Row]:
        """Run one statement and return its rows once it is committed (and fsynced if `durable`).

        Statements that arrive while the connection is busy queue up and then go to aiosqlite's
        thread together, in order, as one trip and one transaction: with many coroutines
        writing, the cost of a trip between threads and of a commit is shared. Each still
        succeeds, or fails, on its own (`_execute_batch`).
        """
        future: asyncio.Future[list[sqlite3.Row]] = asyncio.get_running_loop().create_future()
        self._pending.append((sql, params, durable, future))
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        try:
            return await future
        except (sqlite3.OperationalError, OSError) as exc:
            mapped = self._disk_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def _disk_error(self, exc: sqlite3.OperationalError | OSError) -> BaseException:
        """A full or read-only DATA_DIR as a `StorageError` naming it; any other error as it is."""
        folder = self.path.parent
        found = faults.from_oserror(exc, folder) if isinstance(exc, OSError) else faults.from_sqlite(exc, folder)
        return found or exc

    async def _drain(self) -> None:
        try:
            async with self._lock:
                while self._pending:
                    batch, self._pending = self._pending, []
                    try:
                        outcomes = await self._run_batch([(sql, params, durable) for sql, params, durable, _ in batch])
                    except BaseException as exc:  # the connection itself failed (closed, thread died)
                        outcomes = [(False, exc)] * len(batch)
                    for (_, _, _, future), (ok, value) in zip(batch, outcomes, strict=True):
                        if future.done():  # its caller was cancelled
                            continue
                        if ok:
                            future.set_result(cast("list[sqlite3.Row]", value))
                        else:
                            future.set_exception(cast(BaseException, value))
        finally:
            self._drainer = None
            if self._pending:  # arrived after the loop ended (e.g. while we were cancelled)
                self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _run_batch(self, batch: list[tuple[str, Params, bool]]) -> list[tuple[bool, object]]:
        run = getattr(self._conn, "_execute", None)
        if run is None:  # an aiosqlite without its (private) queue entry point: one trip each
            outcomes: list[tuple[bool, object]] = []
            for sql, params, durable in batch:
                try:
                    found = list(await self._conn.execute_fetchall(sql, params))
                    if durable:
                        await self._wal.wait(self._wal.committed())
                    outcomes.append((True, found))
                except Exception as exc:
                    outcomes.append((False, exc))
            return outcomes
        return await run(_execute_batch, self._conn._conn, batch, self._wal.fsync_now)

    @asynccontextmanager
    async def transaction(self, *, durable: bool = True) -> AsyncIterator[Transaction]:
        """`BEGIN IMMEDIATE` ... `COMMIT` (or `ROLLBACK` on any exception), holding the writer lock.

        IMMEDIATE takes SQLite's write lock at BEGIN, so another process's writer makes us wait
        (busy timeout) at the start instead of failing halfway through.
        """
        try:
            async with self._lock:
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield Transaction(self._conn)
                    await self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        await self._conn.execute("ROLLBACK")
                    raise
                ticket = self._wal.committed() if durable else None
            if ticket is not None:
                await self._wal.wait(ticket)
        except (sqlite3.OperationalError, OSError) as exc:
            mapped = self._disk_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def close(self) -> None:
        async with self._lock:
            try:
                await self._conn.execute("PRAGMA optimize")
            except sqlite3.Error as exc:  # e.g. the disk is full: closing must still work
                log.warning("skipped PRAGMA optimize on close: %s", exc)
            finally:
                await self._conn.close()
                self._wal.close()


def _open_error(path: Path, exc: sqlite3.DatabaseError) -> StorageError:
    """Why the database could not be opened: the folder (full, read-only) or the file itself."""
    disk = faults.from_sqlite(exc, path.parent)
    if disk is not None:
        return disk
    return StorageError(f"cannot open the database {str(path)!r}: {exc} (is it a Tessera database?)")


def _execute_batch(conn: sqlite3.Connection, batch: list[tuple[str, Params, bool]],
                   fsync: Callable[[], None]) -> list[tuple[bool, object]]:
    """On the connection's thread: run each statement, keeping its rows or its exception.

    Several statements share one transaction (group commit): one commit writes each touched
    page to the WAL once instead of once per statement, which is most of a small write's
    cost. Each statement still succeeds or fails on its own: SQLite undoes a failed
    statement's changes and keeps the transaction, and if an error does end the transaction
    (disk full, I/O error), the statements it took with it report that error too. If any
    statement asked for durability, one fsync of the WAL after the commit covers the whole
    batch. Nobody hears of a result before the commit (and fsync) that made it true.
    """
    outcomes: list[tuple[bool, object]] = []
    if len(batch) == 1 or conn.in_transaction:
        outcomes = [_execute_one(conn, sql, params) for sql, params, _ in batch]
    else:
        pending: list[int] = []  # indexes of outcomes that the open transaction holds
        for sql, params, _ in batch:
            try:
                if not conn.in_transaction:
                    conn.execute("BEGIN IMMEDIATE")  # may time out behind another process's writer
                outcomes.append((True, conn.execute(sql, params).fetchall()))
                pending.append(len(outcomes) - 1)
            except Exception as exc:
                outcomes.append((False, exc))
                if not conn.in_transaction:  # the error rolled back the whole transaction
                    for index in pending:
                        outcomes[index] = (False, exc)
                    pending = []
        if conn.in_transaction:
            try:
                conn.execute("COMMIT")
            except Exception as exc:
                if conn.in_transaction:
                    conn.rollback()
                for index in pending:
                    outcomes[index] = (False, exc)
    if any(durable and ok for (_, _, durable), (ok, _) in zip(batch, outcomes, strict=True)):
        try:
            fsync()
        except OSError as exc:  # committed, but not known to be on disk: say so to those who asked
            outcomes = [(False, exc) if durable and ok else (ok, value)
                        for (_, _, durable), (ok, value) in zip(batch, outcomes, strict=True)]
    return outcomes


def _execute_one(conn: sqlite3.Connection, sql: str, params: Params) -> tuple[bool, object]:
    """One statement in autocommit mode: its rows or its exception."""
    try:
        return True, conn.execute(sql, params).fetchall()
    except Exception as exc:
        if conn.in_transaction:  # never leave a failed statement's transaction open
            conn.rollback()
        return False, exc


class _WalSync:
    """Group commit: fsync the WAL file once for every durable commit made before the fsync began.

    Each durable commit takes a ticket (a sequence number) while it still holds the writer
    lock; `wait(ticket)` returns once an fsync that started after that commit has finished.
    Whoever finds no fsync running starts one covering every ticket issued so far; the others
    wait for it, or for the next one if theirs came too late for it.

    The file descriptor stays open for the connection's life. SQLite keeps the same WAL file
    (it rewinds it after a checkpoint) until its last connection closes; if the file was
    replaced anyway, the inode differs and the descriptor is reopened, with its folder fsynced
    so the new name is durable too.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._issued = 0
        self._synced = 0
        self._running: asyncio.Task[None] | None = None
        self._fsync_lock = threading.Lock()  # the connection thread and `wait` may both fsync

    def committed(self) -> int:
        self._issued += 1
        return self._issued

    async def wait(self, ticket: int) -> None:
        while self._synced < ticket:
            if self._running is None:
                self._running = asyncio.get_running_loop().create_task(self._sync(self._issued))
            await asyncio.shield(self._running)

    def fsync_now(self) -> None:
        """Blocking: make every commit so far durable (the connection thread calls it)."""
        with self._fsync_lock:
            self._fsync()

    async def _sync(self, upto: int) -> None:
        try:
            await asyncio.to_thread(self.fsync_now)
            self._synced = max(self._synced, upto)
        finally:
            self._running = None

    def _fsync(self) -> None:
        try:
            current = os.stat(self.path)
        except FileNotFoundError:  # checkpointed and removed: the data is in the main file
            fd = os.open(self.path.with_name(self.path.name.removesuffix("-wal")), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return
        if self._fd is None or os.fstat(self._fd).st_ino != current.st_ino:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = os.open(self.path, os.O_RDONLY)
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
