"""Getting results to users despite Discord: throttling, token expiry, deleted messages,
restarts, and the ✉️ reaction."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.progress import ProgressEditor, Target, Update
from engine.jobs.model import JobState
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import BOT_ID, CHANNEL_ID, OTHER_USER_ID, USER_ID, Call, http_error, message_with
from tests.test_bot import GRID_BUTTONS, final_edit, ids, imagine


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir)
    yield running
    await running.close()


def edits(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.method == "PATCH"]


# ----- throttling ----------------------------------------------------------------------------------------


async def _deferred(bot: Bot) -> object:
    interaction = bot.h.interaction(bot.h.command_payload("imagine", {"prompt": "x"}))
    await interaction.response.defer(thinking=True)
    return interaction


async def test_updates_during_an_edit_are_dropped_not_queued(bot: Bot) -> None:
    interaction = await _deferred(bot)
    editor = ProgressEditor(bot.h.client, "job1", Target.original(interaction, bot.clock()), interval=0.0,  # type: ignore[arg-type]
                            clock=bot.clock)
    bot.http.delay = 0.05  # every request takes a while: later updates arrive while one is in flight
    editor.push(Update("0%"))
    await bot.until(lambda: len(edits(bot.http.calls)) == 1)
    for percent in range(1, 11):
        editor.push(Update(f"{percent * 10 - 5}%"))
    editor.push(Update("done", final=True))
    editor.push(Update("too late"))  # nothing after the final
    await editor.wait()
    assert [c.content for c in edits(bot.http.calls)] == ["0%", "done"]
    assert editor.stats.dropped == 10


async def test_at_most_one_edit_per_interval_but_the_final_goes_at_once(bot: Bot) -> None:
    interaction = await _deferred(bot)
    editor = ProgressEditor(bot.h.client, "job1", Target.original(interaction, bot.clock()), interval=3600.0,  # type: ignore[arg-type]
                            clock=bot.clock)
    editor.push(Update("10%"))
    await bot.until(lambda: len(edits(bot.http.calls)) == 1)
    editor.push(Update("20%"))
    editor.push(Update("30%"))
    await asyncio.sleep(0.05)
    assert len(edits(bot.http.calls)) == 1  # the interval has not passed: nothing sent, nothing queued
    editor.push(Update("done", final=True))
    await asyncio.wait_for(editor.wait(), 5)  # not after the hour-long interval
    assert [c.content for c in edits(bot.http.calls)] == ["10%", "done"]


async def test_rate_limited_edit_is_dropped_and_the_final_still_arrives(bot: Bot,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    interaction = await _deferred(bot)
    editor = ProgressEditor(bot.h.client, "job1", Target.original(interaction, bot.clock()), interval=0.0,  # type: ignore[arg-type]
                            clock=bot.clock)
    bot.http.fail("PATCH", "@original", http_error(429, 0, "You are being rate limited."))
    with caplog.at_level(logging.WARNING, logger="bot.progress"):
        editor.push(Update("50%"))
        await editor.wait()
        editor.push(Update("done", final=True))
        await editor.wait()
    assert [c.content for c in edits(bot.http.calls)] == ["50%", "done"]
    assert bot.http.calls[-1].response != "error" and not editor.broken
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1


# ----- the 15-minute token --------------------------------------------------------------------------


async def test_result_after_token_expiry_is_a_reply_in_the_channel(bot: Bot) -> None:
    bot.executor.gate.clear()
    interaction = await bot.h.run_command("imagine", {"prompt": "a slow lighthouse"})
    job = await bot.only_job()
    await bot.until(lambda: any("%" in (c.content or "") for c in bot.http.for_token(interaction.token)))
    original_id = int(bot.http.message(interaction.token)["id"])  # type: ignore[index]
    webhook_calls = len(bot.http.for_token(interaction.token))
    bot.clock.advance(16 * 60)
    bot.executor.gate.set()
    await bot.finished(job.id)
    assert len(bot.http.for_token(interaction.token)) == webhook_calls  # the dead token is not used again
    posts = bot.http.find("POST", "/channels/{channel_id}/messages", via="http")
    (reply,) = posts
    assert reply.params["channel_id"] == CHANNEL_ID
    assert reply.json["message_reference"]["message_id"] == original_id  # type: ignore[index]
    assert reply.custom_ids == ids(GRID_BUTTONS, job.id) and reply.files
    assert f"<@{USER_ID}>" in reply.content
    stored = await bot.service.storage.jobs.get(job.id)
    assert stored.message_id == int(reply.response["id"])  # ✉️, links and /show follow the new message


async def test_token_rejected_early_falls_back_to_the_channel(bot: Bot) -> None:
    bot.http.fail("PATCH", "@original", lambda: http_error(404, 50027, "Invalid Webhook Token"), times=None)
    await bot.h.run_command("imagine", {"prompt": "a lighthouse"})
    job = await bot.only_job()
    await bot.finished(job.id)
    (reply,) = bot.http.find("POST", "/channels/{channel_id}/messages", via="http")
    assert reply.custom_ids == ids(GRID_BUTTONS, job.id)


# ----- vanished messages and channels --------------------------------------------------------------


async def test_deleted_message_job_completes_logged_once_and_show_reposts(bot: Bot,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    bot.http.fail("PATCH", "@original", lambda: http_error(404, 10008, "Unknown Message"), times=None)
    with caplog.at_level(logging.WARNING, logger="bot.progress"):
        await bot.h.run_command("imagine", {"prompt": "a lighthouse"})
        job = await bot.only_job()
        stored = await bot.finished(job.id)
    assert stored.state is JobState.DONE
    assert len(await bot.service.storage.images.for_job(job.id)) == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and job.id in warnings[0].getMessage()
    assert bot.http.find("POST", "/channels/{channel_id}/messages") == []  # no surprise repost
    bot.http.failures.clear()
    interaction = await bot.h.run_command("show", {"job": job.id})
    assert final_edit(bot.http.for_token(interaction.token)).custom_ids == ids(GRID_BUTTONS, job.id)


async def test_channel_gone_after_expiry_is_logged_once(bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    bot.executor.gate.clear()
    await bot.h.run_command("imagine", {"prompt": "a lighthouse"})
    job = await bot.only_job()
    await bot.h.settle()
    bot.clock.advance(20 * 60)
    bot.http.fail("PATCH", "/channels/", lambda: http_error(403, 50001, "Missing Access"), times=None)
    bot.http.fail("POST", "/channels/", lambda: http_error(404, 10003, "Unknown Channel"), times=None)
    with caplog.at_level(logging.WARNING, logger="bot.progress"):
        bot.executor.gate.set()
        stored = await bot.finished(job.id)
    assert stored.state is JobState.DONE
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


# ----- restarts -------------------------------------------------------------------------------------------


async def test_button_on_a_message_from_before_a_restart(tiny_models: dict[str, Path], data_dir: Path) -> None:
    first = await start_bot(tiny_models["sd15"], data_dir)
    token, job_id = await imagine(first, "a lighthouse before the restart")
    grid = message_with(final_edit(first.http.for_token(token)))
    await first.close()

    second = await start_bot(tiny_models["sd15"], data_dir)  # a new process: new client, queue and view store
    try:
        assert second.h.client is not first.h.client
        pressed = await second.h.press(f"tessera:upscale:{job_id}:2", grid)
        upscale = (await second.jobs())[0]
        assert upscale.parent_id == job_id and upscale.parent_index == 2
        await second.finished(upscale.id)
        assert "Image #3" in final_edit(second.http.for_token(pressed)).content
    finally:
        await second.close()


async def test_job_resumed_after_a_restart_replies_to_its_message(tiny_models: dict[str, Path], data_dir: Path) -> None:
    first = await start_bot(tiny_models["sd15"], data_dir)
    first.executor.gate.clear()
    interaction = await first.h.run_command("imagine", {"prompt": "a lighthouse interrupted"})
    job = await first.only_job()
    await first.until(lambda: any("%" in (c.content or "") for c in first.http.for_token(interaction.token)))
    original_id = int(first.http.message(interaction.token)["id"])  # type: ignore[index]
    await first.h.settle()
    await first.service.close()  # the process stops with the job on the GPU
    await first.h.close()
    assert (await _state(data_dir, job.id)) is JobState.QUEUED

    second = await start_bot(tiny_models["sd15"], data_dir)
    try:
        await second.finished(job.id)
        (reply,) = second.http.find("POST", "/channels/{channel_id}/messages")
        assert reply.json["message_reference"]["message_id"] == original_id  # type: ignore[index]
        assert reply.custom_ids == ids(GRID_BUTTONS, job.id) and reply.files
    finally:
        await second.close()


async def _state(data_dir: Path, job_id: str) -> JobState:
    from storage.api import Storage

    storage = await Storage.open(data_dir)
    try:
        return (await storage.jobs.require(job_id)).state
    finally:
        await storage.close()


# ----- ✉️ ------------------------------------------------------------------------------------------------------


async def test_envelope_reaction_dms_the_seed(bot: Bot) -> None:
    token, job_id = await imagine(bot, "a lighthouse --seed 4242")
    message_id = int(message_with(final_edit(bot.http.for_token(token)))["id"])
    bot.http.clear()
    await bot.h.react(message_id, "✉️", user_id=OTHER_USER_ID)
    opened, sent = bot.http.calls
    assert opened.path == "/users/@me/channels" and opened.json == {"recipient_id": OTHER_USER_ID}
    assert sent.params["channel_id"] == int(opened.response["id"])
    assert "4242" in sent.content and job_id in sent.content

    bot.http.clear()
    await bot.h.react(message_id, "👍")
    await bot.h.react(message_id, "✉️", user_id=BOT_ID)
    await bot.h.react(123456789012345678, "✉️")  # not a result
    assert bot.http.calls == []


async def test_envelope_reaction_with_closed_dms_says_so(bot: Bot) -> None:
    token, job_id = await imagine(bot, "a lighthouse")
    message_id = int(message_with(final_edit(bot.http.for_token(token)))["id"])
    bot.http.clear()
    bot.http.fail("POST", "/channels/{channel_id}/messages",
                  lambda: http_error(403, 50007, "Cannot send messages to this user"))
    await bot.h.react(message_id, "✉️")
    notice = bot.http.calls[-1]
    assert notice.method == "POST" and notice.params["channel_id"] == CHANNEL_ID
    assert f"<@{USER_ID}>" in notice.content and f"/seed job:{job_id}" in notice.content


# ----- starting ------------------------------------------------------------------------------------------------


async def test_commands_answer_while_the_model_warms_up(tiny_models: dict[str, Path], data_dir: Path) -> None:
    from tests.bot_helpers import StepExecutor

    executor = StepExecutor()
    executor.loaded.clear()  # the model is still loading
    bot = await start_bot(tiny_models["sd15"], data_dir, executor=executor)
    try:
        interaction = await bot.h.run_command("imagine", {"prompt": "an early bird"})
        calls = bot.http.for_token(interaction.token)
        assert calls[0].callback_type == 5
        assert "warming up, your job is queued" in calls[1].content
        executor.loaded.set()
        job = await bot.only_job()
        await bot.finished(job.id)
        assert final_edit(bot.http.for_token(interaction.token)).custom_ids == ids(GRID_BUTTONS, job.id)
    finally:
        await bot.close()


async def test_setup_hook_syncs_to_the_dev_guild_or_globally(bot: Bot) -> None:
    from bot.client import TesseraClient
    from tests.discord_harness import APP_ID, GUILD_ID, Harness

    for dev_guild, path in ((GUILD_ID, "/applications/{application_id}/guilds/{guild_id}/commands"),
                            (None, "/applications/{application_id}/commands")):
        client = TesseraClient(bot.service, dev_guild_id=dev_guild)
        harness = await Harness.create(client)
        try:
            await client.setup_hook()
            (sync,) = harness.http.find("PUT", "/commands")
            assert sync.path == path and sync.params["application_id"] == APP_ID
            names = {c["name"] for c in sync.json}  # type: ignore[union-attr]
            assert {"imagine", "upscale", "variation", "seed", "settings", "admin"} <= names
            assert client._connection._view_store._dynamic_items  # the buttons are registered
        finally:
            await harness.close()
