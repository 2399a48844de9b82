"""Start the bot: the job service first (storage, queue, model warming), then Discord.

The service starts before logging in so that commands can answer the moment Discord shows
them; the model loads in the background meanwhile ("warming up, your job is queued") and
stored jobs resume. Ctrl-C or SIGTERM closes Discord first, then the service, so a running
job is re-queued for the next start rather than lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import aiohttp
import discord

from bot.config import Settings

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> int:
    from bot.client import TesseraClient
    from bot.service import Tessera

    assert settings.discord_token is not None
    service = await Tessera.start(settings)
    client = TesseraClient(service, dev_guild_id=settings.dev_guild_id)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows has no signal handlers
            loop.add_signal_handler(sig, stop.set)
    try:
        async with client:
            runner = asyncio.create_task(client.start(settings.discord_token.get_secret_value()))
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if runner in done:
                runner.result()  # raises LoginFailure and friends
            log.info("stopping")
            await client.close()
            stopper.cancel()
    except discord.LoginFailure:
        log.error("Discord refused the token (DISCORD_TOKEN): reset it in the developer portal and update .env")
        return 2
    except discord.PrivilegedIntentsRequired:
        log.error("Discord refused the gateway intents; Tessera needs no privileged intents, check the application")
        return 2
    except (OSError, aiohttp.ClientError) as exc:
        log.error("cannot reach Discord (%s); check the network and try again", exc)
        return 1
    finally:
        await service.close()
    return 0


def run_bot(settings: Settings) -> int:
    """Run until stopped; the exit status for `python -m bot`."""
    try:
        return asyncio.run(serve(settings))
    except KeyboardInterrupt:
        return 0
