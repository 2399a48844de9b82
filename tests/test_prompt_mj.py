"""Issue 20: current and old Midjourney parameters, and the six misreadings it lists.

Every parameter Midjourney documents is accepted; each is reported as applied or ignored
(in `tessera parse`, in the request's `ignored` list `/imagine` shows, in the README); a
value outside its documented range is still an error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bot.cli import main
from engine.diffusion.models import PROFILES
from engine.prompt import APPLIED, IGNORED, PromptError, parameter_table, parse
from engine.request import guidance_for_stylize, resolve

ROOT = Path(__file__).resolve().parent.parent
SHORT = "https://s.mj.run/khAQMPWrXoc"
SHORT2 = "https://s.mj.run/3zgt6fPd1Ng"


def one(text: str):
    [expansion] = parse(text).expansions
    return expansion


def uses(text: str) -> dict[str, tuple[object, str]]:
    return {use.name: (use.value, use.status) for use in one(text).parameters()}


def error(text: str) -> str:
    with pytest.raises(PromptError) as info:
        parse(text)
    return str(info.value)


# --- refused before issue 20 -------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "a cat --profile exiuzv7", "a cat --profile a1 b2 --profile c3", "a cat --p", "a cat --p abc123",
    "a cat --personalize", "a cat --exp 0", "a cat --exp 100", "a cat --sv 1", "a cat --sv 6", "a cat --raw",
    "a cat --draft", f"a cat --oref {SHORT} --ow 1000", "a cat --ow 1", "a cat --upbeta", "a cat --uplight",
    "a cat --upanime", "a cat --hd", "a cat --test", "a cat --testp --creative", "a cat --video",
    "a cat --sameseed 0987", "a cat --wallpaper", "a cat --h 320", "a cat --v 5 --q 5", "a cat --v 3 --q 5",
    "a cat --stealth --public", "a cat --zoom 1.5", "a cat --motion high --loop", "a cat --sref random",
])
def test_every_documented_parameter_is_accepted(text: str) -> None:
    expansion = one(text)
    assert expansion.parameters(), text  # and shown


@pytest.mark.parametrize(("text", "message"), [
    ("a cat --exp 101", "--exp must be a number from 0 to 100, got 101"),
    ("a cat --sv 7", "--sv must be a number from 1 to 6, got 7"),
    ("a cat --sv 0", "--sv must be a number from 1 to 6, got 0"),
    ("a cat --ow 0", "--ow must be a number from 1 to 1000, got 0"),
    ("a cat --sw 1001", "--sw must be a number from 0 to 1000, got 1001"),
    ("a cat --cw 101", "--cw must be a number from 0 to 100, got 101"),
    ("a cat --q 5", "--q must be one of .25, .5, 1, 2, 4, got 5"),  # the current version: no 5
    ("a cat --v 7 --q 5", "--q must be one of .25, .5, 1, 2, 4, got 5"),
    ("a cat --v 5 --q 3", "--q must be one of .25, .5, 1, 2, 4, 5, got 3"),
    ("a cat --s 2500", "--s must be a number from 0 to 1000, got 2500"),
    ("a cat --v 3 --s 100", "--s must be a number from 625 to 60000, got 100"),
    ("a cat --motion fast", "--motion must be one of low, high, got fast"),
    ("a cat --raw yes", "--raw takes no value"),
    ("a cat --sref", "--sref needs a value like an image link or a style code"),
    ("a cat --sref a photo of me", "--sref takes image links or style codes"),
    ("a cat --cref 12345", "--cref takes image links, got 12345"),
])
def test_values_outside_midjourneys_documented_range_stay_errors(text: str, message: str) -> None:
    assert error(text).startswith(message)


def test_old_versions_have_their_own_ranges() -> None:
    legacy = one("poppies --v 3 --s 2500 --iw -50 --q 5 --w 448")
    assert (legacy.params.stylize, legacy.params.iw, legacy.params.quality) == (2500, -50.0, 5.0)
    assert legacy.params.weird is None and legacy.params.extra["width"] == "448"  # V1–V3: --w is the width
    assert one("poppies --w 448").params.weird == 448  # today it is --weird


def test_raw_is_style_raw_and_exp_is_applied_to_guidance() -> None:
    assert one("a cat --raw").params.style == "raw"
    assert uses("a cat --raw --exp 40")["exp"] == (40, APPLIED)
    profile = PROFILES["sd1"]
    plain = resolve(one("a cat --s 250"), profile=profile, model="m", sampler="euler_a")
    spiced = resolve(one("a cat --s 250 --exp 100"), profile=profile, model="m", sampler="euler_a")
    assert plain.guidance == guidance_for_stylize(250, profile.guidance)
    assert spiced.guidance == pytest.approx(plain.guidance * 1.25) and spiced.exp == 100
    assert "--exp 100" not in spiced.ignored


# --- the six misreadings ---------------------------------------------------------------------------

def test_1_short_links_at_the_front_are_image_prompts() -> None:
    e = one(f"{SHORT} {SHORT2} textile with gold --iw 2")
    assert e.images == (SHORT, SHORT2)
    assert [p.text for p in e.prompts] == ["textile with gold"]
    assert uses(f"{SHORT} textile --iw 2")["iw"] == (2.0, APPLIED)
    assert uses("textile --iw 2")["iw"] == (2.0, IGNORED)  # no image: said so
    assert one("https://i.example.com/abc123?size=2 a cat").images == ("https://i.example.com/abc123?size=2",)
    assert one("https://example.com/page.html a cat").images == ()  # another file type stays text


def test_1_links_among_reference_values_are_recognised() -> None:
    refs = uses(f"a cat --sref {SHORT} 680572301 <{SHORT2}>::2 --cref {SHORT} --oref {SHORT2}")
    assert refs["sref"] == ([SHORT, "680572301", f"{SHORT2}::2"], APPLIED)
    assert refs["cref"] == ([SHORT], APPLIED) and refs["oref"] == ([SHORT2], IGNORED)
    assert one(f"a cat --sref {SHORT} 680572301 <{SHORT2}>::2").reference_links("sref") == (SHORT, SHORT2)
    assert uses("a cat --sref 680572301 --sw 300")["sref"] == (["680572301"], IGNORED)  # codes only
    assert uses("a cat --sref 680572301 --sw 300")["sw"] == (300, IGNORED)


def test_2_a_weight_ends_at_the_number() -> None:
    assert [(p.text, p.weight) for p in one("cat::2, dog").prompts] == [("cat", 2.0), ("dog", 1.0)]
    assert [(p.text, p.weight) for p in one("cat::2 dog").prompts] == [("cat", 2.0), ("dog", 1.0)]
    assert [(p.text, p.weight) for p in one("a::2b c").prompts] == [("a", 1.0), ("2b c", 1.0)]


def test_3_repeated_sref_and_profile_keep_every_value_in_order() -> None:
    e = one("a cat --sref 680572301 --sref 1612582939 3 --profile a1 --profile b2 c3")
    assert e.params.values("sref") == ("680572301", "1612582939", "3")
    params = {use.name: use.value for use in e.parameters()}
    assert params["sref"] == ["680572301", "1612582939", "3"] and params["profile"] == ["a1", "b2", "c3"]
    assert "--sref has more than 20 values" in error("a cat" + " --sref 1 2 3 4 5" * 5)


def test_4_style_codes_keep_their_case() -> None:
    assert one("a cat --style 1U48Gcm4I").params.style == "1U48Gcm4I"
    assert one("a cat --style RAW").params.style == "raw"


def test_5_niji_sets_the_version_and_every_parameter_is_in_the_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert one("a cat --niji 6").params.version == "niji 6"
    assert one("a cat --niji").params.version == "niji"
    assert main(["parse", f"a cat --niji 6 --sref {SHORT} --cref {SHORT2} --sw 300 --cw 0 --s 250"]) == 0
    [expansion] = json.loads(capsys.readouterr().out)["expansions"]
    assert expansion["params"]["version"] == "niji 6"
    shown = {p["name"]: (p["value"], p["status"]) for p in expansion["parameters"]}
    assert shown == {"stylize": (250, APPLIED), "niji": ("6", IGNORED), "sref": ([SHORT], APPLIED),
                     "sw": (300, APPLIED), "cref": ([SHORT2], APPLIED), "cw": (0, APPLIED)}
    assert all(p["note"] for p in expansion["parameters"])


def test_6_a_parameter_glued_to_a_word_is_an_error_that_says_where_the_space_goes() -> None:
    message = error("a cat lens--ar 4:5")
    assert "put a space before --ar" in message and "lens--ar" in message
    assert "put a space before --tile" in error("a wall pattern--tile")
    assert one("the dragon--its wings wide").prompts[0].text == "the dragon--its wings wide"  # prose
    assert one("a well--lit room").prompts[0].text == "a well--lit room"


# --- text with no UTF-8 form ------------------------------------------------------------------------

def test_a_lone_surrogate_is_a_prompt_error_not_a_crash_later() -> None:
    message = error("a cat \ud800 on a mat --ar 1:1")
    assert "not valid text" in message and "character 7" in message


# --- what /imagine and the README say ------------------------------------------------------------------

def test_the_request_lists_ignored_parameters_as_typed() -> None:
    request = resolve(one(f"a cat --profile a1 b2 --v 7 --raw --sref {SHORT} --exp 10 --tile"),
                      profile=PROFILES["sd1"], model="m", sampler="euler_a")
    assert request.ignored == ("--style raw", "--v 7", "--profile a1 b2")
    mixed = resolve(one(f"a cat --sref {SHORT}::2 680572301 --cw 10"), profile=PROFILES["sd1"], model="m",
                    sampler="euler_a", style_refs=("/in/a.png",))
    assert mixed.ignored == ("--cw 10", "--sref 680572301 (style codes)",
                             "--sref ::weights (every reference picture weighs the same)")
    assert (mixed.style_refs, mixed.style_urls, mixed.style_weight) == (("/in/a.png",), (SHORT,), 100)


def test_the_readme_lists_every_parameter_with_its_status() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The prompt language", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| `--")}
    for names, versions, status, note in parameter_table():
        assert names in rows, names
        assert f"| {versions} | {status} | {note} |" in rows[names], names
    assert len(rows) == len(parameter_table())
    assert re.search(r"\*\*applied\*\*", section) and re.search(r"\*\*ignored\*\*", section)
