"""`tessera parse`: the JSON contract on stdout, or the message on stderr and exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent
PARAM_KEYS = ["ar", "seed", "quality", "stylize", "chaos", "weird", "stop", "repeat", "tile", "iw", "style", "version"]


def test_parse_prints_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", "space::2 ship --no people --ar 16:9"]) == 0
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert data == {
        "expansions": [
            {
                "prompts": [{"text": "space", "weight": 2.0}, {"text": "ship", "weight": 1.0}],
                "negative": ["people"],
                "images": [],
                "params": {"ar": "16:9", "seed": None, "quality": None, "stylize": None, "chaos": None,
                           "weird": None, "stop": None, "repeat": None, "tile": False, "iw": None,
                           "style": None, "version": None},
                # issue 20: every parameter the prompt set, with what Tessera does with it
                "parameters": [
                    {"name": "ar", "value": "16:9", "status": "applied",
                     "note": "width x height at the model's native pixel area, multiples of 64 (1:4 to 4:1)"},
                    {"name": "no", "value": ["people"], "status": "applied", "note": "the negative prompt"},
                ],
            }
        ]
    }
    assert list(data["expansions"][0]["params"]) == PARAM_KEYS


def test_parse_numbers_are_numbers_and_one_entry_per_expansion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", "{red, green} bird --seed 7 --q .5 --s 250 --tile --iw 1.5 --style raw --v 6 --niji"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [e["prompts"][0]["text"] for e in data["expansions"]] == ["red bird", "green bird"]
    params = data["expansions"][0]["params"]
    assert list(params) == PARAM_KEYS
    assert (params["seed"], params["quality"], params["stylize"], params["tile"], params["iw"]) == (7, 0.5, 250, True, 1.5)
    assert (params["style"], params["version"]) == ("raw", "6")


def test_parse_error_goes_to_stderr_with_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", "a cat --chaos 150"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.strip() == "--chaos must be a number from 0 to 100, got 150"


def test_parse_limits_come_from_settings(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPT_MAX_LENGTH", "10")
    assert main(["parse", "a" * 11]) == 1
    assert "the most is 10" in capsys.readouterr().err
    monkeypatch.delenv("PROMPT_MAX_LENGTH")
    monkeypatch.setenv("PROMPT_MAX_JOBS", "3")
    assert main(["parse", "{a, b} --r 2"]) == 1
    assert "the most is 3" in capsys.readouterr().err


def test_tessera_parse_as_a_process_never_imports_torch() -> None:
    code = (
        "import sys; from bot.cli import main; rc = main(['parse', '{a, b} --ar 16:9']); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPT_")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["expansions"]) == 2


def test_prompt_max_images_setting_caps_image_links(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """PROMPT_MAX_IMAGES reaches the parser the bot and `tessera parse` share."""
    links = " ".join(f"https://example.com/{n}.png" for n in range(3))
    monkeypatch.setenv("PROMPT_MAX_IMAGES", "2")
    assert main(["parse", f"{links} a cat"]) == 1
    assert "3 image links; the most is 2" in capsys.readouterr().err
    monkeypatch.setenv("PROMPT_MAX_IMAGES", "3")
    assert main(["parse", f"{links} a cat"]) == 0
    assert len(json.loads(capsys.readouterr().out)["expansions"][0]["images"]) == 3
