"""Reference pictures over Redis: sent as bytes keyed by their sha256, every field checked."""

from __future__ import annotations

import hashlib
import json

import pytest

from engine.jobs.redis_wire import MAX_REFERENCES, BatchPayload, JobPayload, PayloadError, parse_batch
from engine.jobs.worker import _work_item
from tests.queue_helpers import make_request


def batch(request: dict, files: dict[str, bytes]) -> bytes:
    return BatchPayload(batch_id="b1", token="t1", reply_to="tessera:results:x", events="tessera:events:x",
                        timeout_s=60.0, max_attempts=3, jobs=(JobPayload("job1", "imagine", request),),
                        files=files).to_bytes()


def key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_reference_pictures_travel_as_files_and_reach_the_worker_as_paths() -> None:
    style, face = b"style picture", b"face picture"
    request = make_request(style_urls=("https://a.example/s.png",), style_weight=300, character_weight=0).to_json()
    request |= {"style_refs": [key(style)], "character_refs": [key(face)], "blend_refs": []}
    parsed = parse_batch(batch(request, {key(style): style, key(face): face}))
    item = _work_item(parsed.jobs[0], {key(style): "/w/s.img", key(face): "/w/f.img"})
    assert item.request is not None
    assert (item.request.style_refs, item.request.character_refs) == (("/w/s.img",), ("/w/f.img",))
    assert (item.request.style_weight, item.request.character_weight) == (300, 0)
    assert item.request.style_urls == ("https://a.example/s.png",)


@pytest.mark.parametrize(("change", "message"), [
    ({"style_refs": ["0" * 64]}, "style_refs must be a list of files sent with the batch"),
    ({"blend_refs": "abc"}, "blend_refs must be a list of files"),
    ({"style_weight": 1001}, "style_weight"),
    ({"character_weight": -1}, "character_weight"),
    ({"style_urls": ["x" * 3000]}, "style_urls must be a list of at most"),
    ({"character_urls": ["u"] * (MAX_REFERENCES + 1)}, "character_urls must be a list of at most"),
])
def test_bad_reference_fields_are_refused(change: dict, message: str) -> None:
    request = make_request().to_json() | change
    with pytest.raises(PayloadError, match=message):
        parse_batch(batch(request, {}))


def test_more_reference_pictures_than_a_prompt_may_have_are_refused() -> None:
    files = {key(bytes([i])): bytes([i]) for i in range(MAX_REFERENCES + 1)}
    request = make_request().to_json() | {"style_refs": list(files)[:15], "character_refs": list(files)[15:]}
    with pytest.raises(PayloadError, match=f"21 reference pictures; the most is {MAX_REFERENCES}"):
        parse_batch(batch(request, files))
    assert json.loads(batch(make_request().to_json(), {}))["jobs"][0]["request"]["style_refs"] == []
