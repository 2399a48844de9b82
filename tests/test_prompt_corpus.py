"""Real Midjourney prompts, pasted as people write them (issue 20).

`tests/data/midjourney_prompts.jsonl` holds 319 prompts from public prompt collections, each
with its source (see `tests/data/README.md`). At least 99% must parse; the others are listed
here with the reason Midjourney itself refuses them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.prompt import PromptError, parse

CORPUS = Path(__file__).parent / "data" / "midjourney_prompts.jsonl"
ROWS = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]

# prompt -> (what the refusal says, why Midjourney refuses it too)
REFUSED_BY_MIDJOURNEY = {
    "mechanical exoskeleton girl, white background, Studio Ghibli, manuscript, three views --seed 29422033207":
        ("--seed must be a number from 0 to 4294967295, got 29422033207",
         "seeds are 0 to 4294967295 in every version"),
    "walking in the magic forest --seed 29422033207":
        ("--seed must be a number from 0 to 4294967295, got 29422033207",
         "seeds are 0 to 4294967295 in every version"),
    "https://dots.jpg vibrant california poppies --iw 5":
        ("--iw must be a number from 0 to 3, got 5",
         "2022 docs (V3 was the default then); without --v 1-3 the current range, 0 to 3, applies"),
}


def _refusal(prompt: str) -> str | None:
    for key, (message, _) in REFUSED_BY_MIDJOURNEY.items():
        if prompt.endswith(key):
            return message
    return None


def test_the_corpus_is_real_prompts_with_their_sources() -> None:
    assert len(ROWS) >= 150
    assert len({row["prompt"] for row in ROWS}) == len(ROWS)
    for row in ROWS:
        assert row["prompt"].strip() == row["prompt"] and row["source"].startswith("https://")


def test_at_least_99_percent_parse_and_the_rest_are_prompts_midjourney_refuses() -> None:
    refused: list[tuple[str, str]] = []
    for row in ROWS:
        try:
            parse(row["prompt"])
        except PromptError as exc:
            refused.append((row["prompt"], str(exc)))
    for prompt, message in refused:
        assert _refusal(prompt) == message, f"refused but not listed: {prompt!r}: {message}"
    assert len(refused) == 3
    assert (len(ROWS) - len(refused)) / len(ROWS) >= 0.99


def test_short_links_at_the_front_are_image_prompts_in_every_corpus_prompt() -> None:
    fronted = [row["prompt"] for row in ROWS if row["prompt"].startswith("https://s.mj.run/")]
    assert len(fronted) >= 20
    for prompt in fronted:
        expansion = parse(prompt).expansions[0]
        leading = [word for word in prompt.split() if word.startswith("https://s.mj.run/")]
        first_text = next(i for i, word in enumerate(prompt.split()) if not word.startswith("https://"))
        assert list(expansion.images) == prompt.split()[:first_text]
        assert not any("s.mj.run" in part.text for part in expansion.prompts), prompt
        assert len(expansion.images) <= len(leading)


def test_every_sref_and_profile_value_of_the_corpus_is_kept_in_order() -> None:
    checked = 0
    for row in ROWS:
        prompt = row["prompt"]
        if "--sref" not in prompt and "--profile" not in prompt:
            continue
        try:
            expansion = parse(prompt).expansions[0]
        except PromptError:
            continue
        uses = {use.name: use.value for use in expansion.parameters()}
        for name in ("sref", "profile"):
            words = prompt.split()
            expected = []
            for i, word in enumerate(words):
                if word == f"--{name}":
                    for value in words[i + 1:]:
                        if value.startswith("--"):
                            break
                        expected.append(value)
            if expected:
                assert uses[name] == expected, prompt
                checked += 1
    assert checked >= 60


@pytest.mark.parametrize("text", ["a cat –ar 16:9 –v 5", "a cat -s 250"])
def test_en_dashes_and_single_dashes_stay_text_as_in_midjourney(text: str) -> None:
    expansion = parse(text).expansions[0]
    assert expansion.prompts[0].text == text and expansion.parameters() == ()
