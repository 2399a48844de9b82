"""Start the bot: the job service first (storage, queue, model warming), then Discord.

The service starts before logging in so that commands can answer the moment Discord shows
them; the model loads in the background meanwhile ("warming up, your job is queued") and
stored jobs resume. Ctrl-C or SIGTERM closes Discord first, then the service, so a running
job is re-queued for the next start rather than lost.

A first start goes wrong in predictable ways (no model, no network, a bad token); each is one
paragraph on the log as the last line and an exit status (2: configuration to fix, 1: Discord
unreachable), never a stack trace: the traceback is logged at DEBUG for whoever needs it.
A model still loading is not waited for on the way out: loading cannot be interrupted and may
take minutes (a first download), and nothing is lost by leaving it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import aiohttp
import discord

from bot.client import TesseraClient
from bot.config import Settings
from bot.permissions import check_at_start
from bot.service import Tessera
from engine.errors import TesseraError

log = logging.getLogger(__name__)


def use_api_base(base: str | None) -> None:
    """Point discord.py's REST calls at `DISCORD_API_BASE` (a proxy, or a test server).

    discord.py builds every REST URL from the class attribute `Route.BASE`; the gateway URL is
    then asked of that API, so this one setting moves everything."""
    if base:
        discord.http.Route.BASE = base.rstrip("/")


async def _check_when_ready(client: discord.Client, settings: Settings) -> None:
    await client.wait_until_ready()
    try:
        await check_at_start(client, settings.gallery_channel_id)
    except Exception:
        log.exception("could not check the bot's permissions")


async def serve(settings: Settings) -> int:
    assert settings.discord_token is not None
    use_api_base(settings.discord_api_base)
    try:
        service = await Tessera.start(settings)
    except TesseraError as exc:  # MODEL_ID unusable (offline, a typo, a gated model): the operator fixes it
        log.debug("the job service could not start", exc_info=True)
        log.error("cannot start: %s", exc)
        return 2
    web_server = None
    if settings.web_port:
        from bot.web import options_from, start_web  # only with WEB_PORT: aiohttp server, Pillow thumbnails

        try:
            web_server = await start_web(settings.data_dir, host=settings.web_host, port=settings.web_port,
                                         options=options_from(settings))
        except (OSError, TesseraError) as exc:  # the port is taken: the bot runs on, without its website
            log.error("the web gallery could not start on %s:%d: %s", settings.web_host, settings.web_port, exc)
    discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False  # no voice here: no warning about it
    client = TesseraClient(service, dev_guild_id=settings.dev_guild_id)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows has no signal handlers
            loop.add_signal_handler(sig, stop.set)
    checker: asyncio.Task | None = None
    status = 0
    try:
        async with client:
            runner = asyncio.create_task(client.start(settings.discord_token.get_secret_value()))
            stopper = asyncio.create_task(stop.wait())
            checker = asyncio.create_task(_check_when_ready(client, settings))
            done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if runner in done:
                runner.result()  # raises LoginFailure and friends
            log.info("stopping")
            await client.close()
            stopper.cancel()
            runner.cancel()  # a login still in flight ends with "connector closed": expected, not an error
            await asyncio.gather(runner, return_exceptions=True)
    except discord.LoginFailure:
        message = "Discord refused the token (DISCORD_TOKEN): reset it in the developer portal and update .env"
        status = 2
    except discord.PrivilegedIntentsRequired:
        message = "Discord refused the gateway intents; Tessera needs no privileged intents, check the application"
        status = 2
    except (OSError, aiohttp.ClientError, discord.HTTPException, discord.GatewayNotFound) as exc:
        log.debug("Discord could not be reached", exc_info=True)
        message = f"cannot reach Discord at {discord.http.Route.BASE} ({exc}); check the network and try again"
        status = 1
    else:
        message = ""
    finally:
        if checker is not None:
            checker.cancel()
        if web_server is not None:
            await web_server.close()
        await service.close()
    if message:
        log.error("%s", message)  # last, after the shutdown's own lines: the one that matters
    return status


def run_bot(settings: Settings) -> int:
    """Run until stopped; the exit status for `python -m bot`."""
    try:
        return asyncio.run(serve(settings))
    except KeyboardInterrupt:
        return 0
