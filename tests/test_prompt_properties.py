"""Property tests: any text either parses or raises `PromptError`, never anything else."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.prompt import Expansion, Prompt, PromptError, parse

# The characters the grammar cares about, mixed with words, so the search reaches deep paths
# (parameters, weights, braces, escapes, links) instead of only random unicode.
_PIECES = st.sampled_from([
    "{", "}", ",", "\\,", "\\", "::", ":", "::2", "::-.5", "--", "—", " ", "  ", "\n", "-", ".", "0", "7",
    "16:9", "1.5:1", "a", "cat", "space", "--ar", "--no", "--seed", "--q", "--s", "--c", "--w", "--stop",
    "--tile", "--r", "--iw", "--style", "--v", "--niji", "--fast", "--sref", "--cw", "--foo", "—ar",
    "https://x.io/a.png", "<https://x.io/b.webp>", "9999999999999999999999", "1e999", "-1", "raw",
])
_GRAMMARISH = st.lists(_PIECES, max_size=80).map("".join)
_ANY = st.text(max_size=2000)


def _check(text: str) -> None:
    try:
        prompt = parse(text)
    except PromptError as exc:
        assert str(exc)  # every refusal says something
        return
    assert isinstance(prompt, Prompt)
    assert prompt.raw == text
    assert 1 <= len(prompt.expansions) <= 40
    assert prompt.jobs <= 40
    for e in prompt.expansions:
        assert e.prompts or len(e.images) >= 2
        assert sum(p.weight for p in e.prompts) > 0 or not e.prompts
        assert all(p.text == " ".join(p.text.split()) and p.text for p in e.prompts)
        json.dumps(e.to_json(), allow_nan=False)  # finite numbers, serialisable
        assert Expansion.from_json(e.to_json()) == e


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ANY)
def test_any_text_parses_or_raises_prompt_error(text: str) -> None:
    _check(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_GRAMMARISH)
def test_grammar_like_text_parses_or_raises_prompt_error(text: str) -> None:
    _check(text)
