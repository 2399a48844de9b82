"""Who may act on a job or share: every action, every role, through real Interactions.

Job ids are public (every result shows one), and Discord reports Manage Server only for the
server an interaction comes from. So each action below is tried by: the job's owner (in its
server and from DMs), a manager of the job's own server, a manager of *another* server, an
ordinary member of the job's server, and a stranger in DMs; each test then checks storage,
the queue or the HTTP calls to see whether the action really happened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.authorization import Act, Actor, Subject, decide
from engine.jobs.model import Job, JobKind, JobState
from storage.models import GuildSettings, UserSettings
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import (
    ADMIN_ID,
    GUILD_ID,
    MANAGE_GUILD,
    OTHER_CHANNEL_ID,
    OTHER_USER_ID,
    USER_ID,
    Call,
    message_with,
)

OTHER_GUILD_ID = GUILD_ID + 1_000  # a server the bot is in, where the job was not made
OTHER_GUILD_CHANNEL = 900_000_000_000_001_020
OTHER_GUILD_GALLERY = 900_000_000_000_001_021
DM_CHANNEL = 900_000_000_000_002_020
GALLERY = OTHER_CHANNEL_ID  # the job's server's gallery channel
BOT_WIDE_GALLERY = 900_000_000_000_003_020  # GALLERY_CHANNEL_ID, used from DMs
STRANGER_ID = OTHER_USER_ID + 50


@dataclass(frozen=True)
class Role:
    name: str
    where: dict[str, Any]  # user_id, guild_id, channel_id, permissions for the harness


ROLES = {
    "owner": Role("owner", {"user_id": USER_ID}),
    "owner in DMs": Role("owner in DMs", {"user_id": USER_ID, "guild_id": None, "channel_id": DM_CHANNEL}),
    "manager here": Role("manager here", {"user_id": ADMIN_ID, "permissions": MANAGE_GUILD}),
    "manager elsewhere": Role("manager elsewhere", {"user_id": STRANGER_ID, "permissions": MANAGE_GUILD,
                                                    "guild_id": OTHER_GUILD_ID, "channel_id": OTHER_GUILD_CHANNEL}),
    "member": Role("member", {"user_id": OTHER_USER_ID}),
    "stranger in DMs": Role("stranger in DMs", {"user_id": STRANGER_ID, "guild_id": None, "channel_id": DM_CHANNEL}),
}
MANAGED = {"owner", "owner in DMs", "manager here"}  # cancel, delete, remove share
SEEN = {"owner", "owner in DMs", "manager here", "member"}  # show, seed, share (public results)
PRIVATE = {"owner", "owner in DMs"}  # show, seed, share of private results


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir, gallery_channel_id=BOT_WIDE_GALLERY)
    storage = running.service.storage
    await storage.settings.save_guild(GuildSettings(GUILD_ID, gallery_channel_id=GALLERY))
    await storage.settings.save_guild(GuildSettings(OTHER_GUILD_ID, gallery_channel_id=OTHER_GUILD_GALLERY))
    yield running
    await running.close()


def final_edit(calls: list[Call]) -> Call:
    with_files = [c for c in calls if c.files and c.method == "PATCH"]
    assert with_files, calls
    return with_files[-1]


def last_words(bot: Bot, token: str) -> str:
    said = [c.content for c in bot.http.for_token(token) if c.content]
    assert said, bot.http.for_token(token)
    return said[-1]


async def done_grid(bot: Bot, prompt: str = "a lighthouse --seed 4242") -> tuple[Job, dict]:
    """A finished /imagine of USER_ID in GUILD_ID, and its result message."""
    interaction = await bot.h.run_command("imagine", {"prompt": prompt})
    job = (await bot.jobs(USER_ID))[0]
    await bot.finished(job.id)
    return job, message_with(final_edit(bot.http.for_token(interaction.token)))


async def done_upscale(bot: Bot) -> tuple[Job, dict]:
    job, grid = await done_grid(bot)
    token = await bot.h.press(f"tessera:upscale:{job.id}:0", grid)
    upscale = (await bot.jobs(USER_ID))[0]
    assert upscale.kind is JobKind.UPSCALE
    await bot.finished(upscale.id)
    return upscale, message_with(final_edit(bot.http.for_token(token)))


async def make_private(bot: Bot) -> None:
    await bot.service.storage.settings.save_user(UserSettings(USER_ID, private=True))


# ----- the rule itself -------------------------------------------------------------------------------------


@pytest.mark.parametrize("act", list(Act))
@pytest.mark.parametrize("private", [False, True])
def test_the_rule_for_every_action_and_role(act: Act, private: bool) -> None:
    subject = Subject(owner_id=1, guild_id=10, private=private)
    actors = {"owner": Actor(1, 10), "owner in DMs": Actor(1), "owner elsewhere": Actor(1, 20, True),
              "manager here": Actor(2, 10, True), "manager elsewhere": Actor(2, 20, True),
              "member": Actor(3, 10), "stranger in DMs": Actor(3)}
    allowed = {name for name, actor in actors.items() if decide(actor, act, subject) is None}
    owners = {"owner", "owner in DMs", "owner elsewhere"}
    if act in (Act.CANCEL, Act.DELETE, Act.REMOVE_SHARE):
        assert allowed == owners | {"manager here"}
    elif private and act is not Act.USE:
        assert allowed == set()  # `private` means someone *other than the actor* keeps it private
    else:
        assert allowed == owners | {"manager here", "member"}
    # a job made in DMs (or by the CLI) is its owner's alone: no "same server" among DMs
    dm_job = Subject(owner_id=1, guild_id=None)
    assert decide(Actor(3), act, dm_job) is not None and decide(Actor(1), act, dm_job) is None
    with pytest.raises(ValueError):
        Actor(2, None, True)


# ----- each action through Discord --------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(ROLES))
async def test_cancel(bot: Bot, role: str) -> None:
    bot.executor.gate.clear()  # a job of someone else holds the GPU, so ours waits
    await bot.h.run_command("imagine", {"prompt": "a blocker"}, user_id=ADMIN_ID + 7)
    await bot.h.run_command("imagine", {"prompt": "a waiting lighthouse"})
    job = await bot.only_job(USER_ID)
    interaction = await bot.h.run_command("cancel", {"job": job.id}, **ROLES[role].where)
    stored = await bot.service.storage.jobs.require(job.id)
    if role in MANAGED:
        assert stored.state is JobState.CANCELLED and bot.service.queue.position(job.id) is None
        assert f"Cancelled job `{job.id}`" in last_words(bot, interaction.token)
    else:
        assert stored.state is JobState.QUEUED and bot.service.queue.position(job.id) is not None
        assert "not yours to cancel" in last_words(bot, interaction.token)
    bot.executor.gate.set()


@pytest.mark.parametrize("role", list(ROLES))
async def test_delete_an_upscale_message(bot: Bot, role: str) -> None:
    upscale, message = await done_upscale(bot)
    token = await bot.h.press(f"tessera:delete:{upscale.id}:0", message, **ROLES[role].where)
    deleted = [c for c in bot.http.for_token(token) if c.method == "DELETE"]
    if role in MANAGED:
        assert len(deleted) == 1
    else:
        assert deleted == [] and "Only the person who made this image" in last_words(bot, token)


@pytest.mark.parametrize("role", list(ROLES))
async def test_remove_a_share(bot: Bot, role: str) -> None:
    upscale, message = await done_upscale(bot)
    await bot.h.press(f"tessera:share:{upscale.id}:0", message)
    entry = await bot.service.storage.gallery.find_share(upscale.id, 0)
    assert entry is not None and entry.guild_id == GUILD_ID
    where = dict(ROLES[role].where)
    if where.get("guild_id", GUILD_ID) == GUILD_ID:
        where["channel_id"] = GALLERY
    (post,) = [c.response for c in bot.http.find("POST", "/channels/{channel_id}/messages", via="http")
               if c.params.get("channel_id") == GALLERY]
    token = await bot.h.press(f"tessera-g:delete:{entry.id}", post, **where)
    still = await bot.service.storage.gallery.find_share(upscale.id, 0)
    if role in MANAGED:
        assert still is None and "Removed from the gallery" in last_words(bot, token)
    else:
        assert still is not None and "Only the person who made this image" in last_words(bot, token)


@pytest.mark.parametrize("private", [False, True])
@pytest.mark.parametrize("role", list(ROLES))
async def test_show(bot: Bot, role: str, private: bool) -> None:
    job, _ = await done_grid(bot)
    if private:
        await make_private(bot)
    interaction = await bot.h.run_command("show", {"job": job.id}, **ROLES[role].where)
    posted = [c for c in bot.http.for_token(interaction.token) if c.files]
    if role in (PRIVATE if private else SEEN):
        assert final_edit(posted).custom_ids[0] == f"tessera:upscale:{job.id}:0"
    else:
        assert posted == []
        assert ("private" if private else "not yours to show") in last_words(bot, interaction.token)


@pytest.mark.parametrize("private", [False, True])
@pytest.mark.parametrize("role", list(ROLES))
async def test_seed(bot: Bot, role: str, private: bool) -> None:
    job, _ = await done_grid(bot)
    if private:
        await make_private(bot)
    interaction = await bot.h.run_command("seed", {"job": job.id}, **ROLES[role].where)
    said = last_words(bot, interaction.token)
    if role in (PRIVATE if private else SEEN):
        assert "4242" in said and job.id in said
    else:
        assert "4242" not in said and ("private" if private else "not yours") in said


@pytest.mark.parametrize("private", [False, True])
@pytest.mark.parametrize("role", list(ROLES))
async def test_envelope_reaction_seed(bot: Bot, role: str, private: bool) -> None:
    job, message = await done_grid(bot)
    if private:
        await make_private(bot)
    where = ROLES[role].where
    bot.http.clear()
    await bot.h.react(int(message["id"]), user_id=where["user_id"], guild_id=where.get("guild_id", GUILD_ID),
                      channel_id=where.get("channel_id", int(message["channel_id"])))
    dms = [c for c in bot.http.calls if c.path == "/channels/{channel_id}/messages" and c.content
           and "4242" in c.content and job.id in c.content]
    if role in (PRIVATE if private else SEEN):
        assert len(dms) == 1
    else:
        assert bot.http.calls == []  # nothing sent: no DM, no public notice


@pytest.mark.parametrize("private", [False, True])
@pytest.mark.parametrize("role", list(ROLES))
async def test_share(bot: Bot, role: str, private: bool) -> None:
    job, _ = await done_grid(bot)
    if private:
        await make_private(bot)
    interaction = await bot.h.run_command("share", {"job": job.id, "index": 1}, **ROLES[role].where)
    entry = await bot.service.storage.gallery.find_share(job.id, 0)
    if role in (PRIVATE if private else SEEN):
        assert entry is not None and "Shared to" in last_words(bot, interaction.token)
    else:
        assert entry is None
        said = last_words(bot, interaction.token)
        assert ("private" if private else "outside the server it was made in") in said


USE_ACTIONS = {
    "/upscale": lambda bot, job, grid, where: bot.h.run_command("upscale", {"job": job.id, "index": 1}, **where),
    "/variation": lambda bot, job, grid, where: bot.h.run_command("variation", {"job": job.id, "index": 2}, **where),
    "U1": lambda bot, job, grid, where: bot.h.press(f"tessera:upscale:{job.id}:0", grid, **where),
    "V2": lambda bot, job, grid, where: bot.h.press(f"tessera:vary:{job.id}:1", grid, **where),
    "🔄": lambda bot, job, grid, where: bot.h.press(f"tessera:reroll:{job.id}:0", grid, **where),
}


@pytest.mark.parametrize("private", [False, True])
@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("action", list(USE_ACTIONS))
async def test_use_a_job_by_button_or_id(bot: Bot, action: str, role: str, private: bool) -> None:
    """Upscale, vary and re-roll make a new job from someone's image: members of its own
    server may (private or not: they see it in the channel), a stranger elsewhere who learnt
    the id may not."""
    job, grid = await done_grid(bot)
    if private:
        await make_private(bot)
    where = ROLES[role].where
    before = {j.id for j in await bot.service.storage.jobs.recent_for_user(where["user_id"], limit=50)}
    await USE_ACTIONS[action](bot, job, grid, where)
    made = [j for j in await bot.service.storage.jobs.recent_for_user(where["user_id"], limit=50)
            if j.id not in before and j.parent_id == job.id]
    if role in SEEN:
        assert len(made) == 1
    else:
        assert made == []
        said = [c.content for c in bot.http.calls if c.content]
        assert any("not made in this server" in text for text in said), said
