"""Rough edges a real Discord showed (issue 14): every press gets an answer worded for where it
is read, results posted elsewhere are pointed to, and failures at start-up still reach the
message. All through raw gateway payloads (`tests/discord_harness.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest

from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import CHANNEL_ID, GUILD_ID, USER_ID, Call


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir)
    yield running
    await running.close()


def message(*custom_ids: str, message_id: int = 1, component_type: int = 2) -> dict:
    """A message payload (not Tessera's) carrying components with these custom ids."""
    if component_type == 2:
        items = [{"type": 2, "style": 2, "label": "x", "custom_id": c} for c in custom_ids]
    else:
        items = [{"type": component_type, "custom_id": c, "options": [{"label": "a", "value": "a"}]}
                 for c in custom_ids]
    return {"id": str(message_id), "channel_id": str(CHANNEL_ID),
            "author": {"id": "2", "username": "x", "discriminator": "0", "avatar": None},
            "content": "", "timestamp": "2024-01-01T00:00:00+00:00", "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
            "pinned": False, "type": 0, "components": [{"type": 1, "components": items}]}


def answers(bot: Bot, token: str) -> list[Call]:
    """The interaction callbacks (first answers) sent for one interaction."""
    return [c for c in bot.http.for_token(token) if c.is_callback]


def submit_form(bot: Bot, custom_id: str) -> str:
    payload = bot.h._base(user_id=USER_ID, permissions=0, channel_id=CHANNEL_ID, guild_id=GUILD_ID)
    payload.update(type=5, data={"custom_id": custom_id, "components": [
        {"type": 18, "id": 1, "component": {"type": 4, "id": 2, "custom_id": "field", "value": "hello"}}]})
    bot.h.client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
    return str(payload["token"])


# ----- 8: every component press and form submission gets an answer -----------------------------------


@pytest.mark.parametrize("custom_id", ["otherbot:vote:12", "tessera:upscale:k3m9qra:1234", "tessera:upscale",
                                       "tessera-g:remix:notanumber", "x" * 100])
async def test_a_button_tessera_does_not_know_is_answered_privately(bot: Bot, custom_id: str) -> None:
    token = await bot.h.press(custom_id, message(custom_id))
    (answer,) = answers(bot, token)
    assert answer.callback_type == 4 and answer.ephemeral
    assert "button is from an older version of Tessera or from another app" in answer.content
    assert "Run the command again" in answer.content


async def test_an_unknown_menu_and_an_unknown_form_are_answered(bot: Bot) -> None:
    token = await bot.h.press("otherbot:pick", message("otherbot:pick", component_type=3), component_type=3,
                              values=["a"])
    (answer,) = answers(bot, token)
    assert answer.ephemeral and "This menu is from an older version" in answer.content

    token = submit_form(bot, "otherbot:form:1")
    await bot.h.settle()
    (answer,) = answers(bot, token)
    assert answer.callback_type == 4 and answer.ephemeral and "This form is from an older version" in answer.content


async def test_our_buttons_and_live_views_are_answered_once_by_their_own_handler(bot: Bot) -> None:
    stale = await bot.h.press("tessera:teleport:abc:0", message("tessera:teleport:abc:0"))
    (answer,) = [c for c in bot.http.for_token(stale) if c.content]
    assert "/show" in answer.content and "older version" not in answer.content  # JobButton answered, alone

    pressed: list[int] = []

    class Counter(discord.ui.View):  # a view held in memory, as a paginator or a confirmation is
        @discord.ui.button(label="+1", custom_id="counter:plus")
        async def plus(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
            pressed.append(interaction.user.id)
            await interaction.response.send_message("counted", ephemeral=True)

    bot.h.client._connection.store_view(Counter(timeout=None), 77)
    token = await bot.h.press("counter:plus", message("counter:plus", message_id=77))
    assert pressed == [USER_ID]
    assert [c.content for c in answers(bot, token)] == ["counted"]


async def test_a_claimed_press_nobody_answers_is_answered_after_the_grace(bot: Bot) -> None:
    bot.h.client.unanswered_grace = 0.1  # type: ignore[attr-defined]

    class Refusing(discord.ui.View):  # its check refuses silently: discord.py then answers nothing
        async def interaction_check(self, interaction: discord.Interaction) -> bool:
            return False

        @discord.ui.button(label="no", custom_id="refusing:no")
        async def no(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
            raise AssertionError("not reached")

    bot.h.client._connection.store_view(Refusing(timeout=None), 78)
    token = await bot.h.press("refusing:no", message("refusing:no", message_id=78))
    (answer,) = answers(bot, token)
    assert answer.ephemeral and "older version" in answer.content


# ----- 9: the unknown-job message is worded for a button ---------------------------------------------


@pytest.mark.parametrize("action", ["upscale", "vary", "reroll", "vsubtle", "upmore", "share"])
async def test_a_button_of_a_deleted_job_says_so_without_cli_commands_or_links(bot: Bot, action: str) -> None:
    custom_id = f"tessera:{action}:gone123:0"
    token = await bot.h.press(custom_id, message(custom_id))
    (told,) = [c for c in bot.http.for_token(token) if c.content]
    assert told.ephemeral
    assert "`gone123`" in told.content and "no longer exists" in told.content and "/imagine" in told.content
    assert "/jobs" not in told.content and "link" not in told.content
    assert await bot.jobs() == []


# ----- 10: a result posted as a new message is pointed to from the old one ---------------------------


async def _state(data_dir: Path, job_id: str) -> str:
    from storage.api import Storage

    storage = await Storage.open(data_dir)
    try:
        return str((await storage.jobs.require(job_id)).state)
    finally:
        await storage.close()


async def test_after_a_restart_the_old_progress_message_points_to_the_result(tiny_models: dict[str, Path],
                                                                             data_dir: Path) -> None:
    first = await start_bot(tiny_models["sd15"], data_dir)
    first.executor.gate.clear()
    try:
        interaction = await first.h.run_command("imagine", {"prompt": "a lighthouse interrupted"})
        (job,) = await first.jobs()
        await first.until(lambda: any("%" in (c.content or "") for c in first.http.for_token(interaction.token)))
        original_id = int(first.http.message(interaction.token)["id"])  # type: ignore[index]
        await first.h.settle()
    except BaseException:
        await first.close()  # lets the held job go, or the process never exits
        raise
    await first.service.close()  # the process stops with the job on the GPU
    await first.h.close()
    assert await _state(data_dir, job.id) == "queued"

    second = await start_bot(tiny_models["sd15"], data_dir)
    try:
        await second.finished(job.id)
        (reply,) = second.http.find("POST", "/channels/{channel_id}/messages")
        assert reply.json["message_reference"]["message_id"] == original_id  # type: ignore[index]
        edits = [c for c in second.http.find("PATCH", "/channels/{channel_id}/messages/{message_id}")
                 if c.params["message_id"] == original_id]
        pointer = edits[-1]
        link = f"https://discord.com/channels/{GUILD_ID}/{CHANNEL_ID}/{reply.response['id']}"
        assert "finished below ↓" in pointer.content and link in pointer.content
        assert "a lighthouse interrupted" in pointer.content and "%" not in pointer.content
        assert pointer.json["attachments"] == [] and pointer.json["components"] == []  # type: ignore[index]
    finally:
        await second.close()


async def test_after_the_token_expires_the_old_message_points_to_the_reply(bot: Bot) -> None:
    bot.executor.gate.clear()
    interaction = await bot.h.run_command("imagine", {"prompt": "a slow lighthouse"})
    (job,) = await bot.jobs()
    await bot.until(lambda: any("%" in (c.content or "") for c in bot.http.for_token(interaction.token)))
    original_id = int(bot.http.message(interaction.token)["id"])  # type: ignore[index]
    bot.clock.advance(16 * 60)
    bot.executor.gate.set()
    await bot.finished(job.id)
    (reply,) = bot.http.find("POST", "/channels/{channel_id}/messages", via="http")
    pointer = bot.http.calls[-1]
    assert pointer.method == "PATCH" and pointer.params["message_id"] == original_id
    assert f"/{CHANNEL_ID}/{reply.response['id']}" in pointer.content and "finished below" in pointer.content
    assert pointer.json["attachments"] == []  # type: ignore[index]


# ----- 11: a job given up on while resuming at start still shows its failure -------------------------


async def test_a_job_given_up_on_at_start_shows_the_failure_in_its_message(tiny_models: dict[str, Path],
                                                                         data_dir: Path) -> None:
    from engine.jobs.model import JobState
    from storage.api import Storage

    first = await start_bot(tiny_models["sd15"], data_dir)
    first.executor.gate.clear()
    try:
        interaction = await first.h.run_command("imagine", {"prompt": "a lighthouse that crashes the bot"})
        (job,) = await first.jobs()
        await first.until(lambda: any("%" in (c.content or "") for c in first.http.for_token(interaction.token)))
        original_id = int(first.http.message(interaction.token)["id"])  # type: ignore[index]
        await first.h.settle()
    except BaseException:
        await first.close()  # lets the held job go, or the process never exits
        raise
    await first.service.close()  # the process stops with the job on the GPU (re-queued)...
    await first.h.close()
    storage = await Storage.open(data_dir)  # ...and then dies on it, in its last attempt
    try:
        await storage.jobs.transition(job.id, JobState.RUNNING)
    finally:
        await storage.close()

    # The service resumes (and gives up on) stored jobs before the Discord client exists.
    second = await start_bot(tiny_models["sd15"], data_dir, job_max_attempts=2)
    try:
        stored = await second.finished(job.id)
        assert stored.state is JobState.FAILED
        (reply,) = second.http.find("POST", "/channels/{channel_id}/messages")
        assert reply.json["message_reference"]["message_id"] == original_id  # type: ignore[index]
        assert "failed" in reply.content and "Gave up on this job after 2 attempts" in reply.content
        assert second.executor.ran == []
    finally:
        await second.close()
