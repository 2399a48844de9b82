"""/blend, /describe and /shorten as Discord users see them (issue 17), through raw Interaction
payloads (tests/discord_harness.py) with the real service and queue; /describe and /shorten
jobs run on the real executor (tiny BLIP, tiny SD 1.5 text encoders); only the grid work is
the bot tests' StepExecutor.

Attachments are "downloaded" from Discord's CDN through a patched `get_from_cdn`: no address
other than the test's own is ever contacted.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.diffusion.shorten import Shortening
from engine.jobs.executor import EngineExecutor, WorkResult
from engine.jobs.model import JobKind
from tests.bot_helpers import Bot, StepExecutor, start_bot
from tests.discord_harness import CHANNEL_ID, GUILD_ID, OTHER_USER_ID, USER_ID, Call, message_with

MAX_BYTES = 200_000  # IMAGE_PROMPT_MAX_BYTES for these tests: small, so "oversize" is cheap to make


def png(size: tuple[int, int], seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(buffer, "PNG")
    return buffer.getvalue()


async def start(tiny_models: dict[str, Path], data_dir: Path, text: Any = None) -> Bot:
    folder = data_dir.parent / "tiny-sd15"
    if not folder.exists():
        folder.mkdir()
        for child in tiny_models["sd15"].iterdir():
            (folder / child.name).symlink_to(child)
        (folder / "tessera.json").write_text(json.dumps({"native": 64, "steps": 2, "guidance": 6}))
    text = text or EngineExecutor(str(folder), device="cpu", caption_model=str(tiny_models["blip"]))
    return await start_bot(folder, data_dir, executor=StepExecutor(text=text),
                           ip_adapter_repo=str(tiny_models["ip_adapter"]), caption_model=str(tiny_models["blip"]),
                           image_prompt_max_bytes=MAX_BYTES)


class CDN:
    """What Discord's CDN serves for each attachment URL (and which URLs were downloaded)."""

    def __init__(self, bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: dict[str, bytes] = {}
        self.fetched: list[str] = []

        async def from_cdn(url: str) -> bytes:
            self.fetched.append(url)
            return self.files[url]

        monkeypatch.setattr(bot.h.client.http, "get_from_cdn", from_cdn)

    def attach(self, name: str, data: bytes, content_type: str = "image/png", size: int | None = None) -> dict:
        url = f"https://cdn.discordapp.com/attachments/1/{len(self.files) + 2}/{name}"
        self.files[url] = data
        return {"filename": name, "size": len(data) if size is None else size, "content_type": content_type,
                "url": url, "proxy_url": url.replace("cdn.discordapp.com", "media.discordapp.net")}


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start(tiny_models, data_dir)
    yield running
    await running.close()


@pytest.fixture
def cdn(bot: Bot, monkeypatch: pytest.MonkeyPatch) -> CDN:
    return CDN(bot, monkeypatch)


async def answered(bot: Bot, token: str) -> Call:
    """Wait for every job to finish and its message to be final; the token's last message."""
    for job in await bot.jobs():
        await bot.finished(job.id)
    return last_said(bot, token)


def last_said(bot: Bot, token: str) -> Call:
    calls = [c for c in bot.http.for_token(token) if c.content]
    assert calls, bot.http.for_token(token)
    return calls[-1]


def refused(bot: Bot, token: str, *words: str) -> None:
    """The user was told privately, and nothing public is left behind."""
    said = last_said(bot, token)
    assert said.ephemeral, said
    for word in words:
        assert word in (said.content or ""), said.content
    public = [c for c in bot.http.for_token(token) if c.content and not c.ephemeral]
    assert public == [], public


async def submit_form(bot: Bot, modal: Call, value: str | None = None, *, user_id: int = USER_ID) -> tuple[str, str]:
    """Submit the form the bot opened (callback type 9), its text as pre-filled or `value`;
    returns (the pre-filled text, the submission's token)."""
    data = modal.json["data"]  # type: ignore[index]
    (label,) = data["components"]
    filled = label["component"]["value"]
    inputs = [{"type": 18, "id": 1, "component": {"type": 4, "id": 2, "custom_id": label["component"]["custom_id"],
                                                  "value": filled if value is None else value}}]
    payload = bot.h._base(user_id=user_id, permissions=0, channel_id=CHANNEL_ID, guild_id=GUILD_ID)
    payload.update(type=5, data={"custom_id": data["custom_id"], "components": inputs})
    bot.h.client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
    await bot.h.settle()
    return filled, str(payload["token"])


def message_carrying(custom_id: str) -> dict[str, Any]:
    """A bot message with one button (discord.py hands a press only to a button its message has)."""
    button = {"type": 2, "style": 2, "label": "1", "custom_id": custom_id}
    return {"id": "1", "channel_id": str(CHANNEL_ID), "content": "", "components": [{"type": 1, "components": [button]}],
            "author": {"id": "1", "username": "Tessera", "discriminator": "0", "avatar": None, "bot": True},
            "attachments": [], "embeds": [], "mentions": [], "mention_roles": [], "pinned": False,
            "mention_everyone": False, "tts": False, "timestamp": "2024-01-01T00:00:00+00:00", "edited_timestamp": None,
            "type": 0, "flags": 0}


# ----- /blend ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 5])
async def test_blend_mixes_two_to_five_pictures_into_a_grid(bot: Bot, cdn: CDN, count: int) -> None:
    pictures = {f"image{i}": cdn.attach(f"p{i}.png", png((48 + 8 * i, 40), seed=i)) for i in range(1, count + 1)}
    interaction = await bot.h.run_command("blend", {"dimensions": "landscape"}, attachments=pictures)
    job = await bot.only_job()
    assert sorted(cdn.fetched) == sorted(a["url"] for a in pictures.values())
    assert job.kind is JobKind.IMAGINE and job.options == {"blend": count, "dimensions": "landscape"}
    request = job.request_json or {}
    assert len(request["blend_refs"]) == count and request["aspect"] == "3:2"
    for ref in request["blend_refs"]:
        assert Path(ref).parent == bot.service.inputs_dir.resolve() and Path(ref).is_file()
    done = await bot.finished(job.id)
    assert done.state.value == "done"
    final = [c for c in bot.http.for_token(interaction.token) if c.files][-1]
    assert f"tessera:upscale:{job.id}:0" in final.custom_ids and f"tessera:reroll:{job.id}:0" in final.custom_ids
    assert not final.ephemeral


async def test_blend_refuses_one_picture_a_non_image_and_an_oversize_file_before_downloading(bot: Bot, cdn: CDN) -> None:
    one = await bot.h.run_command("blend", attachments={"image1": cdn.attach("a.png", png((32, 32)))})
    refused(bot, one.token, "/blend mixes 2 to 5 pictures", "attached 1")
    text = await bot.h.run_command("blend", attachments={"image1": cdn.attach("a.png", png((32, 32))),
                                                         "image2": cdn.attach("notes.txt", b"hello", "text/plain")})
    refused(bot, text.token, "`notes.txt` is not an image")
    big = await bot.h.run_command("blend", attachments={"image1": cdn.attach("a.png", png((32, 32))),
                                                        "image2": cdn.attach("big.png", b"x", size=MAX_BYTES + 1)})
    refused(bot, big.token, "`big.png` is", "at most")
    assert cdn.fetched == [] and await bot.jobs() == []
    fake = await bot.h.run_command("blend", attachments={"image1": cdn.attach("a.png", png((32, 32))),
                                                         "image2": cdn.attach("fake.png", b"not a picture" * 9)})
    refused(bot, fake.token, "Picture 2")  # declared a PNG: downloaded, then refused by the decoder
    assert await bot.jobs() == []


# ----- /describe -------------------------------------------------------------------------------------


def describe_prompts(call: Call) -> list[str]:
    return [line.split(" ", 1)[1] for line in (call.content or "").splitlines() if line[:1].isdigit()]


async def test_describe_gives_four_prompts_and_button_2_imagines_prompt_2_after_a_restart(
        tiny_models: dict[str, Path], data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = await start(tiny_models, data_dir)
    try:
        cdn = CDN(bot, monkeypatch)
        interaction = await bot.h.run_command("describe", attachments={"image": cdn.attach("fox.png", png((300, 200)))})
        described = await bot.only_job()
        assert described.kind is JobKind.DESCRIBE and described.user_id == USER_ID  # a queue job like any other
        answer = await answered(bot, interaction.token)
        assert not answer.ephemeral and "--ar 3:2" in (answer.content or "") and described.id in (answer.content or "")
        stored = await bot.service.job(described.id)
        assert stored is not None and stored.state.value == "done"
        assert stored.result_json == {"prompts": describe_prompts(answer), "aspect": "3:2"}
        prompts = describe_prompts(answer)
        assert len(prompts) == 4 and len(set(prompts)) == 4 and all(p.endswith(" --ar 3:2") for p in prompts)
        ids = answer.custom_ids
        assert len(ids) == 5 and all(len(i) <= 100 for i in ids)
        digest = ids[0].split(":")[3]
        assert ids == [f"tessera:describe:use:{digest}:0:{n}" for n in range(1, 5)] + \
            [f"tessera:describe:again:{digest}:1"]
        assert (bot.service.inputs_dir / f"{digest}.png").is_file()
        message = message_with(answer)

        again = await bot.h.press(ids[4], message)
        more = await answered(bot, again)
        fresh = describe_prompts(more)
        assert len(fresh) == 4 and set(fresh).isdisjoint(prompts)
        assert more.custom_ids[-1] == f"tessera:describe:again:{digest}:2"
    finally:
        await bot.close()

    bot = await start(tiny_models, data_dir)  # a new process: nothing in memory, no captioner loaded
    try:
        token = await bot.h.press(ids[1], message, user_id=OTHER_USER_ID)
        (modal,) = bot.http.for_token(token)
        assert modal.callback_type == 9
        filled, submitted = await submit_form(bot, modal, user_id=OTHER_USER_ID)
        assert filled == prompts[1]
        (job,) = await bot.jobs(OTHER_USER_ID)
        assert job.kind is JobKind.IMAGINE and job.prompt_text == prompts[1] and job.user_id == OTHER_USER_ID
        assert (job.request_json or {})["aspect"] == "3:2"
        await bot.finished(job.id)
        assert not bot.http.for_token(submitted)[0].ephemeral
    finally:
        await bot.close()


async def test_a_describe_waiting_at_a_restart_is_answered_under_its_message_after_it(
        tiny_models: dict[str, Path], data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/describe is a queue job: it waits its turn behind a grid (its message says so), is kept
    through a restart, and its answer is posted, with working buttons, under its message."""
    first = await start(tiny_models, data_dir)
    cdn = CDN(first, monkeypatch)
    first.executor.gate.clear()  # a grid holds the GPU
    await first.h.run_command("imagine", {"prompt": "a lighthouse --seed 3"})
    await first.until(lambda: first.executor.ran == [] and first.service.queue.stats().running == 1)
    interaction = await first.h.run_command("describe", attachments={"image": cdn.attach("fox.png", png((200, 200)))})
    (waiting,) = [j for j in await first.jobs() if j.kind is JobKind.DESCRIBE]
    shown = first.http.message(interaction.token) or {}
    assert "/describe" in shown.get("content", "") and "waiting to start" in shown.get("content", "")
    await first.h.settle()
    await first.service.close()  # the process stops with the grid on the GPU and the describe waiting
    await first.h.close()

    second = await start(tiny_models, data_dir)
    try:
        done = await second.finished(waiting.id)
        assert done.state.value == "done" and done.result_json is not None
        (reply,) = [c for c in second.http.find("POST", "/channels/{channel_id}/messages")
                    if "Four prompts" in (c.content or "")]
        assert reply.json["message_reference"]["message_id"] == int(shown["id"])  # type: ignore[index]
        assert describe_prompts(reply) == done.result_json["prompts"] and len(reply.custom_ids) == 5
        token = await second.h.press(reply.custom_ids[0], message_with(reply), user_id=OTHER_USER_ID)
        (modal,) = second.http.for_token(token)
        filled, _ = await submit_form(second, modal, user_id=OTHER_USER_ID)
        assert filled == done.result_json["prompts"][0]  # its buttons find their prompts
    finally:
        await second.close()


async def test_describe_refuses_a_non_image_an_oversize_file_and_a_picture_it_no_longer_has(bot: Bot, cdn: CDN) -> None:
    text = await bot.h.run_command("describe", attachments={"image": cdn.attach("notes.txt", b"hi", "text/plain")})
    refused(bot, text.token, "`notes.txt` is not an image")
    big = await bot.h.run_command("describe", attachments={"image": cdn.attach("big.png", b"x", size=MAX_BYTES + 1)})
    refused(bot, big.token, "`big.png` is", "at most")
    assert cdn.fetched == []
    fake = await bot.h.run_command("describe", attachments={"image": cdn.attach("fake.png", b"not a picture" * 9)})
    refused(bot, fake.token, "not a PNG, JPEG, GIF or WebP")
    assert not any(bot.service.inputs_dir.glob("*.png"))  # nothing kept from a refused upload

    missing = "0" * 64
    for custom_id in (f"tessera:describe:use:{missing}:0:1", f"tessera:describe:again:{missing}:1"):
        token = await bot.h.press(custom_id, message_carrying(custom_id))
        said = last_said(bot, token)
        assert said.ephemeral and "no longer kept" in (said.content or "")


class ForgedWorker:
    """Answers every text job as a forged Redis worker might: a "caption" that pings a member and
    hides a link. Well-formed (it passes the answer checks), so only the rendering can stop it."""

    CAPTION = "<@111111111111111111> [free nitro](https://evil.example) --ar 1:1"

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, items: Any, control: Any) -> list[WorkResult]:
        return [WorkResult(data={"prompts": [self.CAPTION] * 4, "aspect": "1:1"}) for _ in items]


async def test_a_caption_cannot_ping_or_mask_a_link_and_a_prompt_cannot_ping(
        tiny_models: dict[str, Path], data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = await start(tiny_models, data_dir, text=ForgedWorker())
    try:
        cdn = CDN(bot, monkeypatch)
        interaction = await bot.h.run_command("describe", attachments={"image": cdn.attach("a.png", png((64, 64)))})
        answer = await answered(bot, interaction.token)
        content = answer.content or ""
        assert "Four prompts" in content and "<@111111111111111111>" not in content
        assert content.count("\\[free nitro](") == 4 and " [free nitro](" not in content  # shown, not a link
        shorten = await bot.h.run_command("shorten", {"prompt": "a cat with <@222222222222222222> and @everyone"})
        shown = [c.content or "" for c in bot.http.for_token(shorten.token) if c.content]
        assert shown and not any("<@222222222222222222>" in text or "@everyone" in text for text in shown)
    finally:
        await bot.close()


# ----- /shorten --------------------------------------------------------------------------------------


async def test_shorten_shows_weights_and_runs_a_shorter_prompt_from_its_button(bot: Bot) -> None:
    prompt = "a red lighthouse on a rocky cliff at dusk, dramatic clouds --ar 16:9"
    interaction = await bot.h.run_command("shorten", {"prompt": prompt})
    shortened = await bot.only_job()
    assert shortened.kind is JobKind.SHORTEN and shortened.prompt_text == prompt
    answer = await answered(bot, interaction.token)
    content = answer.content or ""
    assert not answer.ephemeral and "What matters" in content and "1.00" in content and "lighthouse" in content
    stored = await bot.service.job(shortened.id)
    assert stored is not None and stored.result_json is not None
    result = Shortening.from_json(stored.result_json)
    key = answer.custom_ids[0].split(":")[3]
    assert answer.custom_ids == [f"tessera:shorten:run:{key}:{n}" for n in range(1, len(result.prompts) + 1)]
    assert 1 <= len(result.prompts) <= 5
    assert await bot.service.suggested(f"s:{key}") == result.prompts

    token = await bot.h.press(answer.custom_ids[-1], message_with(answer), user_id=OTHER_USER_ID)
    (modal,) = bot.http.for_token(token)
    filled, _ = await submit_form(bot, modal, user_id=OTHER_USER_ID)
    assert filled == result.prompts[-1] and filled.endswith("--ar 16:9")
    (job,) = [j for j in await bot.jobs(OTHER_USER_ID) if j.kind is JobKind.IMAGINE]
    assert job.prompt_text == result.prompts[-1]
    await bot.finished(job.id)

    seed = await bot.h.run_command("seed", {"job": shortened.id})
    said = last_said(bot, seed.token)
    assert said.ephemeral and "has no seed" in (said.content or "") and "not chosen yet" not in (said.content or "")
    upscale = await bot.h.run_command("upscale", {"job": shortened.id, "index": 1})
    assert "answer, not pictures" in (last_said(bot, upscale.token).content or "")


async def test_shorten_refuses_a_malformed_prompt_and_an_unknown_key(bot: Bot) -> None:
    bad = await bot.h.run_command("shorten", {"prompt": "a cat --ar 16:0"})
    said = last_said(bot, bad.token)
    assert said.ephemeral and "--ar" in (said.content or "")
    empty = await bot.h.run_command("shorten", {"prompt": "--ar 3:2"})
    assert "the prompt is empty" in (last_said(bot, empty.token).content or "")
    custom_id = "tessera:shorten:run:0123456789abcdef:1"
    token = await bot.h.press(custom_id, message_carrying(custom_id))
    said = last_said(bot, token)
    assert said.ephemeral and "no longer kept" in (said.content or "")
    assert await bot.jobs() == []
