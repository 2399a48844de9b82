"""The prompt language (issue 3): every rule of Midjourney's syntax, with its documented examples."""

from __future__ import annotations

import pytest

from engine.errors import PromptError, TesseraError
from engine.prompt import (
    SYNTAX_HELP,
    Expansion,
    Params,
    PromptLimits,
    WeightedText,
    help_text,
    parse,
)

DEFAULT = PromptLimits()


def one(text: str):
    """The single expansion of a prompt without permutations."""
    prompt = parse(text)
    assert len(prompt.expansions) == 1
    return prompt.expansions[0]


def parts(text: str) -> list[tuple[str, float]]:
    return [(p.text, p.weight) for p in one(text).prompts]


def error(text: str, limits: PromptLimits = DEFAULT) -> str:
    with pytest.raises(PromptError) as info:
        parse(text, limits)
    return str(info.value)


def test_prompt_error_is_a_user_facing_error() -> None:
    assert issubclass(PromptError, TesseraError)


# --- plain text and whitespace --------------------------------------------------------------


def test_plain_text_is_one_part_with_weight_one_and_nothing_set() -> None:
    e = one("a lighthouse at dusk")
    assert e.prompts == (WeightedText("a lighthouse at dusk", 1.0),)
    assert e.negative == ()
    assert e.images == ()
    assert e.params == Params()


def test_whitespace_is_normalised_in_text_but_raw_is_verbatim() -> None:
    raw = "  a   lighthouse\n\tat  dusk  --ar   16:9  "
    prompt = parse(raw)
    assert prompt.raw == raw
    assert prompt.expansions[0].prompts[0].text == "a lighthouse at dusk"
    assert prompt.expansions[0].params.ar == "16:9"


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "--ar 16:9", "  --seed 3 --tile"])
def test_empty_prompt_is_an_error(text: str) -> None:
    assert error(text).startswith("the prompt is empty")


# --- image prompts ----------------------------------------------------------------------------

PNG = "https://example.com/a/cat.png"
JPG = "https://cdn.example.com/b.JPG?ex=1&is=2"


def test_image_urls_at_the_front_are_image_prompts() -> None:
    e = one(f"{PNG} {JPG} a cat in a hat")
    assert e.images == (PNG, JPG)
    assert parts(f"{PNG} {JPG} a cat in a hat") == [("a cat in a hat", 1.0)]


@pytest.mark.parametrize("ext", ["png", "jpg", "jpeg", "gif", "webp", "PNG", "Webp"])
def test_every_image_type_counts(ext: str) -> None:
    url = f"http://example.org/x/y.{ext}"
    assert one(f"{url} text").images == (url,)


def test_discord_no_preview_link_form_counts_without_brackets() -> None:
    assert one(f"<{PNG}> a cat").images == (PNG,)


@pytest.mark.parametrize(
    "text",
    [
        f"a cat {PNG}",  # not at the front
        "https://example.com/page.html a cat",  # not an image type
        "https://example.com/page.PDF?x=1 a cat",  # another file type
        "https://example.com/ a cat",  # no file in the path
        "ftp://example.com/a.png a cat",  # not http(s)
        "https://.png a cat",  # no path at all
    ],
)
def test_other_links_are_plain_text(text: str) -> None:
    e = one(text)
    assert e.images == ()
    assert e.prompts[0].text == text


def test_two_images_without_text_are_a_prompt() -> None:
    e = one(f"{PNG} {JPG} --ar 1:1")
    assert e.images == (PNG, JPG)
    assert e.prompts == ()
    assert e.params.ar == "1:1"


def test_a_single_image_needs_text_or_a_second_image() -> None:
    message = error(f"{PNG} --ar 1:1")
    assert "image prompt needs text or a second image" in message


@pytest.mark.parametrize("param", ["--stylize 100", "--s 100", "--weird 10", "--w 10"])
def test_image_only_prompts_cannot_take_stylize_or_weird(param: str) -> None:
    message = error(f"{PNG} {JPG} {param}")
    assert "image-only prompt cannot take" in message
    assert ("--stylize" in message) or ("--weird" in message)
    # with text the same parameter is fine
    assert one(f"{PNG} {JPG} a cat {param}").images == (PNG, JPG)


def test_iw_is_the_image_weight() -> None:
    assert one(f"{PNG} a cat --iw 1.5").params.iw == 1.5


# --- where parameters start -------------------------------------------------------------------


def test_double_dash_inside_a_word_is_text() -> None:
    assert parts("a well--lit room") == [("a well--lit room", 1.0)]


def test_parameter_at_the_very_start_begins_the_parameter_section() -> None:
    assert error("--ar 16:9").startswith("the prompt is empty")


def test_words_after_a_parameter_are_its_value_so_trailing_text_is_an_error() -> None:
    message = error("a cat --ar 16:9 sitting")
    assert message.startswith("--ar must be")
    assert "16:9 sitting" in message


def test_text_after_a_flag_is_an_error() -> None:
    assert "--tile takes no value" in error("a cat --tile on a mat")


def test_em_dash_counts_as_double_dash() -> None:
    e = one("a cat —ar 16:9 —no dogs —tile")
    assert e.params.ar == "16:9"
    assert e.negative == ("dogs",)
    assert e.params.tile is True
    assert e.prompts == (WeightedText("a cat"),)


def test_em_dash_in_prose_stays_text() -> None:
    assert parts("dusk — a calm sea") == [("dusk — a calm sea", 1.0)]


def test_parameter_names_are_case_insensitive() -> None:
    e = one("a cat --AR 3:2 --Seed 5 --TILE --No dogs")
    assert (e.params.ar, e.params.seed, e.params.tile, e.negative) == ("3:2", 5, True, ("dogs",))


def test_a_repeated_parameter_the_last_one_wins() -> None:
    assert one("a --ar 1:1 --ar 16:9").params.ar == "16:9"
    assert one("a --s 100 --stylize 200").params.stylize == 200  # aliases are the same parameter
    assert one("a --no cats --no dogs").negative == ("dogs",)


def test_bare_double_dash_needs_a_name() -> None:
    assert "must be followed by a parameter name" in error("a cat -- dog")


# --- each parameter ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["--ar", "--aspect"])
def test_aspect_ratio_kept_as_written(name: str) -> None:
    assert one(f"a {name} 16:9").params.ar == "16:9"
    assert one(f"a {name} 2:3").params.ar == "2:3"


def test_aspect_ratio_with_decimals_is_an_error_with_a_suggestion() -> None:
    message = error("a --ar 1.39:1")
    assert "1.39:1" in message and "139:100" in message
    assert "3:2" in error("a --ar 1.5:1")


@pytest.mark.parametrize("value", ["16x9", "16:0", "0:1", "-16:9", "16", "16:9:1", "a:b", "100000:1"])
def test_aspect_ratio_must_be_whole_positive_numbers(value: str) -> None:
    message = error(f"a --ar {value}")
    assert message.startswith("--ar must be")
    assert "16:9" in message  # says what is allowed


def test_a_parameter_without_its_value_names_an_example() -> None:
    assert error("a cat --ar") == "--ar needs a value like 16:9"
    assert error("a cat --ar --seed 3") == "--ar needs a value like 16:9"
    assert error("a --seed").startswith("--seed needs a value like")
    assert error("a --no").startswith("--no needs a value like")


def test_seed_range() -> None:
    assert one("a --seed 0").params.seed == 0
    assert one("a --seed 4294967295").params.seed == 4294967295
    assert "from 0 to 4294967295, got 4294967296" in error("a --seed 4294967296")
    assert "whole number" in error("a --seed 1.5")
    assert "from 0 to 4294967295" in error("a --seed -1")
    assert "from 0 to 4294967295" in error("a --seed " + "9" * 5000)  # no int-size crash


def test_no_is_a_comma_separated_list_of_phrases() -> None:
    e = one("a still life --no fruit, red  apples ,, ,bowl")
    assert e.negative == ("fruit", "red apples", "bowl")
    assert e.prompts == (WeightedText("a still life"),)
    assert "--no needs at least one thing" in error("a --no , ,")


@pytest.mark.parametrize("name", ["--quality", "--q"])
@pytest.mark.parametrize(("value", "expected"), [(".25", 0.25), (".5", 0.5), ("0.5", 0.5), ("1", 1.0), ("2", 2.0), ("4", 4.0)])
def test_quality_values(name: str, value: str, expected: float) -> None:
    assert one(f"a {name} {value}").params.quality == expected


@pytest.mark.parametrize("value", ["3", "0", "8", "high", ".75"])
def test_quality_other_values_are_errors(value: str) -> None:
    assert error(f"a --q {value}") == f"--q must be one of .25, .5, 1, 2, 4, got {value}"


@pytest.mark.parametrize(
    ("names", "field", "lo", "hi"),
    [
        (("--stylize", "--s"), "stylize", 0, 1000),
        (("--chaos", "--c"), "chaos", 0, 100),
        (("--weird", "--w"), "weird", 0, 3000),
        (("--stop",), "stop", 10, 100),
        (("--repeat", "--r"), "repeat", 1, 40),
    ],
)
def test_whole_number_ranges(names: tuple[str, ...], field: str, lo: int, hi: int) -> None:
    for name in names:
        assert getattr(one(f"a {name} {lo}").params, field) == lo
        assert getattr(one(f"a {name} {hi}").params, field) == hi
        assert error(f"a {name} {hi + 1}") == f"{name} must be a number from {lo} to {hi}, got {hi + 1}"
        assert error(f"a {name} {lo - 1}") == f"{name} must be a number from {lo} to {hi}, got {lo - 1}"
        assert "whole number" in error(f"a {name} {lo}.5")
        assert f"from {lo} to {hi}" in error(f"a {name} lots")


def test_documented_chaos_message() -> None:
    assert error("a cat --chaos 150") == "--chaos must be a number from 0 to 100, got 150"


def test_tile_is_a_flag() -> None:
    assert one("a --tile").params.tile is True
    assert one("a").params.tile is False


def test_image_weight_range() -> None:
    assert one("a --iw 0").params.iw == 0.0
    assert one("a --iw 3").params.iw == 3.0
    assert one("a --iw .5").params.iw == 0.5
    assert error("a --iw 3.5") == "--iw must be a number from 0 to 3, got 3.5"


def test_style_and_version_are_kept() -> None:
    e = one("a --style RAW --v 6.1")
    assert (e.params.style, e.params.version) == ("raw", "6.1")
    assert one("a --version 5").params.version == "5"


def test_other_midjourney_parameters_are_accepted_and_kept_in_extra() -> None:
    e = one(f"a cat --niji 6 --turbo --fast --relax --sref {PNG} 123 --cref {JPG} --sw 100 --cw 50")
    assert e.params.extra == {
        "niji": "6", "turbo": "", "fast": "", "relax": "", "sref": f"{PNG} 123", "cref": JPG, "sw": "100", "cw": "50",
    }
    assert one("a --niji").params.extra == {"niji": ""}


def test_unknown_parameter_lists_the_known_ones() -> None:
    message = error("a cat --foo 3")
    assert message.startswith("unknown parameter --foo")
    for known in ("--ar", "--seed", "--no", "--quality", "--stylize", "--chaos", "--tile", "--iw", "--cw"):
        assert known in message


def test_unknown_parameter_hints() -> None:
    assert "did you mean --stylize?" in error("a --stylise 100")
    assert "put a space after --ar" in error("a --ar16:9")


# --- multi-prompts ----------------------------------------------------------------------------


def test_space_ship_is_one_part_and_space_colons_ship_two() -> None:
    assert parts("space ship") == [("space ship", 1.0)]
    assert parts("space:: ship") == [("space", 1.0), ("ship", 1.0)]
    assert parts("space::ship") == [("space", 1.0), ("ship", 1.0)]


def test_weight_after_colons_belongs_to_the_part_before() -> None:
    assert parts("space::2 ship") == [("space", 2.0), ("ship", 1.0)]


def test_documented_cheese_cake_painting() -> None:
    assert parts("cheese::1 cake:: painting::") == [("cheese", 1.0), ("cake", 1.0), ("painting", 1.0)]


def test_decimal_and_negative_weights_are_kept_as_written() -> None:
    assert parts("hot dog::1.5 food::-.5 animal::3") == [("hot dog", 1.5), ("food", -0.5), ("animal", 3.0)]
    assert parts("still life:: fruit::-.5") == [("still life", 1.0), ("fruit", -0.5)]
    assert parts("a::0.25 b::10") == [("a", 0.25), ("b", 10.0)]


def test_trailing_colons_add_no_empty_part() -> None:
    assert parts("painting::") == [("painting", 1.0)]
    assert parts("painting::2") == [("painting", 2.0)]


@pytest.mark.parametrize("text", ["a photo 3:2 of a cat", "a : : b", "ratio: 1"])
def test_single_colons_are_plain_text(text: str) -> None:
    assert parts(text) == [(text, 1.0)]


def test_number_glued_to_a_word_is_not_a_weight() -> None:
    assert parts("a::2b c") == [("a", 1.0), ("2b c", 1.0)]


def test_weights_must_sum_to_a_positive_number() -> None:
    message = error("tulips:: red::-1")
    assert "add up to 0" in message
    assert "must be positive" in message
    assert "add up to -0.5" in error("a::.5 b::-1")
    assert "add up to -1" in error("cat::-1")


def test_an_empty_part_is_an_error() -> None:
    assert "empty" in error(":: ship")
    assert "empty" in error("space:: ::2 ship")


def test_no_is_kept_as_the_negative_list_not_a_part() -> None:
    e = one("still life gouache painting --no fruit")
    assert e.prompts == (WeightedText("still life gouache painting"),)
    assert e.negative == ("fruit",)


# --- permutations -----------------------------------------------------------------------------


def sources(text: str, limits: PromptLimits = DEFAULT) -> list[str]:
    return [e.source for e in parse(text, limits).expansions]


def test_documented_colours_and_places_leftmost_changes_slowest() -> None:
    assert sources("{red, green} bird in the {jungle, desert}") == [
        "red bird in the jungle",
        "red bird in the desert",
        "green bird in the jungle",
        "green bird in the desert",
    ]


def test_documented_nested_sculpture_painting_gives_eight() -> None:
    got = sources("A {sculpture, painting} of a {seagull {on a pier, on a beach}, poodle {on a sofa, in a truck}}.")
    assert got == [
        "A sculpture of a seagull on a pier.",
        "A sculpture of a seagull on a beach.",
        "A sculpture of a poodle on a sofa.",
        "A sculpture of a poodle in a truck.",
        "A painting of a seagull on a pier.",
        "A painting of a seagull on a beach.",
        "A painting of a poodle on a sofa.",
        "A painting of a poodle in a truck.",
    ]


def test_documented_aspect_ratio_permutation() -> None:
    prompt = parse("a bird --ar {3:2, 1:1}")
    assert [e.params.ar for e in prompt.expansions] == ["3:2", "1:1"]
    assert [e.prompts for e in prompt.expansions] == [(WeightedText("a bird"),)] * 2
    assert [e.source for e in prompt.expansions] == ["a bird --ar 3:2", "a bird --ar 1:1"]


def test_whole_parameters_inside_braces() -> None:
    prompt = parse("a vibrant california poppy --{v 5, niji}")
    # issue 20: --niji sets the version too
    assert [(e.params.version, e.params.extra) for e in prompt.expansions] == [("5", {}), ("niji", {"niji": ""})]


def test_options_are_trimmed_and_escaped_commas_are_literal() -> None:
    assert sources("a {  big dog ,small\\, grey cat  } here") == ["a big dog here", "a small, grey cat here"]


def test_escaped_braces_are_literal() -> None:
    assert sources("a \\{curly\\} word") == ["a {curly} word"]


def test_a_prompt_without_braces_is_one_expansion_with_its_source() -> None:
    assert sources("  a cat, a dog  ") == ["a cat, a dog"]


def test_permutations_and_weights_together() -> None:
    prompt = parse("{cat, dog}::2 ship --no {people, cars}")
    assert [(e.prompts, e.negative) for e in prompt.expansions] == [
        ((WeightedText("cat", 2.0), WeightedText("ship")), ("people",)),
        ((WeightedText("cat", 2.0), WeightedText("ship")), ("cars",)),
        ((WeightedText("dog", 2.0), WeightedText("ship")), ("people",)),
        ((WeightedText("dog", 2.0), WeightedText("ship")), ("cars",)),
    ]


def test_more_than_forty_expansions_says_how_many() -> None:
    message = error("{a,b,c,d,e,f,g} {1,2,3,4,5,6,7}")
    assert "49" in message and "40" in message
    assert "40" in error("{a,b}" * 30)  # astronomically many, refused before expanding
    assert len(sources("{a,b,c,d,e} {1,2,3,4,5,6,7,8}")) == 40


def test_unclosed_brace_points_at_it() -> None:
    message = error("a {red, green bird")
    assert "never closed" in message
    assert "character 3" in message


def test_stray_closing_brace_is_an_error() -> None:
    assert "has no {" in error("a red} bird")


def test_an_error_in_one_expansion_names_it() -> None:
    message = error("a bird --ar {3:2, 1.5:1}")
    assert message.startswith("--ar must be")
    assert "a bird --ar 1.5:1" in message


def test_absurd_nesting_is_an_error_not_a_crash() -> None:
    assert "nested" in error("{" * 500 + "}" * 500)


# --- limits ---------------------------------------------------------------------------------


def test_prompt_length_limit() -> None:
    assert one("a" * 6000).prompts[0].text == "a" * 6000
    assert error("a" * 6001) == "the prompt is 6,001 characters long; the most is 6,000"
    assert "the most is 10" in error("a" * 11, PromptLimits(max_length=10))


def test_jobs_limit_counts_permutations_times_repeat() -> None:
    assert parse("a --r 40").jobs == 40
    assert parse("{a, b} --r 20").jobs == 40
    message = error("{a, b} --r 21")
    assert "42 jobs" in message and "the most is 40" in message
    assert parse("{a, b, c} --r 3", PromptLimits(max_jobs=9)).jobs == 9
    assert "the most is 8" in error("{a, b, c} --r 3", PromptLimits(max_jobs=8))
    assert "the most is 2" in error("{a, b, c}", PromptLimits(max_jobs=2))


# --- JSON -----------------------------------------------------------------------------------


def test_contract_json_shape() -> None:
    data = parse("space::2 ship --no people --ar 16:9").to_json()
    assert data == {
        "expansions": [
            {
                "prompts": [{"text": "space", "weight": 2.0}, {"text": "ship", "weight": 1.0}],
                "negative": ["people"],
                "images": [],
                "params": {
                    "ar": "16:9", "seed": None, "quality": None, "stylize": None, "chaos": None, "weird": None,
                    "stop": None, "repeat": None, "tile": False, "iw": None, "style": None, "version": None,
                },
                # issue 20: every parameter the prompt set, with what Tessera does with it
                "parameters": [
                    {"name": "ar", "value": "16:9", "status": "applied",
                     "note": "width x height at the model's native pixel area, multiples of 64 (1:4 to 4:1)"},
                    {"name": "no", "value": ["people"], "status": "applied", "note": "the negative prompt"},
                ],
            }
        ]
    }


def test_expansion_json_round_trips_with_source_and_extra() -> None:
    for e in parse(f"{PNG} a {{cat, dog}}::2 b --q .5 --seed 9 --tile --iw 2 --no x, y --niji 6 --style raw").expansions:
        data = e.to_json()
        assert set(data["params"]) == {"ar", "seed", "quality", "stylize", "chaos", "weird", "stop", "repeat",
                                       "tile", "iw", "style", "version"}
        assert Expansion.from_json(data) == e


def test_expansion_from_bare_contract_json() -> None:
    e = one("a cat --seed 3")
    back = Expansion.from_json(e.contract_json())
    assert back.params == e.params
    assert back.prompts == e.prompts


# --- help -----------------------------------------------------------------------------------


def test_syntax_help_fits_a_discord_message_and_its_examples_parse() -> None:
    assert help_text() == SYNTAX_HELP
    assert len(SYNTAX_HELP) < 1900
    examples = [line.removeprefix("`/imagine ").removesuffix("`") for line in SYNTAX_HELP.splitlines()
                if line.startswith("`/imagine ")]
    assert len(examples) == 3
    for example in examples:
        assert parse(example).expansions
