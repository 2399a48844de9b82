"""Who asked for a job, in a form another process can check: the bot, or one CLI process.

Why process identity rather than a heartbeat: a `tessera imagine` killed with SIGKILL (or by
the OOM killer, or a closed terminal) gets no chance to say goodbye, and a lease would need a
timer writing to the database every few seconds, which is exactly what fails on a full disk.
A pid alone is not enough, because pids are reused; the pid together with the process's
start time (clock ticks since boot, from `/proc/<pid>/stat` on Linux, or psutil elsewhere when
it is installed) names one process for the machine's uptime. The host name guards against a
DATA_DIR shared by two machines or containers with their own pid spaces: a job owned by
another host is never declared gone from here.
"""

from __future__ import annotations

import os
import socket
from functools import cache

from engine.jobs.model import JobOwner


def this_cli() -> JobOwner:
    """The current process, as the owner of the jobs a CLI command submits."""
    pid = os.getpid()
    return JobOwner("cli", hostname(), pid, process_start(pid))


@cache
def hostname() -> str:
    return socket.gethostname()


def process_start(pid: int) -> int | None:
    """When process `pid` started, in an opaque unit stable for its life; None if unknown or gone."""
    found = _proc_stat(pid)
    if found is None:
        return None if os.path.isdir("/proc/self") else _psutil_start(pid)
    return found[1]


def _proc_stat(pid: int) -> tuple[str, int | None] | None:
    """(state letter, start time) from `/proc/<pid>/stat`; None without such a file."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # Field 2 (the command name) may contain spaces and parentheses: split after its last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return fields[0].decode("ascii", "replace"), int(fields[19])  # fields 3 and 22: state, starttime
    except (IndexError, ValueError):
        return None


def _psutil_start(pid: int) -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    try:
        return int(psutil.Process(pid).create_time() * 100)
    except (psutil.Error, OSError):
        return None


def is_gone(owner: JobOwner) -> bool:
    """True only when the owner is a CLI process on this host that is certainly not running.

    Anything we cannot check (the bot, another host, an unknown pid) counts as alive: marking
    a live command's job failed would be worse than leaving a stuck one for `doctor` to show.
    """
    if owner.requester != "cli" or owner.pid is None or owner.host != hostname():
        return False
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, owned by another user
    found = _proc_stat(owner.pid)
    if found is not None and found[0] in ("Z", "X"):
        return True  # killed, not yet reaped by its parent: it will never run another step
    if owner.start is None:
        return False
    now = found[1] if found is not None else process_start(owner.pid)
    return now is not None and now != owner.start  # the pid was reused by a newer process
