"""Properties of the Redis wire parsers over hostile input, and the limits a worker enforces.

Whatever reaches Redis may come from anyone who can write to it, so each parser must turn
every input into either a checked payload or a `PayloadError`: never `RecursionError`,
`TypeError`, `KeyError`, `OverflowError` or a hang. And a worker's limits must refuse only
what the bot itself would never ask: the bot's own largest requests pass them.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import Settings
from engine.diffusion.models import PROFILES
from engine.jobs.redis_wire import (
    MAX_DEPTH,
    BatchPayload,
    BatchRefused,
    Heartbeat,
    JobPayload,
    PayloadError,
    ResultPayload,
    WorkerLimits,
    check_batch,
    parse_batch,
    parse_event,
    parse_heartbeat,
    parse_result,
)
from engine.prompt import parse
from engine.request import resolve
from tests.queue_helpers import make_request

_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
            | st.floats(allow_nan=False) | st.text(max_size=30)
            | st.text(alphabet="[]{}\"\\:,", max_size=2000)  # JSON's own punctuation inside strings
            | st.just("x" * 200_000))  # a giant string, within the size bound
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=30)
_KEYS = ["v", "batch", "token", "reply_to", "events", "timeout_s", "max_attempts", "jobs", "files", "job_id",
         "status", "images", "flagged", "worker", "type", "job_ids", "step", "total", "preview", "model", "profile",
         "kind", "request", "options", "width", "steps", "prompts"]


def _valid_batch() -> dict:
    return json.loads(BatchPayload(
        batch_id="b1", token="t1", reply_to="tessera:results:x", events="tessera:events:x", timeout_s=60.0,
        max_attempts=3, jobs=(JobPayload("job1", "imagine", make_request().to_json()),),
    ).to_bytes())


def _valid_messages() -> list[dict]:
    return [
        _valid_batch(),
        json.loads(ResultPayload("job1", "t1", "w0", "done", images=(b"png",), flagged=(0,)).to_bytes()),
        {"v": 1, "type": "progress", "token": "t1", "worker": "w0", "job_id": "job1", "step": 1, "total": 3},
        {"v": 1, "type": "started", "token": "t1", "worker": "w0", "job_ids": ["job1"]},
        Heartbeat("w0", model="tiny").to_json(),
    ]


def _parse_all(data: bytes) -> None:
    """Each parser returns its payload type or raises PayloadError; nothing else."""
    for parser, kind in ((parse_batch, BatchPayload), (parse_result, ResultPayload), (parse_event, dict),
                         (lambda d: parse_heartbeat(d, "w0"), Heartbeat)):
        try:
            value = parser(data)
        except PayloadError as exc:
            assert len(str(exc)) < 1000  # a bounded reason, never the payload echoed
            continue
        assert isinstance(value, kind)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_JSON)
def test_any_json_value_parses_or_is_a_payload_error(value: Any) -> None:
    _parse_all(json.dumps(value).encode())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, 4), key=st.sampled_from(_KEYS), value=_JSON,
       path=st.lists(st.sampled_from(["jobs", 0, "request", "prompts", "profile", "images"]), max_size=3))
def test_a_valid_message_with_any_field_replaced_parses_or_is_a_payload_error(which: int, key: str, value: Any,
                                                                               path: list) -> None:
    message = _valid_messages()[which]
    target: Any = message
    for step in path:  # walk into the message as far as the path leads
        child = target.get(step) if isinstance(target, dict) and isinstance(step, str) else (
            target[step] if isinstance(target, list) and isinstance(step, int) and step < len(target) else None)
        if not isinstance(child, dict | list):
            break
        target = child
    if isinstance(target, dict):
        target[key] = value
    elif target:
        target[0] = value
    _parse_all(json.dumps(message).encode())


@settings(max_examples=100, deadline=None)
@given(depth=st.integers(1, 50_000), opener=st.sampled_from(["[", '{"a":', "[{\"a\":"]),
       closed=st.booleans(), tail=st.binary(max_size=20))
def test_nesting_of_any_depth_is_refused_before_parsing(depth: int, opener: str, closed: bool, tail: bytes) -> None:
    closer = {"[": "]", '{"a":': "1}", "[{\"a\":": "1}]"}[opener]
    text = opener * depth + (closer * depth if closed else "")
    _parse_all(text.encode() + tail)
    if depth > MAX_DEPTH:
        with pytest.raises(PayloadError, match="nested deeper"):
            parse_batch(('{"v":1,"x":' + text + "}").encode())


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=3000))
def test_any_bytes_parse_or_are_a_payload_error(data: bytes) -> None:
    _parse_all(data)


def test_a_hostile_message_is_refused_in_linear_time() -> None:
    """20 MB of brackets, bracket pairs or escapes is refused quickly: no quadratic scan, no recursion."""
    for data in (b"[" * (20 * 1024 * 1024), b"[]" * (10 * 1024 * 1024), b'"' + b"\\\\" * (10 * 1024 * 1024)):
        began = time.perf_counter()
        with pytest.raises(PayloadError):
            parse_batch(data)
        assert time.perf_counter() - began < 5.0


# ----- a worker's limits are the bot's own --------------------------------------------------
@pytest.mark.parametrize("family", sorted(PROFILES))
@pytest.mark.parametrize("aspect", ["1:1", "4:1", "1:4", "3:1", "16:9", "2:3", "7:4", "31:8"])
def test_the_bots_largest_requests_pass_a_workers_limits(family: str, aspect: str) -> None:
    profile = PROFILES[family]
    request = resolve(parse(f"a lighthouse --ar {aspect} --q 4 --s 1000").expansions[0], profile=profile,
                      model="m", sampler="euler_a")
    settings_ = Settings(model_id="owner/m", allowed_models="m", queue_batch_size=4, job_timeout_s=600,
                         job_max_attempts=3)
    limits = WorkerLimits.from_settings(settings_)
    jobs = tuple(JobPayload(f"j{i}", "imagine", request.to_json()) for i in range(4))
    batch = BatchPayload("b", "t", "ns:results:x", "ns:events:x", 600.0, 3, jobs)
    check_batch(parse_batch(batch.to_bytes()), limits)  # does not raise
    assert request.steps == limits.max_steps
    too_big = BatchPayload("b", "t", "ns:results:x", "ns:events:x", 600.0, 3,
                           (JobPayload("j", "imagine", {**request.to_json(), "width": limits.max_side + 64}),))
    with pytest.raises(BatchRefused, match="pixels"):
        check_batch(parse_batch(too_big.to_bytes()), limits)


def test_limits_follow_the_workers_settings_and_its_models_profile() -> None:
    limits = WorkerLimits.from_settings(Settings(model_id="owner/base", allowed_models="owner/other, x/y",
                                                 queue_batch_size=2, job_timeout_s=90, job_max_attempts=5))
    assert limits.models == {"owner/base", "owner/other", "x/y"}
    assert (limits.max_batch, limits.max_timeout_s, limits.max_attempts) == (2, 90, 5)
    wide = limits.allowing(PROFILES["sdxl"].__class__("sdxl", 1536, 50, 6.0))  # a tessera.json override
    assert wide.max_side == 3072 and wide.max_steps == 200

    def batch(**changes: object) -> BatchPayload:
        values: dict = {"batch_id": "b", "token": "t", "reply_to": "r", "events": "e", "timeout_s": 90.0,
                        "max_attempts": 5,
                        "jobs": (JobPayload("j", "imagine", make_request(model="owner/other").to_json()),)}
        values.update(changes)
        return BatchPayload(**values)

    check_batch(batch(), limits)
    for changes, reason in (({"timeout_s": 91.0}, "JOB_TIMEOUT_S"), ({"max_attempts": 6}, "JOB_MAX_ATTEMPTS"),
                            ({"jobs": batch().jobs * 3}, "QUEUE_BATCH_SIZE")):
        with pytest.raises(BatchRefused, match=reason):
            check_batch(batch(**changes), limits)
