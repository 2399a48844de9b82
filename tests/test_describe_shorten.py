"""`tessera describe` (tiny BLIP) and `tessera shorten` (tiny SD 1.5 text encoder) through the service."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.cli import main
from engine.prompt import parse
from engine.vision.describe import aspect_of


def png(size: tuple[int, int], seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def configured(tiny_models: dict[str, Path], data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "tiny-sd15"
    folder.mkdir()
    for child in tiny_models["sd15"].iterdir():
        (folder / child.name).symlink_to(child)
    (folder / "tessera.json").write_text(json.dumps({"native": 64, "steps": 2, "guidance": 6}))
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.setenv("MODEL_ID", str(folder))
    monkeypatch.setenv("CAPTION_MODEL", str(tiny_models["blip"]))
    return data_dir


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    for thread in threading.enumerate():  # a refused command's model load: wait (see test_references_cli)
        if thread.name == "tessera-gpu":
            thread.join(120)
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def test_aspect_of_a_picture_is_a_small_ratio_within_midjourneys_range() -> None:
    assert [aspect_of(*size) for size in [(300, 200), (1920, 1080), (512, 512), (333, 500), (100, 1000)]] == \
        ["3:2", "16:9", "1:1", "2:3", "1:4"]
    assert aspect_of(1000, 517) in ("15:8", "2:1")


def test_describe_gives_four_prompts_that_parse_with_the_pictures_aspect(
        configured: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    picture = tmp_path / "fox.png"
    picture.write_bytes(png((300, 200)))
    code, first, err = run(capsys, "describe", str(picture))
    assert code == 0, err
    assert first is not None and first["aspect"] == "3:2" and len(first["prompts"]) == 4
    for text in first["prompts"]:
        assert text.endswith(" --ar 3:2")
        [expansion] = parse(text).expansions
        assert expansion.params.ar == "3:2" and expansion.images == () and expansion.prompts[0].text
    assert len(set(first["prompts"])) == 4
    code, same, err = run(capsys, "describe", str(picture))
    assert code == 0 and same == first, err  # deterministic
    code, again, err = run(capsys, "describe", str(picture), "--again", "1")
    assert code == 0 and again is not None and set(again["prompts"]).isdisjoint(first["prompts"]), err


def test_describe_refuses_bad_input_and_a_missing_model(configured: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    text = tmp_path / "notes.png"
    text.write_bytes(b"plain words, not pixels" * 5)
    code, _, err = run(capsys, "describe", str(text))
    assert code == 1 and "The picture is not a PNG, JPEG, GIF or WebP image" in err
    big = tmp_path / "big.png"
    big.write_bytes(png((200, 200)))
    monkeypatch.setenv("IMAGE_PROMPT_MAX_BYTES", "10000")
    code, _, err = run(capsys, "describe", str(big))
    assert code == 1 and "big.png is larger than 10,000 bytes" in err
    monkeypatch.setenv("IMAGE_PROMPT_MAX_BYTES", str(10 * 2**20))
    monkeypatch.setenv("CAPTION_MODEL", "")
    code, _, err = run(capsys, "describe", str(big))
    assert code == 1 and "CAPTION_MODEL" in err


def test_shorten_weighs_words_and_offers_shorter_prompts_that_keep_the_parameters(
        configured: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt = "a very beautiful red lighthouse on a rocky cliff at dusk, oil painting --ar 16:9 --no fog"
    code, result, err = run(capsys, "shorten", prompt)
    assert code == 0 and result is not None, err
    words = result["words"]
    shown = prompt.split(" --")[0].replace(",", "").split(" ")
    assert [w["word"] for w in words] == shown
    weights = [w["weight"] for w in words]
    assert max(weights) == 1.0 and all(0 <= w <= 1 for w in weights) and len(set(weights)) > 3
    prompts = result["prompts"]
    assert 1 <= len(prompts) <= 5 and len(set(prompts)) == len(prompts)
    lengths = [len(parse(p).expansions[0].prompts[0].text.split()) for p in prompts]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] < len(words)
    heaviest = max(words, key=lambda w: w["weight"])["word"]
    for text in prompts:
        [expansion] = parse(text).expansions
        assert expansion.params.ar == "16:9" and expansion.negative == ("fog",)
        assert heaviest in expansion.prompts[0].text.split()  # the heaviest word is always kept


def test_shorten_refuses_prompts_it_cannot_measure(configured: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "shorten", " ".join(["word"] * 61))
    assert code == 1 and "up to 60 words; this one has 61" in err
    code, _, err = run(capsys, "shorten", "!!! ... --ar 16:9")
    assert code == 1 and "needs a prompt with words" in err
