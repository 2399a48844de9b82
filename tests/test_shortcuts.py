"""Personal shortcuts, server styles, the LoRA folder and drafts through the job service.

`/prefer suffix`, `/prefer option`, `/admin style` are stored in SQLite (migration 0005),
checked by the prompt language before they are written, bounded, expanded into every new
prompt and kept across restarts; `--draft` runs the configured few-step path and Enhance
re-runs the same seeds at full steps. The service is the real one; GPU work is faked.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.authorization import Actor
from bot.config import load_settings
from bot.service import Tessera, prompt_without_draft
from engine.errors import PromptError, StorageError, TesseraError
from engine.jobs.model import JobKind
from engine.request import GenerationRequest
from storage.api import Storage
from storage.shortcuts import OPTIONS_MAX, STYLES_MAX
from tests.queue_helpers import FakeExecutor, wait_for

USER, OTHER, GUILD = 42, 43, 7


@pytest.fixture(scope="module")
def small_model(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "sd15"
    shutil.copytree(tiny_models["sd15"], folder)
    (folder / "tessera.json").write_text(json.dumps({"native": 128, "steps": 6, "guidance": 5.0}))
    return folder


@pytest.fixture
def lora_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "loras"
    folder.mkdir()
    for name in ("pixel_art", "pixel-glow", "watercolor"):
        (folder / f"{name}.safetensors").write_bytes(b"x" * 1500)
    (folder / "watercolor.png").write_bytes(b"png")
    return folder


def settings_for(data_dir: Path, model: Path, lora_dir: Path, **overrides: object):
    values: dict = dict(model_id=str(model), device="cpu", data_dir=data_dir, lora_dir=lora_dir,
                        prompt_max_length=400, draft_model_id=str(model), draft_steps=2)
    values.update(overrides)
    return load_settings(**values)


async def start(data_dir: Path, model: Path, lora_dir: Path, **overrides: object) -> Tessera:
    return await Tessera.start(settings_for(data_dir, model, lora_dir, **overrides), executor=FakeExecutor())


@pytest.fixture
async def service(data_dir: Path, small_model: Path, lora_dir: Path) -> AsyncIterator[Tessera]:
    running = await start(data_dir, small_model, lora_dir)
    yield running
    await running.close()


async def test_suffix_options_and_styles_expand_into_new_prompts_and_survive_a_restart(
        data_dir: Path, small_model: Path, lora_dir: Path) -> None:
    service = await start(data_dir, small_model, lora_dir)
    try:
        await service.set_suffix(USER, "--ar 16:9")
        await service.set_option(USER, "moody", "dark fog --no sun")
        await service.add_style(GUILD, "neon", "neon lights --s 500")
    finally:
        await service.close()
    service = await start(data_dir, small_model, lora_dir)  # a restart: everything read back from SQLite
    try:
        assert await service.list_options(USER) == {"moody": "dark fog --no sun"}
        assert await service.list_styles(GUILD) == {"neon": "neon lights --s 500"}
        (job,) = await service.imagine(user_id=USER, prompt_text="a cat --moody --style neon", guild_id=GUILD)
        assert job.prompt_text == "a cat dark fog neon lights --no sun --s 500 --ar 16:9"
        request = GenerationRequest.from_json(job.request_json or {})
        assert request.aspect == "16:9" and request.negative == ("sun",) and request.stylize == 500
        # Someone else has none of it, and the style belongs to its server only.
        (other,) = await service.imagine(user_id=OTHER, prompt_text="a cat", guild_id=GUILD)
        assert other.prompt_text == "a cat"
        (elsewhere,) = await service.imagine(user_id=USER, prompt_text="a dog --style neon", guild_id=GUILD + 1)
        assert elsewhere.prompt_text == "a dog --style neon --ar 16:9"  # Midjourney's own --style: ignored
    finally:
        await service.close()


async def test_shortcuts_that_would_break_prompts_are_refused_with_what_is_allowed(service: Tessera) -> None:
    with pytest.raises(PromptError, match="unknown parameter --sparkle"):
        await service.set_option(USER, "bad", "--sparkle 3")
    with pytest.raises(PromptError, match="Midjourney parameter"):
        await service.set_option(USER, "ar", "16:9")
    with pytest.raises(TesseraError, match="cannot be an option name: use 1 to 32 lowercase"):
        await service.set_option(USER, "Bad Name!", "x")
    with pytest.raises(PromptError, match="unknown parameter --b"):
        await service.set_option(USER, "a", "x --b")  # --b is not an option (yet)
    await service.set_option(USER, "b", "soft light")
    await service.set_option(USER, "a", "x --b")
    with pytest.raises(PromptError, match=r"levels deep|circle"):
        await service.set_option(USER, "b", "y --a")  # a loop
    with pytest.raises(PromptError, match="characters"):
        await service.set_option(USER, "long", "w" * 101)  # PROMPT_MAX_LENGTH 400 // 4
    with pytest.raises(PromptError, match="at most 100"):
        await service.set_suffix(USER, "w " * 60)
    with pytest.raises(PromptError, match="no LoRA named"):
        await service.set_suffix(USER, "--lora nothere:1")
    with pytest.raises(PromptError, match="unknown parameter --zz"):
        await service.set_suffix(USER, "--zz")
    await service.set_suffix(USER, "--b")
    with pytest.raises(PromptError, match="used by your suffix, --a"):
        await service.delete_option(USER, "b")
    assert await service.list_options(USER) == {"a": "x --b", "b": "soft light"}
    await service.set_suffix(USER, "clear")
    assert await service.suffix(USER) == ""
    await service.delete_option(USER, "a")
    await service.delete_option(USER, "b")
    with pytest.raises(PromptError, match="no option --b"):
        await service.delete_option(USER, "b")
    with pytest.raises(TesseraError, match="no style"):
        await service.delete_style(GUILD, "neon")


async def test_counts_are_bounded_per_user_and_per_server(service: Tessera) -> None:
    for i in range(OPTIONS_MAX):
        await service.set_option(USER, f"o{i}", "x")
    await service.set_option(USER, "o0", "replaced")  # replacing one is always allowed
    with pytest.raises(StorageError, match=f"{OPTIONS_MAX} options"):
        await service.set_option(USER, "one_more", "x")
    for i in range(STYLES_MAX):
        await service.add_style(GUILD, f"s{i}", "x")
    with pytest.raises(StorageError, match=f"{STYLES_MAX} styles"):
        await service.add_style(GUILD, "one_more", "x")
    assert len(await service.list_options(USER)) == OPTIONS_MAX and len(await service.list_styles(GUILD)) == STYLES_MAX


async def test_storage_refuses_a_bad_name_even_when_the_caller_does_not_check(data_dir: Path) -> None:
    async with await Storage.open(data_dir) as storage:
        with pytest.raises(StorageError, match="lowercase"):
            await storage.shortcuts.set_option(USER, "--ar", "x", check=lambda _: None)
        with pytest.raises(StorageError, match="lowercase"):
            await storage.shortcuts.set_style(GUILD, "Name With Space", "x", check=lambda _: None)
        with pytest.raises(StorageError, match="at most 10"):
            await storage.shortcuts.set_suffix(USER, "w" * 11, max_length=10, check=lambda _: None)


async def test_loras_are_listed_and_checked_and_a_removed_file_does_not_break_stored_text(
        service: Tessera, lora_dir: Path) -> None:
    found = await service.list_loras("pix")
    assert [info.name for info in found] == ["pixel-glow", "pixel_art"] and found[0].size == 1500
    (water,) = await service.list_loras("water")
    assert water.preview is not None and water.preview.name == "watercolor.png"
    assert await service.search_loras("GLOW") == ["pixel-glow"]
    (job,) = await service.imagine(user_id=USER, prompt_text="a fox --lora pixel_art:0.7")
    assert GenerationRequest.from_json(job.request_json or {}).loras == (("pixel_art", 0.7),)
    with pytest.raises(PromptError, match=r"no LoRA named pixelart.*did you mean pixel_art"):
        await service.imagine(user_id=USER, prompt_text="a fox --lora pixelart")
    (lora_dir / "pixel_art.safetensors").unlink()
    with pytest.raises(PromptError, match="no LoRA named pixel_art"):
        await service.imagine(user_id=USER, prompt_text="a fox --lora pixel_art:0.7")
    again = await service.reparse(job.prompt_text)  # stored text is read back all the same
    assert again.expansions[0].params.loras == (("pixel_art", 0.7),)


async def test_a_default_lora_applies_when_the_prompt_names_none_and_is_skipped_once_removed(
        service: Tessera, lora_dir: Path) -> None:
    from dataclasses import replace

    user = await service.user_settings(USER)
    await service.save_user_settings(replace(user, lora="watercolor"))
    assert (await service.user_settings(USER)).lora == "watercolor"
    (plain,) = await service.imagine(user_id=USER, prompt_text="a fox")
    (named,) = await service.imagine(user_id=USER, prompt_text="a fox --lora pixel_art:0.5")
    assert GenerationRequest.from_json(plain.request_json or {}).loras == (("watercolor", 1.0),)
    assert GenerationRequest.from_json(named.request_json or {}).loras == (("pixel_art", 0.5),)
    (lora_dir / "watercolor.safetensors").unlink()
    (after,) = await service.imagine(user_id=USER, prompt_text="a fox")
    assert GenerationRequest.from_json(after.request_json or {}).loras == ()


async def test_a_draft_runs_the_few_step_path_and_enhance_reruns_its_seeds_at_full_steps(service: Tessera) -> None:
    (draft,) = await service.imagine(user_id=USER, prompt_text="a fox --draft --seed 9", guild_id=GUILD)
    request = GenerationRequest.from_json(draft.request_json or {})
    assert request.draft and request.steps == 2 and request.seed == 9
    await wait_for(lambda: service.queue.position(draft.id) is None)
    await service.wait_for_jobs([draft.id], timeout=30)
    with pytest.raises(TesseraError, match="not made in this server"):
        await service.enhance(user_id=OTHER, job_id=draft.id, actor=Actor(user_id=OTHER, guild_id=GUILD + 1))
    enhanced = await service.enhance(user_id=OTHER, job_id=draft.id, guild_id=GUILD,
                                     actor=Actor(user_id=OTHER, guild_id=GUILD))
    full = GenerationRequest.from_json(enhanced.request_json or {})
    assert not full.draft and full.seed == 9 and full.steps == 6 and full.guidance == 5.0
    assert enhanced.kind is JobKind.REROLL and enhanced.parent_id == draft.id
    assert enhanced.prompt_text == "a fox --seed 9"
    await service.wait_for_jobs([enhanced.id], timeout=30)
    with pytest.raises(PromptError, match="only a draft"):
        await service.enhance(user_id=USER, job_id=enhanced.id)


def test_prompt_without_draft_drops_only_the_flags() -> None:
    assert prompt_without_draft("a --draft fox —turbo --ar 1:1") == "a fox --ar 1:1"
    assert prompt_without_draft("a drafty --drafts fox") == "a drafty --drafts fox"
