"""The web gallery from Discord: `/admin web` gives the server's link, and a gallery post
links to its web page, which a running web gallery then serves (raw Interactions, the real
service on tiny models, a real web server on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.web import start_web
from storage.models import GuildSettings
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import ADMIN_ID, GUILD_ID, MANAGE_GUILD, USER_ID
from tests.test_gallery import GALLERY, gallery_posts, share, upscaled
from tests.test_web import fetch

BASE = "https://gallery.example.org"


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir, web_base_url=BASE + "/")
    await running.service.storage.settings.save_guild(GuildSettings(GUILD_ID, gallery_channel_id=GALLERY))
    yield running
    await running.close()


def told(bot: Bot, token: str) -> str:
    (call,) = [c for c in bot.http.for_token(token) if c.content]
    assert call.ephemeral
    return str(call.content)


async def test_admin_web_prints_the_servers_gallery_link(bot: Bot) -> None:
    interaction = await bot.h.run_command("admin", {}, subcommand="web", user_id=ADMIN_ID, permissions=MANAGE_GUILD)
    assert f"{BASE}/g/{GUILD_ID}" in told(bot, interaction.token)


async def test_admin_web_says_how_to_turn_it_on_when_off(tiny_models: dict[str, Path], data_dir: Path) -> None:
    running = await start_bot(tiny_models["sd15"], data_dir)
    try:
        interaction = await running.h.run_command("admin", {}, subcommand="web", user_id=ADMIN_ID,
                                                  permissions=MANAGE_GUILD)
        text = told(running, interaction.token)
        assert "web gallery is off" in text and "WEB_PORT" in text
    finally:
        await running.close()


async def test_the_gallery_post_links_to_its_web_page_which_serves_it(bot: Bot, data_dir: Path) -> None:
    result = await upscaled(bot, "a lighthouse at dusk --seed 41")
    await share(bot, result, user_id=USER_ID)
    (post,) = gallery_posts(bot)
    entry = await bot.service.storage.gallery.find_share(result.upscale.id, 0)
    assert entry is not None
    fields = {f["name"]: f["value"] for f in post.body["embeds"][0]["fields"]}
    assert fields["Web"] == f"[Open in the web gallery]({BASE}/s/{entry.id})"
    server = await start_web(data_dir, host="127.0.0.1", port=0)
    try:
        status, _, body = await fetch(server.port, f"/s/{entry.id}")
        assert status == 200 and b"a lighthouse at dusk --seed 41" in body
        assert f"https://discord.com/channels/{GUILD_ID}/{GALLERY}/{entry.message_id}".encode() in body
        await bot.service.storage.gallery.remove(entry.id)
        assert (await fetch(server.port, f"/s/{entry.id}"))[0] == 404
    finally:
        await server.close()


def test_the_bot_serves_the_web_gallery_beside_discord_with_web_port(tmp_path: Path,
                                                                      tiny_models: dict[str, Path]) -> None:
    """`python -m bot` with WEB_PORT: the gallery answers while the bot runs (Discord here is
    a loopback socket that never answers), and Ctrl-C stops both."""
    import asyncio
    import signal
    import socket
    import subprocess
    import sys
    import threading

    from tests.test_first_run import _closed_port, _env

    web_port = _closed_port()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        env = _env(tmp_path, MODEL_ID=str(tiny_models["sd15"]), WEB_PORT=str(web_port),
                   DISCORD_API_BASE=f"http://127.0.0.1:{silent.getsockname()[1]}/api/v10")
        process = subprocess.Popen([sys.executable, "-m", "bot"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        deadline = threading.Timer(90, process.kill)  # without a gallery the bot would wait for Discord forever
        deadline.start()
        try:
            assert process.stdout is not None
            seen: list[str] = []
            for line in process.stdout:
                seen.append(line)
                if "web gallery on" in line:
                    break
            assert seen and f"http://127.0.0.1:{web_port}" in seen[-1], seen
            status, _, body = asyncio.run(fetch(web_port, "/api/shares"))
            assert status == 200 and b'"items": []' in body
            process.send_signal(signal.SIGINT)
            rest, _ = process.communicate(timeout=60)
        finally:
            deadline.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, [*seen, rest]
    assert "Traceback" not in rest
