"""Loggers that stamp every line with the job it is about.

Operators grep logs by job id (users quote it from Discord), so every line about a job must
carry it. The formatter in `bot.logs` prints the `job_id` attribute when a record has one.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class JobLogger(logging.LoggerAdapter):
    """A logger adapter that adds `job_id` to each record's extras."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("job_id", (self.extra or {}).get("job_id"))
        kwargs["extra"] = extra
        return msg, kwargs


def for_job(logger: logging.Logger, job_id: str | None) -> JobLogger:
    """Return `logger` wrapped so that each line names `job_id`."""
    return JobLogger(logger, {"job_id": job_id})
