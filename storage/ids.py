"""Short job ids people can read aloud and type, and parsing of what they type.

Seven characters from a 31-letter alphabet with no look-alikes (no 0/o, 1/l/i) give 27 billion
ids: collisions are rare and retried on insert. What users type is forgiving: any case,
surrounding spaces, or a Discord message link to the job's message.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
ID_LENGTH = 7
_ID = re.compile(rf"^[{ALPHABET}]{{{ID_LENGTH}}}$")
_MESSAGE_LINK = re.compile(
    r"^<?https?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(?:@me|\d+)/(\d+)/(\d+)/?>?$"
)
_SNOWFLAKE = re.compile(r"^\d{15,21}$")


def new_job_id() -> str:
    """A random id from one 64-bit draw (one system call, not one per letter): 31**7 is far
    below 2**64, so taking it modulo leaves every id equally likely to within 2e-9."""
    number = secrets.randbits(64)
    letters = []
    for _ in range(ID_LENGTH):
        number, digit = divmod(number, len(ALPHABET))
        letters.append(ALPHABET[digit])
    return "".join(letters)


def normalise(text: str) -> str:
    return text.strip().lower()


def is_job_id(text: str) -> bool:
    return bool(_ID.match(normalise(text)))


@dataclass(frozen=True)
class JobRef:
    """What a user's text points at: a job id, or a message (with its channel when known)."""

    job_id: str | None = None
    channel_id: int | None = None
    message_id: int | None = None


def parse_ref(text: str) -> JobRef | None:
    """Read a job id, a message link or a bare message id; None if it is none of these."""
    value = text.strip()
    link = _MESSAGE_LINK.match(value)
    if link:
        return JobRef(channel_id=int(link.group(1)), message_id=int(link.group(2)))
    if _SNOWFLAKE.match(value):
        return JobRef(message_id=int(value))
    if is_job_id(value):
        return JobRef(job_id=normalise(value))
    return None
