"""What users read: the text of job messages, `/seed` answers and file names.

Pure functions from stored values to strings, so every message shape is tested without
Discord. Message layout follows Midjourney's: the prompt in bold, then the author, then the
state in brackets — `**a lighthouse at dusk** - <@42> (57%)` — because that is what users
of such bots already read at a glance. The job id closes each message: users quote it in
`/seed`, `/upscale` and bug reports.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from typing import Any

import discord
from PIL import Image, UnidentifiedImageError

from engine.imaging.encoding import filename_stem
from engine.imaging.metadata import model_label
from engine.jobs.model import Job, JobKind

MESSAGE_LIMIT = 2000
# Room left for the author, state and job id around the prompt.
_PROMPT_ROOM = 1700
_REASON_ROOM = 1000  # a failure's reason, at most (the prompt then gets less room)
_MIN_PROMPT_ROOM = 200

_EXT_BY_MIME = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


def mention(user_id: int) -> str:
    return f"<@{user_id}>"


def escape(text: str) -> str:
    """Text from a stranger or a model, shown as typed: no markdown, no mention, no masked link."""
    return discord.utils.escape_markdown(discord.utils.escape_mentions(text))


def shown_prompt(text: str, limit: int = _PROMPT_ROOM) -> str:
    """The prompt escaped for Discord markdown and mentions, cut to fit one message: a prompt
    is a stranger's text, and `<@id>` in it must not make the bot ping that member.

    Cut after escaping: escaping can double the length (`a_b_c…`), and a message over 2,000
    characters is refused, which would leave the job's message stuck at "thinking…"."""
    text = discord.utils.escape_mentions(discord.utils.escape_markdown(" ".join(text.split())))
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"  # a backslash left at the end only escapes the "…"
    return text or "(no prompt)"


def _title(job: Job, index_hint: int | None = None) -> str:
    """The part between the prompt and the state: who asked, and for what kind of job."""
    who = mention(job.user_id)
    if job.kind is JobKind.UPSCALE:
        scale = job.options.get("scale")
        number = (job.parent_index or 0) + 1 if job.parent_index is not None else 1
        suffix = f" ×{scale}" if scale else ""
        return f"Image #{number}{suffix} {who}"
    if job.kind is JobKind.VARIATION:
        strength = str(job.options.get("strength") or "subtle").capitalize()
        return f"Variations ({strength}) by {who}"
    if job.kind is JobKind.REROLL:
        return f"{who} (re-roll)"
    if job.kind is JobKind.EDIT:
        return f"{edit_name(job.options)} by {who}"
    if job.kind is JobKind.SHORTEN:
        return f"/shorten by {who}"
    return who


_PAN_ARROWS = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}


def edit_name(options: Mapping[str, Any]) -> str:
    """What an edit job did, in the buttons' words ("Zoom Out 2×", "Pan ⬅️", "Vary (Region)"),
    from its stored options only (never the user's region text: titles are public)."""
    edit = options.get("edit")
    if edit == "zoom":
        factor = options.get("factor")
        return f"Zoom Out {factor:g}×" if isinstance(factor, int | float) else "Zoom Out"
    if edit == "pan":
        return f"Pan {_PAN_ARROWS.get(str(options.get('direction')), '')}".rstrip()
    if edit == "square":
        return "Make Square"
    if edit == "region":
        return "Vary (Region)"
    return "Edit"


def picture_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an encoded result, read from its header only (nothing is decoded), so
    a result's buttons can depend on its shape (Make Square only under a non-square picture)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _line(job: Job, state: str | None, room: int = _PROMPT_ROOM) -> str:
    head = f"**{shown_prompt(job.prompt_text, room)}** - {_title(job)}"
    if state:
        head += f" ({state})"
    return head


def _footer(job: Job) -> str:
    return f"-# job `{job.id}`"


def queued_text(job: Job, position: int | None, *, warming: bool = False) -> str:
    """The first answer: the prompt, the author and the place in the queue."""
    if warming:
        state = "warming up, your job is queued"
        if position:
            state += f" — #{position} in line"
    elif position and position > 1:
        state = f"waiting to start — #{position} in line"
    else:
        state = "waiting to start"
    return f"{_line(job, state)}\n{_footer(job)}"


def progress_text(job: Job, step: int | None, total: int | None, *, loading: bool = False) -> str:
    """A running job: the percentage done (the preview image is attached separately), or
    "loading model" while a started job waits for the model (minutes on a first start)."""
    if loading:
        state = "loading model"
    elif step is not None and total:
        percent = max(0, min(100, round(100 * step / total)))
        state = f"{percent}%"
    else:
        state = "starting"
    return f"{_line(job, state)}\n{_footer(job)}"


def ignored_notice(ignored: Iterable[str]) -> str:
    names = [f"`--{name.lstrip('-')}`" for name in ignored]
    if not names:
        return ""
    return f"-# accepted but not used here: {', '.join(names)}"


def safety_notice(flagged: Iterable[int], *, single: bool = False) -> str:
    """Which images the safety checker replaced with its notice (0-based indices in).

    Said in words because the notice image alone looks like a broken result, and users who
    hit U2 on it would upscale the notice."""
    numbers = sorted({int(index) + 1 for index in flagged})
    if not numbers:
        return ""
    if single:
        return "The image was hidden by this server's safety filter."
    if len(numbers) == 1:
        return f"Image {numbers[0]} was hidden by this server's safety filter."
    listed = ", ".join(str(n) for n in numbers[:-1]) + f" and {numbers[-1]}"
    return f"Images {listed} were hidden by this server's safety filter."


def is_draft(job: Job) -> bool:
    """Whether a job was drawn with `--draft`/`--turbo` (its stored request says so)."""
    return job.kind is not JobKind.UPSCALE and bool((job.request_json or {}).get("draft"))


def view_kind(job: Job) -> str:
    """Which buttons a finished job's message carries: "draft" grids add ✨ Enhance to a grid's."""
    return "draft" if is_draft(job) else job.kind.value


DRAFT_NOTICE = "**Draft** (few steps, fast): ✨ Enhance draws the same seeds at full quality."


def done_text(job: Job, ignored: Iterable[str] = (), flagged: Iterable[int] = ()) -> str:
    """The finished message that carries the grid (or the upscaled image); a draft says so."""
    lines = [_line(job, None)]
    if is_draft(job):
        lines.append(DRAFT_NOTICE)
    hidden = safety_notice(flagged, single=job.kind is JobKind.UPSCALE)
    if hidden:
        lines.append(hidden)
    notice = ignored_notice(ignored)
    if notice:
        lines.append(notice)
    lines.append(_footer(job))
    return "\n".join(lines)


def failed_text(job: Job, error: str | None) -> str:
    """The prompt, "failed" and why; the prompt gives up room to a long reason (2,000 in all)."""
    reason = error or "something went wrong"
    if len(reason) > _REASON_ROOM:
        reason = reason[: _REASON_ROOM - 1].rstrip() + "…"
    room = max(_MIN_PROMPT_ROOM, _PROMPT_ROOM - len(reason))
    return f"{_line(job, 'failed', room)}\n{reason}\n{_footer(job)}"


def cancelled_text(job: Job) -> str:
    return f"{_line(job, 'cancelled')}\n{_footer(job)}"


def moved_text(job: Job) -> str:
    """What the job's first message says once its result was posted as a new message (after
    a restart, or past the 15-minute token): the prompt and a `{link}` to the result."""
    return f"{_line(job, None)} — finished below ↓ {{link}}\n{_footer(job)}"


def unexpected_error_text(job_id: str | None) -> str:
    """What users see for a bug: no traceback, but the id to quote to an admin."""
    if job_id:
        return (f"Something went wrong on our side with job `{job_id}`. "
                "It has been logged; quote this job id to a server admin.")
    return "Something went wrong on our side. It has been logged; please try again."


def file_name(prompt_text: str, job_id: str, mime: str, *, suffix: str = "") -> str:
    """`first_words_of_the_prompt_JOBID[suffix].ext` — what users see when they save it."""
    ext = _EXT_BY_MIME.get(mime, "png")
    return f"{filename_stem(prompt_text, job_id)}{suffix}.{ext}"


# ----- /seed and the ✉️ reaction -----------------------------------------------------------

_PARAM_LABELS: tuple[tuple[str, str], ...] = (
    ("seed", "seed"),
    ("width", "width"),
    ("height", "height"),
    ("steps", "steps"),
    ("guidance", "guidance"),
    ("sampler", "sampler"),
    ("model", "model"),
    ("chaos", "chaos"),
    ("tile", "tile"),
    ("stop", "stop"),
    ("strength", "strength"),
)


def _weighted(prompts: Any) -> str:
    parts = []
    for part in prompts or ():
        if isinstance(part, Mapping):
            text, weight = part.get("text", ""), part.get("weight", 1)
        else:
            text, weight = part[0], part[1] if len(part) > 1 else 1
        parts.append(text if weight in (1, 1.0) else f"{text}::{weight:g}")
    return " ".join(parts)


def seed_text(job: Job) -> str:
    """The seed and every parameter of a job, ready to copy (for `/seed` and the ✉️ DM)."""
    request = job.request_json or {}
    lines = [f"**Job `{job.id}`** ({job.kind.value}, {job.state.value})",
             f"prompt: `{shown_prompt(job.prompt_text, 1200).replace('`', 'ˋ')}`"]
    if job.kind.answers_text:  # /describe, /shorten: words, not noise
        lines.append(f"A /{job.kind.value} answer has no seed: press a number under it to imagine one of its "
                     "prompts, then use `/seed` on that grid.")
        return "\n".join(lines)[:MESSAGE_LIMIT]
    seed = request.get("seed", job.seed)
    lines.append(f"**seed: {seed if seed is not None else 'not chosen yet'}**")
    if request.get("prompts"):
        lines.append(f"prompt parts: {_weighted(request['prompts'])}")
    if request.get("negative"):
        lines.append(f"negative: {', '.join(request['negative'])}")
    loras = request.get("loras") or []
    if loras:
        lines.append("LoRAs: " + ", ".join(f"{name}:{float(weight):g}" for name, weight in loras[:8]))
    if request.get("embeddings"):
        lines.append("embeddings: " + ", ".join(str(name) for name in request["embeddings"][:20]))
    if request.get("draft"):
        lines.append(f"draft: {request.get('steps')} steps")
    for key, label in _PARAM_LABELS[1:]:
        value = request.get(key)
        if value is None or value is False or value == "":
            continue
        lines.append(f"{label}: {model_label(str(value)) if key == 'model' else value}")
    if not request and job.model:
        lines.append(f"model: {model_label(job.model)}")  # a local folder by its name: the server's paths stay private
    if job.parent_id and job.kind is JobKind.EDIT:
        lines.append(f"made by: {edit_lineage(job)}")
    elif job.parent_id:
        lines.append(f"from job `{job.parent_id}` image {(job.parent_index or 0) + 1}")
    if job.kind is not JobKind.UPSCALE and seed is not None:
        lines.append(f"-# add `--seed {seed}` to a prompt to start from the same noise")
    return "\n".join(lines)[:MESSAGE_LIMIT]


def edit_lineage(job: Job) -> str:
    """How an edit job was made, for `/seed`: the edit, the region, and the image it edited."""
    options = job.options
    how = edit_name(options)
    if options.get("edit") == "region":
        if options.get("cells"):
            how += f" of cells {options['cells']}"
        elif options.get("where"):
            where = shown_prompt(str(options["where"]), 200).replace("`", "ˋ")
            how += f" of `{where}`"
        else:
            how += " of an uploaded mask"
    return f"{how} of job `{job.parent_id}` image {(job.parent_index or 0) + 1}"


_LINK = re.compile(r"https?://(?:\w+\.)?discord(?:app)?\.com/channels/(?:\d+|@me)/(\d+)/(\d+)")


def parse_message_link(text: str) -> tuple[int, int] | None:
    """(channel id, message id) of a Discord message link, or None."""
    match = _LINK.search(text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None
