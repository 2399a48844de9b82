"""Fair turns for the job queue: round-robin across users, priorities, limits and batching.

Pure Python with no I/O, so the in-process queue and the Redis backend share it (the bot's
scheduler decides the order; workers only execute what it hands them).

The rules:

- **Priorities first.** A job with a higher `priority` runs before any job with a lower one
  (upscales are short and go ahead of full grids; a server's priority role adds more).
- **Round-robin across users within a priority.** Users wait in a rotation. Picking a job moves
  its user to the back of the rotation; a user with nothing queued leaves it, and a newcomer
  joins at the back. So a user with 100 queued jobs cannot starve anyone: a newcomer's first
  job starts after at most one job of each user already waiting.
- **Limits.** `max_per_user` waiting jobs per user and `max_total` waiting jobs overall are
  refused at submission with a message that says the limit and the current count.
  `max_running_per_user` caps how many of one user's jobs run at once (in one batch or, with
  several Redis workers, across workers): the rest wait their turn, others go ahead.
- **Batching.** `next_batch` takes the job whose turn it is and then the next jobs in the fair
  order that share its `batch_key`, up to `batch_size`, so batching never lets anyone jump
  the line except by riding along in a batch that was going to run anyway.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field

from engine.errors import QueueLimitError

# How far into the fair order `next_batch` looks for batch mates; bounds the cost per pick.
BATCH_SCAN_LIMIT = 256


@dataclass(frozen=True)
class Entry:
    """One waiting job as the scheduler sees it: an id and what decides its turn."""

    job_id: str
    user_id: int
    priority: int = 0
    batch_key: Hashable = None  # None: never batched with another job
    enqueued_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Limits:
    max_per_user: int = 10
    max_running_per_user: int = 2
    max_total: int = 200
    batch_size: int = 4


class Scheduler:
    """The waiting room: who goes next, and who may come in."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._entries: dict[str, Entry] = {}
        # priority -> user -> that user's waiting jobs at that priority, oldest first
        self._tiers: dict[int, dict[int, deque[Entry]]] = {}
        self._rotation: dict[int, None] = {}  # users with waiting jobs, next turn first
        self._waiting_per_user: dict[int, int] = {}
        self._running: dict[str, Entry] = {}
        self._running_per_user: dict[int, int] = {}

    # ----- counts -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._entries

    @property
    def running(self) -> dict[str, Entry]:
        return dict(self._running)

    def is_running(self, job_id: str) -> bool:
        return job_id in self._running

    def waiting_for(self, user_id: int) -> int:
        return self._waiting_per_user.get(user_id, 0)

    def running_for(self, user_id: int) -> int:
        return self._running_per_user.get(user_id, 0)

    def per_user(self) -> dict[int, int]:
        """Jobs per user, waiting and running together."""
        users = set(self._waiting_per_user) | set(self._running_per_user)
        return {u: self.waiting_for(u) + self.running_for(u) for u in sorted(users)}

    def get(self, job_id: str) -> Entry | None:
        return self._entries.get(job_id) or self._running.get(job_id)

    # ----- admission --------------------------------------------------------------------
    def check(self, user_id: int, count: int = 1) -> None:
        """Raise `QueueLimitError` if `count` more jobs of `user_id` would break a limit."""
        limits = self.limits
        waiting = self.waiting_for(user_id)
        if waiting + count > limits.max_per_user:
            running = self.running_for(user_id)
            asked = "this prompt makes 1 more" if count == 1 else f"this prompt makes {count} more"
            raise QueueLimitError(
                f"You can have at most {limits.max_per_user} jobs waiting in the queue; you have {waiting} "
                f"waiting and {running} running, and {asked}. Wait for some to finish or cancel one with /cancel."
            )
        total = len(self._entries)
        if total + count > limits.max_total:
            raise QueueLimitError(
                f"The queue is full: it holds at most {limits.max_total} waiting jobs and has {total} now. "
                "Please try again in a few minutes."
            )

    def add(self, entry: Entry, *, enforce_limits: bool = True) -> int:
        """Queue `entry` and return its position (1 = next to run).

        `enforce_limits=False` is for jobs resumed after a restart: they were admitted once.
        """
        if entry.job_id in self._entries or entry.job_id in self._running:
            raise ValueError(f"job {entry.job_id} is already queued")
        if enforce_limits:
            self.check(entry.user_id)
        self._entries[entry.job_id] = entry
        jobs = self._tiers.setdefault(entry.priority, {}).setdefault(entry.user_id, deque())
        jobs.append(entry)
        self._waiting_per_user[entry.user_id] = self.waiting_for(entry.user_id) + 1
        self._rotation.setdefault(entry.user_id, None)
        return self._position(entry, len(jobs) - 1)

    def remove(self, job_id: str) -> Entry | None:
        """Take a waiting job out of the queue (cancel); None if it is not waiting."""
        entry = self._entries.pop(job_id, None)
        if entry is None:
            return None
        tier = self._tiers[entry.priority]
        jobs = tier[entry.user_id]
        jobs.remove(entry)
        if not jobs:
            del tier[entry.user_id]
            if not tier:
                del self._tiers[entry.priority]
        self._forget_waiting(entry.user_id)
        return entry

    def _forget_waiting(self, user_id: int) -> None:
        left = self._waiting_per_user[user_id] - 1
        if left:
            self._waiting_per_user[user_id] = left
        else:
            del self._waiting_per_user[user_id]
            self._rotation.pop(user_id, None)

    # ----- order ------------------------------------------------------------------------
    def _fair_order(self) -> Iterator[Entry]:
        """Waiting jobs in the order they would run if nothing else arrived (lazy)."""
        rotation = list(self._rotation)
        for priority in sorted(self._tiers, reverse=True):
            tier = self._tiers[priority]
            users = [u for u in rotation if u in tier]
            depth = 0
            while users:
                still = []
                for user in users:
                    jobs = tier[user]
                    yield jobs[depth]
                    if len(jobs) > depth + 1:
                        still.append(user)
                users = still
                depth += 1
            rotation = _after_tier(rotation, tier)

    def order(self) -> list[str]:
        """All waiting job ids, next to run first."""
        return [e.job_id for e in self._fair_order()]

    def positions(self) -> dict[str, int]:
        """Every waiting job's position (1 = next to run)."""
        return {e.job_id: i for i, e in enumerate(self._fair_order(), start=1)}

    def position(self, job_id: str) -> int | None:
        """A waiting job's position, in O(users) rather than a walk of the whole queue."""
        entry = self._entries.get(job_id)
        if entry is None:
            return None
        return self._position(entry, self._tiers[entry.priority][entry.user_id].index(entry))

    def _position(self, entry: Entry, depth: int) -> int:
        """`entry`'s position given its `depth` in its user's line (how many of theirs are ahead)."""
        higher = sorted((p for p in self._tiers if p > entry.priority), reverse=True)
        ahead = sum(len(jobs) for p in higher for jobs in self._tiers[p].values())
        tier = self._tiers[entry.priority]
        # Users come in rotation order, but tiers above this one reorder the rotation first.
        rotation: Iterable[int] = self._rotation
        for priority in higher:
            rotation = _after_tier(list(rotation), self._tiers[priority])
        before = True  # users ahead of ours in the rotation also take a job in our round
        for user in rotation:
            jobs = tier.get(user)
            if jobs is None:
                continue
            if user == entry.user_id:
                ahead += depth
                before = False
                continue
            ahead += min(len(jobs), depth + (1 if before else 0))
        return ahead + 1

    # ----- picking ----------------------------------------------------------------------
    def next_batch(self, batch_size: int | None = None) -> list[Entry]:
        """Take the next job and its batch mates off the queue and mark them running."""
        size = batch_size or self.limits.batch_size
        cap = self.limits.max_running_per_user
        taken: list[Entry] = []
        taken_per_user: dict[int, int] = {}
        key: Hashable = None
        for scanned, entry in enumerate(self._fair_order()):
            if scanned >= BATCH_SCAN_LIMIT and taken:
                break
            if self.running_for(entry.user_id) + taken_per_user.get(entry.user_id, 0) >= cap:
                continue
            if taken and (key is None or entry.batch_key != key):
                continue
            taken.append(entry)
            taken_per_user[entry.user_id] = taken_per_user.get(entry.user_id, 0) + 1
            if len(taken) == 1:
                key = entry.batch_key
            if len(taken) >= size or key is None:
                break
        for entry in taken:
            self.remove(entry.job_id)
            if entry.user_id in self._rotation:  # its user's turn is used: back of the line
                self._rotation.pop(entry.user_id)
                self._rotation[entry.user_id] = None
            self._running[entry.job_id] = entry
            self._running_per_user[entry.user_id] = self.running_for(entry.user_id) + 1
        return taken

    def finish(self, job_id: str) -> Entry | None:
        """A running job ended (done, failed or cancelled)."""
        entry = self._running.pop(job_id, None)
        if entry is not None:
            left = self._running_per_user[entry.user_id] - 1
            if left:
                self._running_per_user[entry.user_id] = left
            else:
                del self._running_per_user[entry.user_id]
        return entry

    def requeue(self, job_id: str) -> None:
        """Put a running job back at the front of its user's line (a batch split, a stop)."""
        entry = self.finish(job_id)
        if entry is None:
            return
        self._entries[entry.job_id] = entry
        self._tiers.setdefault(entry.priority, {}).setdefault(entry.user_id, deque()).appendleft(entry)
        self._waiting_per_user[entry.user_id] = self.waiting_for(entry.user_id) + 1
        self._rotation.setdefault(entry.user_id, None)



def _after_tier(rotation: list[int], tier: dict[int, deque[Entry]]) -> list[int]:
    """The rotation once a tier has been drained: its users go to the back, in the order of
    their last turn (fewest jobs first, ties in rotation order)."""
    served = sorted((u for u in rotation if u in tier), key=lambda u: len(tier[u]))  # stable sort
    return [u for u in rotation if u not in tier] + served
