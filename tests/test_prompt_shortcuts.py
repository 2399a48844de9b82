"""--lora, embeddings, /prefer suffix and options, server styles: the prompt language's part."""

from __future__ import annotations

import pytest

from engine.errors import PromptError
from engine.prompt import PromptContext, PromptLimits, check_shortcut, parse

LORAS = frozenset({"tiny_style", "tiny_ink", "film-grain.v2"})


def test_lora_names_weights_and_closest_matches() -> None:
    ctx = PromptContext(loras=LORAS)
    e = parse("a cat --lora tiny_style:0.8 --lora tiny_ink film-grain.v2:-1", context=ctx).expansions[0]
    assert e.params.loras == (("film-grain.v2", -1.0), ("tiny_ink", 1.0), ("tiny_style", 0.8))
    with pytest.raises(PromptError, match=r"no LoRA named tiny_styel \(did you mean tiny_style"):
        parse("a cat --lora tiny_styel", context=ctx)
    with pytest.raises(PromptError, match="weight is a number from -2 to 2"):
        parse("a cat --lora tiny_ink:3", context=ctx)
    with pytest.raises(PromptError, match="is not a LoRA name"):
        parse("a cat --lora ../etc:1", context=ctx)
    with pytest.raises(PromptError, match="no LoRAs on this bot"):
        parse("a cat --lora tiny_ink", context=PromptContext())


def test_embeddings_as_words_or_in_angle_brackets() -> None:
    ctx = PromptContext(embeddings=frozenset({"tinyemb"}))
    e = parse("tinyemb portrait, <tinyemb> --no tinyemb-ish, tinyemb", context=ctx).expansions[0]
    assert e.prompts[0].text == "<tinyemb> portrait, <tinyemb>"
    assert e.negative == ("tinyemb-ish", "<tinyemb>")
    assert e.embeddings == ("tinyemb",)


def test_suffix_options_and_styles_expand_and_are_what_is_stored() -> None:
    ctx = PromptContext(suffix="--ar 16:9", options={"film": "35mm film grain --s 250 --mono"},
                        styles={"ink": "ink wash painting --no color"}, )
    ctx = PromptContext(suffix=ctx.suffix, options={**ctx.options, "mono": "black and white"}, styles=ctx.styles)
    prompt = parse("a harbour --film --style ink", context=ctx)
    e = prompt.expansions[0]
    assert e.prompts[0].text == "a harbour 35mm film grain ink wash painting black and white"
    assert (e.params.ar, e.params.stylize, e.negative) == ("16:9", 250, ("color",))
    assert prompt.raw == e.source  # the expanded text is what a re-roll parses again
    assert parse(prompt.raw).expansions[0] == e
    # --style with a Style Tuner code is still Midjourney's
    assert parse("a cat --style raw", context=ctx).expansions[0].params.style == "raw"


def test_shortcuts_that_would_break_prompts_are_refused() -> None:
    with pytest.raises(PromptError, match="circle"):
        parse("a cat --a", context=PromptContext(options={"a": "--b", "b": "--a"}))
    with pytest.raises(PromptError, match="takes no value"):
        parse("a cat --a 5", context=PromptContext(options={"a": "--s 5"}))
    with pytest.raises(PromptError, match="the most is 100"):
        parse("a cat", PromptLimits(max_length=100), context=PromptContext(suffix="x" * 96))
    existing = PromptContext(options={"bb": "--cc"})
    with pytest.raises(PromptError, match="circle"):
        check_shortcut("option", "cc", "--bb", existing)
    with pytest.raises(PromptError, match="Midjourney parameter"):
        check_shortcut("option", "ar", "--ar 1:1", PromptContext())
    with pytest.raises(PromptError, match="lowercase letters"):
        check_shortcut("style", "Bad Name", "x", PromptContext())
    with pytest.raises(PromptError, match="--s must be"):
        check_shortcut("option", "big", "--s 5000", PromptContext())
    check_shortcut("style", "ink", "ink wash --no color", PromptContext())
