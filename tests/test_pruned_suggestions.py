"""A /describe or /shorten button whose suggestions `tessera prune` removed: the presser is
told, privately, that they are gone and which command to run again; nothing is queued.

The suggestions are kept through the service's own entry points (`keep_picture` and
`keep_shortened`, which the commands call after their model has answered: the models
themselves are test_bot_pictures' subject, and loading them here would take seconds); the
buttons are pressed through raw Interaction payloads; the prune is the CLI's own function on a
second `Storage` of the same DATA_DIR, as `tessera prune` next to a running bot opens it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from engine.diffusion.shorten import Shortening
from storage import Storage
from storage.maintenance import prune
from tests.test_bot_pictures import last_said, message_carrying, png, start

SHORTENED = Shortening(words=(), prompts=("red lighthouse cliff dusk", "lighthouse dusk"))


async def test_buttons_of_pruned_suggestions_say_they_are_gone_and_name_the_command(
        tiny_models: dict[str, Path], data_dir: Path) -> None:
    bot = await start(tiny_models, data_dir)
    try:
        digest = await bot.service.keep_picture(png((96, 64)))
        await bot.service.storage.suggestions.save(f"d:{digest}:0", ["a fox", "a red fox", "a fox, photo", "fox"])
        key = await bot.service.keep_shortened(SHORTENED)
        use, run = f"tessera:describe:use:{digest}:0:1", f"tessera:shorten:run:{key}:1"
        for custom_id in (use, run):  # kept: the button opens its form
            token = await bot.h.press(custom_id, message_carrying(custom_id))
            assert [call.callback_type for call in bot.http.for_token(token)] == [9]

        await bot.service.storage.db.write("UPDATE suggested_prompts SET created_at = created_at - 40 * 86400")
        beside = await Storage.open(data_dir)  # what `tessera prune --older-than 30d` does
        try:
            report = await prune(beside, timedelta(days=30))
        finally:
            await beside.close()
        assert report.suggestions == 2

        for custom_id, command in ((use, "`/describe`"), (run, "`/shorten`")):
            token = await bot.h.press(custom_id, message_carrying(custom_id))
            said = last_said(bot, token)
            content = said.content or ""
            assert said.ephemeral and "no longer kept" in content and f"run {command} again" in content, content
            assert all(call.callback_type != 9 for call in bot.http.for_token(token))  # no form opened
        assert await bot.jobs() == []
    finally:
        await bot.close()
