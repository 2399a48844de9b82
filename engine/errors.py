"""The one exception type whose message is shown to users as it is.

Anything raised as a `TesseraError` is something the user (or the operator) can fix, so its
message must say what was wrong and what is allowed, in words fit for a Discord message.
Every other exception is a bug or an outage: it is logged with the job id and the user only
sees that something went wrong, with the job id to quote.
"""

from __future__ import annotations


class TesseraError(Exception):
    """An error the user can fix; `str(error)` is shown in Discord verbatim."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PromptError(TesseraError):
    """The prompt text breaks the prompt language's rules."""


class ModelError(TesseraError):
    """A model id, folder or weight file cannot be used."""


class ImageFetchError(TesseraError):
    """An image prompt or attachment could not be fetched or decoded."""


class UpscaleError(TesseraError):
    """An upscale cannot be done (missing weights, size limit, corrupt file)."""


class QueueLimitError(TesseraError):
    """A per-user or global queue limit refuses a new job."""


class StorageError(TesseraError):
    """A stored object is missing or a requested change is not allowed."""


class JobCancelled(Exception):
    """Raised inside a running job when its cancellation was requested.

    Not a `TesseraError`: cancelling is not a failure and has no message to show.
    """
