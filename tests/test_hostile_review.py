"""Regression tests from the adversarial review of the hostile-input work (issue 13).

Each test is an attack that got through before its fix; the module docstring of each fix
says why the bound matters.
"""

from __future__ import annotations

import pytest

from engine.prompt import PromptError, PromptLimits, parse

# --- image links: the cap is per prompt, not per {} expansion ---------------------------------


def test_braces_cannot_multiply_the_image_link_cap() -> None:
    """`{url1, url2, ...} cat` made one expansion per link, each under the cap of 10, so one
    prompt made the bot download and decode 40 (or, with 10 links per expansion, 400) images."""
    links = [f"https://img{i}.example.org/a.png" for i in range(11)]
    with pytest.raises(PromptError) as refused:
        parse("{" + ", ".join(links) + "} a cat", PromptLimits())
    assert "11 image downloads" in str(refused.value) and "10" in str(refused.value)


def test_reordered_link_sets_count_every_download() -> None:
    """Three links in six orders and subsets (each set is fetched and blended on its own, within its
    own pixel budget) were 14 downloads under a cap of 10 (40 sets: 40 × the cap)."""
    a, b, c = (f"https://img{i}.example.org/a.png" for i in range(3))
    with pytest.raises(PromptError, match="14 image downloads"):
        parse(f"{{{a} {b}, {b} {c}, {a} {c}, {c} {a} {b}, {b} {a}, {a} {c} {b}}} cat", PromptLimits())


def test_links_shared_by_every_expansion_are_fetched_once_and_stay_allowed() -> None:
    links = [f"https://img{i}.example.org/a.png" for i in range(10)]
    prompt = parse(" ".join(links) + " a {cat, dog, bird, fox}", PromptLimits())
    assert len(prompt.expansions) == 4 and all(len(e.images) == 10 for e in prompt.expansions)
    three = links[:3]
    prompt = parse("{" + ", ".join(three) + "} a {cat, dog}", PromptLimits(max_images=3))
    assert len(prompt.expansions) == 6
