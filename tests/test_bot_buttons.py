"""Buttons on messages posted before the features owned their buttons keep working.

Until issue 15's phase 2 one table in `bot/views.py` built every result message's buttons and
routed every press. Now each feature registers its own `DynamicItem`s and their places on
result messages (`bot.buttons.ButtonRegistry`). Discord keeps the old messages as they were, so
the layout and every custom_id must stay byte for byte, and a press on an old message must reach
the feature that owns its action, and only that one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.client import TesseraClient
from engine.jobs.model import JobKind
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import CHANNEL_ID
from tests.test_bot import imagine

JOB = "{job}"


def _button(custom_id: str, label: str | None = None, emoji: str | None = None, style: int = 2) -> dict[str, Any]:
    button: dict[str, Any] = {"custom_id": custom_id, "disabled": False, "style": style, "type": 2}
    if label is not None:
        button["label"] = label
    if emoji is not None:
        button["emoji"] = {"id": None, "name": emoji}
    return button


def _row(*buttons: dict[str, Any]) -> dict[str, Any]:
    return {"components": list(buttons), "type": 1}


# What the pre-phase-2 bot (bot/views.py, bot/gallery_views.py) sent for each kind of message,
# read from its `to_components()`; `{job}` stands for the job id (or key, or gallery entry id).
OLD_GRID = [
    _row(*(_button(f"tessera:upscale:{JOB}:{i}", f"U{i + 1}") for i in range(4)),
         _button(f"tessera:reroll:{JOB}:0", emoji="🔄")),
    _row(*(_button(f"tessera:vary:{JOB}:{i}", f"V{i + 1}") for i in range(4))),
]
OLD_UPSCALE = [
    _row(_button(f"tessera:vsubtle:{JOB}:0", "Vary (Subtle)", "🪄"), _button(f"tessera:vstrong:{JOB}:0", "Vary (Strong)", "🪄"),
         _button(f"tessera:upmore:{JOB}:0", "Upscale ×2", "🔍")),
    _row(_button(f"tessera:share:{JOB}:0", "Share", "❤️"), _button(f"tessera:delete:{JOB}:0", "Delete", "🗑️", 4)),
]
OLD_CONFIRM = [_row(_button(f"tessera:confirm:{JOB}:6", "Run all 6 jobs", style=3),
                    _button(f"tessera:dismiss:{JOB}:0", "Cancel"))]
OLD_GALLERY = [_row(_button(f"tessera-g:remix:{JOB}", "Remix", "🔁", 1), _button(f"tessera-g:same:{JOB}", "Same prompt", "🎲"),
                    _button(f"tessera-g:prompt:{JOB}", "Prompt", "📋"), _button(f"tessera-g:like:{JOB}", "3", "👍", 3),
                    _button(f"tessera-g:delete:{JOB}", None, "🗑️", 4))]


def with_ref(components: list[dict[str, Any]], ref: str) -> list[dict[str, Any]]:
    return json.loads(json.dumps(components).replace(JOB, ref))


def old_message(components: list[dict[str, Any]], message_id: int = 1) -> dict[str, Any]:
    """A message as Discord returns it for a press: components as the old bot sent them."""
    return {"id": str(message_id), "channel_id": str(CHANNEL_ID),
            "author": {"id": "2", "username": "x", "discriminator": "0", "avatar": None},
            "content": "", "timestamp": "2024-01-01T00:00:00+00:00", "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
            "pinned": False, "type": 0, "components": copy.deepcopy(components)}


def test_result_messages_carry_the_same_buttons_as_before() -> None:
    client = TesseraClient(None, sync_commands=False)  # what `tessera commands` builds: no service needed
    buttons = client.buttons
    assert buttons.result_view("grid", "k3m9qra").to_components() == with_ref(OLD_GRID, "k3m9qra")
    assert buttons.result_view("variation", "k3m9qra").to_components() == with_ref(OLD_GRID, "k3m9qra")
    upscale = buttons.result_view("upscale", "k3m9qra").to_components()
    assert upscale[:2] == with_ref(OLD_UPSCALE, "k3m9qra")  # issue 16 added rows below, nothing above
    assert buttons.view("confirm", "KEY", count=6).to_components() == with_ref(OLD_CONFIRM, "KEY")
    assert buttons.view("gallery", "42", count=3).to_components() == with_ref(OLD_GALLERY, "42")


async def test_every_old_custom_id_is_claimed_by_exactly_one_item() -> None:
    client = TesseraClient(None, sync_commands=False)
    await client.prepare()  # adds the fallback for actions no feature claims
    patterns = list(client._connection._view_store._dynamic_items)  # what discord.py dispatches on
    old_ids = [button["custom_id"] for layout in (OLD_GRID, OLD_UPSCALE, OLD_CONFIRM, OLD_GALLERY)
               for row in with_ref(layout, "7") for button in row["components"]]
    for custom_id in [*old_ids, "tessera:teleport:abc:0", "tessera:set:quality", "tessera-g:pg:t:0:a"]:
        matching = [p.pattern for p in patterns if p.fullmatch(custom_id)]
        assert len(matching) == 1, (custom_id, matching)


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir)
    yield running
    await running.close()


async def test_u2_and_v4_on_a_grid_posted_by_the_old_bot_still_work(bot: Bot) -> None:
    _token, job_id = await imagine(bot, "a lighthouse at dusk")
    grid = old_message(with_ref(OLD_GRID, job_id), message_id=990001)

    await bot.h.press(f"tessera:upscale:{job_id}:1", grid)
    upscale = (await bot.jobs())[0]
    assert upscale.kind is JobKind.UPSCALE and upscale.parent_id == job_id and upscale.parent_index == 1
    assert upscale.options["scale"] == 4
    await bot.finished(upscale.id)

    await bot.h.press(f"tessera:vary:{job_id}:3", grid)
    variation = (await bot.jobs())[0]
    assert variation.kind is JobKind.VARIATION and variation.parent_index == 3
    assert variation.options["strength"] == "subtle"
    await bot.finished(variation.id)

    upscaled = old_message(with_ref(OLD_UPSCALE, upscale.id), message_id=990002)
    await bot.h.press(f"tessera:upmore:{upscale.id}:0", upscaled)
    chained = (await bot.jobs())[0]
    assert chained.kind is JobKind.UPSCALE and chained.parent_id == upscale.id and chained.options["scale"] == 2
    await bot.finished(chained.id)
