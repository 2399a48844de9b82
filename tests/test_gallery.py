"""The gallery as users see it: ❤️ Share, /share, the post's buttons, removal and moderator deletes.

Everything runs through real Interactions built from payloads (tests/discord_harness.py) and
asserts on the captured HTTP calls — what Discord would have been asked to show.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.jobs.model import Job, JobKind
from storage.models import GuildSettings, UserSettings
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import (
    ADMIN_ID,
    CHANNEL_ID,
    GUILD_ID,
    MANAGE_GUILD,
    OTHER_CHANNEL_ID,
    OTHER_USER_ID,
    USER_ID,
    Call,
    message_with,
)

GALLERY = OTHER_CHANNEL_ID


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir)
    await running.service.storage.settings.save_guild(GuildSettings(GUILD_ID, gallery_channel_id=GALLERY))
    yield running
    await running.close()


def final_edit(calls: list[Call]) -> Call:
    with_files = [c for c in calls if c.files and c.method == "PATCH"]
    assert with_files, calls
    return with_files[-1]


@dataclass
class Result:
    job: Job  # the grid job
    grid: dict  # its message payload
    upscale: Job
    message: dict  # the upscale's message payload (with ❤️ Share)


async def upscaled(bot: Bot, prompt: str, *, user_id: int = USER_ID) -> Result:
    """/imagine then U1, both finished, as `user_id`."""
    interaction = await bot.h.run_command("imagine", {"prompt": prompt}, user_id=user_id)
    job = (await bot.jobs(user_id))[0]
    await bot.finished(job.id)
    grid = message_with(final_edit(bot.http.for_token(interaction.token)))
    token = await bot.h.press(f"tessera:upscale:{job.id}:0", grid, user_id=user_id)
    upscale = (await bot.jobs(user_id))[0]
    assert upscale.kind is JobKind.UPSCALE
    await bot.finished(upscale.id)
    return Result(job, grid, upscale, message_with(final_edit(bot.http.for_token(token))))


def gallery_posts(bot: Bot) -> list[Call]:
    return [c for c in bot.http.find("POST", "/channels/{channel_id}/messages", via="http")
            if c.params.get("channel_id") == GALLERY]


def answer(bot: Bot, token: str) -> Call:
    """The last thing the presser was told (an ephemeral message)."""
    calls = [c for c in bot.http.for_token(token) if c.content]
    assert calls, bot.http.for_token(token)
    return calls[-1]


async def share(bot: Bot, result: Result, *, user_id: int = USER_ID) -> str:
    return await bot.h.press(f"tessera:share:{result.upscale.id}:0", result.message, user_id=user_id)


async def press_on_post(bot: Bot, action: str, post: dict, *, user_id: int = USER_ID, permissions: int = 0) -> str:
    entry_id = next(cid for row in post["components"] for cid in
                    (c["custom_id"] for c in row["components"]) if cid.startswith("tessera-g:like:")).split(":")[-1]
    return await bot.h.press(f"tessera-g:{action}:{entry_id}", post, user_id=user_id, channel_id=GALLERY,
                             permissions=permissions)


def like_label(call: Call) -> str:
    for row in call.body["components"]:
        for item in row["components"]:
            if item["custom_id"].startswith("tessera-g:like:"):
                return str(item["label"])
    raise AssertionError(call)


async def submit_modal(bot: Bot, modal: Call, value: str, *, user_id: int, channel_id: int = GALLERY) -> str:
    """Submit the modal the bot opened (callback type 9) with `value` in its text input."""
    data = modal.json["data"]  # type: ignore[index]
    inputs = []
    for component in data["components"]:
        inner = component.get("component") or component["components"][0]
        inputs.append({"type": 18, "id": 1, "component": {"type": 4, "id": 2, "custom_id": inner["custom_id"],
                                                          "value": value}})
    payload = bot.h._base(user_id=user_id, permissions=0, channel_id=channel_id, guild_id=GUILD_ID)
    payload.update(type=5, data={"custom_id": data["custom_id"], "components": inputs})
    bot.h.client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
    await bot.h.settle()
    return str(payload["token"])


# ----- sharing --------------------------------------------------------------------------------------------


async def test_share_button_posts_the_image_with_prompt_seed_size_model_author_and_link(bot: Bot) -> None:
    result = await upscaled(bot, "a lighthouse at dusk --ar 3:2 --seed 41")
    token = await share(bot, result)

    (post,) = gallery_posts(bot)
    (embed,) = post.body["embeds"]
    assert "```\na lighthouse at dusk --ar 3:2 --seed 41\n```" in embed["description"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Seed"] == "`41`"  # U1 of a --seed 41 grid: image 1 has seed 41
    (name, data), = post.files
    stored = await bot.service.storage.images.get(result.upscale.id, 0)
    assert fields["Size"] == f"{stored.width}×{stored.height}"
    assert fields["Model"] == Path(bot.service.settings.model_id).name  # a local folder: its name, not its path
    assert fields["Author"] == f"<@{USER_ID}>"
    original = f"https://discord.com/channels/{GUILD_ID}/{CHANNEL_ID}/{result.message['id']}"
    assert original in fields["Original"]
    assert embed["image"]["url"] == f"attachment://{name}"
    assert name.endswith(".png") and data[:8] == b"\x89PNG\r\n\x1a\n"  # the stored PNG itself (under 10 MiB)
    assert data == stored.path.read_bytes()

    entry = await bot.service.storage.gallery.find_share(result.upscale.id, 0)
    assert entry is not None and entry.message_id == int(message_with(post)["id"]) and entry.channel_id == GALLERY
    assert entry.author_id == USER_ID and entry.prompt_text == result.upscale.prompt_text
    assert post.custom_ids == [f"tessera-g:{a}:{entry.id}" for a in ("remix", "same", "prompt", "like", "delete")]
    assert like_label(post) == "0"

    calls = bot.http.for_token(token)
    assert calls[0].callback_type == 5 and calls[0].ephemeral  # private "thinking…" while posting
    told = answer(bot, token)
    assert told.ephemeral and f"https://discord.com/channels/{GUILD_ID}/{GALLERY}/{entry.message_id}" in told.content


async def test_sharing_the_same_image_twice_links_to_the_first_share(bot: Bot) -> None:
    result = await upscaled(bot, "a red fox")
    await share(bot, result)
    entry = await bot.service.storage.gallery.find_share(result.upscale.id, 0)
    again = await share(bot, result, user_id=OTHER_USER_ID)
    assert len(gallery_posts(bot)) == 1
    told = answer(bot, again)
    assert told.ephemeral and "already in the gallery" in told.content
    assert f"/{GALLERY}/{entry.message_id}" in told.content
    # /share of the same image (the upscale's one image, whatever index is given) is refused too
    interaction = await bot.h.run_command("share", {"job": result.upscale.id, "index": 3})
    assert "already in the gallery" in answer(bot, interaction.token).content
    assert len(gallery_posts(bot)) == 1


async def test_share_command_posts_a_grid_image_with_its_title(bot: Bot) -> None:
    interaction = await bot.h.run_command("imagine", {"prompt": "a castle in the clouds --seed 100"})
    job = (await bot.jobs())[0]
    await bot.finished(job.id)
    shared = await bot.h.run_command("share", {"job": job.id, "index": 3, "title": "Sky castle"})
    (post,) = gallery_posts(bot)
    (embed,) = post.body["embeds"]
    assert embed["title"] == "Sky castle"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Seed"] == "`102`"  # image 3 of a --seed 100 grid
    entry = await bot.service.storage.gallery.find_share(job.id, 2)
    assert entry is not None and entry.title == "Sky castle"
    assert "Sky castle" in [e.title for e in await bot.service.storage.gallery.search("sky")]
    told = answer(bot, shared.token)
    assert told.ephemeral and f"/{GALLERY}/{entry.message_id}" in told.content
    link = f"/{CHANNEL_ID}/{message_with(final_edit(bot.http.for_token(interaction.token)))['id']}"
    assert link in fields["Original"]


async def test_private_results_are_shared_by_their_author_only(bot: Bot) -> None:
    storage = bot.service.storage
    result = await upscaled(bot, "a secret garden")
    await storage.settings.save_user(UserSettings(USER_ID, private=True))
    refused = await share(bot, result, user_id=OTHER_USER_ID)
    told = answer(bot, refused)
    assert told.ephemeral and "private" in told.content
    assert gallery_posts(bot) == [] and await storage.gallery.find_share(result.upscale.id, 0) is None
    # someone else's upscale of a private grid is private too
    other_u2 = await bot.h.press(f"tessera:upscale:{result.job.id}:1", result.grid, user_id=OTHER_USER_ID)
    upscale = (await bot.jobs(OTHER_USER_ID))[0]
    await bot.finished(upscale.id)
    message = message_with(final_edit(bot.http.for_token(other_u2)))
    refused = await bot.h.press(f"tessera:share:{upscale.id}:0", message, user_id=OTHER_USER_ID)
    assert "private" in answer(bot, refused).content and gallery_posts(bot) == []
    # the author may share
    await share(bot, result)
    assert len(gallery_posts(bot)) == 1


async def test_sharing_someone_elses_upscale_credits_the_prompts_author(bot: Bot) -> None:
    result = await upscaled(bot, "a clockwork owl")
    token = await bot.h.press(f"tessera:upscale:{result.job.id}:2", result.grid, user_id=OTHER_USER_ID)
    upscale = (await bot.jobs(OTHER_USER_ID))[0]
    await bot.finished(upscale.id)
    message = message_with(final_edit(bot.http.for_token(token)))
    await bot.h.press(f"tessera:share:{upscale.id}:0", message, user_id=OTHER_USER_ID)
    (post,) = gallery_posts(bot)
    fields = {f["name"]: f["value"] for f in post.body["embeds"][0]["fields"]}
    assert fields["Author"] == f"<@{USER_ID}>" and fields["Shared by"] == f"<@{OTHER_USER_ID}>"
    assert fields["Seed"] == f"`{(result.job.seed + 2) % 2**32}`"  # image 3's own seed
    entry = await bot.service.storage.gallery.find_share(upscale.id, 0)
    assert entry.author_id == USER_ID
    # the prompt's author may remove it
    await press_on_post(bot, "delete", message_with(post), user_id=USER_ID)
    assert await bot.service.storage.gallery.find_share(upscale.id, 0) is None


async def test_without_a_gallery_channel_admins_are_pointed_to_admin_gallery(bot: Bot) -> None:
    await bot.service.storage.settings.save_guild(GuildSettings(GUILD_ID))
    result = await upscaled(bot, "a quiet lake")
    token = await share(bot, result)
    (only,) = bot.http.for_token(token)  # one quick answer, nothing deferred
    assert only.ephemeral and "/admin gallery" in only.content
    assert gallery_posts(bot) == []


async def test_admin_gallery_sets_the_channel_used_by_share(bot: Bot) -> None:
    await bot.service.storage.settings.save_guild(GuildSettings(GUILD_ID))
    await bot.h.run_command("admin", {"channel": str(CHANNEL_ID)}, subcommand="gallery", user_id=ADMIN_ID,
                            permissions=MANAGE_GUILD,
                            resolved={"channels": {str(CHANNEL_ID): {"id": str(CHANNEL_ID), "type": 0, "name": "images",
                                                                     "permissions": "0", "guild_id": str(GUILD_ID)}}})
    assert (await bot.service.storage.settings.guild(GUILD_ID)).gallery_channel_id == CHANNEL_ID
    result = await upscaled(bot, "a quiet lake")
    await share(bot, result)
    posts = [c for c in bot.http.find("POST", "/channels/{channel_id}/messages", via="http") if c.body.get("embeds")]
    assert [c.params["channel_id"] for c in posts] == [CHANNEL_ID]


async def test_gallery_channel_refusing_posts_leaves_no_share(bot: Bot) -> None:
    from tests.discord_harness import http_error

    result = await upscaled(bot, "a locked door")
    bot.http.fail("POST", "/channels/{channel_id}/messages", http_error(403, 50013, "Missing Permissions"))
    token = await share(bot, result)
    told = answer(bot, token)
    assert told.ephemeral and f"<#{GALLERY}>" in told.content and "/admin gallery" in told.content
    assert await bot.service.storage.gallery.find_share(result.upscale.id, 0) is None
    await share(bot, result)  # works once the permission is fixed
    assert await bot.service.storage.gallery.find_share(result.upscale.id, 0) is not None


# ----- the post's buttons ---------------------------------------------------------------------------------


async def shared_post(bot: Bot, prompt: str = "a lighthouse at dusk --seed 5") -> tuple[Result, dict]:
    result = await upscaled(bot, prompt)
    await share(bot, result)
    (post,) = gallery_posts(bot)
    return result, message_with(post)


async def test_like_toggles_one_per_user_and_the_post_shows_the_count(bot: Bot) -> None:
    result, post = await shared_post(bot)
    entry = await bot.service.storage.gallery.find_share(result.upscale.id, 0)
    first = await press_on_post(bot, "like", post, user_id=OTHER_USER_ID)
    (update,) = bot.http.for_token(first)
    assert update.callback_type == 7 and like_label(update) == "1"  # the post itself is edited
    assert "embeds" not in update.body and "attachments" not in update.body  # embed and image stay as they are
    post = dict(post, components=update.body["components"])
    second = await press_on_post(bot, "like", post, user_id=ADMIN_ID)
    assert like_label(bot.http.for_token(second)[-1]) == "2"
    again = await press_on_post(bot, "like", post, user_id=OTHER_USER_ID)  # the same person: takes it back
    assert like_label(bot.http.for_token(again)[-1]) == "1"
    assert (await bot.service.storage.gallery.get(entry.id)).likes == 1
    mine = await press_on_post(bot, "like", post, user_id=USER_ID)
    assert like_label(bot.http.for_token(mine)[-1]) == "2"
    assert (await bot.service.storage.gallery.get(entry.id)).likes == 2


async def test_remix_opens_a_prefilled_modal_and_runs_the_edit_as_the_pressers_job(bot: Bot) -> None:
    _result, post = await shared_post(bot, "a lighthouse at dusk --ar 3:2")
    token = await press_on_post(bot, "remix", post, user_id=OTHER_USER_ID)
    (modal,) = bot.http.for_token(token)
    assert modal.callback_type == 9  # a modal
    (label,) = modal.json["data"]["components"]  # type: ignore[index]
    assert label["component"]["value"] == "a lighthouse at dusk --ar 3:2"  # pre-filled with the shared prompt
    assert await bot.jobs(OTHER_USER_ID) == []

    submitted = await submit_modal(bot, modal, "a lighthouse at dawn, watercolor --ar 3:2", user_id=OTHER_USER_ID)
    (job,) = await bot.jobs(OTHER_USER_ID)
    assert job.kind is JobKind.IMAGINE and job.prompt_text == "a lighthouse at dawn, watercolor --ar 3:2"
    assert job.user_id == OTHER_USER_ID and job.channel_id == GALLERY
    done = await bot.finished(job.id)
    assert done.state.value == "done"
    calls = bot.http.for_token(submitted)
    assert calls[0].callback_type == 5 and not calls[0].ephemeral  # public, like /imagine
    assert final_edit(calls).custom_ids[0] == f"tessera:upscale:{job.id}:0"  # a normal grid with U1–U4


async def test_remix_with_a_broken_prompt_is_explained_and_queues_nothing(bot: Bot) -> None:
    _, post = await shared_post(bot)
    token = await press_on_post(bot, "remix", post, user_id=OTHER_USER_ID)
    (modal,) = bot.http.for_token(token)
    submitted = await submit_modal(bot, modal, "a lighthouse --ar 16:0", user_id=OTHER_USER_ID)
    (only,) = bot.http.for_token(submitted)
    assert only.ephemeral and "--ar" in only.content
    assert await bot.jobs(OTHER_USER_ID) == []


async def test_same_prompt_rerolls_for_the_presser(bot: Bot) -> None:
    result, post = await shared_post(bot, "a lighthouse at dusk --seed 5")
    await press_on_post(bot, "same", post, user_id=OTHER_USER_ID)
    (job,) = await bot.jobs(OTHER_USER_ID)
    assert job.kind is JobKind.REROLL and job.parent_id == result.job.id  # the grid behind the shared upscale
    assert job.seed != result.job.seed
    assert job.prompt_text == f"a lighthouse at dusk --seed {job.seed}"  # its own seed, ready to copy
    await bot.finished(job.id)


async def test_prompt_button_answers_privately_ready_to_paste(bot: Bot) -> None:
    _, post = await shared_post(bot, "a lighthouse at dusk --ar 3:2 --seed 5")
    token = await press_on_post(bot, "prompt", post, user_id=OTHER_USER_ID)
    (reply,) = bot.http.for_token(token)
    assert reply.callback_type == 4 and reply.ephemeral
    assert "```\na lighthouse at dusk --ar 3:2 --seed 5\n```" in reply.content  # the seed of image 1, once
    assert "steps" in reply.content and "sampler" in reply.content


# ----- removing --------------------------------------------------------------------------------------------


def deletes(bot: Bot) -> list[Call]:
    return bot.http.find("DELETE", "/channels/{channel_id}/messages/{message_id}", via="http")


async def test_removal_by_another_user_is_refused(bot: Bot) -> None:
    result, post = await shared_post(bot)
    token = await press_on_post(bot, "delete", post, user_id=OTHER_USER_ID)
    assert "Only the person" in answer(bot, token).content
    assert deletes(bot) == [] and await bot.service.storage.gallery.find_share(result.upscale.id, 0) is not None


async def test_removal_by_the_author_deletes_post_and_share_but_keeps_the_image(bot: Bot) -> None:
    storage = bot.service.storage
    result, post = await shared_post(bot)
    entry = await storage.gallery.find_share(result.upscale.id, 0)
    token = await press_on_post(bot, "delete", post, user_id=USER_ID)
    (delete,) = deletes(bot)
    assert delete.params == {"channel_id": GALLERY, "message_id": entry.message_id}
    assert "Removed" in answer(bot, token).content and answer(bot, token).ephemeral
    assert await storage.gallery.find_share(result.upscale.id, 0) is None
    assert await storage.gallery.search("lighthouse") == []
    image = await storage.images.get(result.upscale.id, 0)
    assert image is not None and image.path.is_file()  # the image stays with its job
    # its buttons now say so instead of failing
    late = await press_on_post(bot, "like", post, user_id=OTHER_USER_ID)
    assert "no longer in the gallery" in answer(bot, late).content


async def test_removal_by_a_server_manager(bot: Bot) -> None:
    result, post = await shared_post(bot)
    await press_on_post(bot, "delete", post, user_id=ADMIN_ID, permissions=MANAGE_GUILD)
    assert len(deletes(bot)) == 1
    assert await bot.service.storage.gallery.find_share(result.upscale.id, 0) is None


async def test_a_post_deleted_by_a_moderator_is_marked_removed(bot: Bot) -> None:
    storage = bot.service.storage
    result, _post = await shared_post(bot)
    entry = await storage.gallery.find_share(result.upscale.id, 0)
    state = bot.h.client._connection
    # deleting some other message changes nothing
    state.parse_message_delete({"id": str(int(result.message["id"])), "channel_id": str(CHANNEL_ID),
                                "guild_id": str(GUILD_ID)})
    await bot.h.settle()
    assert (await storage.gallery.get(entry.id)).removed is False
    state.parse_message_delete({"id": str(entry.message_id), "channel_id": str(GALLERY), "guild_id": str(GUILD_ID)})
    await bot.h.settle()
    assert (await storage.gallery.get(entry.id)).removed is True
    assert await storage.gallery.search("lighthouse") == []
    # shared again, it gets a new post; a bulk delete by a moderator is seen too
    await share(bot, result)
    entry = await storage.gallery.find_share(result.upscale.id, 0)
    assert entry is not None and len(gallery_posts(bot)) == 2
    state.parse_message_delete_bulk({"ids": [str(entry.message_id), "123"], "channel_id": str(GALLERY),
                                     "guild_id": str(GUILD_ID)})
    await bot.h.settle()
    assert await storage.gallery.find_share(result.upscale.id, 0) is None


def test_the_client_asks_for_message_delete_events() -> None:
    from bot.client import default_intents

    assert default_intents().guild_messages is True
    assert default_intents().message_content is False  # never message content
