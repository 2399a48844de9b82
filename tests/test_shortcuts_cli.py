"""`tessera loras`, `tessera prefer` and `tessera parse` with the folders and a user's shortcuts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no developer .env
    loras = tmp_path / "loras"
    loras.mkdir()
    (loras / "pixel_art.safetensors").write_bytes(b"x" * 2_500_000)
    (loras / "pixel_art.png").write_bytes(b"png")
    (loras / "watercolor.safetensors").write_bytes(b"x" * 10)
    embeddings = tmp_path / "embeddings"
    embeddings.mkdir()
    (embeddings / "badhands.safetensors").write_bytes(b"x")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LORA_DIR", str(loras))
    monkeypatch.setenv("EMBEDDINGS_DIR", str(embeddings))
    return tmp_path


def test_loras_lists_names_sizes_and_previews(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loras"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["pixel_art", "watercolor"]
    assert "2.5 MB" in lines[0] and lines[0].endswith("pixel_art.png") and lines[1].endswith("-")
    assert main(["loras", "WATER", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"name": "watercolor", "size": 10, "preview": None}]


def test_prefer_sets_shortcuts_that_parse_expands_and_refuses_broken_ones(
        env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prefer", "--user", "5", "option", "set", "moody", "dark fog --no sun"]) == 0
    assert main(["prefer", "--user", "5", "suffix", "--lora pixel_art:0.5"]) == 0
    capsys.readouterr()
    assert main(["prefer", "--user", "5", "option", "set", "again", "x --again"]) == 1
    assert "levels deep" in capsys.readouterr().err
    assert main(["prefer", "--user", "5", "option", "list"]) == 0
    assert capsys.readouterr().out == "--moody\tdark fog --no sun\n"

    assert main(["parse", "--user", "5", "a cat badhands --moody"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["expanded"] == "a cat badhands dark fog --no sun --lora pixel_art:0.5"
    expansion = data["expansions"][0]
    assert expansion["negative"] == ["sun"] and expansion["prompts"][0]["text"] == "a cat <badhands> dark fog"
    assert main(["parse", "a cat --lora nothere"]) == 1  # checked against LORA_DIR
    assert "no LoRA named nothere" in capsys.readouterr().err

    assert main(["prefer", "--user", "5", "option", "delete", "moody"]) == 0
    assert main(["prefer", "--user", "5", "suffix", "clear"]) == 0
    capsys.readouterr()
    assert main(["parse", "--user", "5", "a cat"]) == 0
    assert "expanded" not in json.loads(capsys.readouterr().out)
