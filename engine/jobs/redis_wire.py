"""What the bot and its Redis GPU workers say to each other: keys, JSON messages, the stream.

Shared by `engine.jobs.redis_queue` (the bot side) and `engine.jobs.worker` (the GPU side), so both
ends agree on one schema. Every message is JSON (images travel as base64 PNG/JPEG inside
it), never pickle: a worker may sit on another machine, and whatever reaches Redis must not
be able to run code. Every payload a worker takes is checked field by field by
`parse_batch` before anything runs; a malformed one raises `PayloadError`. Size, UTF-8 and
nesting depth are checked before `json.loads` (`check_json_shape`), so every parser here
raises only `PayloadError`, whatever arrives. `check_batch` then holds a well-formed batch to
the worker's `WorkerLimits` (its models, the bot's own bounds).

Redis keys (all under one namespace, "tessera" by default):

- `{ns}:jobs` — the job stream (consumer group `{ns}-workers`): one entry per batch.
- `{ns}:live:{job_id}` — a hash the bot writes when it hands a job over (`token`, `cancel`,
  `attempts`) and deletes when the job is finished. A worker runs a job only while this
  key still carries the token of the message it holds, which is how cancels, bot restarts
  and re-deliveries reach a worker without any second queue.
- `{ns}:results:{instance}` — a list the worker pushes each job's result to (one list per
  bot process, so `tessera imagine` beside a running bot never takes the bot's results).
- `{ns}:events:{instance}` — pub/sub channel for started/progress events (lossy by design:
  progress is only decoration; results never travel over pub/sub).
- `{ns}:worker:{worker_id}` — a worker's heartbeat (JSON, expires), for the bot's count of
  live workers and their models.

`TesseraStreamBroker` is taskiq-redis's `RedisStreamBroker` (consumer group, XADD on kick,
XACK) with the consuming side done one message at a time: the stock `listen()` fetches up
to 100 entries per read (they would sit pending on one worker while others idle) and only
looks for abandoned entries after a read that returned new ones, so a dead worker's job
could wait forever in a quiet queue. `take()` first reclaims an entry idle longer than the
visibility timeout (XAUTOCLAIM), then reads one new entry; `keep()` resets the idle clock of
an entry being worked on (XCLAIM ... JUSTID) so a long job is never re-delivered while its
worker is alive, and `done()` acknowledges and deletes it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import math
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace
from typing import Any

from redis.asyncio import Redis
from taskiq import AckableMessage
from taskiq_redis import RedisStreamBroker

from engine.diffusion.loras import valid_name
from engine.diffusion.models import PROFILES
from engine.diffusion.shorten import MAX_PART_CHARS
from engine.errors import TesseraError
from engine.jobs.answers import DESCRIBE_AGAIN_MAX
from engine.prompt import _QUALITIES as QUALITIES  # the bot's --quality choices
from engine.prompt import LORA_WEIGHT_MAX, LORAS_MAX
from engine.request import MAX_ASPECT, GenerationRequest, steps_for_quality

WIRE_VERSION = 1
DEFAULT_NAMESPACE = "tessera"
DEFAULT_VISIBILITY_S = 30.0
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024  # a batch with its init images; a result with 4 PNGs
MAX_BATCH = 16
MAX_SIDE = 8192
MAX_STEPS = 1000
MAX_IMAGES = 16
MAX_FEATHER = 256  # an edit's paste-back band, pixels (edits use 1/32 of the short side)
MAX_DEPTH = 32  # our messages nest 4 levels; json.loads recurses once per level
MAX_SKELETON_CHARS = 1024 * 1024  # JSON outside strings: ~1 KB per job in a real batch
MAX_HEARTBEAT_BYTES = 16 * 1024
MAX_REFERENCES = 20  # reference pictures of one request, all lists together (PROMPT_MAX_IMAGES <= 20)
MAX_FILES = MAX_BATCH * (1 + MAX_REFERENCES)  # init image + references per job; bytes bound by the payload
REF_FILES = ("style_refs", "character_refs", "blend_refs")  # a request's reference pictures: files on the wire
_REF_URLS = ("style_urls", "character_urls")
RESULT_TTL_S = 24 * 3600  # an unread result list (its bot is gone) expires
LIVE_TTL_S = 7 * 24 * 3600  # a live key the bot never deleted (it crashed) expires

_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_FILE = re.compile(r"^[0-9a-f]{64}$")
_KINDS = frozenset({"imagine", "variation", "reroll", "upscale", "edit", "describe", "shorten"})
_TEXT_KINDS = frozenset({"describe", "shorten"})  # no request; the answer is JSON (`ResultPayload.data`)
MAX_ANSWER_BYTES = 256 * 1024  # a /describe or /shorten answer as JSON: a few KB in practice


class PayloadError(ValueError):
    """A message from Redis that does not follow this schema; it is never run."""


# ----- keys --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Keys:
    namespace: str = DEFAULT_NAMESPACE

    @property
    def stream(self) -> str:
        return f"{self.namespace}:jobs"

    @property
    def group(self) -> str:
        return f"{self.namespace}-workers"

    def live(self, job_id: str) -> str:
        return f"{self.namespace}:live:{job_id}"

    def results(self, instance: str) -> str:
        return f"{self.namespace}:results:{instance}"

    def events(self, instance: str) -> str:
        return f"{self.namespace}:events:{instance}"

    def worker(self, worker_id: str) -> str:
        return f"{self.namespace}:worker:{worker_id}"

    @property
    def workers_pattern(self) -> str:
        return f"{self.namespace}:worker:*"


# Run by a worker before it starts a job: -1 stale (not the bot's current hand-over),
# -2 cancelled while waiting, else the attempt number this run is.
CLAIM_SCRIPT = """
local token = redis.call('HGET', KEYS[1], 'token')
if token ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[1], 'cancel') == '1' then return -2 end
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""


# ----- messages ----------------------------------------------------------------------------
@dataclass(frozen=True)
class JobPayload:
    """One job of a batch as a worker receives it."""

    job_id: str
    kind: str
    request: dict | None  # GenerationRequest.to_json(); its init_image is a file key or None
    options: dict = field(default_factory=dict)  # upscale: {"scale": 4, "source": <file key>}
    prompt_text: str = ""


@dataclass(frozen=True)
class BatchPayload:
    """One stream entry: jobs that run together, and where their results go."""

    batch_id: str
    token: str
    reply_to: str
    events: str
    timeout_s: float
    max_attempts: int
    jobs: tuple[JobPayload, ...]
    files: dict[str, bytes] = field(default_factory=dict)  # sha256 hex -> image bytes (init images, sources)

    def to_bytes(self) -> bytes:
        return dumps({
            "v": WIRE_VERSION, "batch": self.batch_id, "token": self.token, "reply_to": self.reply_to,
            "events": self.events, "timeout_s": self.timeout_s, "max_attempts": self.max_attempts,
            "jobs": [{"job_id": j.job_id, "kind": j.kind, "request": j.request, "options": j.options,
                      "prompt_text": j.prompt_text} for j in self.jobs],
            "files": {name: b64(data) for name, data in self.files.items()},
        })


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, what: str, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> bytes:
    if not isinstance(text, str) or len(text) > max_bytes * 4 // 3 + 4:
        raise PayloadError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError(f"{what} is not valid base64") from None


_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def check_json_shape(text: str, *, max_depth: int = MAX_DEPTH, max_skeleton: int = MAX_SKELETON_CHARS) -> None:
    """Refuse JSON nested deeper than `max_depth` before `json.loads` sees it.

    `json.loads` recurses once per `[` or `{`, so `"[" * 100000` raises `RecursionError`
    (not a `ValueError`), which killed every worker the message was re-delivered to. This is
    a few linear passes in C (`str.replace`, `str.split`) and one short Python loop:

    1. escape pairs are removed left to right (`\\\\` first, then `\\"`), as JSON pairs
       them, so every `"` left opens or closes a string;
    2. splitting on `"` leaves what is outside strings at the even indexes: that skeleton
       (brackets, numbers, literals, separators) must be short, since our messages keep
       their bulk (prompts, base64 images) in strings;
    3. the skeleton's brackets are counted.

    Up to the first syntax error this sees strings exactly as `json.loads` does, so any text
    it passes cannot make the parser nest deeper than `max_depth`.
    """
    skeleton = "".join(text.replace("\\\\", "").replace('\\"', "").split('"')[0::2])
    if len(skeleton) > max_skeleton:
        raise PayloadError(f"payload has {len(skeleton)} characters outside strings; at most {max_skeleton} are accepted")
    depth = 0
    for char in _NOT_BRACKET.sub("", skeleton):
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise PayloadError(f"payload is nested deeper than {max_depth} levels")
        else:
            depth -= 1


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(data: bytes | str, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict:
    """JSON object from Redis bytes, refusing anything else (pickle, junk, oversize, deep).

    Size, encoding and nesting are checked before parsing; every failure, whatever the
    parser raises, is a `PayloadError`, so callers need to catch only that.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if not isinstance(data, bytes | bytearray):
        raise PayloadError(f"payload must be bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise PayloadError(f"payload is {len(data)} bytes; at most {max_bytes} are accepted")
    try:
        text = bytes(data).decode("utf-8")  # strict: json.loads would also guess UTF-16/32
    except UnicodeDecodeError:
        raise PayloadError("payload is not JSON (not UTF-8 text)") from None
    check_json_shape(text)
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: belt and braces, see check_json_shape
        raise PayloadError(f"payload is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(value, dict):
        raise PayloadError("payload must be a JSON object")
    if value.get("v") != WIRE_VERSION:
        shown = value.get("v")
        raise PayloadError(f"payload version must be {WIRE_VERSION}, got {str(shown)[:20]!r}")
    return value


def _get(data: dict, name: str, kind: type | tuple[type, ...], what: str = "") -> Any:
    value = data.get(name)
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise PayloadError(f"{what}{name} has the wrong type (bool)")
    if not isinstance(value, kind):
        raise PayloadError(f"{what}{name} is missing or has the wrong type ({type(value).__name__})")
    return value


def _name(data: dict, name: str) -> str:
    value = _get(data, name, str)
    if not _NAME.match(value):
        raise PayloadError(f"{name} has characters or a length that are not allowed")
    return value


def _number(value: Any, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PayloadError(f"{what} must be a number")
    if not low <= value <= high:
        raise PayloadError(f"{what} must be from {low:g} to {high:g}, got {value!r}")
    return value


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{what} must be a whole number")
    if not low <= value <= high:
        raise PayloadError(f"{what} must be from {low} to {high}, got {value}")
    return value


def _json_scalars(value: Any, what: str) -> dict:
    if not isinstance(value, dict) or len(value) > 32:
        raise PayloadError(f"{what} must be an object of at most 32 entries")
    for key, item in value.items():
        if not isinstance(key, str) or len(key) > 64:
            raise PayloadError(f"{what} has a key that is not a short string")
        if item is not None and not isinstance(item, str | int | float | bool):
            raise PayloadError(f"{what}.{key} must be a string, number or boolean")
        if isinstance(item, str) and len(item) > 10_000:
            raise PayloadError(f"{what}.{key} is too long")
    return value


def _check_assets(data: dict, what: str) -> None:
    """--lora pairs, embedding names and the draft flag: names a worker looks up in its own
    folders (never paths), at most LORAS_MAX LoRAs with weights in the prompt language's range."""
    loras = data.get("loras", [])
    if not isinstance(loras, list) or len(loras) > LORAS_MAX:
        raise PayloadError(f"{what}.loras must be a list of at most {LORAS_MAX} [name, weight] pairs")
    for pair in loras:
        if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str) or not valid_name(pair[0]):
            raise PayloadError(f"{what}.loras must hold [name, weight] pairs with a LoRA file name")
        _number(pair[1], f"{what}.loras.weight", -LORA_WEIGHT_MAX, LORA_WEIGHT_MAX)
    embeddings = data.get("embeddings", [])
    if not isinstance(embeddings, list) or len(embeddings) > 64 or not all(
            isinstance(e, str) and valid_name(e) for e in embeddings):
        raise PayloadError(f"{what}.embeddings must be a list of at most 64 embedding names")
    if not isinstance(data.get("draft", False), bool):
        raise PayloadError(f"{what}.draft must be true or false")


def check_request(data: Any, files: dict[str, bytes], what: str) -> dict:
    """A GenerationRequest's JSON, checked so the pipeline never sees nonsense."""
    if not isinstance(data, dict):
        raise PayloadError(f"{what} must be an object")
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or len(prompts) > 64:
        raise PayloadError(f"{what}.prompts must be a list of at most 64 parts")
    for part in prompts:
        if not isinstance(part, dict) or not isinstance(part.get("text"), str) or len(part["text"]) > 10_000:
            raise PayloadError(f"{what}.prompts must hold objects with a text string")
        _number(part.get("weight", 1.0), f"{what}.prompts.weight", -1000, 1000)
    for name in ("negative", "ignored", "image_prompts"):
        items = data.get(name, [])
        if not isinstance(items, list) or len(items) > 64 or not all(isinstance(i, str) and len(i) < 10_000 for i in items):
            raise PayloadError(f"{what}.{name} must be a list of strings")
    for name in ("width", "height"):
        side = _int(data.get(name), f"{what}.{name}", 8, MAX_SIDE)
        if side % 8:
            raise PayloadError(f"{what}.{name} must be a multiple of 8, got {side}")
    _int(data.get("steps"), f"{what}.steps", 1, MAX_STEPS)
    _int(data.get("seed"), f"{what}.seed", 0, 2**32 - 1)
    _int(data.get("count", 4), f"{what}.count", 1, MAX_IMAGES)
    _int(data.get("chaos", 0), f"{what}.chaos", 0, 100)
    _number(data.get("guidance"), f"{what}.guidance", 0, 100)
    for name in ("sampler", "model"):
        value = data.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= 500:
            raise PayloadError(f"{what}.{name} must be a non-empty string")
    if not isinstance(data.get("tile", False), bool):
        raise PayloadError(f"{what}.tile must be true or false")
    # Required, not defaulted: a payload that lost the field must not run without the filter.
    if not isinstance(data.get("safety_check"), bool):
        raise PayloadError(f"{what}.safety_check must be true or false")
    if data.get("stop") is not None:
        _int(data["stop"], f"{what}.stop", 1, 100)
    init = data.get("init_image")
    if init is not None:
        if not isinstance(init, str) or init not in files:
            raise PayloadError(f"{what}.init_image must name a file sent with the batch")
        _number(data.get("strength"), f"{what}.strength", 0.0, 1.0)
    mask = data.get("mask_image")
    if mask is not None:
        if not isinstance(mask, str) or mask not in files:
            raise PayloadError(f"{what}.mask_image must name a file sent with the batch")
        if init is None:
            raise PayloadError(f"{what}.mask_image needs an init_image to paint on")
    _int(data.get("feather", 0), f"{what}.feather", 0, MAX_FEATHER)
    refs = 0
    for name in REF_FILES:
        items = data.get(name, [])
        if not isinstance(items, list) or not all(isinstance(i, str) and i in files for i in items):
            raise PayloadError(f"{what}.{name} must be a list of files sent with the batch")
        refs += len(items)
    if refs > MAX_REFERENCES:
        raise PayloadError(f"{what} has {refs} reference pictures; the most is {MAX_REFERENCES}")
    for name in _REF_URLS:
        items = data.get(name, [])
        if not isinstance(items, list) or len(items) > MAX_REFERENCES or \
                not all(isinstance(i, str) and len(i) <= 2048 for i in items):
            raise PayloadError(f"{what}.{name} must be a list of at most {MAX_REFERENCES} links")
    _int(data.get("style_weight", 100), f"{what}.style_weight", 0, 1000)
    _int(data.get("character_weight", 100), f"{what}.character_weight", 0, 100)
    for name in ("text", "aspect", "model_family", "variation", "edit", "parent"):
        value = data.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > 10_000):
            raise PayloadError(f"{what}.{name} must be a string")
    for name in ("quality", "image_weight"):
        if data.get(name) is not None:
            _number(data[name], f"{what}.{name}", 0, 1000)
    if data.get("stylize") is not None:
        _int(data["stylize"], f"{what}.stylize", 0, 100_000)
    _check_assets(data, what)
    try:
        GenerationRequest.from_json(data)
    except (TypeError, ValueError, KeyError) as exc:
        raise PayloadError(f"{what} is not a generation request ({exc})") from None
    return data


def parse_batch(data: bytes | str, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> BatchPayload:
    """Check every field of a stream entry; raise `PayloadError` naming the first bad one."""
    raw = loads(data, max_bytes=max_bytes)
    files_raw = raw.get("files", {})
    if not isinstance(files_raw, dict) or len(files_raw) > MAX_FILES:
        raise PayloadError(f"files must be an object of at most {MAX_FILES} entries")
    files: dict[str, bytes] = {}
    for name, text in files_raw.items():
        if not isinstance(name, str) or not _FILE.match(name):
            raise PayloadError("files must be keyed by sha256 hex digests")
        files[name] = unb64(text, f"files.{name[:12]}", max_bytes=max_bytes)
        if hashlib.sha256(files[name]).hexdigest() != name:
            raise PayloadError(f"files.{name[:12]} does not match its sha256 key")
    jobs_raw = raw.get("jobs")
    if not isinstance(jobs_raw, list) or not 1 <= len(jobs_raw) <= MAX_BATCH:
        raise PayloadError(f"jobs must be a list of 1 to {MAX_BATCH} jobs")
    jobs: list[JobPayload] = []
    for index, job in enumerate(jobs_raw):
        what = f"jobs[{index}]."
        if not isinstance(job, dict):
            raise PayloadError(f"jobs[{index}] must be an object")
        job_id = _get(job, "job_id", str, what)
        if not _JOB_ID.match(job_id):
            raise PayloadError(f"{what}job_id has characters or a length that are not allowed")
        kind = _get(job, "kind", str, what)
        if kind not in _KINDS:
            raise PayloadError(f"{what}kind must be one of {', '.join(sorted(_KINDS))}, got {kind[:40]!r}")
        options = _json_scalars(job.get("options", {}), f"{what}options")
        prompt_text = job.get("prompt_text", "")
        if not isinstance(prompt_text, str) or len(prompt_text) > 100_000:
            raise PayloadError(f"{what}prompt_text must be a string")
        request = None
        if kind in _TEXT_KINDS:
            if job.get("request") is not None:
                raise PayloadError(f"{what}request must be null for a {kind} job")
            _check_text_job(kind, options, files, what)
        elif kind == "upscale":
            if job.get("request") is not None:
                raise PayloadError(f"{what}request must be null for an upscale")
            _int(options.get("scale"), f"{what}options.scale", 2, 4)
            if options.get("source") not in files:
                raise PayloadError(f"{what}options.source must name a file sent with the batch")
        else:
            request = check_request(job.get("request"), files, f"{what}request")
        jobs.append(JobPayload(job_id, kind, request, dict(options), prompt_text))
    if len({j.job_id for j in jobs}) != len(jobs):
        raise PayloadError("a job appears twice in one batch")
    return BatchPayload(
        batch_id=_name(raw, "batch"), token=_name(raw, "token"), reply_to=_name(raw, "reply_to"),
        events=_name(raw, "events"), timeout_s=_number(raw.get("timeout_s"), "timeout_s", 0.001, 7 * 24 * 3600),
        max_attempts=_int(raw.get("max_attempts"), "max_attempts", 1, 1000), jobs=tuple(jobs), files=files,
    )


def _check_text_job(kind: str, options: dict, files: dict[str, bytes], what: str) -> None:
    """A /describe job names a picture sent with the batch and a 🔄 count; a /shorten job
    carries its words and kept parts as bounded strings (the worker parses nothing)."""
    if kind == "describe":
        if options.get("source") not in files:
            raise PayloadError(f"{what}options.source must name a file sent with the batch")
        _int(options.get("offset", 0), f"{what}options.offset", 0, DESCRIBE_AGAIN_MAX)
        return
    for name in ("words", "front", "back"):
        value = options.get(name, "")
        if not isinstance(value, str) or len(value) > MAX_PART_CHARS:
            raise PayloadError(f"{what}options.{name} must be a string of at most {MAX_PART_CHARS} characters")


# ----- what a worker agrees to run ----------------------------------------------------------
class BatchRefused(TesseraError):
    """A well-formed batch outside this worker's models or the bot's own limits.

    Unlike a `PayloadError` (dropped: nobody can be answered), the batch names its bot's
    result list, so each job is answered "failed" with this message (fit for Discord: it
    says what was asked and what is allowed, and never names a model path).
    """


@dataclass(frozen=True)
class WorkerLimits:
    """The models a worker runs and the bounds of what the bot itself would ever ask.

    The bot builds requests with `engine.request.resolve`: sides from `size_for_aspect` on a
    profile's native size (at most 2 x native at 4:1, multiples of 64), steps from
    `steps_for_quality` (at most the profile's steps x the highest `--quality`), a grid of
    4 images, batches of at most `QUEUE_BATCH_SIZE`, `JOB_TIMEOUT_S` and `JOB_MAX_ATTEMPTS`
    from its settings. A message asking for more did not come from a bot configured like
    this worker, so it is refused before anything loads or runs.
    """

    models: frozenset[str]
    native: int = max(p.native for p in PROFILES.values())
    profile_steps: int = max(p.steps for p in PROFILES.values())
    max_count: int = 4
    max_batch: int = 4
    max_timeout_s: float = 600.0
    max_attempts: int = 3

    @classmethod
    def from_settings(cls, settings: Any) -> WorkerLimits:
        """From `bot.config.Settings` (duck-typed: engine/ does not import bot/)."""
        inpaint = getattr(settings, "inpaint_model_id", "")  # edits run on INPAINT_MODEL_ID when it is set
        return cls(models=frozenset({settings.model_id, *settings.allowed_models, *([inpaint] if inpaint else [])}),
                   max_batch=settings.queue_batch_size, max_timeout_s=settings.job_timeout_s,
                   max_attempts=settings.job_max_attempts)

    def allowing(self, profile: Any) -> WorkerLimits:
        """Widened for a loaded model whose profile (its `tessera.json`) is larger than the stock ones."""
        return replace(self, native=max(self.native, int(profile.native)),
                       profile_steps=max(self.profile_steps, int(profile.steps)))

    @property
    def max_side(self) -> int:
        return max(64, round(self.native * math.sqrt(MAX_ASPECT) / 64) * 64)

    @property
    def max_pixels(self) -> int:
        return (self.native + 64) ** 2  # native² at any aspect, plus what rounding to 64 adds

    @property
    def max_steps(self) -> int:
        return steps_for_quality(self.profile_steps, max(QUALITIES))


def check_batch(batch: BatchPayload, limits: WorkerLimits) -> None:
    """Raise `BatchRefused` when `batch` asks for more than `limits` allow."""
    if len(batch.jobs) > limits.max_batch:
        raise BatchRefused(f"This batch holds {len(batch.jobs)} jobs; the GPU workers take at most "
                           f"{limits.max_batch} at once (QUEUE_BATCH_SIZE must match on the bot and its workers).")
    if batch.timeout_s > limits.max_timeout_s:
        raise BatchRefused(f"The bot gives this job {batch.timeout_s:g} s; the GPU workers allow at most "
                           f"{limits.max_timeout_s:g} s (JOB_TIMEOUT_S must match on the bot and its workers).")
    if batch.max_attempts > limits.max_attempts:
        raise BatchRefused(f"The bot allows this job {batch.max_attempts} attempts; the GPU workers allow at most "
                           f"{limits.max_attempts} (JOB_MAX_ATTEMPTS must match on the bot and its workers).")
    for job in batch.jobs:
        request = job.request
        if request is None:
            continue
        if request["model"] not in limits.models:
            # Neither the name nor whether such a path exists is echoed: the worker never looks.
            raise BatchRefused("This job asks for a model the GPU workers are not set up to run; they run only "
                               "their MODEL_ID and ALLOWED_MODELS. Choose another model with /settings.")
        width, height = request["width"], request["height"]
        if max(width, height) > limits.max_side or width * height > limits.max_pixels:
            raise BatchRefused(f"This job asks for {width}x{height} pixels; the GPU workers allow at most "
                               f"{limits.max_side} per side and {limits.max_pixels:,} pixels in all.")
        if request["steps"] > limits.max_steps:
            raise BatchRefused(f"This job asks for {request['steps']} steps; the GPU workers allow at most "
                               f"{limits.max_steps} (--quality {max(QUALITIES):g}).")
        if request.get("count", 4) > limits.max_count:
            raise BatchRefused(f"This job asks for {request.get('count')} images; a grid has at most "
                               f"{limits.max_count}.")


@dataclass(frozen=True)
class Heartbeat:
    """A worker's presence, as the bot reads it from `{ns}:worker:{id}`."""

    worker: str
    model: str | None = None
    device: str = ""
    busy: bool = False
    host: str = ""
    pid: int = 0
    profile: dict | None = None  # {"family", "native", "steps", "guidance"}

    def to_json(self) -> dict:
        return {"v": WIRE_VERSION, "worker": self.worker, "model": self.model, "device": self.device,
                "busy": self.busy, "host": self.host, "pid": self.pid, "profile": self.profile}


def parse_heartbeat(data: bytes | str, worker_id: str) -> Heartbeat:
    """A heartbeat checked enough to show and to take a model profile from."""
    raw = loads(data, max_bytes=MAX_HEARTBEAT_BYTES)
    if raw.get("worker") != worker_id:
        raise PayloadError("worker must be the id its key names")
    model = raw.get("model")
    if model is not None and (not isinstance(model, str) or len(model) > 500):
        raise PayloadError("model must be a string of at most 500 characters")
    texts = {}
    for name in ("device", "host"):
        value = raw.get(name, "")
        if not isinstance(value, str) or len(value) > 200:
            raise PayloadError(f"{name} must be a short string")
        texts[name] = value
    pid = raw.get("pid", 0)
    busy = raw.get("busy", False)
    if not isinstance(busy, bool):
        raise PayloadError("busy must be true or false")
    profile = raw.get("profile")
    if profile is not None:
        if not isinstance(profile, dict) or profile.get("family") not in PROFILES:
            raise PayloadError("profile must name a model family")
        profile = {"family": profile["family"], "native": _int(profile.get("native"), "profile.native", 64, 4096),
                   "steps": _int(profile.get("steps"), "profile.steps", 1, 1000),
                   "guidance": _number(profile.get("guidance"), "profile.guidance", 0, 100)}
    return Heartbeat(worker=worker_id, model=model, device=texts["device"], busy=busy, host=texts["host"],
                     pid=_int(pid, "pid", 0, 2**31), profile=profile)


RESULT_STATUSES = frozenset({"done", "cancelled", "timeout", "failed", "error", "gave_up"})


@dataclass(frozen=True)
class ResultPayload:
    """One job's outcome, pushed by a worker to the bot's result list.

    status: done (images are PNG bytes; or `data`, the JSON answer of a /describe or /shorten
    job, which the bot checks against the job's kind), cancelled, timeout, failed (error is
    fit to show the user), error (an internal failure, logged on the worker), gave_up
    (`attempts` runs each ended with the worker dying).
    """

    job_id: str
    token: str
    worker: str
    status: str
    images: tuple[bytes, ...] = ()
    flagged: tuple[int, ...] = ()  # indexes the safety checker replaced with its notice
    error: str | None = None
    attempts: int = 0
    run_s: float = 0.0
    data: dict | None = None

    def to_bytes(self) -> bytes:
        return dumps({"v": WIRE_VERSION, "job_id": self.job_id, "token": self.token, "worker": self.worker,
                      "status": self.status, "images": [b64(i) for i in self.images], "flagged": list(self.flagged),
                      "error": self.error, "attempts": self.attempts, "run_s": self.run_s, "data": self.data})


def parse_result(data: bytes | str, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> ResultPayload:
    raw = loads(data, max_bytes=max_bytes)
    job_id = _get(raw, "job_id", str)
    if not _JOB_ID.match(job_id):
        raise PayloadError("job_id has characters or a length that are not allowed")
    status = _get(raw, "status", str)
    if status not in RESULT_STATUSES:
        raise PayloadError(f"status must be one of {', '.join(sorted(RESULT_STATUSES))}")
    images = raw.get("images", [])
    if not isinstance(images, list) or len(images) > MAX_IMAGES:
        raise PayloadError(f"images must be a list of at most {MAX_IMAGES}")
    answer = raw.get("data")
    if answer is not None and (not isinstance(answer, dict) or images or len(dumps(answer)) > MAX_ANSWER_BYTES):
        raise PayloadError(f"data must be an object of at most {MAX_ANSWER_BYTES} bytes, sent without images")
    if status == "done" and not images and answer is None:
        raise PayloadError("a done result must carry images or an answer")
    error = raw.get("error")
    if error is not None and (not isinstance(error, str) or len(error) > 4000):
        raise PayloadError("error must be a string of at most 4000 characters")
    flagged = raw.get("flagged", [])
    if not isinstance(flagged, list) or len(flagged) > MAX_IMAGES:
        raise PayloadError("flagged must be a list of image indexes")
    flagged_ids = tuple(_int(i, "flagged[]", 0, len(images) - 1) for i in flagged)  # only images it carries
    if len(set(flagged_ids)) != len(flagged_ids):
        raise PayloadError("flagged must not name an image twice")
    return ResultPayload(
        job_id=job_id, token=_name(raw, "token"), worker=_name(raw, "worker"), status=status,
        images=tuple(unb64(i, "images[]", max_bytes=max_bytes) for i in images),
        flagged=flagged_ids, error=error,
        attempts=_int(raw.get("attempts", 0), "attempts", 0, 1_000_000),
        run_s=_number(raw.get("run_s", 0.0), "run_s", 0.0, 1e9), data=answer,
    )


def parse_event(data: bytes | str) -> dict:
    """A started/progress event from a worker (pub/sub), checked enough to use safely."""
    raw = loads(data, max_bytes=4 * 1024 * 1024)
    kind = raw.get("type")
    if kind not in ("started", "progress"):
        raise PayloadError("type must be started or progress")
    _name(raw, "token")
    _name(raw, "worker")
    if kind == "started":
        ids = raw.get("job_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) and _JOB_ID.match(i) for i in ids):
            raise PayloadError("job_ids must be a list of job ids")
    else:
        job_id = _get(raw, "job_id", str)
        if not _JOB_ID.match(job_id):
            raise PayloadError("job_id has characters or a length that are not allowed")
        _int(raw.get("step"), "step", 0, 1_000_000)
        _int(raw.get("total"), "total", 1, 1_000_000)
        if raw.get("preview") is not None:
            raw["preview"] = unb64(raw["preview"], "preview", max_bytes=2 * 1024 * 1024)
    return raw


# ----- the stream --------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamEntry:
    id: str
    data: bytes


class TesseraStreamBroker(RedisStreamBroker):
    """taskiq-redis's stream broker, consumed one entry at a time with a visibility timeout."""

    def __init__(self, url: str, *, keys: Keys, consumer_name: str | None = None,
                 visibility_timeout_s: float = DEFAULT_VISIBILITY_S, block_ms: int = 1000) -> None:
        super().__init__(url, queue_name=keys.stream, consumer_group_name=keys.group, consumer_name=consumer_name,
                         consumer_id="0", xread_block=block_ms, xread_count=1,
                         idle_timeout=max(1, int(visibility_timeout_s * 1000)))
        self._client: Redis | None = None

    def _redis(self) -> Redis:
        """One client over the broker's pool (building a client per call costs more than the call)."""
        if self._client is None:
            self._client = Redis(connection_pool=self.connection_pool)
        return self._client

    async def take(self) -> StreamEntry | None:
        """An abandoned entry (idle past the visibility timeout) or a new one; None if none came."""
        redis = self._redis()
        claimed = await redis.xautoclaim(self.queue_name, self.consumer_group_name, self.consumer_name,
                                         min_idle_time=self.idle_timeout, start_id="0-0", count=1)
        for entry in claimed[1] if len(claimed) > 1 else ():
            if entry and entry[1]:
                return _entry(entry)
        fetched: Any = await redis.xreadgroup(self.consumer_group_name, self.consumer_name, {self.queue_name: ">"},
                                         count=1, block=self.block)
        for _stream, entries in fetched or ():
            for entry in entries:
                if entry and entry[1]:
                    return _entry(entry)
        return None

    async def keep(self, entry_id: str) -> None:
        """Reset the entry's idle time: this worker is alive and still on it."""
        await self._redis().xclaim(self.queue_name, self.consumer_group_name, self.consumer_name, min_idle_time=0,
                                   message_ids=[entry_id], justid=True)

    async def done(self, entry_id: str) -> None:
        """Acknowledge and delete (entries carry image bytes; the stream should not keep them)."""
        async with self._redis().pipeline(transaction=True) as pipe:
            pipe.xack(self.queue_name, self.consumer_group_name, entry_id)
            pipe.xdel(self.queue_name, entry_id)
            await pipe.execute()

    async def shutdown(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await super().shutdown()

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """taskiq's interface over `take` (acknowledging also deletes the entry)."""
        while True:
            entry = await self.take()
            if entry is not None:
                yield AckableMessage(data=entry.data, ack=functools.partial(self.done, entry.id))


def _entry(entry: Any) -> StreamEntry:
    entry_id, fields = entry
    entry_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    data = fields.get(b"data", fields.get("data", b""))
    return StreamEntry(entry_id, data if isinstance(data, bytes) else str(data).encode())
